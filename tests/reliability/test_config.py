"""Hostile and out-of-range configs: bounded work, and an error that names the key."""
import dataclasses
import math
import os
import re
import time
import typing

import pytest
import yaml

from dcn_det.config import Config, ConfigError, config_from_dict, load_config
from dcn_det.config.ranges import range_of

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUNTIME_YAML = os.path.join(REPO, "configs", "_base_", "runtime.yaml")


def _bomb(levels: int = 9, key: str = "x") -> str:
    """The classic "billion laughs": each level is a list of nine aliases of the one below.

    Nine levels expand to 9**9 (~390 million) strings from a few hundred bytes.
    """
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    prev = "a"
    for name in "bcdefghijklmnop"[:levels - 1]:
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
        prev = name
    lines.append(f"{key}: *{prev}")
    return "\n".join(lines) + "\n"


def _timed(fn, limit_s: float):
    start = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        fn()
    assert time.perf_counter() - start < limit_s, "the refusal must not walk the expansion"
    return str(info.value)


def test_alias_bomb_file_is_refused_quickly(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb())
    assert path.stat().st_size < 600
    message = _timed(lambda: load_config(str(path)), 5.0)
    assert "bomb.yaml" in message and "expands to more than" in message


def test_alias_bomb_inside_a_section_and_as_base(tmp_path):
    # Under a real section key, and reached through _base_: still refused, still named.
    (tmp_path / "base.yaml").write_text(_bomb(key="solver"))
    (tmp_path / "top.yaml").write_text("_base_: base.yaml\n")
    message = _timed(lambda: load_config(str(tmp_path / "top.yaml")), 5.0)
    assert "base.yaml" in message


def test_self_referencing_alias_is_refused(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text("solver: &s {steps: [1]}\nmodel: &m [*m]\n")
    message = _timed(lambda: load_config(str(path)), 5.0)
    assert "loop.yaml" in message


def test_alias_bomb_in_an_override_is_refused():
    # The same bomb in one flow sequence: each level is anchored, then aliased nine times.
    levels = ["&l0 [" + ",".join(["lol"] * 9) + "]"]
    for i in range(1, 9):
        levels.append(f"&l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]")
    bomb = "[" + ", ".join(levels) + "]"
    assert len(bomb) < 600
    message = _timed(lambda: load_config(RUNTIME_YAML, [f"solver.steps={bomb}"]), 5.0)
    assert "override solver.steps" in message


def test_alias_bomb_in_a_stored_config_dict_is_refused():
    # A checkpoint's stored config is a dict whose lists may be shared references.
    leaf = ["lol"] * 9
    for _ in range(8):
        leaf = [leaf] * 9
    message = _timed(lambda: config_from_dict({"solver": {"steps": leaf}}, source="ck.pth"), 5.0)
    assert "ck.pth" in message


def test_plain_aliases_and_merge_keys_still_work(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("common: &lr {base_lr: 0.02, momentum: 0.8}\n"
                    "solver:\n  <<: *lr\n  max_iter: 50\n")
    with pytest.raises(ConfigError, match=r"common: unknown key"):
        load_config(str(path))  # the anchor's holder is not a section ...
    path.write_text("solver: &s {base_lr: 0.02, steps: &st [10, 20]}\n"
                    "test: {eval_period: 0}\n")
    cfg = load_config(str(path))  # ... but anchors and aliases in themselves are fine
    assert cfg.solver.base_lr == 0.02 and cfg.solver.steps == (10, 20)


def test_huge_values_make_bounded_messages(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("model: {backbone: {depth: '" + "x" * 200_000 + "'}}\n")
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"model\.backbone\.depth") as info:
        load_config(str(path))
    assert time.perf_counter() - start < 5.0
    assert len(str(info.value)) < 1000


@pytest.mark.parametrize("content, needle", [
    (b"\x00\xff\xfe garbage \x89PNG", "bin.yaml"),
    (b"solver: [1, 2\n", "bin.yaml"),
    (b"- 1\n- 2\n", "top level must be a mapping"),
    (b"solver: 3\n", "solver: expected a mapping"),
])
def test_malformed_files_name_the_file_or_key(tmp_path, content, needle):
    path = tmp_path / "bin.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=re.escape(needle)):
        load_config(str(path))


def test_a_directory_as_config_is_a_named_error(tmp_path):
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path.name))):
        load_config(str(tmp_path))


# ------------------------------------------------------------------ numeric ranges


def _numeric_fields(cls=Config, prefix=()):
    """Every int/float field of the schema (tuples of numbers included), with its annotation."""
    hints = typing.get_type_hints(cls, include_extras=True)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if typing.get_origin(tp) is typing.Union:  # the head: walk every head type
            for sub in typing.get_args(tp):
                yield from _numeric_fields(sub, prefix + (f.name,))
            continue
        if dataclasses.is_dataclass(tp):
            yield from _numeric_fields(tp, prefix + (f.name,))
            continue
        items = typing.get_args(tp) if typing.get_origin(tp) is tuple else (tp,)
        items = [a for a in items if a is not Ellipsis]
        bases = [typing.get_args(a)[0] if typing.get_origin(a) is typing.Annotated else a
                 for a in items]
        if any(b in (int, float) for b in bases):
            yield prefix + (f.name,), items


NUMERIC = sorted(set((path, tuple(items)) for path, items in _numeric_fields()))


def test_every_numeric_field_has_a_range():
    missing = [".".join(p) for p, items in NUMERIC if any(range_of(a) is None for a in items)]
    assert not missing, f"numeric config fields without a Range: {missing}"
    assert len(NUMERIC) > 60  # the walk found the schema, not an empty list


def _bad_value(annotation):
    r = range_of(annotation)
    is_int = typing.get_args(annotation)[0] is int
    if r.lo is not None:
        return int(r.lo) - 1 if is_int else (r.lo if r.lo_open else r.lo - 0.5)
    if r.hi is not None:
        return int(r.hi) + 1 if is_int else (r.hi if r.hi_open else r.hi + 0.5)
    return None  # only "finite": NaN is tested separately


@pytest.mark.parametrize("path, items", NUMERIC, ids=[".".join(p) for p, _ in NUMERIC])
def test_out_of_range_value_is_refused_with_its_key(path, items):
    bad = _bad_value(items[0])
    if bad is None:
        bad = float("nan")
    value = [bad] + [_ok_value(a) for a in items[1:]] if len(items) > 1 or _is_tuple(path) \
        else bad
    head_type = _head_type_for(path)
    data = _nested(path, value)
    if head_type:
        data["model"][path[1]]["type"] = head_type
    with pytest.raises(ConfigError, match=re.escape(".".join(path)) + r": .*(out of range|finite)"):
        config_from_dict(data, source="cfg.yaml")


def _is_tuple(path):
    node = Config()
    from dcn_det.config.schema import HEAD_CONFIGS, NECK_CONFIGS, RPN_CONFIGS
    for i, key in enumerate(path):
        node = getattr(node, key, None)
        if i == 1 and path[0] == "model" and key in ("head", "rpn", "neck"):
            # The section of the type that owns the field (not the default's).
            choices = {"head": HEAD_CONFIGS, "rpn": RPN_CONFIGS, "neck": NECK_CONFIGS}[key]
            node = choices[_head_type_for(path)]()
        if node is None:
            return False
    return isinstance(node, tuple)


def _ok_value(annotation):
    r = range_of(annotation)
    if r.lo is not None and r.hi is not None:
        return (r.lo + r.hi) / 2 if typing.get_args(annotation)[0] is float else int(r.lo) + 1
    return (r.lo or 0) + 1


def _head_type_for(path):
    """The type of the tagged section (``model.head``, ``model.rpn``, ``model.neck``) that owns
    a field: the section's default type unless only another type has the field."""
    from dcn_det.config.schema import HEAD_CONFIGS, NECK_CONFIGS, RPN_CONFIGS
    choices = {"head": HEAD_CONFIGS, "rpn": RPN_CONFIGS, "neck": NECK_CONFIGS}
    if path[0] != "model" or len(path) < 3 or path[1] not in choices:
        return None
    return next(t for t, c in choices[path[1]].items()
                if path[2] in {f.name for f in dataclasses.fields(c)})


def _nested(path, value):
    out = value
    for key in reversed(path):
        out = {key: out}
    return out


@pytest.mark.parametrize("override, message", [
    ("solver.max_iter=0", r"solver\.max_iter: 0 is out of range: must be >= 1"),
    ("solver.max_iter=-5", r"solver\.max_iter: -5 is out of range"),
    ("solver.base_lr=-0.01", r"solver\.base_lr: -0\.01 is out of range: must be > 0"),
    ("solver.base_lr=.nan", r"solver\.base_lr: expected a finite float"),
    ("solver.base_lr=.inf", r"solver\.base_lr: expected a finite float"),
    ("data.num_workers=-1", r"data\.num_workers: -1 is out of range: must be >= 0"),
    ("data.flip_prob=1.5", r"data\.flip_prob: 1\.5 is out of range: must be in \[0, 1\]"),
    ("solver.momentum=1.0", r"solver\.momentum: 1\.0 is out of range: must be in \[0, 1\)"),
    ("model.rpn.anchor_scales=[8, 0]", r"model\.rpn\.anchor_scales: item 1 .* must be > 0"),
    ("model.pixel_std=[1, 0, 1]", r"model\.pixel_std: item 1 .* must be > 0"),
    ("solver.steps=[20, 10]", r"solver\.steps: \[20, 10\] must be strictly increasing"),
    ("model.rpn.bg_iou=0.8", r"model\.rpn\.bg_iou: 0\.8 must not exceed model\.rpn\.fg_iou"),
    ("model.head.bg_iou_lo=0.6", r"model\.head\.bg_iou_lo: 0\.6 must not exceed bg_iou_hi"),
    ("data.min_size_train=[]", r"data\.min_size_train: needs at least one"),
    ("data.max_size_test=100", r"data\.max_size_test: 100 is below min_size_test"),
    ("model.backbone.freeze_at=6", r"model\.backbone\.freeze_at: 6 is out of range: must be in \[0, 5\]"),
])
def test_bad_values_name_key_and_override(override, message):
    with pytest.raises(ConfigError, match=message + r".* in --set " + re.escape(override) + "$"):
        load_config(RUNTIME_YAML, [override])


def test_synthetic_object_counts_are_checked_together():
    with pytest.raises(ConfigError, match=r"data\.train\.synthetic\.min_objects: 5 must not "
                                          r"exceed max_objects=2"):
        config_from_dict({"data": {"train": {"synthetic": {"min_objects": 5, "max_objects": 2}}}})


def test_steps_beyond_max_iter_warn_but_load(caplog):
    cfg = load_config(RUNTIME_YAML, ["solver.max_iter=10", "solver.steps=[5, 20]"])
    import torch
    from dcn_det.engine.optim import build_lr_scheduler, build_optimizer
    opt = build_optimizer(torch.nn.Linear(2, 2), cfg.solver)
    with caplog.at_level("WARNING"):
        build_lr_scheduler(opt, cfg.solver)
    assert "[20]" in caplog.text and "max_iter=10" in caplog.text


def test_every_shipped_config_is_in_range():
    import glob
    names = [p for p in glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True)
             if "_base_" not in p and "studies" not in p]
    assert names
    for name in names:
        cfg = load_config(name)
        assert math.isfinite(cfg.solver.base_lr)

"""Tests for dcn_det.config: schema defaults, YAML composition, overrides, validation, dumps."""
import dataclasses
import os
import re
import textwrap

import pytest
import torch
import yaml

from dcn_det.config import (
    Config,
    ConfigError,
    config_from_dict,
    dump,
    load_config,
    override_config,
)
from dcn_det.io.atomic import write_text

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNTIME_YAML = os.path.join(REPO, "configs", "_base_", "runtime.yaml")


def write(folder, name, text):
    """Writes ``text`` (dedented) to ``folder/name`` and returns the path as a string."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return str(path)


# ---------------------------------------------------------------- schema and defaults


def test_spec_defaults():
    cfg = Config()
    assert cfg.model.arch == "rfcn" and cfg.model.num_classes == 20
    assert cfg.model.backbone.depth == 101 and cfg.model.backbone.res5_dilation == 2
    assert cfg.model.backbone.deform_stages == ()
    assert cfg.model.rpn.anchor_scales == (4.0, 8.0, 16.0, 32.0)
    assert cfg.model.rpn.smooth_l1_beta == pytest.approx(1 / 9)
    assert cfg.model.head.box_coder_stds == (0.1, 0.1, 0.2, 0.2)
    assert cfg.data.min_size_train == (600,) and cfg.data.train.type == "synthetic"
    assert cfg.data.train.synthetic.image_size == (256, 320)
    assert cfg.solver.base_lr == 0.0005 and cfg.solver.steps == ()
    assert cfg.test.evaluator == "coco"


def test_config_is_frozen():
    cfg = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model.backbone.depth = 50
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.solver = None


def test_runtime_example_loads_to_defaults():
    # runtime.yaml restates defaults only, so it must equal the schema's defaults.
    assert load_config(RUNTIME_YAML) == Config()


# ---------------------------------------------------------------- _base_ composition


def test_base_deep_merge_lists_replace_and_order(tmp_path):
    write(tmp_path, "_base_/a.yaml", """
        model:
          num_classes: 5
          backbone: {depth: 50, deform_stages: [res3, res4, res5]}
        solver: {steps: [100, 200, 300], max_iter: 400}
        """)
    write(tmp_path, "_base_/b.yaml", """
        model:
          backbone: {depth: 34}
        solver: {steps: [7]}
        """)
    path = write(tmp_path, "sub/x.yaml", """
        _base_: [../_base_/a.yaml, ../_base_/b.yaml]
        model:
          backbone: {deform_stages: [res5]}
        """)
    cfg = load_config(path)
    assert cfg.model.num_classes == 5  # from a, untouched by b and the file
    assert cfg.model.backbone.depth == 34  # b merged after a
    assert cfg.model.backbone.deform_stages == ("res5",)  # the file replaces a's list
    assert cfg.solver.steps == (7,)  # b's list replaces a's, not appended
    assert cfg.solver.max_iter == 400  # sibling keys of a merged mapping survive
    assert cfg.model.backbone.norm == "frozen_bn"  # untouched defaults


def test_base_single_string_and_nested_chain(tmp_path):
    write(tmp_path, "root.yaml", "solver: {max_iter: 10, gamma: 0.5}\n")
    write(tmp_path, "mid/mid.yaml", "_base_: ../root.yaml\nsolver: {max_iter: 20}\n")
    path = write(tmp_path, "mid/deep/top.yaml", "_base_: ../mid.yaml\n")
    cfg = load_config(path)
    assert (cfg.solver.max_iter, cfg.solver.gamma) == (20, 0.5)


def test_base_cycle_names_the_chain(tmp_path):
    write(tmp_path, "a.yaml", "_base_: b.yaml\n")
    write(tmp_path, "b.yaml", "_base_: c.yaml\n")
    write(tmp_path, "c.yaml", "_base_: a.yaml\n")
    with pytest.raises(ConfigError, match=r"cycle: .*a\.yaml -> .*b\.yaml -> .*c\.yaml -> .*a\.yaml"):
        load_config(str(tmp_path / "a.yaml"))


def test_self_include_is_a_cycle(tmp_path):
    path = write(tmp_path, "self.yaml", "_base_: self.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(path)


def test_missing_base_names_file_and_includer(tmp_path):
    write(tmp_path, "a.yaml", "_base_: b.yaml\n")
    write(tmp_path, "b.yaml", "_base_: [nope.yaml]\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path / "a.yaml"))
    msg = str(info.value)
    assert "nope.yaml" in msg and "a.yaml -> " in msg and "b.yaml" in msg


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*missing.yaml"):
        load_config(str(tmp_path / "missing.yaml"))


def test_bad_base_value(tmp_path):
    path = write(tmp_path, "x.yaml", "_base_: {a: 1}\n")
    with pytest.raises(ConfigError, match=r"x\.yaml: _base_ must be a path or a list of paths"):
        load_config(path)


# ---------------------------------------------------------------- YAML safety and shape


def test_python_object_tag_rejected(tmp_path):
    path = write(tmp_path, "evil.yaml", """
        runtime:
          output_dir: !!python/object/apply:os.system ["echo pwned"]
        """)
    with pytest.raises(ConfigError, match=r"evil\.yaml: unsupported YAML tag .*safe_load"):
        load_config(path)


def test_invalid_yaml_names_file(tmp_path):
    path = write(tmp_path, "broken.yaml", "model: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: invalid YAML"):
        load_config(path)


def test_top_level_must_be_mapping(tmp_path):
    path = write(tmp_path, "list.yaml", "- 1\n- 2\n")
    with pytest.raises(ConfigError, match=r"list\.yaml: the top level must be a mapping"):
        load_config(path)


def test_section_must_be_mapping(tmp_path):
    path = write(tmp_path, "x.yaml", "model: 3\n")
    with pytest.raises(ConfigError, match=r"^model: expected a mapping of ModelConfig fields, got int 3 in .*x\.yaml$"):
        load_config(path)


def test_empty_file_and_empty_section_are_defaults(tmp_path):
    assert load_config(write(tmp_path, "empty.yaml", "")) == Config()
    assert load_config(write(tmp_path, "blank.yaml", "model:\n")) == Config()


# ---------------------------------------------------------------- validation messages


def test_unknown_key_message_with_suggestion_and_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "configs/x.yaml", "model:\n  backbone:\n    dpeth: 50\n")
    with pytest.raises(ConfigError) as info:
        load_config("configs/x.yaml")
    assert str(info.value) == "model.backbone.dpeth: unknown key (did you mean 'depth'?) in configs/x.yaml"


def test_unknown_key_blames_the_file_that_set_it(tmp_path):
    write(tmp_path, "base.yaml", "solver: {warmup_iter: 3}\n")
    path = write(tmp_path, "top.yaml", "_base_: base.yaml\nsolver: {max_iter: 3}\n")
    with pytest.raises(ConfigError, match=r"solver\.warmup_iter: unknown key \(did you mean 'warmup_iters'\?\) in .*base\.yaml$"):
        load_config(path)


def test_unknown_key_without_close_match_lists_valid_keys(tmp_path):
    path = write(tmp_path, "x.yaml", "test: {zzzzzz: 1}\n")
    with pytest.raises(ConfigError, match=r"test\.zzzzzz: unknown key \(valid: evaluator, eval_period, vis_images, vis_score_thresh\)"):
        load_config(path)


def test_unknown_choice_suggests_nearest(tmp_path):
    path = write(tmp_path, "x.yaml", "model: {backbone: {norm: gm}}\n")
    with pytest.raises(ConfigError, match=r"model\.backbone\.norm: 'gm' is not one of .*\(did you mean 'gn'\?\)"):
        load_config(path)


def test_head_section_follows_its_type(tmp_path):
    base = os.path.join(REPO, "configs", "_base_", "models")
    rfcn = load_config(os.path.join(base, "rfcn_r101.yaml"))
    frcnn = load_config(os.path.join(base, "faster_rcnn_r101.yaml"))
    assert (rfcn.model.arch, type(rfcn.model.head).__name__) == ("rfcn", "RFCNHeadConfig")
    assert (frcnn.model.arch, type(frcnn.model.head).__name__) == ("faster_rcnn",
                                                                   "FastRCNNHeadConfig")
    assert not hasattr(frcnn.model.head, "group_size") and not hasattr(rfcn.model.head, "fc_dim")
    path = write(tmp_path, "x.yaml", "model: {head: {type: fast_rcnn, group_size: 1}}\n")
    with pytest.raises(ConfigError, match=r"model\.head\.group_size: not a field of the "
                                          r"'fast_rcnn' head .*belongs to the 'rfcn' head"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"model\.head\.pooler: not a field of the 'rfcn'"):
        load_config(path, ["model.head.type=rfcn", "model.head.pooler=roi_align"])
    with pytest.raises(ConfigError, match=r"model\.head\.type: 'faster' is not one of 'rfcn', "
                                          r"'fast_rcnn', 'fast_rcnn_fpn' \(did you mean 'fast_rcnn'\?\)"):
        load_config(path, ["model.head.type=faster"])


def test_legacy_arch_key(tmp_path, caplog):
    ok = write(tmp_path, "ok.yaml", "model: {arch: faster_rcnn, head: {type: fast_rcnn}}\n")
    assert load_config(ok).model.arch == "faster_rcnn"
    assert "ignoring model.arch" in caplog.text
    # an older checkpoint's config: the union of both heads' fields, and arch
    old = Config().to_dict()
    old["model"]["arch"] = "rfcn"
    old["model"]["head"].update(pooler="roi_align", fc_dim=64)
    old["runtime"]["inject_nan_at_iter"] = -1
    cfg = config_from_dict(old, source="old.pth")
    assert cfg == Config()
    assert "old.pth: ignoring runtime.inject_nan_at_iter" in caplog.text
    assert "model.head.pooler" in caplog.text and "model.head.fc_dim" in caplog.text
    old["model"]["head"]["fc_dimm"] = 3  # a key of no head is still an error
    with pytest.raises(ConfigError, match=r"model\.head\.fc_dimm: unknown key"):
        config_from_dict(old, source="old.pth")
    bad = write(tmp_path, "bad.yaml", "model: {arch: faster_rcnn}\n")
    with pytest.raises(ConfigError, match=r"model\.arch: 'faster_rcnn' does not match "
                                          r"model\.head\.type 'rfcn'.*bad\.yaml"):
        load_config(bad)


@pytest.mark.parametrize("override, message", [
    ("model.backbone.depth=51", r"model\.backbone\.depth: 51 is not one of 18, 34, 50, 101"),
    ("model.backbone.depth='50'", r"model\.backbone\.depth: '50' is not one of"),
    ("model.num_classes=2.0", r"model\.num_classes: expected int, got float 2\.0"),
    ("model.num_classes=true", r"model\.num_classes: expected int, got bool True"),
    ("data.flip_prob=yes", r"data\.flip_prob: expected float, got bool True"),
    ("data.aspect_ratio_grouping=1", r"data\.aspect_ratio_grouping: expected bool, got int 1"),
    ("model.backbone.res5_dilation=true", r"model\.backbone\.res5_dilation: True is not one of 1, 2"),
    ("runtime.output_dir=null", r"runtime\.output_dir: expected str, got null None"),
    ("solver.steps=10", r"solver\.steps: expected a list of int >= 1, got int 10"),
    ("solver.steps=[10, 2.5]", r"solver\.steps: item 1 of \[10, 2\.5\]: expected int, got float 2\.5"),
    ("model.pixel_std=[1, 2]", r"model\.pixel_std: expected a list of 3 items \(float > 0, float > 0, float > 0\), got 2 items"),
    ("model.backbone.deform_stages=[res5, res6]",
     r"deform_stages: item 1 of \['res5', 'res6'\]: 'res6' is not one of 'res3', 'res4', 'res5' \(did you mean 'res5'\?\)"),
    ("model.rpn.anchor_scales=[8, x]", r"model\.rpn\.anchor_scales: item 1 .*expected float, got str 'x'"),
])
def test_type_errors_name_key_value_and_override(override, message):
    with pytest.raises(ConfigError, match=message + r".* in --set " + re.escape(override) + "$"):
        load_config(RUNTIME_YAML, [override])


def test_int_accepted_for_float_and_stored_as_float(tmp_path):
    cfg = load_config(write(tmp_path, "x.yaml", "solver: {base_lr: 1, gamma: 2}\nmodel: {rpn: {anchor_scales: [8, 16]}}\n"))
    assert cfg.solver.base_lr == 1.0 and type(cfg.solver.base_lr) is float
    assert type(cfg.solver.gamma) is float
    assert cfg.model.rpn.anchor_scales == (8.0, 16.0)
    assert all(type(s) is float for s in cfg.model.rpn.anchor_scales)


def test_exponent_without_dot_is_a_float(tmp_path):
    # PyYAML reads `5e-4` as a string (YAML 1.1); a float field accepts it as the number.
    cfg = load_config(write(tmp_path, "x.yaml", "solver: {base_lr: 5e-4}\n"))
    assert cfg.solver.base_lr == 5e-4
    with pytest.raises(ConfigError, match="expected float, got str 'fast'"):
        load_config(write(tmp_path, "y.yaml", "solver: {base_lr: fast}\n"))


# ---------------------------------------------------------------- overrides


def test_overrides_nested_keys_lists_and_mappings(tmp_path):
    path = write(tmp_path, "x.yaml", "solver: {steps: [1, 2, 3]}\nmodel: {backbone: {depth: 101}}\n")
    cfg = load_config(path, [
        "model.backbone.depth=50",
        "solver.steps=[10,20]",  # replaces the file's list
        "model.rpn.anchor_ratios=[1]",
        "data.train={type: voc, splits: [2007/trainval, 2012/trainval]}",
        "model.backbone.depth=18",  # later overrides win
    ])
    assert cfg.model.backbone.depth == 18
    assert cfg.solver.steps == (10, 20)
    assert cfg.model.rpn.anchor_ratios == (1.0,)
    assert cfg.data.train.type == "voc"
    assert cfg.data.train.splits == ("2007/trainval", "2012/trainval")
    assert cfg.data.train.synthetic.num_images == 64  # the mapping override deep-merged


def test_empty_override_value_is_the_empty_string():
    assert load_config(RUNTIME_YAML, ["runtime.output_dir="]).runtime.output_dir == ""


@pytest.mark.parametrize("bad, message", [
    ("model.backbone.depth", "expected KEY=VALUE"),
    ("model..depth=50", "empty part in key"),
    ("solver.steps=[1, 2", "value is not valid YAML"),
])
def test_malformed_overrides(bad, message):
    with pytest.raises(ConfigError, match=message):
        load_config(RUNTIME_YAML, [bad])


def test_override_unknown_key_suggestion():
    with pytest.raises(ConfigError, match=r"^model\.backbone\.dpeth: unknown key \(did you mean 'depth'\?\) in --set model\.backbone\.dpeth=50$"):
        load_config(RUNTIME_YAML, ["model.backbone.dpeth=50"])


def test_override_config_on_a_loaded_config():
    cfg = override_config(Config(), ["solver.max_iter=7", "model.head.nms_thresh=0.4"])
    assert cfg.solver.max_iter == 7 and cfg.model.head.nms_thresh == 0.4
    assert cfg.model.backbone == Config().model.backbone
    # a resolved R-FCN config holds R-FCN fields, which a Faster R-CNN head does not have
    with pytest.raises(ConfigError, match=r"model\.head\.deformable: not a field of the "
                                          r"'fast_rcnn' head"):
        override_config(cfg, ["model.head.type=fast_rcnn"])
    with pytest.raises(ConfigError, match="solver.max_itr: unknown key"):
        override_config(cfg, ["solver.max_itr=3"])


# ---------------------------------------------------------------- dump, save, dicts


def _custom_config():
    return load_config(RUNTIME_YAML, [
        "model.backbone.deform_stages=[res3, res4, res5]", "model.backbone.deform_modulated=true",
        "solver.steps=[10, 20]", "solver.base_lr=0.02", "data.min_size_train=[480, 512, 544]",
        "data.train.splits=[2007/trainval]", "model.rpn.smooth_l1_beta=0.1111111111111111",
        "runtime.output_dir='123'", "model.pixel_mean=[0.1, 0.2, 0.3]",
        "solver.warmup_factor=1e-12", "data.test.root='true'",  # dumped as 1.0e-12 and 'true'
    ])


def test_dump_round_trip(tmp_path):
    cfg = _custom_config()
    text = dump(cfg)
    path = tmp_path / "dumped.yaml"
    path.write_text(text)
    back = load_config(str(path))
    assert back == cfg and back != Config()
    assert back.runtime.output_dir == "123"  # quoted, so it stays a string
    assert back.data.test.root == "true" and back.solver.warmup_factor == 1e-12
    assert yaml.safe_load(text)["solver"]["steps"] == [10, 20]


def test_save_config_round_trip(tmp_path):
    cfg = _custom_config()
    path = tmp_path / "run" / "nested" / "config.yaml"
    write_text(str(path), dump(cfg))  # how tools/train.py saves it
    assert load_config(str(path)) == cfg
    assert os.listdir(path.parent) == ["config.yaml"]  # the temporary file is gone


def test_dict_round_trip_through_a_weights_only_checkpoint(tmp_path):
    cfg = _custom_config()
    d = cfg.to_dict()
    assert d["model"]["backbone"]["deform_stages"] == ["res3", "res4", "res5"]
    torch.save({"config": d}, tmp_path / "ckpt.pth")
    loaded = torch.load(tmp_path / "ckpt.pth", weights_only=True)
    assert config_from_dict(loaded["config"]) == cfg


def test_config_from_dict_validates_and_fills_defaults():
    cfg = config_from_dict({"solver": {"max_iter": 5}})
    assert cfg.solver.max_iter == 5 and cfg.model == Config().model
    with pytest.raises(ConfigError, match=r"solver\.max_iter: expected int, got str '5' in <dict>"):
        config_from_dict({"solver": {"max_iter": "5"}})

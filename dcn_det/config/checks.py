"""Checks between fields of one config section, run after each field passed its own range.

Each rule returns the key it blames and why; the loader adds the section's dotted path and
where the value came from. Rules that need the built model (e.g. a feature's stride) stay in
the builders.
"""
from typing import Any, Callable, Dict, Iterator, List, Tuple

from .schema import (DataConfig, FPNRPNConfig, HeadBaseConfig, ModelConfig, RPNBaseConfig,
                     SolverConfig, SyntheticConfig)

Problem = Tuple[str, str]  # (field name, message)


def _solver(s: SolverConfig) -> Iterator[Problem]:
    if list(s.steps) != sorted(set(s.steps)):
        yield "steps", f"{list(s.steps)} must be strictly increasing"


def _rpn(r: RPNBaseConfig) -> Iterator[Problem]:
    if r.bg_iou > r.fg_iou:
        yield "bg_iou", f"{r.bg_iou} must not exceed model.rpn.fg_iou={r.fg_iou}"
    if r.post_nms_topk_train > r.pre_nms_topk_train:
        yield "post_nms_topk_train", (f"{r.post_nms_topk_train} must not exceed "
                                      f"pre_nms_topk_train={r.pre_nms_topk_train}")
    if r.post_nms_topk_test > r.pre_nms_topk_test:
        yield "post_nms_topk_test", (f"{r.post_nms_topk_test} must not exceed "
                                     f"pre_nms_topk_test={r.pre_nms_topk_test}")
    if isinstance(r, FPNRPNConfig) and len(r.anchor_sizes) != len(FPN_RPN_LEVELS):
        yield "anchor_sizes", (f"{list(r.anchor_sizes)} must give one size per FPN level "
                               f"{', '.join(FPN_RPN_LEVELS)} ({len(FPN_RPN_LEVELS)} values)")


# The pyramid levels the FPN RPN runs on (its anchor_sizes give one size per level).
FPN_RPN_LEVELS = ("p2", "p3", "p4", "p5", "p6")


def _model(m: ModelConfig) -> Iterator[Problem]:
    # The neck, the RPN and the head are tagged sections; an FPN detector needs all three
    # FPN variants, a single-scale one none of them.
    fpn = {"neck.type": m.neck.type == "fpn", "rpn.type": m.rpn.type == "fpn",
           "head.type": m.head.type == "fast_rcnn_fpn"}
    if any(fpn.values()) and not all(fpn.values()):
        yield ("neck.type" if not fpn["neck.type"] else
               "rpn.type" if not fpn["rpn.type"] else "head.type"), (
            f"the FPN detector needs model.neck.type 'fpn', model.rpn.type 'fpn' and "
            f"model.head.type 'fast_rcnn_fpn' together; got neck {m.neck.type!r}, rpn "
            f"{m.rpn.type!r}, head {m.head.type!r}")
    elif fpn["neck.type"] and m.backbone.res5_dilation > 1:
        # FPN needs res5 at stride 32 (P5, and P6 = P5 subsampled, at 64).
        yield "backbone.res5_dilation", (
            f"{m.backbone.res5_dilation} with model.neck.type 'fpn'; the FPN needs res5 at "
            f"output stride 32, so set model.backbone.res5_dilation: 1")


def _head(h: HeadBaseConfig) -> Iterator[Problem]:
    if h.bg_iou_lo > h.bg_iou_hi:
        yield "bg_iou_lo", f"{h.bg_iou_lo} must not exceed bg_iou_hi={h.bg_iou_hi}"
    if h.bg_iou_hi > h.fg_iou:
        yield "bg_iou_hi", f"{h.bg_iou_hi} must not exceed fg_iou={h.fg_iou}"


def _data(d: DataConfig) -> Iterator[Problem]:
    # The short side is scaled to min_size unless the long side would exceed max_size, so a
    # max_size below min_size silently overrides every min_size.
    if max(d.min_size_train, default=0) > d.max_size_train:
        yield "max_size_train", (f"{d.max_size_train} is below the largest min_size_train "
                                 f"{max(d.min_size_train)}")
    if not d.min_size_train:
        yield "min_size_train", "needs at least one short-side size"
    if d.min_size_test > d.max_size_test:
        yield "max_size_test", f"{d.max_size_test} is below min_size_test={d.min_size_test}"


def _synthetic(s: SyntheticConfig) -> Iterator[Problem]:
    if s.min_objects > s.max_objects:
        yield "min_objects", f"{s.min_objects} must not exceed max_objects={s.max_objects}"


_RULES: Dict[type, Callable[[Any], Iterator[Problem]]] = {
    SolverConfig: _solver, RPNBaseConfig: _rpn, HeadBaseConfig: _head, DataConfig: _data,
    SyntheticConfig: _synthetic, ModelConfig: _model,
}


def cross_field_errors(section: Any) -> List[Problem]:
    """The problems between fields of ``section`` (a built schema dataclass), in field order.

    A section without rules of its own (e.g. either head) gets those of its nearest base
    class that has some.
    """
    for cls in type(section).__mro__:
        if cls in _RULES:
            return list(_RULES[cls](section))
    return []

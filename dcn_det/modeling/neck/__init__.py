"""Necks between the backbone and the heads: the feature pyramid network."""
from dcn_det.modeling.neck.fpn import FPN, c2_xavier_fill

__all__ = ["FPN", "c2_xavier_fill"]

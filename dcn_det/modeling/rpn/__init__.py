"""Region proposal network: anchors, head, proposals and losses."""
from dcn_det.modeling.rpn.anchor_generator import AnchorGenerator, FPNAnchorGenerator
from dcn_det.modeling.rpn.head import RPNHead
from dcn_det.modeling.rpn.rpn import RPN

__all__ = ["AnchorGenerator", "FPNAnchorGenerator", "RPNHead", "RPN"]

"""dcn_det: Deformable ConvNets object detection (R-FCN and Faster R-CNN) in PyTorch."""

__version__ = "0.1.0"

"""The configuration schema: one frozen dataclass per section, YAML keys = field names.

Every field carries its default and a one-line comment. Lists are stored as tuples so a loaded
``Config`` is immutable all the way down (``cfg.solver.steps`` is ``(10, 20)``, not ``[10, 20]``);
``to_dict()`` and ``dump`` turn them back into YAML lists. Types are enforced by
``dcn_det.config.loader`` when a config is loaded from YAML, overrides or a checkpoint dict.
"""
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Annotated, Any, Dict, Literal, Tuple, Union

from .ranges import (DecayRate, FiniteFloat, Fraction, NonNegFloat, NonNegInt, PositiveFloat,
                     PositiveFraction, PositiveInt, Range)


class _Section:
    """Mixin giving every section ``to_dict()`` (plain dicts/lists/scalars, YAML-ready)."""

    def to_dict(self) -> Dict[str, Any]:
        """Returns the section as nested plain dicts; tuples become lists."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}


def _plain(value: Any) -> Any:
    """Converts dataclasses and tuples to dicts and lists, recursively."""
    if is_dataclass(value):
        return value.to_dict()
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


Stage = Literal["res2", "res3", "res4", "res5"]
DeformStage = Literal["res3", "res4", "res5"]


@dataclass(frozen=True)
class BackboneConfig(_Section):
    depth: Literal[18, 34, 50, 101] = 101  # ResNet depth
    width_mult: PositiveFloat = 1.0  # multiplies every stage width (tiny CPU models use e.g. 0.125)
    stride_in_1x1: bool = True  # MSRA/Caffe ResNet (stride on the 1x1) vs torchvision (on the 3x3)
    norm: Literal["frozen_bn", "bn", "gn", "syncbn"] = "frozen_bn"  # normalisation layer
    gn_groups: PositiveInt = 32  # number of groups when norm is "gn"
    freeze_at: Annotated[int, Range(0, 5)] = 2  # 0 = nothing frozen, 1 = stem, 2 = stem+res2, ... 5 = everything
    res5_dilation: Literal[1, 2, 4] = 2  # >1 = res5 at stride 1 with this dilation (output stride 16)
    deform_stages: Tuple[DeformStage, ...] = ()  # stages whose 3x3 convs are deformable
    deform_modulated: bool = False  # DCNv2 (offsets + mask) instead of DCNv1 (offsets only)
    deform_offset_groups: PositiveInt = 4  # offset groups of each deformable conv
    deform_offset_lr_mult: NonNegFloat = 1.0  # learning-rate multiplier of the offset convs
    deform_offset_mode: Literal["free", "affine"] = "free"  # free: (dy, dx) per tap; affine: A - I and t per offset group (DESIGN 4.1)
    stem_pool: Literal["max", "deform_max"] = "max"  # stem pool: 3x3/2 max pool or DeformMaxPool2d
    pretrained: str = ""  # ImageNet/detector weights: torchvision or mmdet .pth, detectron2 .pkl, MXNet .params; "" = random init
    pretrained_format: Literal["auto", "torchvision", "detectron2", "mmdet", "mxnet"] = "auto"  # auto: from the file (README "Pretrained weights")
    pretrained_min_fill: Fraction = 0.5  # loading fails when under this fraction of the backbone's tensors (offsets aside) was filled


@dataclass(frozen=True)
class RPNBaseConfig(_Section):
    """The fields both RPNs share; ``model.rpn.type`` selects the RPN's own section."""

    type: str = ""  # "c4" (one feature map) or "fpn" (P2-P6), fixed by each section
    conv_channels: PositiveInt = 512  # channels of the RPN 3x3 conv
    anchor_ratios: Tuple[PositiveFloat, ...] = (0.5, 1.0, 2.0)  # anchor aspect ratios h/w
    objectness: Literal["sigmoid", "softmax"] = "softmax"  # 1 logit per anchor vs 2-way softmax
    batch_size_per_image: PositiveInt = 256  # anchors sampled per image for the loss
    positive_fraction: Fraction = 0.5  # max fraction of positives among sampled anchors
    fg_iou: Fraction = 0.7  # anchor IoU at or above which it is foreground
    bg_iou: Fraction = 0.3  # anchor IoU below which it is background
    pre_nms_topk_train: PositiveInt = 6000  # proposals kept before NMS, training (per level with FPN)
    post_nms_topk_train: PositiveInt = 300  # proposals kept after NMS, training (per image)
    pre_nms_topk_test: PositiveInt = 6000  # proposals kept before NMS, inference (per level with FPN)
    post_nms_topk_test: PositiveInt = 300  # proposals kept after NMS, inference (per image)
    nms_thresh: Fraction = 0.7  # proposal NMS IoU threshold
    min_size: NonNegFloat = 0.0  # proposals with a side below this (input pixels) are dropped
    box_loss_weight: NonNegFloat = 1.0  # weight of the RPN box regression loss
    smooth_l1_beta: NonNegFloat = 1.0 / 9.0  # smooth-L1 transition point of the box loss


@dataclass(frozen=True)
class RPNConfig(RPNBaseConfig):
    """``model.rpn`` of the single-scale (C4) detectors: anchors on one backbone feature."""

    type: Literal["c4"] = "c4"  # RPN on one feature map
    in_feature: Stage = "res4"  # backbone feature the RPN runs on
    anchor_scales: Tuple[PositiveFloat, ...] = (4.0, 8.0, 16.0, 32.0)  # sizes, in units of anchor_stride
    anchor_stride: PositiveInt = 16  # pixels between anchor centres (stride of in_feature)


@dataclass(frozen=True)
class FPNRPNConfig(RPNBaseConfig):
    """``model.rpn`` of the FPN detectors: one head shared by P2-P6, one anchor size per level.

    The defaults are detectron2's (``faster_rcnn_R_50_FPN``): a 256-channel head, sigmoid
    objectness, 2000/1000 proposals per level before NMS (train/test), 1000 per image after,
    L1 box loss (beta 0), anchors centred on the cell corners (offset 0).
    """

    type: Literal["fpn"] = "fpn"  # RPN on the FPN levels P2-P6
    conv_channels: PositiveInt = 256  # channels of the shared 3x3 conv (= the FPN width in detectron2)
    objectness: Literal["sigmoid", "softmax"] = "sigmoid"  # detectron2: one logit per anchor
    anchor_sizes: Tuple[PositiveFloat, ...] = (32.0, 64.0, 128.0, 256.0, 512.0)  # anchor side (px) on P2, P3, P4, P5, P6
    anchor_offset: Annotated[float, Range(0, 1, hi_open=True)] = 0.0  # anchor centre at (j + offset) * stride; 0 = detectron2
    pre_nms_topk_train: PositiveInt = 2000  # proposals kept per level before NMS, training
    post_nms_topk_train: PositiveInt = 1000  # proposals kept per image after NMS, training
    pre_nms_topk_test: PositiveInt = 1000  # proposals kept per level before NMS, inference
    post_nms_topk_test: PositiveInt = 1000  # proposals kept per image after NMS, inference
    smooth_l1_beta: NonNegFloat = 0.0  # detectron2's RPN uses L1


# The RPN sections by ``type``; the config loader picks one from ``model.rpn.type``.
RPN_CONFIGS = {"c4": RPNConfig, "fpn": FPNRPNConfig}
AnyRPNConfig = Union[RPNConfig, FPNRPNConfig]


@dataclass(frozen=True)
class HeadBaseConfig(_Section):
    """The fields both box heads share; ``model.head.type`` selects the head's own section."""

    type: str = ""  # "rfcn", "fast_rcnn" or "fast_rcnn_fpn", fixed by each head's section
    pooled_size: PositiveInt = 7  # output bins per side of the RoI pooling
    sample_per_part: PositiveInt = 4  # bilinear samples per bin side in deformable pooling
    trans_std: NonNegFloat = 0.1  # scale of the predicted pooling offsets
    offset_lr_mult: NonNegFloat = 0.01  # learning-rate multiplier of the offset predictor
    hidden_init: Literal["official", "kaiming"] = "official"  # hidden layers: N(0, 0.01) or He
    class_agnostic_bbox: bool = True  # one box regressor for all classes
    batch_size_per_image: PositiveInt = 128  # RoIs sampled per image for the loss
    positive_fraction: Fraction = 0.25  # max fraction of foreground RoIs
    fg_iou: Fraction = 0.5  # RoI IoU at or above which it is foreground
    bg_iou_hi: Fraction = 0.5  # RoI IoU below which it may be background ...
    bg_iou_lo: Fraction = 0.0  # ... and at or above which (0 = any)
    ohem: bool = False  # online hard example mining instead of random sampling
    box_coder_stds: Tuple[PositiveFloat, PositiveFloat, PositiveFloat, PositiveFloat] = (0.1, 0.1, 0.2, 0.2)  # dx,dy,dw,dh stds
    smooth_l1_beta: NonNegFloat = 1.0  # smooth-L1 transition point of the box loss
    score_thresh: Fraction = 0.001  # detections below this score are dropped
    nms_thresh: Fraction = 0.3  # per-class NMS IoU threshold at inference
    detections_per_image: PositiveInt = 100  # detections kept per image after NMS


@dataclass(frozen=True)
class C4HeadBaseConfig(HeadBaseConfig):
    """The fields of the heads on one backbone feature (R-FCN, Faster R-CNN C4)."""

    in_feature: Stage = "res5"  # backbone feature the head pools from
    conv_channels: PositiveInt = 1024  # channels of the 1x1 conv before pooling (256 for fast_rcnn configs)
    conv_lr_mult: NonNegFloat = 3.0  # learning-rate multiplier of that 1x1 conv


@dataclass(frozen=True)
class RFCNHeadConfig(C4HeadBaseConfig):
    """``model.head`` of R-FCN: position-sensitive score maps, (deformable) PS-RoI pooling."""

    type: Literal["rfcn"] = "rfcn"  # R-FCN head
    deformable: bool = True  # deformable PS-RoI pooling vs plain PS-RoI pooling
    group_size: PositiveInt = 7  # position-sensitive score map grid
    score_lr_mult: NonNegFloat = 1.0  # learning-rate multiplier of the score and box maps


@dataclass(frozen=True)
class FastRCNNHeadConfig(C4HeadBaseConfig):
    """``model.head`` of Faster R-CNN: (deformable) RoI pooling, 2 fc layers."""

    type: Literal["fast_rcnn"] = "fast_rcnn"  # Fast R-CNN (2fc) head
    pooler: Literal["deformable", "psroi_plain", "roi_align"] = "deformable"  # RoI pooling
    fc_dim: PositiveInt = 1024  # width of the two fc layers


@dataclass(frozen=True)
class FPNFastRCNNHeadConfig(HeadBaseConfig):
    """``model.head`` of Faster R-CNN with FPN: each RoI pooled from one of P2-P5, 2 fc layers.

    A RoI of side ``sqrt(w * h)`` goes to level ``floor(4 + log2(side / 224))`` clamped to
    2..5 (detectron2's rule). Defaults follow detectron2: RoIAlign with adaptive sampling,
    class-specific boxes, 512 RoIs per image, L1 box loss, score 0.05, NMS 0.5.
    """

    type: Literal["fast_rcnn_fpn"] = "fast_rcnn_fpn"  # Fast R-CNN (2fc) on FPN levels
    pooler: Literal["roi_align", "deformable", "psroi_plain"] = "roi_align"  # per-level RoI pooling
    sampling_ratio: NonNegInt = 0  # roi_align samples per bin side; 0 = adaptive ceil(bin size)
    fc_dim: PositiveInt = 1024  # width of the two fc layers
    class_agnostic_bbox: bool = False  # detectron2 and the official Deformable FPN: one box per class
    offset_lr_mult: NonNegFloat = 0.01  # the official offset fc of deformable RoI pooling
    batch_size_per_image: PositiveInt = 512  # RoIs sampled per image for the loss
    smooth_l1_beta: NonNegFloat = 0.0  # detectron2's box head uses L1
    score_thresh: Fraction = 0.05  # detections below this score are dropped
    nms_thresh: Fraction = 0.5  # per-class NMS IoU threshold at inference


# The head sections by ``type``; the config loader picks one from ``model.head.type``.
HEAD_CONFIGS = {"rfcn": RFCNHeadConfig, "fast_rcnn": FastRCNNHeadConfig,
                "fast_rcnn_fpn": FPNFastRCNNHeadConfig}
HeadConfig = Union[RFCNHeadConfig, FastRCNNHeadConfig, FPNFastRCNNHeadConfig]
# The detector family each head type makes.
ARCH_OF_HEAD = {"rfcn": "rfcn", "fast_rcnn": "faster_rcnn", "fast_rcnn_fpn": "faster_rcnn_fpn"}


@dataclass(frozen=True)
class NoNeckConfig(_Section):
    """``model.neck`` of the single-scale detectors: the backbone's features go straight on."""

    type: Literal["none"] = "none"  # no neck


@dataclass(frozen=True)
class FPNNeckConfig(_Section):
    """``model.neck`` of the FPN detectors: res2-res5 -> P2-P5, plus P6 = max-pool of P5."""

    type: Literal["fpn"] = "fpn"  # feature pyramid network (Lin et al. 2017)
    out_channels: PositiveInt = 256  # channels of every pyramid level


# The neck sections by ``type``.
NECK_CONFIGS = {"none": NoNeckConfig, "fpn": FPNNeckConfig}
NeckConfig = Union[NoNeckConfig, FPNNeckConfig]


@dataclass(frozen=True)
class ModelConfig(_Section):
    num_classes: PositiveInt = 20  # K object classes, background excluded
    pixel_mean: Tuple[FiniteFloat, FiniteFloat, FiniteFloat] = (123.675, 116.28, 103.53)  # RGB mean, 0-255 scale
    pixel_std: Tuple[PositiveFloat, PositiveFloat, PositiveFloat] = (58.395, 57.12, 57.375)  # RGB std, 0-255 scale
    size_divisibility: PositiveInt = 32  # preprocess pads H and W up to a multiple of this
    backbone: BackboneConfig = field(default_factory=BackboneConfig)  # ResNet trunk
    neck: NeckConfig = field(default_factory=NoNeckConfig)  # between backbone and heads: none or fpn (by type)
    rpn: AnyRPNConfig = field(default_factory=RPNConfig)  # region proposal network (by type: c4 or fpn)
    head: HeadConfig = field(default_factory=RFCNHeadConfig)  # second-stage box head (by type)
    weights: str = ""  # a whole trained detector to fine-tune from (dcn_det checkpoint or inference file, mmdet C4 or FPN .pth, official MXNet .params), loaded after backbone.pretrained when a run starts (never on resume); "" = none
    weights_format: Literal["auto", "dcn_det", "mmdet", "mxnet"] = "auto"  # auto: from the file (README "Pretrained weights")
    weights_min_fill: Fraction = 0.5  # loading fails when under this fraction of the detector's tensors was filled

    @property
    def arch(self) -> str:
        """The detector family, ``"rfcn"``, ``"faster_rcnn"`` or ``"faster_rcnn_fpn"``, given
        by the head's type."""
        return ARCH_OF_HEAD[self.head.type]


@dataclass(frozen=True)
class SyntheticConfig(_Section):
    num_images: PositiveInt = 64  # images in the in-memory synthetic set
    seed: NonNegInt = 0  # generator seed (each image is seeded from (seed, index))
    image_size: Tuple[PositiveInt, PositiveInt] = (256, 320)  # (h, w) before the resize transform
    num_classes: PositiveInt = 4  # shape classes drawn
    min_objects: NonNegInt = 1  # fewest objects per image
    max_objects: PositiveInt = 6  # most objects per image
    min_object_size: PositiveFloat = 12.0  # px, size of the smallest object (log-uniform sizes)
    max_object_fraction: PositiveFraction = 0.85  # largest object size / the image's short side
    distortion: Fraction = 1.0  # 0..1 strength of the shear / bend / warp of the shapes
    clutter: Fraction = 1.0  # 0..1 distractor strokes and share of textured backgrounds
    split: str = "train"  # split name given to the generator ("train", "val", ...)


@dataclass(frozen=True)
class DatasetConfig(_Section):
    type: Literal["coco", "voc", "synthetic"] = "synthetic"  # dataset format
    root: str = ""  # coco: image folder; voc: VOCdevkit folder; synthetic: "" = in memory
    ann_file: str = ""  # coco instances JSON
    splits: Tuple[str, ...] = ()  # voc: ["2007/trainval", "2012/trainval"] = year/imageset
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)  # for type "synthetic"


@dataclass(frozen=True)
class DataConfig(_Section):
    train: DatasetConfig = field(default_factory=DatasetConfig)  # training set
    test: DatasetConfig = field(default_factory=DatasetConfig)  # evaluation set
    min_size_train: Tuple[PositiveInt, ...] = (600,)  # short-side sizes, one picked at random per image
    max_size_train: PositiveInt = 1000  # cap on the long side, training
    min_size_test: PositiveInt = 600  # short side at inference
    max_size_test: PositiveInt = 1000  # cap on the long side at inference
    flip_prob: Fraction = 0.5  # horizontal flip probability, training
    images_per_batch: PositiveInt = 1  # training images per process per step
    test_images_per_batch: PositiveInt = 1  # inference images per process per step
    num_workers: NonNegInt = 2  # data loader worker processes
    aspect_ratio_grouping: bool = True  # batch landscape and portrait images separately
    filter_empty: bool = True  # drop training images without usable annotations


@dataclass(frozen=True)
class SolverConfig(_Section):
    optimizer: Literal["sgd", "adamw"] = "sgd"  # SGD with momentum, or AdamW
    base_lr: PositiveFloat = 0.0005  # learning rate after warmup
    momentum: DecayRate = 0.9  # SGD momentum
    betas: Tuple[DecayRate, DecayRate] = (0.9, 0.999)  # AdamW moment decay rates
    weight_decay: NonNegFloat = 0.0005  # L2 weight decay of weights
    weight_decay_norm: NonNegFloat = 0.0  # weight decay of normalisation parameters
    bias_lr_factor: NonNegFloat = 1.0  # learning-rate multiplier of biases
    schedule: Literal["step", "cosine"] = "step"  # learning-rate schedule after warmup
    steps: Tuple[PositiveInt, ...] = ()  # iterations at which "step" multiplies the lr by gamma
    gamma: PositiveFloat = 0.1  # step decay factor
    max_iter: PositiveInt = 1000  # training iterations
    warmup_iters: NonNegInt = 500  # linear warmup length in iterations
    warmup_factor: PositiveFraction = 0.001  # lr factor at iteration 0 of warmup
    clip_grad_norm: NonNegFloat = 0.0  # max gradient norm; 0.0 = off
    amp: bool = False  # mixed precision (CUDA only)
    checkpoint_period: NonNegInt = 1000  # iterations between checkpoints
    keep_last: NonNegInt = 3  # checkpoints kept on disk


@dataclass(frozen=True)
class EvalConfig(_Section):
    evaluator: Literal["coco", "voc"] = "coco"  # metric: COCO AP or VOC mAP at IoU 0.5
    eval_period: NonNegInt = 0  # iterations between evaluations during training; 0 = only at the end
    vis_images: NonNegInt = 4  # first N test images drawn to TensorBoard at each evaluation; 0 = off
    vis_score_thresh: Fraction = 0.5  # detections drawn on those images score at least this


@dataclass(frozen=True)
class RuntimeConfig(_Section):
    output_dir: str = "out/run"  # config.yaml, checkpoints, logs and metrics go here
    seed: NonNegInt = 0  # global RNG seed
    device: Literal["auto", "cpu", "cuda"] = "auto"  # "auto" = cuda when available
    log_period: NonNegInt = 20  # iterations between log lines
    deterministic: bool = False  # request deterministic kernels (slower)


@dataclass(frozen=True)
class Config(_Section):
    model: ModelConfig = field(default_factory=ModelConfig)  # the detector
    data: DataConfig = field(default_factory=DataConfig)  # datasets and loading
    solver: SolverConfig = field(default_factory=SolverConfig)  # optimisation
    test: EvalConfig = field(default_factory=EvalConfig)  # evaluation
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)  # output, seeds, device

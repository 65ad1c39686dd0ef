"""Recording what every deformable conv of a model did in one forward pass.

``OffsetCapture`` hooks each ``DeformConv2d`` / ``ModulatedDeformConv2d`` of a model and keeps,
per layer, a :class:`DeformLayerRecord`: the conv's geometry (kernel, stride, padding,
dilation, offset groups), its input and output sizes, its offset field and (modulated) its
mask, and the strides of its input and output maps with respect to the image the model saw.

Frames (used throughout :mod:`dcn_det.analysis`):
    * A map at stride ``s`` has pixel ``(i, j)`` at image pixel ``(y, x) = (i*s, j*s)`` of the
      padded, resized input image ("top-left aligned"): a "same"-padded conv of stride ``s``
      centres output ``j`` on input ``j*s``, so this holds through the whole ResNet. It is the
      frame the RoI ops use with ``spatial_scale = 1/s`` up to their own half-pixel shift (see
      :mod:`dcn_det.analysis.pool_bins`).
    * "Input-image pixels" are those of the padded, resized image given to the backbone;
      "original-image pixels" are those of the file on disk (the resize undone).
"""
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from dcn_det.ops import DeformConv2d, ModulatedDeformConv2d

_STAGE_OF_LAYER = re.compile(r"^(?:backbone\.)?layer([1-4])\.(.+)$")


def layer_display_name(module_name: str) -> str:
    """The paper-style name of a module: ``backbone.layer4.0.conv2`` -> ``res5.0.conv2``.

    ResNet's ``layer1..layer4`` are stages ``res2..res5``; the ``backbone.`` prefix is dropped.
    Names outside a ResNet (e.g. ``"0"`` in an ``nn.Sequential``) are returned unchanged.
    """
    m = _STAGE_OF_LAYER.match(module_name)
    if m is None:
        return module_name
    return f"res{int(m.group(1)) + 1}.{m.group(2)}"


def find_deformable_convs(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """Every deformable conv of ``model`` in registration (= ResNet forward) order.

    Returns:
        ``[(display name, module)]``, names as :func:`layer_display_name` gives them; the
        model itself counts when it is a deformable conv (named ``"conv"``).
    """
    found = []
    for name, module in model.named_modules():
        if isinstance(module, (DeformConv2d, ModulatedDeformConv2d)):
            found.append((layer_display_name(name) if name else "conv", module))
    return found


@dataclass
class DeformLayerRecord:
    """One deformable conv's geometry and the offsets it used in one forward pass.

    Attributes:
        name: display name, e.g. ``"res5.0.conv2"``.
        kernel_size, stride, padding, dilation: ``(h, w)`` pairs of the conv.
        offset_groups: ``G``.
        input_hw: ``(H_in, W_in)`` of the conv's input map.
        offset: ``(N, 2*G*kh*kw, H_out, W_out)`` float32 on the CPU; for group ``g`` and tap
            ``k = u*kw + v`` channels ``g*2*kh*kw + 2*k`` (dy) and ``+1`` (dx), in input-map
            pixels (torchvision's ``deform_conv2d`` layout).
        mask: ``(N, G*kh*kw, H_out, W_out)`` modulation in [0, 1] (sigmoid applied) for a
            modulated conv, else None.
        input_stride: image pixels per input-map pixel (see the module docstring's frame).

    Tap ``k = (u, v)`` of output ``(i, j)`` samples the input map at
    ``y = i*stride_h - pad_h + u*dil_h + dy``, ``x = j*stride_w - pad_w + v*dil_w + dx``.
    """

    name: str
    kernel_size: Tuple[int, int]
    stride: Tuple[int, int]
    padding: Tuple[int, int]
    dilation: Tuple[int, int]
    offset_groups: int
    input_hw: Tuple[int, int]
    offset: torch.Tensor
    mask: Optional[torch.Tensor] = None
    input_stride: int = 1

    def __post_init__(self):
        kh, kw = self.kernel_size
        if self.offset.dim() != 4 or self.offset.shape[1] != 2 * self.offset_groups * kh * kw:
            raise ValueError(
                f"DeformLayerRecord {self.name!r}: offset must have shape (N, 2*G*kh*kw, H_out, "
                f"W_out) = (N, {2 * self.offset_groups * kh * kw}, H_out, W_out), got "
                f"{tuple(self.offset.shape)}")
        if self.mask is not None and tuple(self.mask.shape) != (
                self.offset.shape[0], self.offset_groups * kh * kw, *self.offset.shape[2:]):
            raise ValueError(
                f"DeformLayerRecord {self.name!r}: mask must have shape (N, G*kh*kw, H_out, "
                f"W_out) matching offset {tuple(self.offset.shape)}, got {tuple(self.mask.shape)}")
        if not isinstance(self.input_stride, int) or self.input_stride < 1:
            raise ValueError(f"DeformLayerRecord {self.name!r}: input_stride must be a positive "
                             f"int, got {self.input_stride!r}")

    @property
    def num_taps(self) -> int:
        """``kh * kw``."""
        return self.kernel_size[0] * self.kernel_size[1]

    @property
    def output_hw(self) -> Tuple[int, int]:
        """``(H_out, W_out)``."""
        return int(self.offset.shape[2]), int(self.offset.shape[3])

    @property
    def output_stride(self) -> int:
        """Image pixels per output-map pixel (``input_stride * stride``; equal h and w)."""
        return self.input_stride * self.stride[0]

    @property
    def modulated(self) -> bool:
        return self.mask is not None


def infer_stride(image_hw: Tuple[int, int], map_hw: Tuple[int, int], what: str) -> int:
    """The stride ``s`` at which a map of ``map_hw`` covers an image of ``image_hw``.

    Exact when the image is a multiple of ``s`` (the detector pads to ``size_divisibility``);
    otherwise the ``s`` with ``ceil(image / s) == map`` on both axes (a stride-``s`` ResNet
    rounds sizes up).

    Raises:
        ValueError: no single stride fits both axes (names ``what``).
    """
    (ih, iw), (mh, mw) = image_hw, map_hw
    if mh > 0 and mw > 0 and ih % mh == 0 and iw % mw == 0 and ih // mh == iw // mw:
        return ih // mh
    for s in range(1, max(ih, iw) + 1):
        if -(-ih // s) == mh and -(-iw // s) == mw:
            return s
    raise ValueError(f"cannot tell the stride of {what}: a {mh}x{mw} map does not tile the "
                     f"{ih}x{iw} input image at one integer stride")


class OffsetCapture:
    """Context manager recording every deformable conv's offsets during forward passes.

    Hooks each deformable conv's ``conv_offset`` (its output is the offset field or, with
    ``offset_mode="affine"``, the affine parameters, plus the mask logits for a modulated
    conv; a record holds the per-tap offsets and the mask the op received) and the module
    that receives the image (``model.backbone`` when there is one, else ``model``) to learn
    the image size, from which each layer's input stride follows. Each forward pass replaces
    the records of the last.

        with OffsetCapture(model) as cap:
            model(images)
        cap.records["res5.0.conv2"].offset   # (N, 2*G*9, H, W)

    Args:
        model: a detector (its backbone is searched), a backbone, or any module containing
            deformable convs.

    Attributes:
        records: ``{display name: DeformLayerRecord}`` in forward order, filled by the
            last forward pass.
        image_hw: ``(H, W)`` of the (padded) image tensor of the last forward pass.
        layer_names: the deformable convs found, in forward order.

    Raises:
        ValueError: ``model`` has no deformable conv.
    """

    def __init__(self, model: nn.Module):
        self.layers = find_deformable_convs(model)
        if not self.layers:
            raise ValueError("the model has no deformable convolution (DeformConv2d or "
                             "ModulatedDeformConv2d; for a ResNet, model.backbone.deform_stages "
                             "is empty), so there are no offsets to capture")
        self.layer_names = [n for n, _ in self.layers]
        self._image_module = getattr(model, "backbone", model)
        self._handles = []
        self._raw: Dict[str, Tuple[Tuple[int, int], torch.Tensor]] = {}
        self.image_hw: Optional[Tuple[int, int]] = None
        self.records: Dict[str, DeformLayerRecord] = {}

    def __enter__(self) -> "OffsetCapture":
        self._handles.append(self._image_module.register_forward_pre_hook(self._on_image))
        for name, module in self.layers:
            self._handles.append(module.conv_offset.register_forward_hook(
                lambda mod, inputs, out, name=name, conv=module:
                    self._on_offsets(name, conv, inputs[0], out)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def _on_image(self, module, args) -> None:
        image = args[0] if args else None
        if isinstance(image, torch.Tensor) and image.dim() == 4:
            self.image_hw = (int(image.shape[2]), int(image.shape[3]))
            self._raw = {}
            self.records = {}

    def _on_offsets(self, name: str, conv: nn.Module, x: torch.Tensor, out: torch.Tensor) -> None:
        if self.image_hw is None:
            raise RuntimeError("OffsetCapture saw a deformable conv run before any image: call "
                               "the model (or its backbone) on a (N, 3, H, W) tensor")
        # The module's own conversion gives what the op received: per-tap offsets (affine
        # parameters expanded) and the sigmoid mask; in float32 even inside an autocast region.
        with torch.autocast(out.device.type, enabled=False):
            offset, mask = conv.offset_and_mask(out.detach().float())
        in_hw = (int(x.shape[2]), int(x.shape[3]))
        self.records[name] = DeformLayerRecord(
            name=name, kernel_size=tuple(conv.kernel_size), stride=tuple(conv.stride),
            padding=tuple(conv.padding), dilation=tuple(conv.dilation),
            offset_groups=conv.offset_groups, input_hw=in_hw,
            offset=offset.cpu().contiguous(),
            mask=None if mask is None else mask.cpu().contiguous(),
            input_stride=infer_stride(self.image_hw, in_hw, f"the input of {name}"))

    def ordered_records(self) -> List[DeformLayerRecord]:
        """The records of the last forward pass, in forward order."""
        missing = [n for n in self.layer_names if n not in self.records]
        if missing:
            raise RuntimeError(f"no offsets were recorded for {missing}: run one forward pass "
                               "inside the `with OffsetCapture(model)` block first")
        return [self.records[n] for n in self.layer_names]

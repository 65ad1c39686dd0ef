"""What loading did, the fill-fraction check, and the log lines that tell the user."""
import logging
from dataclasses import dataclass, field
from typing import Iterable, List, Optional, Sequence

from dcn_det.weights.source import WeightsError

logger = logging.getLogger("dcn_det.weights")

# Below this fraction of the backbone's tensors filled, loading fails (the default of
# ``model.backbone.pretrained_min_fill``): a file of another format or network maps onto
# almost nothing, and training would start from random weights without anyone noticing.
DEFAULT_MIN_FILL = 0.5


class FillError(WeightsError):
    """Too few of the model's tensors got a value from the file."""


@dataclass
class LoadReport:
    """What ``load_pretrained`` did.

    Attributes:
        path: the file loaded.
        format: the format it was read as (``dcn_det.weights.FORMATS``).
        loaded: model keys that received a value.
        missing: model keys the file lacks, other than the expected ones (they keep their
            initialisation; normally empty).
        expected_missing: offset-conv keys (``...conv_offset.*``) the file has no value for
            (every ImageNet file); they stay zero, so the deformable convs start as plain ones.
        unexpected: mapped file keys with no place in the model (e.g. ``layer4.*`` when res5
            is not built, BN statistics when the model uses GroupNorm, offsets of a stage the
            model keeps plain).
        ignored: file keys deliberately skipped: classifiers (``fc.*``), BatchNorm step
            counters the model has no buffer for, optimizer momenta, zero conv biases.
        not_mapped: file keys outside the format's backbone name table (detector heads,
            necks), in the file's own names; never loaded.
        offset_mismatch: offset-conv keys whose shapes differ from the model's (other offset
            groups, modulated vs not, ``affine`` offsets), as ``"key: file (..) model (..)"``;
            they keep their zero initialisation.
        filled: how many of the model's fillable tensors got a value.
        fillable: the model's tensors a file can fill: all but offset convs and step counters.
        flipped_bgr: the file's stem took BGR input and was converted to RGB.
        pixel_mean, pixel_std: the RGB normalisation (0-255 scale) the weights were trained
            with, when the format fixes it, else None.
        reinitialised: whole-detector loads only: the model's class-specific tensors that
            keep their fresh initialisation because the file has another class count.
        file_num_classes: whole-detector loads only: the file's K, when it says.
        notes: whole-detector loads only: how the format's layers were mapped, what has no
            counterpart.
    """

    path: str
    format: str = "torchvision"
    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    expected_missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    ignored: List[str] = field(default_factory=list)
    not_mapped: List[str] = field(default_factory=list)
    offset_mismatch: List[str] = field(default_factory=list)
    filled: int = 0
    fillable: int = 0
    flipped_bgr: bool = False
    pixel_mean: Optional[tuple] = None
    pixel_std: Optional[tuple] = None
    reinitialised: List[str] = field(default_factory=list)
    file_num_classes: Optional[int] = None
    notes: List[str] = field(default_factory=list)

    @property
    def fill_fraction(self) -> float:
        """``filled / fillable`` (1.0 for a model with nothing fillable)."""
        return self.filled / self.fillable if self.fillable else 1.0


def is_fillable(key: str) -> bool:
    """True for model tensors a pretrained file is expected to provide."""
    return ".conv_offset." not in key and not key.endswith("num_batches_tracked")


def sample_keys(keys: Sequence[str], n: int = 8) -> str:
    keys = list(keys)
    more = f", ... ({len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more if keys else "none"


def check_fill(path: str, fmt: str, filled: int, fillable: int, min_fill: float,
               missing: Iterable[str], file_keys: Iterable[str], what: str,
               setting: str = "model.backbone.pretrained_min_fill") -> None:
    """Raises FillError when ``filled / fillable < min_fill``.

    Args:
        what: what the fraction is of, for the message (e.g. "the model's backbone tensors").
        setting: the config key of ``min_fill``, for the message.
        missing: the unfilled keys (a few are named).
        file_keys: the file's keys (a few are named, to show what the file looks like).
    """
    fraction = filled / fillable if fillable else 1.0
    if fraction >= min_fill:
        return
    raise FillError(
        f"pretrained weights {path!r} read as {fmt!r} filled {filled} of {fillable} of "
        f"{what} ({100 * fraction:.1f}%), under the minimum {100 * min_fill:.0f}% "
        f"({setting}): the file is of another format, network or "
        f"depth. Unfilled: {sample_keys(list(missing))}. File keys: {sample_keys(list(file_keys))}")


def log_report(report: LoadReport, model_stride_in_1x1, file_stride_in_1x1) -> None:
    """Logs the summary, and a warning for each thing the user should look at."""
    logger.info("loaded %d tensors from %s (%s; %d of %d backbone tensors filled, %d "
                "offset-conv tensors stay zero-initialised%s)", len(report.loaded),
                report.path, report.format, report.filled, report.fillable,
                len(report.expected_missing),
                "; stem conv converted BGR->RGB" if report.flipped_bgr else "")
    if report.missing:
        logger.warning("pretrained weights %s lack %d model tensors (kept at init): %s",
                       report.path, len(report.missing), ", ".join(report.missing))
    if report.unexpected:
        logger.warning("pretrained weights %s have %d tensors the model does not use: %s",
                       report.path, len(report.unexpected), ", ".join(report.unexpected))
    if report.offset_mismatch:
        logger.warning("pretrained weights %s: %d offset-conv tensors do not fit the model's "
                       "deformable convs (other offset groups or offset mode) and stay "
                       "zero: %s", report.path, len(report.offset_mismatch),
                       "; ".join(report.offset_mismatch))
    if report.not_mapped:
        logger.info("pretrained weights %s: %d tensors outside the backbone are not loaded: %s",
                    report.path, len(report.not_mapped), sample_keys(report.not_mapped))
    warn_stride_layout(report, model_stride_in_1x1, file_stride_in_1x1)


def warn_stride_layout(report: LoadReport, model_stride_in_1x1, file_stride_in_1x1) -> None:
    """Warns when the model's Bottleneck layout differs from the file's (both known)."""
    if file_stride_in_1x1 is not None and model_stride_in_1x1 is not None \
            and bool(model_stride_in_1x1) != bool(file_stride_in_1x1):
        file_layout = ("MSRA/Caffe (stride on the 1x1 conv)" if file_stride_in_1x1
                       else "torchvision (stride on the 3x3 conv)")
        logger.warning("model has stride_in_1x1=%s but %s-format weights %s have the %s "
                       "layout; set stride_in_1x1: %s to match them", bool(model_stride_in_1x1),
                       report.format, report.path, file_layout,
                       str(bool(file_stride_in_1x1)).lower())


def check_pixel_stats(report: LoadReport, pixel_mean: Optional[Sequence[float]],
                      pixel_std: Optional[Sequence[float]]) -> bool:
    """Warns when the model normalises input unlike the weights were trained.

    Args:
        report: with ``pixel_mean`` / ``pixel_std`` of the weights (None: the format does not
            say, nothing is checked).
        pixel_mean, pixel_std: the model's (``model.pixel_mean/std``, RGB, 0-255 scale).

    Returns:
        True when they agree (within 0.5 per value) or nothing could be compared.
    """
    pairs = [("pixel_mean", report.pixel_mean, pixel_mean),
             ("pixel_std", report.pixel_std, pixel_std)]
    wrong = [(name, file, model) for name, file, model in pairs
             if file is not None and model is not None
             and any(abs(a - b) > 0.5 for a, b in zip(file, model))]
    for name, file, model in wrong:
        logger.warning("model.%s is %s but the %s weights %s were trained with %s (RGB, "
                       "0-255 scale); set model.%s: %s", name, list(model), report.format,
                       report.path, list(file), name, list(file))
    return not wrong

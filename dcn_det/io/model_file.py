"""Model files: the inference-file format, reading a model file, building the model in it.

An *inference file* is a ``torch.save``'d dict, sealed with its SHA-256 like a checkpoint
(:mod:`dcn_det.io.checksum`), that loads with ``weights_only=True``::

    {"format": "dcn_det.inference", "version": 1,
     "model": state_dict,            # float32, or float16 when exported with fp16=True
     "config": dict,                 # the resolved Config as plain dicts (Config.to_dict())
     "class_names": [str] * K}       # label k is class_names[k]

It is what :class:`dcn_det.Predictor` and ``tools/infer.py`` load; they, ``tools/test.py`` and
the analysis tools also accept a training checkpoint, which has the same "model" and "config"
entries (:func:`read_model_file` reads both).
"""
import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from dcn_det.config import Config, ConfigError, config_from_dict
from dcn_det.io.checkpoint import CheckpointError, atomic_save, load_file

logger = logging.getLogger(__name__)

FORMAT = "dcn_det.inference"
VERSION = 1


def _check_state_dict(state: Any, where: str) -> Dict[str, torch.Tensor]:
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{where}: 'model' must be a non-empty state dict, got "
                              f"{type(state).__name__}{' (empty)' if state == {} else ''}")
    for k, v in state.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{where}: 'model' must map parameter names to tensors, got "
                                  f"{k!r}: {type(v).__name__}")
    return state


def _check_class_names(names: Any, num_classes: int, where: str) -> List[str]:
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise CheckpointError(f"{where}: class_names must be a list of strings, got {names!r}")
    if len(names) != num_classes:
        raise CheckpointError(f"{where}: class_names has {len(names)} names but the model has "
                              f"model.num_classes={num_classes}")
    return list(names)


def config_of(raw: Any, where: str) -> Config:
    """The validated :class:`Config` of a file's stored ``"config"`` dict.

    Raises:
        CheckpointError: naming ``where`` when it is not a dict or does not validate.
    """
    if not isinstance(raw, dict):
        raise CheckpointError(f"{where}: 'config' must be the resolved config as a dict, got "
                              f"{type(raw).__name__}")
    try:
        return config_from_dict(raw, source=where)
    except ConfigError as e:
        raise CheckpointError(f"{where}: its config does not fit this version of dcn_det: {e}") \
            from e


def default_class_names(num_classes: int, where: str) -> List[str]:
    """``"class_0" .. "class_{K-1}"`` for a checkpoint that stores no class names, with a warning.

    Reading a model file never builds a dataset: the deployment machine may not have it, and
    its classes may not be the model's. Checkpoints written by ``tools/train.py`` store the
    training set's names; pass ``class_names`` to :func:`export_inference_file` otherwise.
    """
    logger.warning("%s stores no class names; using class_0..class_%d", where, num_classes - 1)
    return [f"class_{i}" for i in range(num_classes)]


def export_inference_file(checkpoint: Union[str, Dict[str, Any]], output: str, fp16: bool = False,
                          class_names: Optional[Sequence[str]] = None) -> str:
    """Writes an inference file (weights, resolved config, class names) atomically.

    Args:
        checkpoint: a training checkpoint (path or the loaded dict) with ``"model"`` (state
            dict) and ``"config"`` (resolved config dict); optional ``"class_names"``.
        output: the file to write (folders are created).
        fp16: store floating-point tensors as float16 (half the size; the Predictor converts
            them back to the model's float32 when loading). Integer buffers are kept.
        class_names: the K class names in label order. Defaults to the checkpoint's
            ``"class_names"``, else ``class_0 .. class_{K-1}`` (:func:`default_class_names`).

    Returns:
        ``output``.

    Raises:
        CheckpointError: the checkpoint is unreadable, unsafe, or lacks/has malformed entries
            (the message names the file).
    """
    where = repr(checkpoint) if isinstance(checkpoint, str) else "checkpoint dict"
    ckpt = load_file(checkpoint) if isinstance(checkpoint, str) else checkpoint
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{where}: expected a checkpoint dict, got {type(ckpt).__name__}")
    for key in ("model", "config"):
        if key not in ckpt:
            raise CheckpointError(f"{where}: missing key {key!r} (has {sorted(map(str, ckpt))}); "
                                  "a training checkpoint holds 'model' and 'config'")
    state = _check_state_dict(ckpt["model"], where)
    cfg = config_of(ckpt["config"], where)
    k = cfg.model.num_classes
    if class_names is None:
        class_names = ckpt.get("class_names")
    if class_names is None:
        class_names = default_class_names(k, where)
    names = _check_class_names(class_names, k, where)
    # Half only floating tensors: integer buffers (e.g. BN's num_batches_tracked) must stay exact.
    weights = {n: (t.detach().cpu().half() if fp16 and t.is_floating_point() else t.detach().cpu())
               for n, t in state.items()}
    atomic_save({"format": FORMAT, "version": VERSION, "model": weights,
                 "config": cfg.to_dict(), "class_names": names}, output, what="inference file")
    return output


def load_inference_file(path: str) -> Dict[str, Any]:
    """Loads and validates an inference file (``weights_only=True``: nothing can execute).

    Returns:
        The dict described in the module docstring, with ``"config"`` replaced by a validated
        :class:`dcn_det.config.Config`.

    Raises:
        CheckpointError: missing, truncated, corrupt, unsafe, of another format or a newer
            version, or with malformed entries; the message names ``path``.
    """
    return _validate_inference(load_file(path, "inference file"), repr(path))


def _validate_inference(obj: Dict[str, Any], where: str) -> Dict[str, Any]:
    if obj.get("format") != FORMAT:
        raise CheckpointError(f"{where} is not a dcn_det inference file: 'format' is "
                              f"{obj.get('format')!r}, expected {FORMAT!r}")
    if obj.get("version") != VERSION:
        raise CheckpointError(f"{where} has inference-file version {obj.get('version')!r}; this "
                              f"dcn_det reads version {VERSION}")
    for key in ("model", "config", "class_names"):
        if key not in obj:
            raise CheckpointError(f"{where}: missing key {key!r}")
    cfg = config_of(obj["config"], where)
    return {**obj, "model": _check_state_dict(obj["model"], where), "config": cfg,
            "class_names": _check_class_names(obj["class_names"], cfg.model.num_classes, where)}


def read_model_file(path: str) -> Tuple[Config, Dict[str, torch.Tensor], List[str]]:
    """Reads an inference file or a training checkpoint.

    Returns:
        ``(config, state_dict, class_names)``; for a training checkpoint without class names,
        see :func:`default_class_names`.

    Raises:
        CheckpointError: naming ``path`` (see :func:`load_inference_file`).
    """
    obj = load_file(path, "model file")
    if "format" in obj:
        info = _validate_inference(obj, repr(path))
        return info["config"], info["model"], info["class_names"]
    where = repr(path)
    for key in ("model", "config"):
        if key not in obj:
            raise CheckpointError(f"{where} is neither an inference file nor a training "
                                  f"checkpoint: missing key {key!r} (has {sorted(map(str, obj))})")
    cfg = config_of(obj["config"], where)
    names = obj.get("class_names") or default_class_names(cfg.model.num_classes, where)
    return (cfg, _check_state_dict(obj["model"], where),
            _check_class_names(names, cfg.model.num_classes, where))


def build_inference_model(cfg: Config, state_dict: Dict[str, torch.Tensor],
                          device: Union[str, torch.device] = "cpu") -> nn.Module:
    """Builds ``build_model(cfg.model)``, loads the weights strictly, returns it in eval mode.

    float16 weights (an fp16 inference file) are converted to the model's float32 by
    ``load_state_dict``.

    Raises:
        RuntimeError: the weights do not match the architecture the config describes
            (missing/unexpected keys or wrong shapes, as listed by ``load_state_dict``).
    """
    from dcn_det.modeling import build_model

    model = build_model(cfg.model, with_pretrained=False)  # every weight comes from the file
    model.load_state_dict(state_dict, strict=True)
    return model.to(device).eval()

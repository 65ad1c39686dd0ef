"""Resuming a run: which checkpoint, whether it belongs to this run, and restoring its state.

A checkpoint fits a run when it is a training checkpoint (not an inference file) and its
stored ``model`` config equals the run's: solver, data and runtime settings may change
between runs (a longer schedule, another output folder), the architecture may not.
"""
import logging
from typing import Any, Dict, Iterator, List, Optional, Tuple

from dcn_det.config import Config
from dcn_det.engine.rng import set_rng_state
from dcn_det.io.checkpoint import CheckpointError, Checkpointer, load_file
from dcn_det.io.model_file import FORMAT, config_of

logger = logging.getLogger("dcn_det")

TRAINING_KEYS = ("model", "optimizer", "scheduler", "iteration", "rng", "config")
_SHOWN_DIFFERENCES = 6
_START_OVER = "pass --resume none or another --output-dir to start over"


def _flatten(tree: Any, prefix: str) -> Iterator[Tuple[str, Any]]:
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _flatten(v, f"{prefix}.{k}")
    else:
        yield prefix, tree


# Keys that only say where the initial weights came from: a resumed run reads none of them
# (the checkpoint's weights win), so a moved or renamed file must not block resuming.
INIT_ONLY_KEYS = frozenset({
    "model.weights", "model.weights_format", "model.weights_min_fill",
    "model.backbone.pretrained", "model.backbone.pretrained_format",
    "model.backbone.pretrained_min_fill",
})


def model_config_differences(stored: Config, current: Config) -> List[str]:
    """``"model.backbone.depth: 50 in the checkpoint, 18 here"`` for every ``model`` key whose
    value differs (keys sorted), apart from the weight-initialisation keys (``INIT_ONLY_KEYS``)."""
    a = {k: v for k, v in _flatten(stored.to_dict()["model"], "model") if k not in INIT_ONLY_KEYS}
    b = {k: v for k, v in _flatten(current.to_dict()["model"], "model") if k not in INIT_ONLY_KEYS}
    missing = object()
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, missing), b.get(key, missing)
        if va != vb:
            show = (lambda v: "absent" if v is missing else repr(v))
            out.append(f"{key}: {show(va)} in the checkpoint, {show(vb)} here")
    return out


def check_resumable(ckpt: Dict[str, Any], cfg: Config, path: str) -> None:
    """Refuses a file that cannot continue this run.

    Raises:
        CheckpointError: one line naming ``path`` and why: an inference file, a checkpoint
            without the training state (the missing keys), or another model config (the
            differing keys with both values).
    """
    where = f"cannot resume from {path!r}"
    if ckpt.get("format") == FORMAT:
        raise CheckpointError(f"{where}: it is an inference file (weights, config and class "
                              "names from tools/export.py), not a training checkpoint; resume "
                              "from a model_XXXXXXX.pth or model_final.pth of a training run")
    missing = [k for k in TRAINING_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{where}: it is not a training checkpoint: missing "
                              f"{', '.join(map(repr, missing))}")
    diffs = model_config_differences(config_of(ckpt["config"], repr(path)), cfg)
    if diffs:
        shown = "; ".join(diffs[:_SHOWN_DIFFERENCES])
        more = f"; and {len(diffs) - _SHOWN_DIFFERENCES} more" \
            if len(diffs) > _SHOWN_DIFFERENCES else ""
        raise CheckpointError(f"{where}: it was trained with another model config "
                              f"({len(diffs)} key(s) differ: {shown}{more}); {_START_OVER}")


def load_resume_state(checkpointer: Checkpointer, resume: str,
                      cfg: Config) -> Optional[Dict[str, Any]]:
    """The checkpoint to continue from, checked against ``cfg``.

    Args:
        checkpointer: the run's checkpoint folder.
        resume: ``"auto"`` (the newest checkpoint that verifies, skipping damaged ones with a
            warning), ``"none"``, or a checkpoint path (used as given, never replaced by
            another file).
        cfg: the run's config.

    Returns:
        The checkpoint dict with ``"_path"`` added, or None (start from iteration 0).

    Raises:
        CheckpointError: the named file is damaged or does not fit the run; every checkpoint
            of the folder is damaged (``"auto"``).
    """
    if resume == "none":
        return None
    if resume == "auto":
        ckpt = checkpointer.load_latest()
        if ckpt is None:
            return None
        path = ckpt["_path"]
    else:
        path = resume
        ckpt = load_file(path)
        ckpt["_path"] = path
    check_resumable(ckpt, cfg, path)
    return ckpt


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())


def resume_from(state: Optional[Dict[str, Any]], model, optimizer, scheduler, scaler) -> int:
    """Loads a checkpoint's model, optimizer, scheduler, scaler and RNG; returns its iteration
    (0 without a checkpoint).

    Raises:
        CheckpointError: naming the file when its weights or optimizer state do not fit.
    """
    if state is None:
        return 0
    path = state["_path"]
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise CheckpointError(f"cannot resume from {path!r}: its weights do not fit the model: "
                              f"{_one_line(e)}") from e
    try:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    except (ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"cannot resume from {path!r}: its optimizer or scheduler state "
                              f"does not fit this run's: {_one_line(e)}") from e
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    # Only rank 0 writes checkpoints; every rank restores its RNG from it (the data order
    # does not depend on it: the samplers are seeded by iteration, see data/samplers.py).
    set_rng_state(state["rng"])
    logger.info("resumed from %s at iteration %d", path, int(state["iteration"]))
    return int(state["iteration"])

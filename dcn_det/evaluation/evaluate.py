"""Evaluating a model on a config's test split: in memory after training, or from a file.

``tools/test.py`` is a thin wrapper around :func:`evaluate_checkpoint`; training calls
:func:`evaluate` at its ``eval_period`` and at the end.
"""
import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from dcn_det import distributed as du
from dcn_det.config import Config
from dcn_det.data.base import DatasetError
from dcn_det.data.build import build_test_loader
from dcn_det.evaluation.build import build_evaluator
from dcn_det.evaluation.class_map import model_to_dataset_labels
from dcn_det.evaluation.inference import inference_on_dataset
from dcn_det.evaluation.metrics_file import append_metrics
from dcn_det.io.model_file import build_inference_model, read_model_file
from dcn_det.log import logs_traceback, setup_logging

logger = logging.getLogger("dcn_det")

# (config, state dict, class names): what read_model_file returns
ModelFile = Tuple[Config, Dict[str, torch.Tensor], List[str]]


def evaluate(cfg: Config, model: torch.nn.Module, device: torch.device,
             output_dir: Optional[str], class_names: Optional[Sequence[str]] = None,
             model_source: str = "the model") -> Dict[str, Any]:
    """Runs inference over ``cfg.data.test`` and returns the metrics (``{}`` off rank 0).

    Args:
        cfg: data, test and runtime settings (``cfg.model.num_classes`` when ``class_names``
            is None).
        model: the detector.
        device: where it runs.
        output_dir: where the evaluator writes ``detections.json``; None = nowhere.
        class_names: the model's classes in label order; its detections are matched with the
            test set's classes by name (``class_map``). None = only the count is checked.
        model_source: how errors name the model (its file).

    Raises:
        DatasetError: the test set's classes cannot be matched with the model's.
    """
    loader = build_test_loader(cfg.data, du.get_rank(), du.get_world_size())
    dataset = loader.dataset
    label_map = None
    if class_names is not None:
        label_map = model_to_dataset_labels(class_names, dataset.class_names, model_source,
                                            dataset.source)
    elif len(dataset.class_names) != cfg.model.num_classes:
        raise DatasetError(f"the test set {dataset.source} has {len(dataset.class_names)} "
                           f"classes {list(dataset.class_names)} but the model has "
                           f"model.num_classes={cfg.model.num_classes}")
    evaluator = build_evaluator(cfg.test.evaluator, dataset, output_dir)
    return inference_on_dataset(model, loader, evaluator, device,
                                progress=du.is_main_process(), label_map=label_map)


def write_metrics(metrics: Dict[str, Any], output_dir: str, iteration: Optional[int] = None,
                  checkpoint: Optional[str] = None) -> str:
    """Appends one evaluation as a line of ``output_dir/metrics.json`` (atomically; see
    :mod:`dcn_det.evaluation.metrics_file`) and returns the path."""
    return append_metrics(output_dir, metrics, iteration, checkpoint=checkpoint)


@logs_traceback("evaluation")
def evaluate_checkpoint(cfg: Config, path: str,
                        model_file: Optional[ModelFile] = None) -> Dict[str, Any]:
    """``tools/test.py``: evaluates the model in ``path`` on ``cfg.data.test``.

    The model's architecture comes from the file's stored config (so a checkpoint is always
    rebuilt as it was trained); data, test and runtime settings come from ``cfg``. The
    file's ``class_names`` are matched with the test set's by name, so a COCO file that gives
    the same classes other ids evaluates correctly and one with other classes is an error.
    Writes ``detections.json`` (COCO) to ``cfg.runtime.output_dir``, appends a line
    ``{"iteration": null, "checkpoint": path, ...}`` to its ``metrics.json`` (replacing an
    earlier line for the same file) and logs the AP table. An exception is logged with its
    traceback to ``test_log.txt`` (only) before it propagates. ``model_file``: what
    :func:`read_model_file` returned for ``path``, when the caller has read it already
    (``tools/test.py`` without ``--config``).
    """
    device = du.select_device(cfg.runtime.device)
    du.init_from_env(device)
    out = cfg.runtime.output_dir
    os.makedirs(out, exist_ok=True)
    setup_logging(os.path.join(out, "test_log.txt"), du.get_rank())
    # the architecture comes from the file (trained config), the data/test settings from cfg
    file_cfg, state, class_names = model_file or read_model_file(path)
    model = build_inference_model(file_cfg, state, device)
    metrics = evaluate(cfg, model, device, out, class_names=class_names, model_source=repr(path))
    if du.is_main_process():
        write_metrics(metrics, out, checkpoint=os.fspath(path))
        logger.info("results of %s:\n%s", path, format_metrics(metrics))
        logger.info("wrote %s", os.path.join(out, "metrics.json"))
    return metrics


def format_metrics(metrics: Dict[str, Any]) -> str:
    """A plain-text AP table (overall, then per class) of COCO or VOC metrics."""
    lines = []
    if "bbox" in metrics:
        names = list(metrics["bbox"])
        lines.append("  ".join(f"{n:>6}" for n in names))
        lines.append("  ".join(f"{metrics['bbox'][n]:6.2f}" for n in names))
        per_class = metrics.get("bbox_per_class", {})
        if per_class:
            lines.append(f"{'class':<20} {'AP':>6}")
            lines += [f"{k:<20} {v:6.2f}" for k, v in per_class.items()]
    if "voc" in metrics:
        v = metrics["voc"]
        lines.append(f"mAP {v['mAP']:.2f}   mAP (VOC07 11-point) {v['mAP_07']:.2f}")
        lines.append(f"{'class':<20} {'AP':>6} {'AP_07':>6}")
        lines += [f"{k:<20} {c['AP']:6.2f} {c['AP_07']:6.2f}" for k, c in v["per_class"].items()]
    return "\n".join(lines)

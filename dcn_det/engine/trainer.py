"""Builds everything a run needs from the config and calls the training loop.

``tools/train.py`` is a thin wrapper around :func:`train`.
"""
import contextlib
import json
import logging
import os
import signal
import time
from typing import Any, Dict, Optional

import torch
from torch.nn.parallel import DistributedDataParallel

from dcn_det.config import Config, dump
from dcn_det.data.build import build_train_loader
from dcn_det import distributed as du
from dcn_det.io.atomic import write_text
from dcn_det.io.checkpoint import Checkpointer
from dcn_det.engine.logging import MetricLogger
from dcn_det.engine.optim import build_lr_scheduler, build_optimizer
from dcn_det.engine.resume import load_resume_state, resume_from
from dcn_det.engine.rng import get_rng_state, seed_all
from dcn_det.engine.train_loop import SignalFlag, StopRequested, run_step
from dcn_det.evaluation.evaluate import evaluate, write_metrics
from dcn_det.log import setup_logging
from dcn_det.modeling import build_model

logger = logging.getLogger("dcn_det")


def checkpoint_state(cfg: Config, iteration: int, model, optimizer, scheduler, scaler,
                     class_names) -> Dict[str, Any]:
    """Everything a resumed run needs, as plain containers (loads with weights_only=True)."""
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else {},
            "iteration": iteration, "rng": get_rng_state(), "config": cfg.to_dict(),
            "class_names": list(class_names)}


def log_eval_metrics(writer, metrics: Dict[str, Any], iteration: int) -> None:
    """Writes the scalar box metrics of an evaluation to TensorBoard (rank 0 only)."""
    if writer is None:
        return
    for k, v in metrics.get("bbox", metrics.get("voc", {})).items():
        if isinstance(v, float):
            writer.add_scalar(f"eval/{k}", v, iteration)


def _finished_run(out: str, start_iter: int, max_iter: int,
                  final_eval: bool) -> Optional[Dict[str, Any]]:
    """A run resumed at or past ``solver.max_iter``: nothing is left to train.

    Returns:
        The run's final metrics (``{}`` without them) when it is complete: it is not trained
        or evaluated again, and one line says so, where the final model is and how to train
        again. None when only the final evaluation is missing (the run stopped during it):
        the caller evaluates.
    """
    metrics_path = os.path.join(out, "metrics.json")
    if final_eval and not os.path.isfile(metrics_path):
        logger.info("training finished (iteration %d of %d) but its final evaluation did not: "
                    "evaluating only", start_iter, max_iter)
        return None
    final = os.path.join(out, "checkpoints", "model_final.pth")
    where = final if os.path.isfile(final) else "the checkpoint resumed from"
    logger.warning("%s holds a finished run (iteration %d of solver.max_iter=%d): nothing to do. "
                   "The final model is %s. To train again, pass --resume none (starts over in "
                   "this folder) or another --output-dir.", out, start_iter, max_iter, where)
    if os.path.isfile(metrics_path):
        with open(metrics_path, encoding="utf-8") as f:
            return json.load(f)
    return {}


def train(cfg: Config, resume: str = "auto", final_eval: bool = True) -> Dict[str, Any]:
    """Trains ``cfg`` in ``cfg.runtime.output_dir``; returns the final metrics.

    Build, resume, then the loop: one :func:`run_step` per iteration and a visible ``if``
    block for logging, checkpoints, periodic evaluation and signals; then the final
    checkpoint and evaluation.

    Args:
        cfg: the resolved config.
        resume: ``"auto"`` (newest checkpoint in the output directory that verifies, if
            any), ``"none"`` (start over) or a checkpoint path (see
            :func:`dcn_det.engine.resume.load_resume_state`).
        final_eval: evaluate on ``cfg.data.test`` after the last step; off when the caller
            evaluates the exported model itself (``tools/train.py --no-eval``).

    Returns:
        The final evaluation metrics (also written to ``output_dir/metrics.json``); ``{}``
        on ranks other than 0 and without ``final_eval``.

    Raises:
        CheckpointError: the checkpoint to resume from is damaged or belongs to another model
            config (or, with ``"auto"``, every checkpoint in the folder is damaged).
        WriteError: a checkpoint or the config could not be written (e.g. disk full).
        NonFiniteLossError: a loss became NaN or infinite (on any rank).
        StopRequested: SIGTERM/SIGINT, after the checkpoint of the last finished iteration.
    """
    device = du.select_device(cfg.runtime.device)
    du.init_from_env(device)
    rank, world = du.get_rank(), du.get_world_size()
    out = cfg.runtime.output_dir
    os.makedirs(out, exist_ok=True)
    setup_logging(os.path.join(out, "log.txt"), rank)
    if cfg.runtime.deterministic:
        torch.use_deterministic_algorithms(True)
    seed_all(cfg.runtime.seed + rank)

    model = build_model(cfg.model).to(device)
    optimizer = build_optimizer(model, cfg.solver)
    scheduler = build_lr_scheduler(optimizer, cfg.solver)
    scaler = torch.amp.GradScaler("cuda") if cfg.solver.amp and device.type == "cuda" else None
    checkpointer = Checkpointer(out, cfg.solver.keep_last)
    start_iter = resume_from(load_resume_state(checkpointer, resume, cfg), model, optimizer,
                             scheduler, scaler)
    max_iter = cfg.solver.max_iter
    finished = start_iter >= max_iter
    if rank == 0:
        checkpointer.remove_stale_temporaries()
        if not finished:  # a finished run's folder is left as it is
            write_text(os.path.join(out, "config.yaml"), dump(cfg), root=out, what="config")
            logger.info("config:\n%s", dump(cfg))

    metrics = _finished_run(out, start_iter, max_iter, final_eval) if finished else None
    if metrics is not None:
        return metrics
    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(os.path.join(out, "tensorboard"))

    if start_iter < max_iter:
        train_model = model
        if world > 1:
            train_model = DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=False)
        data_iter = build_train_loader(cfg.data, rank, world, seed=cfg.runtime.seed,
                                       start_iter=start_iter, num_classes=cfg.model.num_classes)
        class_names = data_iter.dataset.class_names
        log_period, s = cfg.runtime.log_period, cfg.solver
        metric_logger = MetricLogger(writer, max_iter, start_iter, window=max(log_period, 1))
        parts = (model, optimizer, scheduler, scaler, class_names)  # what a checkpoint holds

        train_model.train()
        with SignalFlag() as stop, contextlib.closing(data_iter):
            for it in range(start_iter, max_iter):
                done = it + 1
                t0 = time.perf_counter()
                batch = next(data_iter)
                data_time = time.perf_counter() - t0
                step = run_step(train_model, batch, optimizer, scheduler, iteration=it,
                                device=device, amp=s.amp, scaler=scaler,
                                clip_grad_norm=s.clip_grad_norm)
                metric_logger.update(step.losses, data_time, time.perf_counter() - t0)

                if rank == 0 and log_period and (done % log_period == 0 or done == max_iter):
                    metric_logger.log(it, step.lr)
                if rank == 0 and s.checkpoint_period and done % s.checkpoint_period == 0 \
                        and done < max_iter:
                    checkpointer.save(f"model_{it:07d}.pth", checkpoint_state(cfg, done, *parts))
                if cfg.test.eval_period and done % cfg.test.eval_period == 0 and done < max_iter:
                    log_eval_metrics(writer, evaluate(cfg, model, device, None), done)
                    train_model.train()
                if du.any_true(stop.signum is not None, device):
                    signum = stop.signum or signal.SIGTERM
                    if rank == 0:
                        path = checkpointer.save(f"model_{it:07d}.pth",
                                                 checkpoint_state(cfg, done, *parts))
                        logger.warning("signal %d: saved %s at iteration %d, exiting", signum,
                                       path, done)
                    raise StopRequested(128 + int(signum))
        if rank == 0:
            checkpointer.save("model_final.pth", checkpoint_state(cfg, max_iter, *parts))

    du.barrier()
    metrics = evaluate(cfg, model, device, out) if final_eval else {}
    if rank == 0:
        if final_eval:
            logger.info("final metrics written to %s", write_metrics(metrics, out))
            log_eval_metrics(writer, metrics, max_iter)
        writer.close()
    return metrics

"""Builds everything a run needs from the config and calls the training loop.

``tools/train.py`` is a thin wrapper around :func:`train`.
"""
import json
import logging
import os
from typing import Any, Dict, Optional

import torch
from torch.nn.parallel import DistributedDataParallel

from dcn_det.config import Config, dump, save_config
from dcn_det.data.build import build_train_loader
from dcn_det import distributed as du
from dcn_det.io.checkpoint import Checkpointer, load_file
from dcn_det.engine.logging import MetricLogger
from dcn_det.engine.optim import build_lr_scheduler, build_optimizer
from dcn_det.engine.rng import get_rng_state, seed_all, set_rng_state
from dcn_det.engine.train_loop import train_loop
from dcn_det.evaluation.evaluate import evaluate, write_metrics
from dcn_det.log import setup_logging
from dcn_det.modeling import build_model

logger = logging.getLogger("dcn_det")


def _resume_state(checkpointer: Checkpointer, resume: str) -> Optional[Dict[str, Any]]:
    if resume == "none":
        return None
    if resume == "auto":
        return checkpointer.load_latest()
    ckpt = load_file(resume)
    ckpt["_path"] = resume
    return ckpt


def train(cfg: Config, resume: str = "auto") -> Dict[str, Any]:
    """Trains ``cfg`` in ``cfg.runtime.output_dir``; returns the final metrics.

    Args:
        cfg: the resolved config.
        resume: ``"auto"`` (newest valid checkpoint in the output directory, if any),
            ``"none"`` (start over) or a checkpoint path.

    Returns:
        The final evaluation metrics (also written to ``output_dir/metrics.json``); ``{}``
        on ranks other than 0.
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

    start_iter = 0
    state = _resume_state(checkpointer, resume)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        # Only rank 0 writes checkpoints; every rank restores its RNG from it (the data order
        # does not depend on it: the samplers are seeded by iteration, see data/samplers.py).
        set_rng_state(state["rng"])
        start_iter = int(state["iteration"])
        logger.info("resumed from %s at iteration %d", state["_path"], start_iter)
    if rank == 0:
        save_config(cfg, os.path.join(out, "config.yaml"))
        logger.info("config:\n%s", dump(cfg))

    train_model = model
    if world > 1:
        train_model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=False)

    max_iter = cfg.solver.max_iter
    data_iter = None
    class_names = []
    if start_iter < max_iter:
        data_iter = build_train_loader(cfg.data, rank, world, seed=cfg.runtime.seed,
                                       start_iter=start_iter)
        class_names = list(data_iter.dataset.class_names)

    def make_state(iteration: int) -> Dict[str, Any]:
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else {},
                "iteration": iteration, "rng": get_rng_state(), "config": cfg.to_dict(),
                "class_names": class_names}

    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(os.path.join(out, "tensorboard"))

    def periodic_eval(iteration: int) -> Dict[str, Any]:
        metrics = evaluate(cfg, model, device, None)
        if writer is not None:
            for k, v in metrics.get("bbox", metrics.get("voc", {})).items():
                if isinstance(v, float):
                    writer.add_scalar(f"eval/{k}", v, iteration)
        return metrics

    if data_iter is not None:
        try:
            train_loop(model=train_model, data_iter=data_iter, optimizer=optimizer,
                       scheduler=scheduler, make_state=make_state, save=checkpointer.save,
                       evaluate=periodic_eval, start_iter=start_iter, max_iter=max_iter,
                       log_period=cfg.runtime.log_period,
                       checkpoint_period=cfg.solver.checkpoint_period,
                       eval_period=cfg.test.eval_period, device=device, amp=cfg.solver.amp,
                       scaler=scaler, clip_grad_norm=cfg.solver.clip_grad_norm,
                       metric_logger=MetricLogger(writer, max_iter, start_iter,
                                                   window=max(cfg.runtime.log_period, 1)),
                       # the test hook fires on the last rank only, so a distributed run
                       # shows that every rank stops when one sees a non-finite loss
                       inject_nan_at_iter=(cfg.runtime.inject_nan_at_iter
                                           if rank == world - 1 else -1))
        finally:
            data_iter.close()  # stop loader workers now, also after an error or a signal
        if rank == 0:
            checkpointer.save("model_final.pth", make_state(max_iter))
    else:
        logger.info("training already finished (iteration %d of %d); evaluating only",
                    start_iter, max_iter)
        metrics_path = os.path.join(out, "metrics.json")
        if os.path.isfile(metrics_path):
            with open(metrics_path) as f:
                return json.load(f)
    du.barrier()
    metrics = evaluate(cfg, model, device, out)
    if rank == 0:
        write_metrics(metrics, out)
        writer.close()
    return metrics



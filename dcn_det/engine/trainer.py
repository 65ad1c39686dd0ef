"""Builds everything a run needs from the config and calls the training loop.

``tools/train.py`` is a thin wrapper around :func:`train`.
"""
import contextlib
import logging
import os
import signal
import time
from typing import Any, Dict, Optional

import torch
from torch.nn.parallel import DistributedDataParallel

from dcn_det.config import Config, dump
from dcn_det.data.build import build_dataset, build_train_loader
from dcn_det import distributed as du
from dcn_det.io.atomic import write_text
from dcn_det.io.checkpoint import Checkpointer, load_file
from dcn_det.engine.logging import MetricLogger
from dcn_det.engine.eval_logging import EvalImages, log_eval_metrics
from dcn_det.engine.optim import build_lr_scheduler, build_optimizer
from dcn_det.engine.resume import load_resume_state, resume_from
from dcn_det.engine.rng import get_rng_state, seed_all
from dcn_det.engine.train_loop import SignalFlag, StopRequested, run_step
from dcn_det.evaluation.evaluate import evaluate, write_metrics
from dcn_det.evaluation.metrics_file import FILE_NAME as METRICS_FILE
from dcn_det.evaluation.metrics_file import drop_lines_after, read_final_training_metrics
from dcn_det.log import logs_traceback, setup_logging
from dcn_det.modeling import build_model
from dcn_det.weights import load_detector_weights

logger = logging.getLogger("dcn_det")


def checkpoint_state(cfg: Config, iteration: int, model, optimizer, scheduler, scaler,
                     class_names) -> Dict[str, Any]:
    """Everything a resumed run needs, as plain containers (loads with weights_only=True)."""
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else {},
            "iteration": iteration, "rng": get_rng_state(), "config": cfg.to_dict(),
            "class_names": list(class_names)}


def _finished_run(out: str, start_iter: int, max_iter: int,
                  final_eval: bool) -> Optional[Dict[str, Any]]:
    """A run resumed at or past ``solver.max_iter``: nothing is left to train.

    Returns:
        The run's final metrics (its ``metrics.json`` line at ``max_iter``; ``{}`` without one)
        when it is complete: it is not trained or evaluated again, and one line says so, where
        the final model is and how to train again. None when only the final evaluation is
        missing (the run stopped during it): the caller evaluates.
    """
    metrics = read_final_training_metrics(os.path.join(out, METRICS_FILE), max_iter)
    if final_eval and metrics is None:
        logger.info("training finished (iteration %d of %d) but its final evaluation did not: "
                    "evaluating only", start_iter, max_iter)
        return None
    final = os.path.join(out, "checkpoints", "model_final.pth")
    where = final if os.path.isfile(final) else "the checkpoint resumed from"
    logger.warning("%s holds a finished run (iteration %d of solver.max_iter=%d): nothing to do. "
                   "The final model is %s. To train again, pass --resume none (starts over in "
                   "this folder) or another --output-dir.", out, start_iter, max_iter, where)
    return metrics or {}


def _eval_images(cfg: Config, class_names) -> Optional[EvalImages]:
    """The test images drawn to TensorBoard at each evaluation (rank 0), or None when off."""
    if not cfg.test.vis_images:
        return None
    dataset = build_dataset(cfg.data.test, cfg.data, is_train=False)
    return EvalImages(dataset, cfg.test.vis_images, class_names or dataset.class_names,
                      cfg.test.vis_score_thresh)


class RunEvaluation:
    """The evaluations of one run: each result is recorded where :func:`train` documents.

    Args:
        cfg: the run's config (``data.test``, ``test.*`` and ``runtime.output_dir`` are read).
        model: the detector being trained (not the DDP wrapper).
        device: where ``model`` lives.
        writer: the run's TensorBoard ``SummaryWriter`` (None on ranks other than 0).
        rank: this process's rank; only rank 0 writes.
    """

    def __init__(self, cfg: Config, model, device: torch.device, writer, rank: int):
        self.cfg, self.model, self.device, self.writer, self.rank = cfg, model, device, writer, rank
        self._images: Optional[EvalImages] = None
        self._images_built = False

    def __call__(self, iteration: int, output_dir: Optional[str],
                 class_names) -> Dict[str, Any]:
        """Evaluates on ``cfg.data.test``; rank 0 appends the result to ``metrics.json`` and
        writes it (and the drawn test images) to TensorBoard at ``iteration``.

        Args:
            iteration: the number of iterations done when the model is evaluated.
            output_dir: where the evaluator writes its files (None: nowhere).
            class_names: the training set's class names (None when nothing was trained in
                this process; the test set's names are drawn then).

        Returns:
            The evaluation result on rank 0, ``{}`` on other ranks.
        """
        # The test loader draws from torch's RNG; forked, an evaluation leaves the training's
        # random stream as it was, so a run resumed from a checkpoint taken just before an
        # evaluation continues exactly as the uninterrupted run did.
        cuda = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            result = evaluate(self.cfg, self.model, self.device, output_dir)
            if self.rank == 0:
                self._record(result, iteration, class_names)
        return result

    def _record(self, result: Dict[str, Any], iteration: int, class_names) -> None:
        write_metrics(result, self.cfg.runtime.output_dir, iteration)
        log_eval_metrics(self.writer, result, iteration)
        if not self._images_built:  # the drawn images are built once, at the first evaluation
            self._images = _eval_images(self.cfg, class_names)
            self._images_built = True
        if self._images is not None:
            self._images.log(self.writer, self.model, self.device, iteration)
        self.writer.flush()


@logs_traceback("training")
def train(cfg: Config, resume: str = "auto", final_eval: bool = True) -> Dict[str, Any]:
    """Trains ``cfg`` in ``cfg.runtime.output_dir``; returns the final metrics.

    Build, resume, then the loop: one :func:`run_step` per iteration and a visible ``if``
    block for logging, checkpoints, periodic evaluation and signals; then the final
    checkpoint and evaluation. Every evaluation (``test.eval_period`` and the final one) is
    appended as a line to ``output_dir/metrics.json`` and written to TensorBoard
    (:mod:`dcn_det.engine.eval_logging`) at the iteration it measured.

    An exception that ends the run (other than :class:`StopRequested`) is logged with its
    traceback to ``output_dir/log.txt`` only (the console keeps the one line
    ``cli.run_main`` prints), then propagates.

    Args:
        cfg: the resolved config.
        resume: ``"auto"`` (newest checkpoint in the output directory that verifies, if
            any), ``"none"`` (start over) or a checkpoint path (see
            :func:`dcn_det.engine.resume.load_resume_state`).
        final_eval: evaluate on ``cfg.data.test`` after the last step; off when the caller
            evaluates the exported model itself (``tools/train.py --no-eval``).

    Returns:
        The final evaluation metrics (also the last line of ``output_dir/metrics.json``);
        ``{}`` on ranks other than 0 and without ``final_eval``.

    Raises:
        CheckpointError: the checkpoint to resume from is damaged or belongs to another model
            config (or, with ``"auto"``, every checkpoint in the folder is damaged).
        WriteError: a checkpoint or the config could not be written (e.g. disk full).
        WeightsError: ``model.weights`` (read for a run that does not resume) cannot be
            read, does not fit the model or fills under ``model.weights_min_fill``.
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

    checkpointer = Checkpointer(out, cfg.solver.keep_last)
    state = load_resume_state(checkpointer, resume, cfg)
    # A resumed run's weights all come from its checkpoint: the backbone's pretrained file is
    # not read (it may have moved since the run started).
    model = build_model(cfg.model, with_pretrained=state is None).to(device)
    optimizer = build_optimizer(model, cfg.solver)
    scheduler = build_lr_scheduler(optimizer, cfg.solver)
    scaler = torch.amp.GradScaler("cuda") if cfg.solver.amp and device.type == "cuda" else None
    if state is None and cfg.model.weights:
        # Detector weights only initialise a fresh run; a resumed run continues its checkpoint.
        load_detector_weights(model, cfg.model.weights, format=cfg.model.weights_format,
                              min_fill=cfg.model.weights_min_fill,
                              pixel_mean=cfg.model.pixel_mean, pixel_std=cfg.model.pixel_std,
                              read_checkpoint=load_file)
    elif cfg.model.weights:
        logger.info("model.weights %s not loaded: resuming from %s", cfg.model.weights,
                    state["_path"])
    start_iter = resume_from(state, model, optimizer, scheduler, scaler)
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
    if rank == 0 and start_iter < max_iter:
        # The evaluations of later iterations belong to a run this one replaces.
        dropped = drop_lines_after(out, start_iter)
        if dropped:
            logger.info("%s: dropped %d evaluation(s) after iteration %d (recomputed by this "
                        "run)", METRICS_FILE, dropped, start_iter)
    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(os.path.join(out, "tensorboard"))
    class_names = None
    evaluate_and_log = RunEvaluation(cfg, model, device, writer, rank)

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
                    evaluate_and_log(done, None, class_names)
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
    metrics = evaluate_and_log(max_iter, out, class_names) if final_eval else {}
    if rank == 0:
        if final_eval:
            logger.info("final metrics written to %s", os.path.join(out, METRICS_FILE))
        writer.close()
    return metrics

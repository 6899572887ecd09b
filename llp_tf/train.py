"""Runs one training job from a TrainConfig: the phase plan, the callbacks, the fit loop, the final
metrics.

The phases (METHOD.md): a warm-up of `warmup_epochs` (instance recognition, the paper's; or, a
departure, supervised training on the labelled examples alone, after which the bank is refilled from
that network), one propagation at the switch, then LLP with a propagation at every epoch end (method
two_stage: no propagation after the switch, the pseudo-labels stay fixed). --method=supervised trains
every epoch on the labelled examples alone: the baseline, on the same schedule. A rerun with the same workdir resumes from its latest checkpoint
(llp_tf/resume.py, which also holds the faults: signals, non-finite losses, failed writes). Every
epoch's batches come from (seed, epoch) alone, so a resumed run trains on the batches an
uninterrupted one would. What the job builds is llp_tf/experiment.py. No flags here:
`tools/train.py` turns the command line into a TrainConfig.
"""
import os
import time

import keras
import numpy as np
import tensorflow as tf

from llp_tf import console, distribute, evaluation, propagation
from llp_tf.callbacks import (KnnCallback, PropagationCallback, RecordAtEpochEnd, SummaryCallback,
                              pseudo_label_accuracy)
from llp_tf.checkpoints import saved_checkpoints
from llp_tf.config import TrainConfig
from llp_tf.experiment import Experiment
from llp_tf.facts import check_workdir, record_workdir
from llp_tf.resume import (CheckpointCallback, GuardCallback, StopRequest, propagation_history, restore,
                           stop_on_signals)
from llp_tf.workdir import Workdir


class RunFinished(Exception):
    """The workdir holds this run finished (its metrics and the checkpoint of its last epoch): nothing
    was done or written. The message says where its metrics are."""


def train(config: TrainConfig, reevaluate: bool = False) -> dict:
    """Trains (or resumes) the job in config.workdir and returns the final metrics. Nothing is
    written into the workdir before its record is checked against this job (llp_tf/facts.py). A run
    already finished raises RunFinished without touching a file, unless `reevaluate`: then its final
    metrics are computed again from its last checkpoint and rewritten."""
    config = config.resolved()
    started = time.time()
    Workdir(config.workdir).check_writable()  # before the data, which may take long to check
    configure_process(config)
    experiment = Experiment(config)
    workdir = experiment.workdir
    chief = distribute.is_chief(experiment.strategy)  # the other workers of a cluster write no files
    if chief:
        check_workdir(config.workdir, experiment)
    if not reevaluate and is_finished(workdir, config.epochs):
        raise RunFinished(f"{workdir.path} holds this run finished ({config.epochs} epochs): its metrics "
                          f"are in {workdir.metrics}; nothing was changed (--reevaluate computes them "
                          "again, a larger --epochs trains on)")
    workdir.create()  # once the data, the settings and the workdir's record are checked
    if chief:
        record_workdir(config.workdir, experiment)
        workdir.write_config(config)
    resume_at = restore(experiment)
    validation = experiment.eval_dataset()
    # A worker of a cluster stopping alone would leave the others waiting in a collective.
    multi_worker = isinstance(experiment.strategy, tf.distribute.MultiWorkerMirroredStrategy)
    with stop_on_signals(enabled=not multi_worker) as stop_request:
        callbacks, propagator = make_callbacks(experiment, stop_request, resume_at)
        verbose = console.keras_verbose(config)
        num_labelled = int(experiment.selection.is_labelled.sum())
        for phase, first, last in phase_plan(config, resume_at[0]):
            experiment.model.phase = phase
            if chief:
                console.say(console.phase_line(phase, first, last, config, experiment.num_classes,
                                               num_labelled))
            for epoch in range(first, last):
                skip = resume_at[1] if epoch == resume_at[0] else 0
                batches = experiment.train_dataset(epoch, skip, labelled_only=config.labelled_only(phase))
                experiment.model.fit(
                    batches, initial_epoch=epoch, epochs=config.epochs,
                    steps_per_epoch=experiment.steps_per_epoch - skip, validation_data=validation,
                    callbacks=callbacks, verbose=verbose, shuffle=False)
    metrics = final_metrics(experiment, propagator)
    metrics["wall_seconds"] = time.time() - started
    if config.state_dump:
        state, strategy = experiment.model.state, experiment.strategy
        np.savez(config.state_dump, **{name: distribute.local_copies(strategy, getattr(state, name))
                                       for name in ("bank", "labels", "confidences")})
    if chief:
        workdir.write_json(workdir.metrics, metrics)
    return metrics


def is_finished(workdir: Workdir, epochs: int) -> bool:
    """True when `workdir` holds the metrics of a finished run and its newest checkpoint is the end
    of epoch `epochs`."""
    if not os.path.exists(workdir.metrics):
        return False
    saved = saved_checkpoints(workdir.checkpoints, warn=False)
    return bool(saved) and saved[0][1] == (epochs, 0)


def configure_process(config: TrainConfig):
    """The process-wide settings of a job, before it builds anything: dtype policy, op determinism
    and the random seed."""
    if config.mixed_precision:
        keras.mixed_precision.set_dtype_policy(config.mixed_precision)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(config.seed)


def make_callbacks(experiment: Experiment, stop_request=None, resume_at=(0, 0)):
    """(callbacks in epoch-end order: propagate, kNN evaluation, checkpoint, summaries, Keras's epoch
    line, the console's propagation line, guard; the propagation callback or None)."""
    config = experiment.config
    stop_request = stop_request or StopRequest()
    propagator = None
    if config.method != "supervised":
        propagator = PropagationCallback(
            experiment.num_classes, k=config.k, t=config.t, tau=config.tau, use_density=config.use_density,
            include_self=config.density_include_self,
            block_sizes=propagation.BlockSizes(config.propagation_query_rows, config.propagation_key_rows),
            true_labels=experiment.selection.true_labels, first_epoch=config.warmup_epochs,
            repeat=config.method == "llp",
            refresh_bank=experiment.fill_bank if config.refresh_bank else None,
            fill_bank_at_switch=experiment.fill_bank if config.refills_bank_at_switch() else None)
    callbacks = [KnnCallback(experiment.eval_dataset(), k=config.eval_knn_k, tau=config.tau),
                 RecordAtEpochEnd(experiment.progress.warmup_val_top1, "val_top1",
                                  config.warmup_epochs if config.method != "supervised" else None),
                 CheckpointCallback(experiment, propagator)]
    if distribute.is_chief(experiment.strategy):
        callbacks.append(SummaryCallback(experiment.workdir.tensorboard, experiment.num_classes,
                                         experiment.selection.true_labels))
        # Given here, Keras's progress logger ends the epoch's line before the propagation's is printed.
        callbacks += [keras.callbacks.ProgbarLogger(), console.NarrationCallback(propagator)]
    callbacks.append(GuardCallback(experiment, propagator, stop_request, resume_at))
    return ([propagator] if propagator else []) + callbacks, propagator


def phase_plan(config, start_epoch):
    """[(phase, first epoch, end epoch)] still to run from start_epoch."""
    if config.method == "supervised":
        spans = [("supervised", 0, config.epochs)]
    else:
        warmup = "instance" if config.warmup == "instance" else "supervised"
        spans = [(warmup, 0, config.warmup_epochs), ("llp", config.warmup_epochs, config.epochs)]
    return [(phase, max(first, start_epoch), last) for phase, first, last in spans
            if last > max(first, start_epoch)]


def final_metrics(experiment: Experiment, propagator) -> dict:
    config, model = experiment.config, experiment.model
    results = evaluation.evaluate_model(model, experiment.eval_dataset(), experiment.source.class_names,
                                        knn_k=config.eval_knn_k, tau=config.tau)
    state = model.state
    is_labelled = state.is_labelled.numpy()
    metrics = {
        "method": config.method,
        "dataset": config.dataset,
        "backbone": config.backbone,
        "num_examples": int(len(is_labelled)),
        "num_labelled": int(is_labelled.sum()),
        "epochs": int(state.completed_epochs.numpy()),
        "instance_epochs": config.instance_epochs,
        "warmup": config.warmup if config.method != "supervised" else None,
        "warmup_epochs": config.warmup_epochs if config.method != "supervised" else 0,
        # The classifier's test top-1 at the end of the warm-up (chance after instance recognition,
        # which does not train it); None for --method=supervised or a run resumed from before this.
        "warmup_val_top1": _finite_or_none(experiment.progress.warmup_val_top1.numpy()),
        "seed": config.seed,
        "split_seed": config.split_seed,
        "val_top1": results["top1"],
        "val_top5": results["top5"],
        "knn_top1": results["knn_top1"],
        "pseudo_label_accuracy": None,
        "pseudo_label_accuracy_history": [],
    }
    if config.method != "supervised":
        metrics["pseudo_label_accuracy"] = pseudo_label_accuracy(
            state.labels.numpy(), experiment.selection.true_labels, is_labelled)
        metrics["pseudo_label_accuracy_history"] = propagation_history(experiment, propagator)
    return metrics


def _finite_or_none(value):
    value = float(value)
    return value if np.isfinite(value) else None

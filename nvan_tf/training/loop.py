"""Training: the authors' recipe through ``model.fit``, resumable after any fault.

>>> config = TrainConfig(variant="ste-nvan", dataset="mars", root="data/MARS")
>>> result = train(config, output_dir="runs/ste_nvan")     # what ``nvan-train`` runs

or, piece by piece (``nvan_tf.training.task``):

>>> model = build_model("ste-nvan", num_identities=625)
>>> compile_model(model, TrainConfig(), steps_per_epoch=78)
>>> model.fit(pipeline.train_dataset(mars.train, seed=0), epochs=200, steps_per_epoch=78)

The recipe (``docs/training.md``): P=8 identities x K=4 tracklets x T=8
frames; soft-margin batch-hard triplet loss on the pooled pre-BN feature plus
cross-entropy on the logits (weights 1 and 1); torch's Adam (lr 1e-4, betas
0.9/0.999, eps 1e-8) with L2 decay 5e-5 added to the gradient of every
trainable variable; lr x0.1 every 50 epochs; 200 epochs of ``ids // P``
steps; evaluation every 10 epochs, the best rank-1 kept.

:func:`train` adds what a long run needs, all built on one
:class:`~nvan_tf.training.task.ReIDTask`: a ``tf.distribute`` strategy
(``default``, ``mirrored``, ``multiworker``), mixed precision and XLA,
resume from named checkpoints (weights, optimizer state, the count of
batches read and the run's record) decided once for all workers, evaluation
of a float32 copy, a NaN guard on the loss and the gradients, a loss-scale
collapse guard, TensorBoard, ``history.csv``, ``training.png``, and
chief-only, atomic writing of everything under the output folder.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time

import keras

from nvan_tf.core import atomic, records
from nvan_tf.training.checkpoints import Checkpointer, CheckpointError
from nvan_tf.training.config import PRECISIONS, PRESETS, STRATEGIES, ConfigMismatch, TrainConfig
from nvan_tf.training.task import ReIDTask, compile_model, evaluate_model, load_dataset

logger = logging.getLogger(__name__)

__all__ = [
    "TrainConfig", "PRESETS", "PRECISIONS", "STRATEGIES", "TrainingDiverged", "ConfigMismatch",
    "WorkerMismatch", "compile_model", "make_strategy", "evaluate_model", "load_dataset", "train",
    "MAX_CONSECUTIVE_SKIPS",
]

# A mixed_float16 run stops when the loss scaler skips this many updates in a
# row: the scale has then fallen by 2^40 and no update gets through.
MAX_CONSECUTIVE_SKIPS = 40
# rank1 / mAP are scored on the split named in "split", the one that chooses the best epoch
HISTORY_COLUMNS = ("epoch", "step", "lr", "loss", "triplet", "identity", "skipped", "bad_frames", "split",
                   "rank1", "mAP", "seconds")
_OUTPUTS = ("model.keras", "last.keras", "history.csv", "training.png", "results.json")


class TrainingDiverged(FloatingPointError):
    """A loss term or the gradients became NaN or infinite, or the loss scale collapsed."""


class WorkerMismatch(RuntimeError):
    """The workers of a multi-worker run cannot agree (a folder one cannot see,
    a run the chief refused)."""


# -----------------------------------------------------------------------------
# Strategies
# -----------------------------------------------------------------------------
_MULTIWORKER = []  # the process's MultiWorkerMirroredStrategy, once made


def make_strategy(name, devices=None):
    """``default`` (one device), ``mirrored`` (all local GPUs, or ``devices``)
    or ``multiworker`` (machines described by ``TF_CONFIG``).

    A process has one ``MultiWorkerMirroredStrategy``: TensorFlow configures
    its collectives when it starts, before anything else starts TensorFlow's
    runtime, so ``nvan-train`` makes it first thing (``cli.quiet_tensorflow``'s
    ``start``) and later calls return that one.
    """
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices)
    if name == "multiworker":
        if not os.environ.get("TF_CONFIG"):
            raise ValueError(
                "strategy 'multiworker' needs TF_CONFIG describing the cluster, e.g. "
                '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'
            )
        if not _MULTIWORKER:
            _MULTIWORKER.append(tf.distribute.MultiWorkerMirroredStrategy())
        return _MULTIWORKER[0]
    raise ValueError(f"strategy must be one of {list(STRATEGIES)}. Received: strategy={name!r}")


def _worker(strategy):
    """(is chief, worker index, worker count) of this process."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True, 0, 1
    spec = resolver.cluster_spec().as_dict()
    count = sum(len(spec.get(kind, [])) for kind in ("chief", "worker"))
    index = resolver.task_id + (len(spec.get("chief", [])) if resolver.task_type == "worker" else 0)
    if resolver.task_type == "chief":
        return True, index, count
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in spec, index, count


def is_chief(strategy):
    """True where this process writes checkpoints, logs and models: always
    outside multi-worker training; there, the ``chief`` task, or worker 0
    when the cluster has no chief."""
    return _worker(strategy)[0]


def _from_chief(strategy, values):
    """The chief's ``values`` (numbers), on every worker: the sum over every
    replica of what only global replica 0 gives (the others give zeros), in
    float64, so integers below 2**53 come back exact. With one worker,
    ``values`` themselves. Every worker must call it at the same point."""
    import numpy as np
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return [float(v) for v in values]
    values = np.asarray(values, np.float64)
    per_replica = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(values if ctx.replica_id_in_sync_group == 0 else np.zeros_like(values)))
    return [float(v) for v in strategy.reduce("SUM", per_replica, axis=None).numpy()]


def _any_worker(strategy, flag):
    """Whether ``flag`` holds on any worker (every worker gets the answer)."""
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return bool(flag)
    per_replica = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(int(bool(flag)), tf.int64))
    return int(strategy.reduce("SUM", per_replica, axis=None).numpy()) > 0


# -----------------------------------------------------------------------------
# The run
# -----------------------------------------------------------------------------
class _Run:
    """What :func:`train` keeps while it runs: the record saved with every
    checkpoint (history, best) and the count of batches read."""

    def __init__(self, task, output_dir, strategy, chief, worker_index):
        self.task = task
        self.strategy = strategy
        self.config = task.config
        self.output_dir = output_dir
        self.chief = chief
        self.worker_index = worker_index
        self.batches = 0              # batches read: the data position
        self.record = {"history": [], "best": None}
        self.model = self.schedule = self.checkpointer = self.counter = None
        self.steps_per_epoch = task.steps_per_epoch

    @property
    def history(self):
        return self.record["history"]

    def should_evaluate(self, epoch):
        every = self.config.eval_every
        return every > 0 and (epoch % every == 0 or epoch == self.config.epochs)

    def evaluate(self, epoch):
        """Rank-1 and mAP of the float32 copy, the same on every worker: the
        chief evaluates its copy (a plain model, built before training
        outside the strategy, so evaluating runs no collective) while the
        others wait, then every worker takes the chief's scores, so the
        history and the best epoch agree everywhere."""
        split = self.config.selection
        scores = {"rank1": 0.0, "mAP": 0.0}
        if self.chief:
            scores = self.task.evaluate(self.model, split)
        scores = dict(zip(("rank1", "mAP"), _from_chief(self.strategy, [scores["rank1"], scores["mAP"]])))
        logger.info("epoch %d: %s rank-1 %.2f%%, mAP %.2f%%%s", epoch, split, 100 * scores["rank1"],
                    100 * scores["mAP"], "" if split == "validation" else
                    " (no validation split: the test split chooses the model, as in the reference)")
        best = self.record["best"]
        if best is None or scores["rank1"] >= best["rank1"]:  # >= as the reference
            self.record["best"] = {"epoch": epoch, "split": split, **scores}
            if self.chief:  # the copy holds the weights just evaluated
                self.save_model(self.task.inference_copy, "model.keras")
                logger.info("new best model (%s rank-1 %.2f%%) saved", split, 100 * scores["rank1"])
        return {"split": split, **scores}

    def save_model(self, model, name):
        from nvan_tf.io.loading import save_model

        return save_model(model, os.path.join(self.output_dir, name))

    def save_checkpoint(self):
        try:
            self.checkpointer.save(self.batches, self.record, worker_index=self.worker_index)
        except FloatingPointError as err:
            last = self.checkpointer.latest_number()
            kept = f"The checkpoint of batch {last} is intact." if last >= 0 else "No checkpoint was written."
            raise TrainingDiverged(f"{err} after batch {self.batches}. {kept}") from None

    def write_history(self):
        if not self.chief:
            return
        from nvan_tf.evaluation import report

        lines = [",".join(HISTORY_COLUMNS)]
        for row in self.history:
            lines.append(",".join("" if row.get(c) is None else row[c] if isinstance(row[c], str) else repr(row[c])
                                  for c in HISTORY_COLUMNS))
        atomic.write_text(os.path.join(self.output_dir, "history.csv"), "\n".join(lines) + "\n")
        with atomic.atomic_path(os.path.join(self.output_dir, "training.png")) as tmp:
            report.plot_training(self.history, tmp)


class _RunState(keras.callbacks.Callback):
    """Counts batches read, guards against divergence, keeps the history,
    evaluates, checkpoints. A non-finite loss or gradient stops the run
    before anything is written."""

    def __init__(self, run):
        super().__init__()
        self.run = run
        self.fp16 = run.config.mixed_precision == "mixed_float16"
        self._epoch_started = time.time()
        self._updates = 0
        self._epoch_skipped = 0
        self._consecutive = 0

    def _iterations(self):
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def on_train_begin(self, logs=None):
        self._updates = self._iterations()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_started = time.time()
        self._epoch_skipped = 0

    def on_train_batch_begin(self, batch, logs=None):
        self.run.counter.assign(self.run.batches)  # the schedule follows the batch being read

    def _where(self, index):
        spe = self.run.steps_per_epoch
        return f"at epoch {index // spe + 1}, step {index % spe + 1} of {spe} (global step {index + 1})"

    def on_train_batch_end(self, batch, logs=None):
        run, index = self.run, self.run.batches
        run.batches += 1
        updates = self._iterations()
        skipped = updates == self._updates
        self._updates = updates
        last = run.checkpointer.latest_number()
        saved = (f"Nothing after batch {last} was saved; that checkpoint is intact." if last >= 0
                 else "No checkpoint was written.")
        if self.fp16:
            self._epoch_skipped += int(skipped)
            self._consecutive = self._consecutive + 1 if skipped else 0
            if self._consecutive >= MAX_CONSECUTIVE_SKIPS:
                scale = float(keras.ops.convert_to_numpy(self.model.optimizer.dynamic_scale))
                raise TrainingDiverged(
                    f"The loss scale collapsed {self._where(index)}: the last {self._consecutive} updates "
                    f"were skipped for non-finite gradients (scale now {scale:.3g}). The model overflows "
                    f"float16; train in mixed_bfloat16 or fp32. {saved}")
        else:
            for name in ("triplet", "identity", "loss"):
                value = (logs or {}).get(name)
                if value is not None and not math.isfinite(float(value)):
                    raise TrainingDiverged(f"The {name} loss became {float(value)} {self._where(index)}. {saved}")
            square_sum = float(keras.ops.convert_to_numpy(self.model.optimizer.gradient_square_sum))
            if not math.isfinite(square_sum):
                raise TrainingDiverged(f"The gradient norm became {math.sqrt(square_sum)} {self._where(index)} "
                                       f"(the loss was finite). {saved}")
        every = run.config.checkpoint_every
        if every and run.batches % every == 0 and run.batches % run.steps_per_epoch:
            run.save_checkpoint()

    def on_epoch_end(self, epoch, logs=None):
        run = self.run
        row = {"epoch": epoch + 1, "step": run.batches, "lr": run.schedule.value(max(run.batches - 1, 0)),
               "seconds": round(time.time() - self._epoch_started, 3)}
        row.update({k: float(v) for k, v in (logs or {}).items() if k in ("loss", "triplet", "identity")})
        if self.fp16:
            # a resumed, part-done epoch adds to the skips counted before the kill
            earlier = next((r.get("skipped", 0) for r in run.history if r["epoch"] == epoch + 1), 0)
            row["skipped"] = self._epoch_skipped + (earlier or 0)
        from nvan_tf.data import pipeline

        checker = run.task.frame_checker
        row["bad_frames"] = checker.report()["bad_frames"]  # this run's training reads, so far
        error = None
        try:
            checker.check_share(run.config.max_bad_frames)
        except pipeline.TooManyBadFrames as err:
            error = err
        if _any_worker(run.strategy, error is not None):  # every worker stops, before anything is saved
            raise error or pipeline.TooManyBadFrames("another worker read too many bad frames (see its log)")
        if run.should_evaluate(epoch + 1):
            row.update(run.evaluate(epoch + 1))
            if logs is not None:
                logs.update({k: row[k] for k in ("rank1", "mAP")})
        run.record["history"] = [r for r in run.history if r["epoch"] < epoch + 1] + [row]
        run.save_checkpoint()
        run.write_history()


# -----------------------------------------------------------------------------
# The resume decision
# -----------------------------------------------------------------------------
_OK, _REFUSED = 0, 1


def _read_recorded_config(path):
    with open(path, encoding="utf-8") as f:
        try:
            return TrainConfig.from_dict(json.load(f)["train"], source=path)
        except (ValueError, KeyError, TypeError, json.JSONDecodeError) as err:
            raise ConfigMismatch(f"{path} is not a readable nvan-train config: {err}") from None


def _decide(config, output_dir, resume, checkpoint_folder, dataset=None):
    """On the chief: the checkpoint to resume from (-1: none). Refuses
    (``ConfigMismatch``) a folder holding a run of another configuration or
    on other data: the checkpoint's own record (its config and the identity
    of the track list it trained on) is compared, or, for checkpoints
    without one, ``config.json``."""
    from nvan_tf.training.checkpoints import latest

    record = None if resume is False else latest(checkpoint_folder)
    number = -1 if record is None else int(record["batches"])
    path = os.path.join(output_dir, "config.json")
    differences = []
    if record is not None and "train" in record:
        differences = config.differences(TrainConfig.from_dict(record["train"], source=record["path"]))
    elif record is not None and os.path.exists(path):
        differences = config.differences(_read_recorded_config(path))
    if record is not None and dataset is not None and record.get("dataset") is not None:
        differences += records.differences({"dataset": record["dataset"]}, {"dataset": dataset})
    if differences:
        raise ConfigMismatch(
            f"{output_dir} holds a run of another configuration:\n{records.format_differences(differences)}\n"
            "Use another --output-dir, or --no-resume to start over in this one."
        )
    if resume is True and number < 0:
        logger.info("nothing to resume in %s: starting a new run", output_dir)
    return number


def _agree_on_start(strategy, config, output_dir, resume, checkpoint_folder, chief, dataset=None):
    """The checkpoint every worker restores (-1: none), decided once by the
    chief and checked to be visible to every worker."""
    error = None
    number = -1
    if chief:
        try:
            number = _decide(config, output_dir, resume, checkpoint_folder, dataset)
        except (ConfigMismatch, CheckpointError) as err:
            error = err
    code, number = (int(v) for v in _from_chief(strategy, [_REFUSED if error else _OK, number]))
    if error is not None:
        raise error
    if code != _OK:
        raise WorkerMismatch("the chief refused this run (see its log): no worker starts")
    visible = number < 0 or os.path.exists(os.path.join(checkpoint_folder, f"ckpt-{number}.index"))
    if _any_worker(strategy, not visible):
        where = "this worker" if not visible else "another worker"
        raise WorkerMismatch(
            f"{where} cannot see the chief's checkpoint ckpt-{number} in {checkpoint_folder}: every worker "
            "must use one output folder on storage they all see (a shared file system), as Keras's "
            "BackupAndRestore requires; no worker starts.")
    return number


def _start_over(output_dir, checkpoint_folder):
    """A new run in an old folder: nothing of the earlier run may pass for its result."""
    import shutil

    if os.path.isdir(checkpoint_folder):
        shutil.rmtree(checkpoint_folder)
    for name in _OUTPUTS:
        if os.path.exists(os.path.join(output_dir, name)):
            os.remove(os.path.join(output_dir, name))


# -----------------------------------------------------------------------------
# train
# -----------------------------------------------------------------------------
def train(config, output_dir="runs/train", *, resume=None, devices=None, callbacks=()):
    """Runs (or resumes) the training described by ``config``.

    Args:
        config: a :class:`TrainConfig`.
        output_dir: where everything goes: ``config.json``, ``checkpoints/``,
            ``history.csv``, ``training.png``, ``tensorboard/``,
            ``model.keras`` (best rank-1), ``last.keras``. Under
            ``multiworker`` every worker must see this folder (shared storage).
        resume: ``None`` resumes from the newest complete checkpoint in
            ``output_dir`` when the folder holds a run of the same
            configuration (a different one is refused, the differences
            listed); ``True`` likewise; ``False`` starts over, replacing the
            checkpoints. Without a checkpoint to restore, ``config.init``
            (if any) is loaded.
        devices: devices of a ``mirrored`` strategy (default: all GPUs).
        callbacks: extra Keras callbacks.

    Returns:
        ``{"history": [...], "best": {...} | None, "model": path, "last": path,
        "steps": batches read, "seconds": float}``.
    """
    import tensorflow as tf

    started = time.time()
    output_dir = os.path.abspath(output_dir)
    task = ReIDTask(config, output_dir=output_dir)  # a bad model option fails before anything is read
    strategy = make_strategy(config.strategy, devices)
    chief, worker_index, _ = _worker(strategy)
    task.dataset  # a bad root fails before anything is written
    run = _Run(task, output_dir, strategy, chief, worker_index)
    logger.info("%s: %d identities, %d tracklets; %d steps per epoch", config.dataset, task.num_identities,
                len(task.train_tracklets), run.steps_per_epoch)
    folder = os.path.join(output_dir, "checkpoints")
    dataset = task.data_identity() if chief else None
    run.record.update({"train": config.to_dict(), "dataset": dataset})
    start = _agree_on_start(strategy, config, output_dir, resume, folder, chief, dataset)  # refusals change nothing
    task.make_deterministic()

    with tf.init_scope():
        run.counter = tf.Variable(0, dtype=tf.int64, trainable=False, name="batch_index")
    run.model = task.build_model(strategy)  # a model that cannot be built fails before anything is written
    with strategy.scope():
        run.schedule = task.compile(run.model, batch_counter=run.counter)
    if chief:
        task.inference_model(run.model)  # the evaluation's copy, made outside the strategy
    run.checkpointer = Checkpointer(folder, run.model, chief=chief)
    if chief:
        os.makedirs(output_dir, exist_ok=True)
        if start < 0:
            _start_over(output_dir, folder)
        atomic.remove_stale(output_dir)
        run.checkpointer.remove_leftovers()
        record = {"train": config.to_dict(), "output_dir": output_dir, "selection": config.selection,
                  "dataset": dataset}
        if task.validation is not None:
            record["validation"] = task.validation.summary()
        atomic.write_json(os.path.join(output_dir, "config.json"), record)
    if start >= 0:
        restored = run.checkpointer.restore(start)
        run.batches = restored["batches"]
        run.record.update({"history": restored.get("history", []), "best": restored.get("best")})
        logger.info("resumed %s at batch %d (epoch %d)", output_dir, run.batches, run.batches // run.steps_per_epoch)
    else:
        task.initialize(run.model)

    verbose = config.progress if chief else 0
    if verbose == 1 and not _stdout_is_terminal():
        verbose = 2  # one line per epoch in logs, no progress-bar redraws
    all_callbacks = [_RunState(run), *callbacks]
    if chief:
        all_callbacks.append(keras.callbacks.TensorBoard(os.path.join(output_dir, "tensorboard")))
    total = config.epochs * run.steps_per_epoch
    try:
        while run.batches < total:
            before = run.batches
            epoch, offset = divmod(run.batches, run.steps_per_epoch)
            # a resumed, part-done epoch runs its remaining steps on its own
            with strategy.scope():
                run.model.fit(task.distributed_inputs(strategy, run.batches), initial_epoch=epoch,
                              epochs=epoch + 1 if offset else config.epochs, shuffle=False,
                              steps_per_epoch=run.steps_per_epoch - offset, callbacks=all_callbacks,
                              verbose=verbose)
            if run.model.stop_training or run.batches == before:
                break
    except tf.errors.UnimplementedError as err:
        if config.deterministic and "determinism" in str(err).lower():
            raise TrainingDiverged(f"--deterministic: an operation has no deterministic kernel here: "
                                   f"{str(err).splitlines()[0]}") from None
        raise

    last = os.path.join(output_dir, "last.keras")
    best = os.path.join(output_dir, "model.keras")
    test = None
    if chief:
        copy = task.inference_model(run.model)
        run.save_model(copy, "last.keras")
        if not os.path.exists(best):  # never evaluated: the last model is the model
            run.save_model(copy, "model.keras")
        run.write_history()
        test = _results(task, run, best)
    return {"history": run.history, "best": run.record["best"], "test": test, "selection": config.selection,
            "model": best, "last": last, "steps": run.batches, "seconds": time.time() - started}


def _results(task, run, best_path):
    """Writes ``results.json``: which split chose the model, its best epoch and
    scores, and, when a validation split chose it, the chosen model's test
    scores, measured once here (the test split chose nothing). Returns those
    test scores (None without a validation split, or when nothing was evaluated)."""
    config = task.config
    test = None
    if config.selection == "validation" and run.record["best"] is not None:
        from nvan_tf.io.loading import load_model

        test = evaluate_model(load_model(best_path), task.test_set, batch_size=config.eval_batch_size)
        logger.info("test split, once, with the model the validation split chose (epoch %d): rank-1 %.2f%%, "
                    "mAP %.2f%%", run.record["best"]["epoch"], 100 * test["rank1"], 100 * test["mAP"])
    results = {"selection": config.selection, "best": run.record["best"], "test": test,
               "validation": task.validation.summary() if task.validation is not None else None,
               "steps": run.batches}
    atomic.write_json(os.path.join(run.output_dir, "results.json"), results)
    return test


def _stdout_is_terminal():
    import sys

    return bool(getattr(sys.stdout, "isatty", lambda: False)())

"""Training: the authors' recipe through ``model.fit``.

>>> config = TrainConfig(variant="ste-nvan", dataset="mars", root="data/MARS")
>>> result = train(config, output_dir="runs/ste_nvan")     # what ``nvan-train`` runs

or, piece by piece:

>>> model = build_model("ste-nvan", num_identities=625)
>>> compile_model(model, TrainConfig(), steps_per_epoch=78)
>>> model.fit(pipeline.train_dataset(mars.train, seed=0), epochs=200, steps_per_epoch=78)
>>> model.train_on_batch(clips, pids, return_dict=True)   # {"loss", "triplet", "identity"}

The recipe (``docs/training.md``): P=8 identities x K=4 tracklets x T=8
frames; soft-margin batch-hard triplet loss on the pooled pre-BN feature plus
cross-entropy on the logits (weights 1 and 1); torch's Adam (lr 1e-4, betas
0.9/0.999, eps 1e-8) with L2 decay 5e-5 added to the gradient of every
trainable variable; lr x0.1 every 50 epochs; 200 epochs of ``ids // P``
steps; evaluation every 10 epochs, the best rank-1 kept.

:func:`train` adds what a long run needs: a ``tf.distribute`` strategy
(``default``, ``mirrored``, ``multiworker``), mixed precision and XLA,
step-exact resume from atomic checkpoints (weights, optimizer state and the
position in the sampled data stream), evaluation on the query / gallery
split, a NaN guard, TensorBoard, ``history.csv``, ``training.png``, and the
chief-only writing of everything under the output folder.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time

import keras

from nvan_tf.training import checkpoints
from nvan_tf.training.losses import BatchHardTripletLoss, IdentityLoss
from nvan_tf.training.optimizers import StepDecay, build_optimizer
from nvan_tf.training.config import (
    PRECISIONS,
    PRESETS,
    STRATEGIES,
    ConfigMismatch,
    TrainConfig,
)

logger = logging.getLogger(__name__)

__all__ = [
    "TrainConfig",
    "PRESETS",
    "PRECISIONS",
    "STRATEGIES",
    "TrainingDiverged",
    "ConfigMismatch",
    "compile_model",
    "make_strategy",
    "evaluate_model",
    "load_dataset",
    "train",
]

class TrainingDiverged(FloatingPointError):
    """A loss term became NaN or infinite."""


# -----------------------------------------------------------------------------
# The objective and compile_model
# -----------------------------------------------------------------------------
class _Objective:
    """``loss = w_t * triplet(pids, f) + w_id * CE(pids, logits)``; keeps
    each term's running mean for the logs."""

    def __init__(self, config, trackers):
        self.triplet = BatchHardTripletLoss(margin=config.margin)
        self.identity = IdentityLoss(label_smoothing=config.label_smoothing)
        self.weights = {"triplet": float(config.triplet_weight), "identity": float(config.identity_weight)}
        self.trackers = trackers
        self.metrics = list(trackers.values())

    def __call__(self, pids, outputs):
        from keras import ops

        if not isinstance(outputs, (tuple, list)) or len(outputs) != 2:
            raise ValueError(
                "The re-ID objective needs the training outputs (f, logits); it has no "
                "inference-mode loss. Evaluate retrieval with nvan_tf.evaluation.evaluator instead of model.evaluate."
            )
        f, logits = outputs
        terms = {"triplet": self.triplet(pids, f), "identity": self.identity(pids, logits)}
        replicas = _num_replicas()
        total = 0.0
        for name, value in terms.items():
            # The losses are already divided by the replica count (Keras's rule);
            # the logs show the global value.
            self.trackers[name].update_state(value * replicas)
            if self.weights[name]:
                total = total + self.weights[name] * value
        return ops.cast(total, "float32")


def _num_replicas():
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


def compile_model(model, config=None, steps_per_epoch=None):
    """Compiles ``model`` (an ``NVANModel``) with the recipe of ``config``.

    Afterwards ``model.fit(train_ds, ...)`` trains with it and
    ``model.train_on_batch(clips, pids, return_dict=True)`` runs one step,
    returning ``loss`` (the weighted total) and each term (``triplet``,
    ``identity``). Call it inside ``strategy.scope()`` when distributing.

    Args:
        model: an ``nvan_tf.models.model.NVANModel``.
        config: a :class:`TrainConfig` (default: the recipe).
        steps_per_epoch: steps of one epoch, for the step learning-rate
            schedule and the warm-up; default ``config.steps_per_epoch`` or,
            if unset, 78 (MARS: 625 identities / P=8).

    Returns:
        the optimizer's learning-rate schedule (:class:`StepDecay`).
    """
    config = config or TrainConfig()
    steps = int(steps_per_epoch or config.steps_per_epoch or 78)
    schedule = StepDecay(config.lr, step_size=config.lr_step * steps, gamma=config.lr_gamma,
                         warmup_steps=config.warmup_epochs * steps)
    optimizer = build_optimizer(config.optimizer, schedule, weight_decay=config.weight_decay,
                                momentum=config.momentum)
    trackers = {name: keras.metrics.Mean(name=name) for name in ("triplet", "identity")}
    model._reid_objective = _Objective(config, trackers)  # its metrics join model.metrics
    if _num_replicas() > 1:
        # Batch statistics over the global batch: one step is the same whatever
        # the replica count (the reference trained on one GPU).
        for layer in model._flatten_layers():
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.synchronized = True
    model.compile(optimizer=optimizer, jit_compile=bool(config.jit))
    optimizer.build(model.trainable_variables)
    return schedule


# -----------------------------------------------------------------------------
# Strategies and precision
# -----------------------------------------------------------------------------
def make_strategy(name, devices=None):
    """``default`` (one device), ``mirrored`` (all local GPUs, or ``devices``)
    or ``multiworker`` (machines described by ``TF_CONFIG``)."""
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
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"strategy must be one of {list(STRATEGIES)}. Received: strategy={name!r}")


def is_chief(strategy):
    """True where this process writes checkpoints, logs and models: always
    outside multi-worker training; there, the ``chief`` task, or worker 0
    when the cluster has no chief."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


# -----------------------------------------------------------------------------
# Data
# -----------------------------------------------------------------------------
def load_dataset(config, output_dir):
    """The dataset of ``config``; ``synthetic`` is generated on first use
    (under ``root``, default ``OUTPUT_DIR/synthetic_data``)."""
    from nvan_tf.data.datasets import build_dataset

    if config.dataset == "synthetic":
        from nvan_tf.data.datasets.synthetic import generate

        root = config.root or os.path.join(output_dir, "synthetic_data")
        if not os.path.exists(os.path.join(root, "info", "tracks_train_info.mat")):
            logger.info("writing synthetic tracklets to %s", root)
            generate(root, num_ids=24, cameras=4, seed=config.seed)
        return build_dataset("mars", root, verbose=False)
    return build_dataset(config.dataset, config.root, verbose=False)


def _train_stream(config, tracklets, strategy, start_step):
    """The P x K stream from ``start_step``, laid out for ``strategy``."""
    import tensorflow as tf

    from nvan_tf.data import pipeline

    def stream(shard=(0, 1)):
        return pipeline.train_dataset(
            tracklets, p=config.p, k=config.k, seq_len=config.seq_len, height=config.height,
            width=config.width, flip_prob=config.flip_prob, random_erasing=config.random_erasing,
            seed=config.seed, start_step=start_step, shard=shard,
        )

    replicas = strategy.num_replicas_in_sync
    if (config.p * config.k) % replicas:
        raise ValueError(
            f"The global batch p*k={config.p * config.k} must divide among {replicas} replicas"
        )
    if config.strategy != "multiworker":
        return stream()  # Keras splits every global batch across the local replicas, in order

    def per_worker(context):
        # each local replica gets its rows of the same global batch; nothing is read twice
        local = replicas // context.num_input_pipelines
        first = context.input_pipeline_id * local
        parts = [stream((first + j, replicas)) for j in range(local)]
        if local == 1:
            return parts[0]
        return tf.data.Dataset.choose_from_datasets(parts, tf.data.Dataset.range(local).repeat())

    options = tf.distribute.InputOptions(experimental_fetch_to_device=True)
    return strategy.distribute_datasets_from_function(per_worker, options)


# -----------------------------------------------------------------------------
# Callbacks
# -----------------------------------------------------------------------------
class _RunState(keras.callbacks.Callback):
    """NaN guard, per-epoch history, evaluation, best model, checkpoints.

    The order inside ``on_train_batch_end`` / ``on_epoch_end`` matters: a
    non-finite loss stops the run before anything is written."""

    def __init__(self, run):
        super().__init__()
        self.run = run
        self._epoch_started = time.time()

    def _step(self):
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_started = time.time()

    def on_train_batch_end(self, batch, logs=None):
        run = self.run
        step = self._step()
        for name in ("triplet", "identity", "loss"):
            value = (logs or {}).get(name)
            if value is not None and not math.isfinite(float(value)):
                epoch = step // run.steps_per_epoch + 1
                raise TrainingDiverged(
                    f"The {name} loss became {float(value)} at epoch {epoch}, step "
                    f"{step - (epoch - 1) * run.steps_per_epoch} of {run.steps_per_epoch} "
                    f"(global step {step}). Nothing after step {run.state['step']} was saved; "
                    "the checkpoint of that step is intact."
                )
        if run.config.checkpoint_every and step % run.config.checkpoint_every == 0 \
                and step % run.steps_per_epoch:
            run.save_checkpoint(step)

    def on_epoch_end(self, epoch, logs=None):
        run = self.run
        step = self._step()
        row = {"epoch": epoch + 1, "step": step, "lr": run.schedule.value(max(step - 1, 0)),
               "seconds": round(time.time() - self._epoch_started, 3)}
        row.update({k: float(v) for k, v in (logs or {}).items() if k in ("loss", "triplet", "identity")})
        if run.should_evaluate(epoch + 1):
            row.update(run.evaluate(epoch + 1))
            if logs is not None:
                logs.update({k: row[k] for k in ("rank1", "mAP")})
        run.state["history"] = [r for r in run.state["history"] if r["epoch"] < epoch + 1] + [row]
        run.save_checkpoint(step)
        run.write_history()


# -----------------------------------------------------------------------------
# The run
# -----------------------------------------------------------------------------
class _Run:
    """Everything :func:`train` keeps while it runs."""

    def __init__(self, config, output_dir, chief):
        self.config = config
        self.output_dir = output_dir
        self.chief = chief
        self.state = {"step": 0, "best": None, "history": []}
        self.model = None
        self.schedule = None
        self.steps_per_epoch = None
        self.test_set = None
        self.copy = None

    # -- evaluation --------------------------------------------------------
    def should_evaluate(self, epoch):
        every = self.config.eval_every
        return self.chief and self.test_set is not None and every > 0 and (
            epoch % every == 0 or epoch == self.config.epochs)

    def evaluate(self, epoch):
        copy = self.inference_copy()
        scores = evaluate_model(copy, self.test_set, batch_size=self.config.eval_batch_size)
        logger.info("epoch %d: rank-1 %.2f%%, mAP %.2f%%", epoch, 100 * scores["rank1"], 100 * scores["mAP"])
        best = self.state["best"]
        if best is None or scores["rank1"] >= best["rank1"]:  # >= as the reference
            self.state["best"] = {"epoch": epoch, **scores}
            save_model_atomically(copy, os.path.join(self.output_dir, "model.keras"))
            logger.info("new best model (rank-1 %.2f%%) saved", 100 * scores["rank1"])
        return scores

    def inference_copy(self):
        """The float32, uncompiled copy (built once, outside any strategy, on
        the chief) holding the training model's current weights: what is
        evaluated and saved for evaluation and export."""
        self.copy.set_weights([v.numpy() for v in self.model.weights])
        return self.copy

    # -- checkpoints -------------------------------------------------------
    def save_checkpoint(self, step):
        self.state["step"] = int(step)
        if self.chief:
            checkpoints.save(self.checkpoint_dir, self.model, self.state)

    @property
    def checkpoint_dir(self):
        return os.path.join(self.output_dir, "checkpoints")

    def write_history(self):
        if not self.chief:
            return
        from nvan_tf.evaluation import report as visualize

        history = self.state["history"]
        columns = ["epoch", "step", "lr", "loss", "triplet", "identity", "rank1", "mAP", "seconds"]
        lines = [",".join(columns)]
        for row in history:
            lines.append(",".join("" if row.get(c) is None else repr(row[c]) for c in columns))
        checkpoints.atomic_write_text(os.path.join(self.output_dir, "history.csv"), "\n".join(lines) + "\n")
        visualize.plot_training(history, os.path.join(self.output_dir, "training.png"))


def evaluate_model(model, test_set, batch_size=16):
    """Rank-1 and mAP (fractions) of ``model`` on ``test_set`` =
    ``(tracklets, query_index, gallery_index)`` (``dataset.test_set()``), under
    the MARS protocol with cosine distance, RRS test clips."""
    from nvan_tf.evaluation import evaluator as evaluation

    tracklets, query, gallery = test_set
    extractor = inference_extractor(model, "training evaluation")
    features, pids, camids = evaluation.extract_features(extractor, tracklets, batch_size=batch_size,
                                                         verbose=0)
    result, _ = evaluation.evaluate_features(features, pids, camids, query, gallery)
    return {"rank1": float(result["rank1"]), "mAP": float(result["mAP"])}


def inference_extractor(model, description):
    """A ``nvan_tf.evaluation.evaluator.FeatureExtractor`` over ``model`` in inference mode."""
    import tensorflow as tf

    from nvan_tf.evaluation.evaluator import FeatureExtractor

    c = model.config
    signature = tf.TensorSpec((None, c.seq_len, c.height, c.width, 3), tf.float32)

    @tf.function(input_signature=[signature], reduce_retracing=True)
    def infer(clips):
        return model(clips, training=False)

    return FeatureExtractor(lambda clips: infer(clips).numpy(), c.seq_len, c.height, c.width, description)


def float32_copy(model):
    """An uncompiled ``NVANModel`` of ``model``'s configuration in float32,
    built (its weights are not copied)."""
    from nvan_tf.models.model import NVANModel

    saved = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        copy = NVANModel(model.config)
        copy.build(copy.input_spec_shape)
    finally:
        keras.config.set_dtype_policy(saved)
    return copy


def save_model_atomically(model, path):
    """``model.save(path)`` through a temporary file and a rename."""
    tmp = path + ".tmp.keras"
    model.save(tmp)
    os.replace(tmp, path)
    return path


def _work_around_multiworker_fit(model, strategy):
    """Makes ``model.fit`` run under ``MultiWorkerMirroredStrategy``.

    Keras 3's fit fails there in two places (keras-team/keras#20585):

    1. its symbolic build converts the first distributed batch to a tensor
       ("Attempt to convert a value (PerReplica...)"). The model, optimizer
       and metrics are already built by :func:`compile_model`, so the build
       is skipped: the model forgets its strategy, and fit, run inside
       ``strategy.scope()``, finds it through the scope.
    2. it reduces the per-replica logs with ``strategy.reduce("MEAN", v,
       axis=0)``, which fails on scalars ("Invalid reduction dimension 0").
       The train function below runs the same ``model.train_step`` on every
       replica and averages the scalar logs over all replicas (``axis=None``).
    """
    import tensorflow as tf

    model._distribute_strategy = None

    @tf.function(reduce_retracing=True)
    def one_step(data):
        logs = strategy.run(model.train_step, args=(data,))
        return {name: strategy.reduce("MEAN", value, axis=None) for name, value in logs.items()}

    def train_function(iterator):
        if isinstance(iterator, (tf.data.Iterator, tf.distribute.DistributedIterator)):
            data = iterator.get_next_as_optional()
            if not data.has_value():
                raise StopIteration
            return one_step(data.get_value())
        for data in iterator:  # train_on_batch: a list of one batch
            logs = one_step(data)
        return logs

    model.train_function = train_function


def _check_output_dir(config, output_dir, resume):
    """Resume decision: returns True to resume; writes ``config.json`` otherwise."""
    path = os.path.join(output_dir, "config.json")
    has_run = os.path.exists(path)
    if has_run:
        with open(path, encoding="utf-8") as f:
            try:
                previous = TrainConfig.from_dict(json.load(f)["train"], source=path)
            except (ValueError, KeyError, json.JSONDecodeError) as err:
                raise ConfigMismatch(f"{path} is not a readable nvan-train config: {err}") from None
        differences = config.differences(previous)
        if differences and resume is not False:
            listing = "\n".join(f"  {name}: {old!r} in the run, {new!r} now" for name, old, new in differences)
            raise ConfigMismatch(
                f"{output_dir} holds a run of another configuration:\n{listing}\n"
                "Use another --output-dir, or --no-resume to start over in this one."
            )
    if resume is True and not checkpoints.latest(os.path.join(output_dir, "checkpoints")):
        logger.info("nothing to resume in %s: starting a new run", output_dir)
    return resume is not False and has_run


def train(config, output_dir="runs/train", *, resume=None, devices=None, callbacks=()):
    """Runs (or resumes) the training described by ``config``.

    Args:
        config: a :class:`TrainConfig`.
        output_dir: where everything goes: ``config.json``, ``checkpoints/``,
            ``history.csv``, ``training.png``, ``tensorboard/``,
            ``model.keras`` (best rank-1), ``last.keras``.
        resume: ``None`` resumes when ``output_dir`` holds a run of the same
            configuration (a different one is refused, the differences
            listed); ``True`` likewise; ``False`` starts over, replacing the
            checkpoints.
        devices: devices of a ``mirrored`` strategy (default: all GPUs).
        callbacks: extra Keras callbacks.

    Returns:
        ``{"history": [...], "best": {...} | None, "model": path, "last": path,
        "steps": int, "seconds": float}``.
    """
    started = time.time()
    output_dir = os.path.abspath(output_dir)
    strategy = make_strategy(config.strategy, devices)
    chief = is_chief(strategy)
    dataset = load_dataset(config, output_dir)  # a bad root fails before anything is written
    resuming = _check_output_dir(config, output_dir, resume)
    if chief:
        os.makedirs(output_dir, exist_ok=True)
        checkpoints.atomic_write_text(
            os.path.join(output_dir, "config.json"),
            json.dumps({"train": config.to_dict(), "output_dir": output_dir}, indent=2) + "\n")
        if not resuming:  # a new run: nothing of an earlier one may pass for its result
            checkpoints.clear(os.path.join(output_dir, "checkpoints"))
            for name in ("model.keras", "last.keras", "history.csv", "training.png"):
                if os.path.exists(os.path.join(output_dir, name)):
                    os.remove(os.path.join(output_dir, name))

    run = _Run(config, output_dir, chief)
    tracklets = dataset.train
    num_ids = dataset.num_train_ids
    run.steps_per_epoch = config.steps_per_epoch or max(num_ids // config.p, 1)
    if config.eval_every:
        run.test_set = dataset.test_set()
    logger.info("%s: %d identities, %d tracklets; %d steps per epoch", config.dataset, num_ids,
                len(tracklets), run.steps_per_epoch)

    saved_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32" if config.mixed_precision == "fp32" else config.mixed_precision)
    try:
        keras.utils.set_random_seed(config.seed)
        with strategy.scope():
            from nvan_tf.models.model import build_model

            model = build_model(config.variant, num_ids, seq_len=config.seq_len, height=config.height,
                                width=config.width, **config.model_overrides)
            if config.init and not resuming:
                from nvan_tf.io import loading

                logger.info("initialised from %s", loading.initialize_from(model, config.init))
            run.model = model
            run.schedule = compile_model(model, config, run.steps_per_epoch)
        if chief:
            run.copy = float32_copy(model)
        if resuming:
            restored = checkpoints.restore(run.checkpoint_dir, model)
            if restored is not None:
                run.state = restored
                logger.info("resumed %s at step %d (epoch %d)", output_dir, run.state["step"],
                            run.state["step"] // run.steps_per_epoch)
        verbose = config.progress if chief else 0
        if verbose == 1 and not sys.stdout.isatty():
            verbose = 2  # one line per epoch in logs, no progress-bar redraws
        all_callbacks = [_RunState(run), *callbacks]
        if chief:
            all_callbacks.append(keras.callbacks.TensorBoard(os.path.join(output_dir, "tensorboard")))
        if config.strategy == "multiworker":
            _work_around_multiworker_fit(model, strategy)
        step = run.state["step"]
        while step < config.epochs * run.steps_per_epoch:
            epoch, offset = divmod(step, run.steps_per_epoch)
            # a resumed, part-done epoch runs its remaining steps on its own
            with strategy.scope():
                model.fit(_train_stream(config, tracklets, strategy, step), initial_epoch=epoch,
                          epochs=epoch + 1 if offset else config.epochs, shuffle=False,
                          steps_per_epoch=run.steps_per_epoch - offset, callbacks=all_callbacks,
                          verbose=verbose)
            if model.stop_training or run.state["step"] == step:
                break
            step = run.state["step"]
    finally:
        keras.config.set_dtype_policy(saved_policy)

    last = os.path.join(output_dir, "last.keras")
    best = os.path.join(output_dir, "model.keras")
    if chief:
        save_model_atomically(run.inference_copy(), last)
        if not os.path.exists(best):  # never evaluated: the last model is the model
            save_model_atomically(run.copy, best)
        run.write_history()
    return {"history": run.state["history"], "best": run.state["best"], "model": best, "last": last,
            "steps": run.state["step"], "seconds": time.time() - started}

"""The re-ID training task: everything a run needs, built from one ``TrainConfig``.

>>> task = ReIDTask(TrainConfig(variant="ste-nvan", dataset="mars", root="data/MARS"))
>>> model = task.build_model()                    # the variant, in the run's precision, seeded
>>> task.initialize(model)                        # the --init weights, if any
>>> task.compile(model)                           # the recipe: losses, optimizer, schedule
>>> model.fit(task.build_inputs(start_batch=0), steps_per_epoch=task.steps_per_epoch, epochs=2)
>>> task.evaluate(model)                          # rank-1 / mAP of its float32 copy

A single-replica view of the training procedure, as Model Garden's ``Task``:
:func:`nvan_tf.training.train` (``nvan-train``), the keras-tuner hypermodel
(``nvan-tune``), the demo and ``benchmarks.train`` all build their models,
inputs and evaluations here; nothing else builds a model from a
``TrainConfig``.
"""

from __future__ import annotations

import logging
import os

import keras

from nvan_tf.training.config import TrainConfig
from nvan_tf.training.losses import BatchHardTripletLoss, IdentityLoss
from nvan_tf.training.optimizers import StepDecay, build_optimizer

logger = logging.getLogger(__name__)

__all__ = ["ReIDTask", "ReIDObjective", "compile_model", "evaluate_model", "load_dataset"]

SYNTHETIC_IDS, SYNTHETIC_CAMERAS = 24, 4


# -----------------------------------------------------------------------------
# The objective and compile_model
# -----------------------------------------------------------------------------
class ReIDObjective:
    """``loss = w_t * triplet(pids, f) + w_id * CE(pids, logits)`` over the
    training outputs ``(f, logits)``; keeps each term's running mean for the
    logs (``metrics``). ``compile_model`` hands it to the model through
    ``NVANModel.compile(objective=...)``."""

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
                "inference-mode loss. Evaluate retrieval with nvan_tf.evaluation instead of model.evaluate."
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


def compile_model(model, config=None, steps_per_epoch=None, *, batch_counter=None):
    """Compiles ``model`` (an ``NVANModel``) with the recipe of ``config``.

    Afterwards ``model.fit(train_ds, ...)`` trains with it and
    ``model.train_on_batch(clips, pids, return_dict=True)`` runs one step,
    returning ``loss`` (the weighted total) and each term (``triplet``,
    ``identity``). Call it inside ``strategy.scope()`` when distributing.

    Args:
        model: an ``nvan_tf.models.NVANModel``.
        config: a :class:`TrainConfig` (default: the recipe).
        steps_per_epoch: steps of one epoch, for the step learning-rate
            schedule and the warm-up; default ``config.steps_per_epoch`` or,
            if unset, 78 (MARS: 625 identities / P=8).
        batch_counter: a variable holding the index of the batch being
            trained on; the schedule follows it. Default: the optimizer's
            own count of applied updates (the same, unless a mixed_float16
            loss scaler skips updates: :func:`nvan_tf.training.train` counts
            batches read, so the schedule, the data and the epochs agree).

    Returns:
        the learning-rate schedule (:class:`StepDecay`).
    """
    config = config or TrainConfig()
    steps = int(steps_per_epoch or config.steps_per_epoch or 78)
    schedule = StepDecay(config.lr, step_size=config.lr_step * steps, gamma=config.lr_gamma,
                         warmup_steps=config.warmup_epochs * steps)
    learning_rate = schedule if batch_counter is None else (lambda: schedule(batch_counter))
    optimizer = build_optimizer(config.optimizer, learning_rate, weight_decay=config.weight_decay,
                                momentum=config.momentum)
    trackers = {name: keras.metrics.Mean(name=name) for name in ("triplet", "identity")}
    if _num_replicas() > 1 and not model.config.sync_batch_norm:
        raise ValueError(
            f"compile_model: {_num_replicas()} replicas, but the model's BNs are not synchronised: build it "
            "with sync_batch_norm=True (ReIDTask.build_model(strategy) does), so a step uses the statistics "
            "of the global batch, as one device does")
    model.compile(optimizer=optimizer, objective=ReIDObjective(config, trackers), jit_compile=bool(config.jit))
    # model.optimizer: under mixed_float16 Keras wraps ours in a LossScaleOptimizer, whose own
    # variables (the scale, its counter) must exist before a checkpoint is restored into them
    model.optimizer.build(model.trainable_variables)
    return schedule


# -----------------------------------------------------------------------------
# Data and evaluation
# -----------------------------------------------------------------------------
def load_dataset(config, output_dir=None):
    """The dataset of ``config``; ``synthetic`` is generated on first use
    (under ``root``, default ``OUTPUT_DIR/synthetic_data``)."""
    from nvan_tf.data.datasets import build_dataset

    if config.dataset == "synthetic":
        from nvan_tf.data.datasets.synthetic import generate

        if not config.root and not output_dir:
            raise ValueError("dataset 'synthetic' needs a root (or an output folder to generate it in)")
        root = config.root or os.path.join(output_dir, "synthetic_data")
        if not os.path.exists(os.path.join(root, "info", "tracks_train_info.mat")):
            logger.info("writing synthetic tracklets to %s", root)
            generate(root, num_ids=SYNTHETIC_IDS, cameras=SYNTHETIC_CAMERAS, seed=config.seed)
        return build_dataset("mars", root, verbose=False)
    return build_dataset(config.dataset, config.root, verbose=False)


def evaluate_model(model, test_set, batch_size=16, extractor=None):
    """Rank-1 and mAP (fractions) of ``model`` on ``test_set`` =
    ``(tracklets, query_index, gallery_index)`` (``dataset.test_set()``), under
    the MARS protocol with cosine distance, RRS test clips. ``model`` is run
    as given: evaluate the float32 copy (:meth:`ReIDTask.inference_model`).
    ``extractor``: ``model``'s feature extractor from an earlier call (its
    traced function is reused); default: one made for this call."""
    from nvan_tf import evaluation
    from nvan_tf.evaluation import evaluator, ranking

    tracklets, query, gallery = test_set
    extractor = extractor or evaluator.model_extractor(model, "training evaluation")
    features, pids, camids = evaluation.extract_features(extractor, tracklets, batch_size=batch_size, verbose=0)
    result = ranking.evaluate_indices(features, pids, camids, query, gallery)
    return {"rank1": float(result["rank1"]), "mAP": float(result["mAP"])}


# -----------------------------------------------------------------------------
# The task
# -----------------------------------------------------------------------------
class ReIDTask:
    """What one training run needs, built from ``config`` (a :class:`TrainConfig`).

    Args:
        config: the run's recipe.
        dataset: the dataset (a ``VideoDataset``); default: read (or, for
            ``synthetic``, generated) from ``config`` on first use.
        output_dir: where ``synthetic`` data is generated when ``config.root``
            is not given.
        num_identities: the classifier size when no dataset is read (a
            benchmark on random clips); default: the dataset's training ids.

    Constructing the task validates the model configuration (variant, sizes,
    overrides), so a bad option is refused before anything is read or written.
    """

    def __init__(self, config, dataset=None, output_dir=None, num_identities=None):
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig. Received: {type(config).__name__}")
        self.config = config
        self.output_dir = output_dir
        self._dataset = dataset
        self._num_identities = num_identities
        self._copy = None
        self._extractor = None  # the copy's feature extractor, traced once per run
        self._test_set = None
        self._validation = None
        from nvan_tf.data import pipeline

        # the training stream's own counts: --max-bad-frames judges this run's reads only
        self.frame_checker = pipeline.FrameChecker()
        self.model_config(num_identities=1)  # validates the model options now

    # -- the model -------------------------------------------------------------
    def model_config(self, num_identities=None, sync_batch_norm=False):
        """The ``ModelConfig`` of the run (its identities: the dataset's)."""
        from nvan_tf.models.model import ModelConfig

        c = self.config
        try:
            return ModelConfig.from_variant(
                c.variant, self.num_identities if num_identities is None else num_identities,
                seq_len=c.seq_len, height=c.height, width=c.width, sync_batch_norm=sync_batch_norm,
                **c.model_overrides)
        except TypeError as err:  # unknown option names
            raise ValueError(f"model_overrides: {err}") from None

    def build_model(self, strategy=None):
        """The variant, built in the run's precision, from ``config.seed``.

        With a ``tf.distribute`` strategy, the model object is made outside
        its scope and its variables inside it, with BNs synchronised across
        the replicas when there are several. Call it outside any scope: a
        Keras model made inside one is built again symbolically by ``fit``
        from its first distributed batch, which fails under
        ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585). Compile it
        and fit it inside ``strategy.scope()``.
        """
        import contextlib

        from nvan_tf.models.model import NVANModel, dtype_policy

        replicas = strategy.num_replicas_in_sync if strategy is not None else 1
        keras.utils.set_random_seed(self.config.seed)
        with dtype_policy(self.config.mixed_precision):
            model = NVANModel(self.model_config(sync_batch_norm=replicas > 1))
            with strategy.scope() if strategy is not None else contextlib.nullcontext():
                model.build(model.input_spec_shape)
        return model

    def initialize(self, model):
        """Loads ``config.init`` into ``model`` (only when no training
        checkpoint is restored); returns what was loaded, or None."""
        if not self.config.init:
            return None
        from nvan_tf.io.loading import initialize_from

        description = initialize_from(model, self.config.init)
        logger.info("initialised from %s", description)
        return description

    def compile(self, model, batch_counter=None):
        """The recipe (losses, optimizer, schedule): :func:`compile_model`."""
        return compile_model(model, self.config, self.steps_per_epoch, batch_counter=batch_counter)

    def inference_model(self, model):
        """The float32, uncompiled copy holding ``model``'s current weights:
        what is evaluated, saved for evaluation and exported, whatever the
        training precision. Built on the first call, which must be outside
        any strategy scope (:func:`nvan_tf.training.train` calls it before
        training): under ``MultiWorkerMirroredStrategy`` creating a variable
        is a collective, and only the chief evaluates."""
        from nvan_tf.models.model import float32_copy

        if self._copy is None:
            self._copy = float32_copy(model, copy_weights=False)
        self._copy.set_weights([keras.ops.convert_to_numpy(v) for v in model.weights])
        return self._copy

    @property
    def inference_copy(self):
        """The float32 copy as the last :meth:`inference_model` (or
        :meth:`evaluate`) call left it; None before the first."""
        return self._copy

    def evaluate(self, model, split=None):
        """Rank-1 and mAP of ``model`` (its float32 copy) on ``split``:
        ``"validation"``, ``"test"``, or by default the split that chooses
        the model (``config.selection``: the validation split when the
        config holds one out, else the test split)."""
        split = split or self.config.selection
        data = {"validation": lambda: self.validation_set, "test": lambda: self.test_set}
        if split not in data:
            raise ValueError(f"split must be 'validation' or 'test'. Received: split={split!r}")
        copy = self.inference_model(model)
        if self._extractor is None:
            from nvan_tf.evaluation import evaluator

            self._extractor = evaluator.model_extractor(copy, "training evaluation")
        return evaluate_model(copy, data[split](), batch_size=self.config.eval_batch_size, extractor=self._extractor)

    # -- the data ----------------------------------------------------------------
    @property
    def dataset(self):
        if self._dataset is None:
            self._dataset = load_dataset(self.config, self.output_dir)
        return self._dataset

    @property
    def validation(self):
        """The :class:`~nvan_tf.data.validation.ValidationSplit` held out from
        the training identities (``config.val_ids`` / ``val_fraction``, drawn
        by ``config.seed``), or None."""
        c = self.config
        if c.selection != "validation":
            return None
        if self._validation is None:
            from nvan_tf.data.validation import hold_out

            self._validation = hold_out(self.dataset.train, c.val_ids, c.val_fraction, seed=c.seed)
            logger.info("validation split: %d identities held out of %d (%d queries, %d gallery tracklets)",
                        len(self._validation.pids), self.dataset.num_train_ids,
                        len(self._validation.test_set[1]), len(self._validation.test_set[2]))
        return self._validation

    @property
    def validation_set(self):
        """``(tracklets, query_index, gallery_index)`` of the validation split."""
        if self.validation is None:
            raise ValueError("this run has no validation split: set val_ids (--val-ids N) or val_fraction "
                             "(--val-fraction F) to hold out training identities")
        return self.validation.test_set

    @property
    def train_tracklets(self):
        """What is trained on: the dataset's training tracklets, less the validation identities."""
        return self.validation.train if self.validation is not None else self.dataset.train

    def data_identity(self):
        """What the run trains on, to tell a changed dataset on resume: the
        count, identities, frames and digest of the training track list (after
        the validation split; :func:`nvan_tf.data.datasets.base.track_list_identity`)."""
        from nvan_tf.data.datasets.base import track_list_identity

        return track_list_identity(self.train_tracklets)

    @property
    def num_identities(self):
        if self._num_identities:
            return self._num_identities
        return self.validation.num_train_ids if self.validation is not None else self.dataset.num_train_ids

    @property
    def steps_per_epoch(self):
        return int(self.config.steps_per_epoch or max(self.num_identities // self.config.p, 1))

    @property
    def test_set(self):
        if self._test_set is None:
            self._test_set = self.dataset.test_set()
        return self._test_set

    def build_inputs(self, start_batch=0, shard=(0, 1)):
        """The P x K stream from batch ``start_batch`` on, ``shard=(index,
        count)`` keeping that part of every global batch (one worker's)."""
        from nvan_tf.data import pipeline

        c = self.config
        return pipeline.train_dataset(
            self.train_tracklets, p=c.p, k=c.k, seq_len=c.seq_len, height=c.height, width=c.width,
            flip_prob=c.flip_prob, random_erasing=c.random_erasing, colour_jitter=c.colour_jitter, seed=c.seed,
            replacement=c.pk_replacement, start_step=int(start_batch), shard=shard, checker=self.frame_checker,
        )

    def distributed_inputs(self, strategy, start_batch=0):
        """:meth:`build_inputs` laid out for ``strategy``: one stream that Keras
        splits across local replicas, or, across workers, each worker's rows."""
        import tensorflow as tf

        c = self.config
        replicas = strategy.num_replicas_in_sync
        if (c.p * c.k) % replicas:
            raise ValueError(f"The global batch p*k={c.p * c.k} must divide among {replicas} replicas")
        if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return self.build_inputs(start_batch)  # Keras splits every global batch in order

        def per_worker(context):
            # each local replica gets its rows of the same global batch; nothing is read twice
            local = replicas // context.num_input_pipelines
            first = context.input_pipeline_id * local
            parts = [self.build_inputs(start_batch, (first + j, replicas)) for j in range(local)]
            if local == 1:
                return parts[0]
            return tf.data.Dataset.choose_from_datasets(parts, tf.data.Dataset.range(local).repeat())

        options = tf.distribute.InputOptions(experimental_fetch_to_device=True)
        return strategy.distribute_datasets_from_function(per_worker, options)

    # -- determinism ---------------------------------------------------------------
    def make_deterministic(self):
        """With ``config.deterministic``: TensorFlow's deterministic kernels
        (``enable_op_determinism``) and seeds everywhere, so two runs of one
        seed on one machine give bit-identical weights. A global setting of
        the process; an op without a deterministic kernel then fails loudly."""
        if not self.config.deterministic:
            return False
        from nvan_tf.models.model import enable_determinism

        enable_determinism(self.config.seed)
        return True

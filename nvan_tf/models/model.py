"""The five NVAN variants as one subclassed Keras model.

>>> model = build_model("ste-nvan", num_identities=625)
>>> features = model(clips, training=False)        # (B, 2048) BN-neck, float32
>>> f, logits = model(clips, training=True)         # for triplet + ID losses

| variant         | reference model_type      | non-local        | temporal  |
| --------------- | ------------------------- | ---------------- | --------- |
| baseline        | resnet50_s1               | none             | mean      |
| nvan            | resnet50_NL               | (0, 2, 3, 0)     | -         |
| nvan-stripe     | resnet50_NL_stripe        | stripes, s=16    | -         |
| nvan-temporal   | resnet50_NL_hr            | full, whole clip | max 8-4-2 |
| ste-nvan        | resnet50_NL_stripe_hr     | stripes, pairs   | max 8-4-2 |
"""

import contextlib
import dataclasses

import keras
from keras import layers, ops

from nvan_tf.choices import VARIANTS
from nvan_tf.models.backbone import RESNET_BLOCKS, VideoResNet50, check_non_local, check_stage_blocks, check_stripes
from nvan_tf.models.layers import FeaturePooling, freeze_if_not_trainable, whole_number


EMBEDDING_DIM = 2048


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything that defines a model; ``VARIANTS`` holds the presets."""

    num_identities: int
    variant: str = "custom"
    seq_len: int = 8
    height: int = 256
    width: int = 128
    non_local: tuple = (0, 0, 0, 0)
    stripes: int | None = None
    attention_group: int | None = None
    temporal_reduction: tuple = (False, False, False, False)
    per_frame_pooling: bool = False
    last_stride: int = 1
    stem_relu: bool = False
    stride_in_1x1: bool = False
    input_convention: str = "torch"
    normalize_embedding: bool = False
    sync_batch_norm: bool = False
    stage_blocks: tuple = RESNET_BLOCKS[50]  # residual blocks per stage: ResNet-50, the reference's depth

    def __post_init__(self):
        """Checks every number (NumPy integers accepted, stored as plain
        ints; floats and bools refused), the non-local table
        (:func:`nvan_tf.models.backbone.check_non_local`) and the stripes.
        Lists (from JSON configs) become tuples, so configs compare and hash."""
        def store(name, value):
            object.__setattr__(self, name, value)

        for name in ("num_identities", "seq_len", "height", "width", "last_stride"):
            store(name, whole_number(getattr(self, name), name))
        store("stage_blocks", check_stage_blocks(self.stage_blocks))
        store("non_local", check_non_local(self.non_local, self.stage_blocks))
        store("attention_group", whole_number(self.attention_group, "attention_group", allow_none=True))
        store("stripes", check_stripes(self.stripes))
        store("temporal_reduction", tuple(self.temporal_reduction))

    @classmethod
    def from_variant(cls, variant, num_identities, **overrides):
        if variant not in VARIANTS:
            raise ValueError(
                f"Unknown variant {variant!r}; expected one of {sorted(VARIANTS)}"
            )
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise TypeError(
                f"Unknown model option(s) {unknown}; valid options: {sorted(fields - {'variant'})}"
            )
        return cls(num_identities=num_identities, variant=variant,
                   **{**VARIANTS[variant], **overrides})


@keras.saving.register_keras_serializable(package="nvan_tf")
class NVANModel(keras.Model):
    """ResNet-50 video backbone + feature pooling layer + identity classifier.

    ``model(clips, training=False)`` maps clips ``(B, T, H, W, 3)`` (ImageNet-
    normalised RGB) to the ``(B, 2048)`` float32 BN-neck embedding, compared
    with cosine distance; L2-normalised when ``normalize_embedding``.
    ``model(clips, training=True)`` returns ``(f, logits)``: the pooled feature
    before the BN neck (for the triplet loss) and the identity logits.
    """

    def __init__(self, config, **kwargs):
        if isinstance(config, dict):
            config = ModelConfig(**config)
        kwargs.setdefault("name", config.variant.replace("-", "_"))
        super().__init__(**kwargs)
        self.config = config
        self.backbone = VideoResNet50(
            non_local=config.non_local,
            stripes=config.stripes,
            attention_group=config.attention_group,
            temporal_reduction=config.temporal_reduction,
            last_stride=config.last_stride,
            stem_relu=config.stem_relu,
            stride_in_1x1=config.stride_in_1x1,
            input_convention=config.input_convention,
            sync_batch_norm=config.sync_batch_norm,
            stage_blocks=config.stage_blocks,
            name="backbone",
            dtype=self.dtype_policy,
        )
        self.pooling = FeaturePooling(per_frame=config.per_frame_pooling, sync_batch_norm=config.sync_batch_norm,
                                      name="feature_pooling")
        self.objective = None
        self.classifier = layers.Dense(
            config.num_identities,
            use_bias=False,
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
            dtype="float32",
            name="classifier",
        )

    @property
    def input_spec_shape(self):
        c = self.config
        return (None, c.seq_len, c.height, c.width, 3)

    def build(self, input_shape=None):
        input_shape = tuple(input_shape or self.input_spec_shape)
        self._check_clip_shape(input_shape)
        self.backbone.build(input_shape)
        self.pooling.build(self.backbone.compute_output_shape(input_shape))
        self.classifier.build((None, EMBEDDING_DIM))
        self.built = True
        freeze_if_not_trainable(self)

    def _check_clip_shape(self, shape):
        expected = self.input_spec_shape
        if len(shape) != 5 or tuple(shape[1:]) != expected[1:]:
            raise ValueError(
                f"Model '{self.name}' was built for clips (batch, {expected[1]}, "
                f"{expected[2]}, {expected[3]}, 3) (seq_len, height, width). "
                f"Received: clips of shape {tuple(shape)}"
            )

    def call(self, clips, training=False):
        self._check_clip_shape(tuple(clips.shape))
        f, f_bn = self.pooling(self.backbone(clips, training=training), training=training)
        if training:
            return f, self.classifier(f_bn)
        if self.config.normalize_embedding:
            f_bn = f_bn / ops.maximum(ops.norm(f_bn, axis=-1, keepdims=True), 1e-12)
        return f_bn

    def compute_output_shape(self, input_shape):
        return (input_shape[0], EMBEDDING_DIM)

    # -- training: Keras's fit, customised through its documented hooks ----------------
    def compile(self, *args, objective=None, **kwargs):
        """Keras's ``compile``, plus ``objective``: the training loss as one
        callable ``objective(pids, (f, logits)) -> scalar`` over the training
        outputs (the re-ID objective of ``nvan_tf.training`` is one), with a
        ``metrics`` list of the trackers it updates. Without it, Keras's
        ``loss`` as usual."""
        self.objective = objective
        super().compile(*args, **kwargs)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """``objective(y, y_pred)`` when compiled with one; Keras's otherwise."""
        if self.objective is None:
            return super().compute_loss(x, y, y_pred, sample_weight, training)
        return self.objective(y, y_pred)

    @property
    def metrics(self):
        metrics = super().metrics
        objective = getattr(self, "objective", None)  # None before __init__ sets it
        return metrics + list(objective.metrics) if objective is not None else metrics

    def train_step(self, data):
        """Keras's step; under ``MultiWorkerMirroredStrategy`` its scalar logs
        are returned as vectors of one value.

        Keras 3 (checked on 3.15.1; keras-team/keras#20585) reduces the
        per-replica logs of a multi-worker step with
        ``strategy.reduce("MEAN", value, axis=0)``, which fails on scalars
        ("Invalid reduction dimension 0"). A vector of one value reduces over
        axis 0 and the replicas to the scalar mean over all replicas, which
        is what the other strategies log. tests/test_training.py fails when
        Keras stops needing this.
        """
        logs = super().train_step(data)
        if _reduces_logs_over_workers():
            logs = {name: ops.reshape(value, (1,)) for name, value in logs.items()}
        return logs

    def get_config(self):
        config = super().get_config()  # name, trainable, dtype policy
        config.update({"config": dataclasses.asdict(self.config)})
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def build_model(variant, num_identities, seq_len=8, height=256, width=128, **overrides):
    """Builds one of the five variants (``VARIANTS``), weights created.

    Args:
        variant: "baseline", "nvan", "nvan-stripe", "nvan-temporal" or "ste-nvan".
        num_identities: classes of the identity classifier (MARS: 625).
        seq_len, height, width: clip size the model is built for.
        **overrides: any other ``ModelConfig`` field, e.g. ``stripes=4`` for
            small inputs or ``normalize_embedding=True``.
    """
    config = ModelConfig.from_variant(
        variant, num_identities, seq_len=seq_len, height=height, width=width, **overrides
    )
    model = NVANModel(config)
    model.build(model.input_spec_shape)  # the shape is recorded for export
    return model


def config_of(model):
    """The ``ModelConfig`` of ``model``; a ``TypeError`` if it is not an ``NVANModel``."""
    config = getattr(model, "config", None)
    if not isinstance(config, ModelConfig):
        raise TypeError(
            "Needs an nvan_tf NVANModel (nvan_tf.build_model or nvan_tf.load_model). "
            f"Received: {type(model).__name__}"
        )
    return config


@contextlib.contextmanager
def dtype_policy(precision):
    """Models built inside compute in ``precision`` ("fp32" or "float32",
    "mixed_float16", "mixed_bfloat16"); the previous policy comes back on exit.

    Keras 3 has a global dtype policy only (``keras.config.set_dtype_policy``)
    and no public scope for it, so this is the one place that switches it.
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32" if precision == "fp32" else precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def enable_determinism(seed=0):
    """Seeds Python, NumPy and the backend (``keras.utils.set_random_seed``)
    and, on TensorFlow, turns on its deterministic kernels
    (``tf.config.experimental.enable_op_determinism``): runs of one seed on
    one machine then compute bit-identical results, and an operation without
    a deterministic kernel raises instead of differing. Process-wide."""
    keras.utils.set_random_seed(int(seed))
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def _reduces_logs_over_workers():
    """Whether Keras reduces this step's logs across workers (a
    ``MultiWorkerMirroredStrategy`` on the TensorFlow backend)."""
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy)


def float32_copy(model, *, normalize_embedding=None, copy_weights=True):
    """A float32, uncompiled ``NVANModel`` of ``model``'s configuration, built,
    holding ``model``'s weights (unless ``copy_weights=False``): what is
    evaluated, saved for evaluation and exported, whatever precision trained.

    ``normalize_embedding``: override the config's (export: ``True``). The
    copy's BNs are not synchronised: it is for inference on one device.
    """
    config = dataclasses.replace(config_of(model), sync_batch_norm=False)
    if normalize_embedding is not None:
        config = dataclasses.replace(config, normalize_embedding=bool(normalize_embedding))
    with dtype_policy("float32"):
        copy = NVANModel(config, name=model.name)
        copy.build(copy.input_spec_shape)
    if copy_weights:
        copy.set_weights(model.get_weights())
    return copy

"""The training configuration (plain Python: no TensorFlow import).

:class:`TrainConfig` defaults are the authors' recipe (``docs/training.md``);
:data:`PRESETS` holds each variant's. ``nvan-train`` and ``nvan-tune`` turn
every field into a flag (``nvan_tf.core.flags``: a field's help is its
metadata's; the model-shape fields' are ``ModelShape``'s);
``OUTPUT_DIR/config.json`` records it, and a resumed run must match it
(:meth:`TrainConfig.differences`).
"""

from __future__ import annotations

import argparse
import dataclasses

from nvan_tf.choices import OPTIMIZERS, PK_REPLACEMENT, PRECISIONS, STRATEGIES, TRAIN_DATASETS, VARIANT_NAMES

__all__ = ["TrainConfig", "PRESETS", "PRECISIONS", "STRATEGIES", "OPTIMIZERS", "ConfigMismatch"]


def parse_margin(text):
    """The triplet margin of a command line: ``'soft'`` or a number."""
    if text == "soft":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'soft' or a number, got {text!r}") from None


# Fields that may change between a run and its resumption: they do not alter
# what is computed at a given step (how it is run, how often it is saved or
# evaluated, or how long it goes on).
RESUMABLE_CHANGES = ("epochs", "strategy", "jit", "eval_every", "eval_batch_size",
                     "checkpoint_every", "init", "progress", "max_bad_frames")


@dataclasses.dataclass
class TrainConfig:
    """One training run. The defaults are the authors' recipe for the NVAN
    models on MARS; :data:`PRESETS` holds each variant's (the baseline's own
    script decays 1e-5 over 300 epochs)."""

    # model (the flags of variant, seq_len, height and width: nvan_tf.core.flags.ModelShape's)
    variant: str = "ste-nvan"
    seq_len: int = 8
    height: int = 256
    width: int = 128
    model_overrides: dict = dataclasses.field(default_factory=dict, metadata={
        "help": 'other model options as JSON, e.g. \'{"non_local": [0, 1, 1, 0]}\'', "metavar": "JSON"})
    # data
    dataset: str = dataclasses.field(default="synthetic", metadata={
        "help": "dataset reader; synthetic is generated under --root", "choices": TRAIN_DATASETS})
    root: str | None = dataclasses.field(default=None, metadata={
        "help": "dataset folder (synthetic: default OUTPUT_DIR/synthetic_data)"})
    p: int = dataclasses.field(default=8, metadata={
        "help": "identities per batch (P)"})
    k: int = dataclasses.field(default=4, metadata={
        "help": "tracklets per identity (K)"})
    pk_replacement: str = dataclasses.field(default="always", metadata={
        "help": "how an identity's K tracklets are drawn: always with replacement (the reference) or only "
                "when it has fewer than K", "choices": PK_REPLACEMENT})
    flip_prob: float = dataclasses.field(default=0.5, metadata={
        "help": "whole-clip horizontal flip probability"})
    random_erasing: float = dataclasses.field(default=0.0, metadata={
        "help": "per-frame random erasing probability"})
    colour_jitter: float = dataclasses.field(default=0.0, metadata={
        "help": "per-clip colour jitter: RGB gains exp(U(-c, c)) (0: off, as the reference)"})
    steps_per_epoch: int | None = dataclasses.field(default=None, metadata={
        "help": "steps per epoch (default: identities // P)"})
    max_bad_frames: float = dataclasses.field(default=0.01, metadata={
        "help": "share of the frames read that may be bad (unreadable, truncated; each replaced by its "
                "tracklet's nearest good frame) before the run stops, naming them"})
    # validation: training identities held out to choose the model (0: none, the test split chooses)
    val_ids: int = dataclasses.field(default=0, metadata={
        "help": "training identities held out as a validation split that chooses the best epoch (0: none; "
                "then the test split chooses, as the reference does)"})
    val_fraction: float = dataclasses.field(default=0.0, metadata={
        "help": "the validation split as a share of the training identities (instead of --val-ids)"})
    # losses
    margin: str | float = dataclasses.field(default="soft", metadata={
        "help": "triplet margin: 'soft' or a number (hinge)", "type": parse_margin})
    triplet_weight: float = dataclasses.field(default=1.0, metadata={
        "help": "weight of the triplet loss"})
    identity_weight: float = dataclasses.field(default=1.0, metadata={
        "help": "weight of the identity (cross-entropy) loss"})
    label_smoothing: float = dataclasses.field(default=0.0, metadata={
        "help": "label smoothing of the identity loss"})
    # optimizer and schedule (epochs)
    optimizer: str = dataclasses.field(default="adam", metadata={
        "help": "adam (torch's, L2 decay), adamw (decoupled decay) or sgd (momentum, L2 decay)",
        "choices": OPTIMIZERS})
    lr: float = dataclasses.field(default=1e-4, metadata={
        "help": "learning rate"})
    weight_decay: float = dataclasses.field(default=5e-5, metadata={
        "help": "L2 decay added to every gradient (adam, sgd) or decoupled (adamw)"})
    momentum: float = dataclasses.field(default=0.9, metadata={
        "help": "SGD momentum"})
    epochs: int = dataclasses.field(default=200, metadata={
        "help": "epochs"})
    lr_step: int = dataclasses.field(default=50, metadata={
        "help": "multiply the learning rate by --lr-gamma every this many epochs (0: never)"})
    lr_gamma: float = dataclasses.field(default=0.1, metadata={
        "help": "learning-rate decay factor"})
    warmup_epochs: int = dataclasses.field(default=0, metadata={
        "help": "linear learning-rate warm-up epochs"})
    # evaluation, checkpoints, run
    eval_every: int = dataclasses.field(default=10, metadata={
        "help": "evaluate every N epochs (0: never) on the validation split, or without one on the test "
                "split; the best rank-1 is kept"})
    eval_batch_size: int = dataclasses.field(default=16, metadata={
        "help": "clips per evaluation batch"})
    checkpoint_every: int = dataclasses.field(default=200, metadata={
        "help": "also checkpoint every N steps inside epochs (0: epoch ends only)"})
    init: str | None = dataclasses.field(default=None, metadata={
        "help": "starting weights: torchvision ResNet-50 .pth, Keras-applications .h5, or any checkpoint "
                "nvan-convert / nvan-evaluate reads"})
    seed: int = dataclasses.field(default=0, metadata={
        "help": "seed of the data stream and the initialisation"})
    deterministic: bool = dataclasses.field(default=False, metadata={
        "help": "bit-identical runs for one seed on one machine (TensorFlow's deterministic kernels; slower);"
                " recorded, so a resumed run keeps it"})
    mixed_precision: str = dataclasses.field(default="fp32", metadata={
        "help": "training precision (losses, softmax and BN neck stay float32)", "choices": PRECISIONS})
    jit: bool = dataclasses.field(default=False, metadata={
        "help": "compile the training step with XLA"})
    strategy: str = dataclasses.field(default="default", metadata={
        "help": "tf.distribute strategy (multiworker reads TF_CONFIG)", "choices": STRATEGIES})
    progress: int = dataclasses.field(default=1, metadata={
        "help": "0 silent, 1 progress bar (one line per epoch when not a terminal), 2 one line per epoch"})

    def __post_init__(self):
        def fail(name, expected):
            raise ValueError(f"{name} must be {expected}. Received: {name}={getattr(self, name)!r}")

        if self.variant not in VARIANT_NAMES:
            fail("variant", f"one of {list(VARIANT_NAMES)}")
        for name in ("seq_len", "height", "width", "p", "k", "epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                fail(name, "a positive integer")
        for name in ("lr_step", "warmup_epochs", "eval_every", "checkpoint_every", "seed", "val_ids"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                fail(name, "a non-negative integer")
        if self.steps_per_epoch is not None and (int(self.steps_per_epoch) != self.steps_per_epoch
                                                 or self.steps_per_epoch < 1):
            fail("steps_per_epoch", "a positive integer or None")
        if not isinstance(self.eval_batch_size, int) or self.eval_batch_size < 1:
            fail("eval_batch_size", "a positive integer")
        if not 0.0 <= self.flip_prob <= 1.0:
            fail("flip_prob", "in [0, 1]")
        if not 0.0 <= self.random_erasing <= 1.0:
            fail("random_erasing", "in [0, 1]")
        if not 0.0 <= self.colour_jitter <= 1.0:
            fail("colour_jitter", "in [0, 1]")
        if isinstance(self.max_bad_frames, bool) or not 0.0 <= self.max_bad_frames <= 1.0:
            fail("max_bad_frames", "in [0, 1]")
        if isinstance(self.val_fraction, bool) or not 0.0 <= self.val_fraction < 1.0:
            fail("val_fraction", "in [0, 1)")
        if self.val_ids and self.val_fraction:
            raise ValueError("give val_ids (a count) or val_fraction, not both. "
                             f"Received: val_ids={self.val_ids}, val_fraction={self.val_fraction}")
        if self.margin != "soft":
            try:
                self.margin = float(self.margin)
            except (TypeError, ValueError):
                fail("margin", "'soft' or a non-negative number")
            if self.margin < 0:
                fail("margin", "'soft' or a non-negative number")
        for name in ("triplet_weight", "identity_weight", "weight_decay", "momentum"):
            if getattr(self, name) < 0:
                fail(name, ">= 0")
        if self.triplet_weight == 0 and self.identity_weight == 0:
            raise ValueError("triplet_weight and identity_weight are both 0: nothing to train")
        if not 0.0 <= self.label_smoothing < 1.0:
            fail("label_smoothing", "in [0, 1)")
        if self.lr <= 0:
            fail("lr", "> 0")
        if not 0.0 < self.lr_gamma <= 1.0:
            fail("lr_gamma", "in (0, 1]")
        if self.optimizer not in OPTIMIZERS:
            fail("optimizer", f"one of {list(OPTIMIZERS)}")
        if self.mixed_precision not in PRECISIONS:
            fail("mixed_precision", f"one of {list(PRECISIONS)}")
        if self.strategy not in STRATEGIES:
            fail("strategy", f"one of {list(STRATEGIES)}")
        if self.pk_replacement not in PK_REPLACEMENT:
            fail("pk_replacement", f"one of {list(PK_REPLACEMENT)}")
        if self.dataset not in TRAIN_DATASETS:
            fail("dataset", f"one of {list(TRAIN_DATASETS)}")
        for name in ("jit", "deterministic"):
            if not isinstance(getattr(self, name), bool):
                fail(name, "True or False")
        if self.jit and self.strategy == "multiworker":
            raise ValueError(
                "jit cannot be used with strategy 'multiworker': XLA cannot compile the step's cross-worker "
                "collectives (the triplet loss gathers every worker's features; XLA has no kernel for "
                "TensorFlow's CollectiveGatherV2 on CPU). Received: jit=True, strategy='multiworker'")
        if self.dataset != "synthetic" and not self.root:
            raise ValueError(f"--root is required for dataset {self.dataset!r}: the folder of the dataset")
        if not isinstance(self.model_overrides, dict):
            fail("model_overrides", "a dict of ModelConfig fields")
        self.model_overrides = {key: tuple(v) if isinstance(v, list) else v
                                for key, v in self.model_overrides.items()}

    @classmethod
    def preset(cls, variant, **overrides):
        """The recipe of ``variant`` (see :data:`PRESETS`), with overrides."""
        if variant not in PRESETS:
            raise ValueError(f"Unknown variant {variant!r}; expected one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[variant], **overrides})

    @property
    def selection(self):
        """The split that chooses the model: ``"validation"`` (held-out
        training identities) or ``"test"`` (the reference's protocol)."""
        return "validation" if self.val_ids or self.val_fraction else "test"

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values, source="config"):
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise ValueError(f"{source}: unknown training option(s) {unknown}; valid: {sorted(fields)}")
        return cls(**values)

    def differences(self, other):
        """``[(field, other's value, self's value)]`` of the fields that matter
        for a resume (:func:`nvan_tf.core.records.differences`)."""
        from nvan_tf.core.records import differences

        return differences(other.to_dict(), self.to_dict(), ignore=RESUMABLE_CHANGES)


PRESETS = {
    "baseline": {"variant": "baseline", "weight_decay": 1e-5, "epochs": 300},
    "nvan": {"variant": "nvan"},
    "nvan-stripe": {"variant": "nvan-stripe"},
    "nvan-temporal": {"variant": "nvan-temporal"},
    "ste-nvan": {"variant": "ste-nvan"},
}


class ConfigMismatch(ValueError):
    """The output folder holds a run of another configuration."""



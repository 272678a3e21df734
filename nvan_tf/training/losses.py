"""Training losses: soft-margin batch-hard triplet and identity cross-entropy.

Both follow the authors' training code exactly (see ``docs/training.md``):

- :class:`BatchHardTripletLoss` on the pooled pre-BN clip feature ``f``:
  Euclidean distance ``sqrt(sum (a - b)^2 + 1e-12)`` over all pairs of the
  batch; for every anchor the hardest positive is the largest distance to
  another clip of its identity (0 when it has none) and the hardest negative
  the smallest distance to a clip of another identity (``1e5`` is added to
  same-identity distances, so a batch of one identity gives ``~1e5``);
  ``softplus(hardest_pos - hardest_neg)`` (or ``relu(z + margin)`` for a
  float margin), averaged over anchors.
- :class:`IdentityLoss`: softmax cross-entropy on the clip logits, optional
  label smoothing.

Everything is computed in float32, whatever the dtype policy. Under a
``tf.distribute`` strategy with several replicas, the triplet loss gathers
features and labels from all replicas before mining, so the hardest
positives and negatives are searched over the whole global batch, as the
reference's single ``nn.DataParallel`` forward does; each replica scores its
own anchors, and the replicas' losses add up to the global mean.
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = [
    "BatchHardTripletLoss",
    "IdentityLoss",
    "pairwise_distance",
    "hardest_positive_and_negative",
    "soft_margin",
    "NEGATIVE_OFFSET",
    "DISTANCE_EPSILON",
]

DISTANCE_EPSILON = 1e-12  # inside the square root, as the reference
NEGATIVE_OFFSET = 1e5  # added to same-identity distances before the min


def pairwise_distance(a, b):
    """Euclidean distances ``sqrt(sum_k (a_ik - b_jk)^2 + 1e-12)``.

    Args:
        a: ``(N, D)`` features.
        b: ``(M, D)`` features.

    Returns:
        ``(N, M)`` float32 distances (computed from the differences, not the
        ``|a|^2 + |b|^2 - 2ab`` expansion, so they match the reference to
        float32 rounding and are never negative).
    """
    a = ops.cast(a, "float32")
    b = ops.cast(b, "float32")
    diff = ops.expand_dims(a, 1) - ops.expand_dims(b, 0)
    return ops.sqrt(ops.sum(ops.square(diff), axis=-1) + DISTANCE_EPSILON)


def hardest_positive_and_negative(distances, anchor_ids, candidate_ids, anchor_positions=None):
    """Batch-hard mining with the reference's masks.

    Args:
        distances: ``(N, M)`` distances from ``N`` anchors to ``M`` candidates.
        anchor_ids: ``(N,)`` integer identities of the anchors.
        candidate_ids: ``(M,)`` integer identities of the candidates.
        anchor_positions: ``(N,)`` column of each anchor among the candidates
            (the anchor itself is never its own positive); default
            ``0..N-1`` (anchors are the first candidates).

    Returns:
        ``(hardest_positive, hardest_negative)``, each ``(N,)``:
        ``max_j d_ij * [same id, j != self]`` (0 without another clip of the
        identity) and ``min_j d_ij + 1e5 * [same id]``.
    """
    n = ops.shape(distances)[0]
    m = ops.shape(distances)[1]
    if anchor_positions is None:
        anchor_positions = ops.arange(n)
    same = ops.equal(ops.expand_dims(anchor_ids, 1), ops.expand_dims(candidate_ids, 0))
    is_self = ops.equal(ops.expand_dims(anchor_positions, 1), ops.expand_dims(ops.arange(m), 0))
    positive = ops.cast(ops.logical_and(same, ops.logical_not(is_self)), distances.dtype)
    hardest_positive = ops.max(distances * positive, axis=1)
    hardest_negative = ops.min(distances + NEGATIVE_OFFSET * ops.cast(same, distances.dtype), axis=1)
    return hardest_positive, hardest_negative


def soft_margin(z):
    """``log(1 + exp(z))``, computed stably for any ``z`` (shape preserved)."""
    return ops.softplus(z)


def _replica_context():
    """The ``tf.distribute`` replica context when several replicas train, else None."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync <= 1:
        return None
    return context


@keras.saving.register_keras_serializable(package="nvan_tf")
class BatchHardTripletLoss(keras.losses.Loss):
    """Batch-hard triplet loss, soft margin by default.

    ``loss(pids, features)``: ``pids`` ``(B,)`` integer identities,
    ``features`` ``(B, D)``; returns the mean over the ``B`` anchors of
    ``softplus(d_pos - d_neg)`` (``margin="soft"``) or
    ``max(d_pos - d_neg + margin, 0)`` (a float margin).
    """

    def __init__(self, margin="soft", name="triplet", reduction="sum_over_batch_size", **kwargs):
        if margin != "soft":
            try:
                margin = float(margin)
            except (TypeError, ValueError):
                raise ValueError(
                    f"margin must be 'soft' or a non-negative number. Received: margin={margin!r}"
                ) from None
            if margin < 0:
                raise ValueError(f"margin must be 'soft' or a non-negative number. Received: margin={margin}")
        super().__init__(name=name, reduction=reduction, dtype="float32", **kwargs)
        self.margin = margin

    def call(self, y_true, y_pred):
        pids = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        features = ops.cast(y_pred, "float32")
        candidates, candidate_ids, positions = features, pids, None
        context = _replica_context()
        if context is not None:  # mine over the global batch
            import tensorflow as tf

            candidates = context.all_gather(features, axis=0)
            candidate_ids = context.all_gather(pids, axis=0)
            local = tf.shape(features)[0]
            positions = tf.range(local) + local * tf.cast(context.replica_id_in_sync_group, tf.int32)
        distances = pairwise_distance(features, candidates)
        positive, negative = hardest_positive_and_negative(distances, pids, candidate_ids, positions)
        z = positive - negative
        if self.margin == "soft":
            return soft_margin(z)
        return ops.relu(z + self.margin)

    def get_config(self):
        config = super().get_config()
        config.update({"margin": self.margin})
        return config


@keras.saving.register_keras_serializable(package="nvan_tf")
class IdentityLoss(keras.losses.Loss):
    """Softmax cross-entropy on identity logits, in float32.

    ``loss(pids, logits)``: ``pids`` ``(B,)`` integer labels in
    ``[0, num_classes)``, ``logits`` ``(B, num_classes)``. With
    ``label_smoothing=e`` the target is ``(1 - e) * onehot + e / num_classes``.
    """

    def __init__(self, label_smoothing=0.0, name="identity", reduction="sum_over_batch_size", **kwargs):
        label_smoothing = float(label_smoothing)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(
                f"label_smoothing must be in [0, 1). Received: label_smoothing={label_smoothing}"
            )
        super().__init__(name=name, reduction=reduction, dtype="float32", **kwargs)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        logits = ops.cast(y_pred, "float32")
        num_classes = ops.shape(logits)[-1]
        target = ops.one_hot(ops.reshape(ops.cast(y_true, "int32"), (-1,)), num_classes, dtype="float32")
        if self.label_smoothing:
            target = target * (1.0 - self.label_smoothing) + self.label_smoothing / ops.cast(
                num_classes, "float32"
            )
        return -ops.sum(target * ops.log_softmax(logits, axis=-1), axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update({"label_smoothing": self.label_smoothing})
        return config

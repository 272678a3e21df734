"""The training losses against a NumPy loop written from their formulas.

Batch-hard triplet loss of the authors' training code, per anchor ``i``:

    d_ij   = sqrt(sum_k (x_ik - x_jk)^2 + 1e-12)
    pos_i  = max_j d_ij * [id_j == id_i and j != i]       (0 without another clip)
    neg_i  = min_j d_ij + 1e5 * [id_j == id_i]             (self included)
    loss_i = softplus(pos_i - neg_i)    or    max(pos_i - neg_i + margin, 0)

and the mean over anchors. Identity loss: cross-entropy with the target
``(1 - e) * onehot + e / C``, mean over clips. The references below are plain
float64 Python loops, independent of the vectorised library code.
"""

import math

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from nvan_tf.training.losses import (  # noqa: E402
    BatchHardTripletLoss,
    IdentityLoss,
    hardest_positive_and_negative,
    pairwise_distance,
    soft_margin,
)


# -----------------------------------------------------------------------------
# NumPy references (float64, one anchor at a time)
# -----------------------------------------------------------------------------
def softplus(z):
    """log(1 + exp(z)) without overflow: max(z, 0) + log1p(exp(-|z|))."""
    return max(z, 0.0) + math.log1p(math.exp(-abs(z)))


def mined(pids, features):
    """(pos_i, neg_i) lists, from the formula."""
    x = np.asarray(features, dtype=np.float64)
    n = len(pids)
    pos, neg = [], []
    for i in range(n):
        d = [math.sqrt(float(np.sum((x[i] - x[j]) ** 2)) + 1e-12) for j in range(n)]
        pos.append(max(d[j] * (pids[j] == pids[i] and j != i) for j in range(n)))
        neg.append(min(d[j] + 1e5 * (pids[j] == pids[i]) for j in range(n)))
    return pos, neg


def triplet_reference(pids, features, margin="soft"):
    pos, neg = mined(pids, features)
    z = [p - q for p, q in zip(pos, neg)]
    if margin == "soft":
        losses = [softplus(v) for v in z]
    else:
        losses = [max(v + margin, 0.0) for v in z]
    return sum(losses) / len(losses)


def identity_reference(pids, logits, label_smoothing=0.0):
    logits = np.asarray(logits, dtype=np.float64)
    c = logits.shape[1]
    total = 0.0
    for label, row in zip(pids, logits):
        top = row.max()
        log_z = top + math.log(sum(math.exp(v - top) for v in row))
        for k in range(c):
            target = (1.0 - label_smoothing) * (k == label) + label_smoothing / c
            total -= target * (row[k] - log_z)
    return total / len(pids)


def triplet(pids, features, margin="soft"):
    return float(BatchHardTripletLoss(margin=margin)(np.asarray(pids), features))


PIDS = np.array([3, 3, 3, 7, 7, 7, 1, 1, 1, 4, 4, 4])  # P=4 x K=3, ids not 0..P-1


def features(n=12, d=16, seed=0, dtype="float32"):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(dtype)


# -----------------------------------------------------------------------------
# Triplet loss: values
# -----------------------------------------------------------------------------
@pytest.mark.parametrize("margin", ["soft", 0.3, 0.0, 5.0])
def test_triplet_matches_the_formula(margin):
    x = features()
    expected = triplet_reference(PIDS, x, margin)
    assert expected > 0  # not a vacuous zero
    np.testing.assert_allclose(triplet(PIDS, x, margin), expected, rtol=1e-5)


def test_triplet_random_batches_and_unsorted_ids():
    rng = np.random.default_rng(1)
    for seed in range(5):
        pids = rng.integers(0, 4, size=10)
        x = features(10, 8, seed=10 + seed) * rng.uniform(0.1, 3.0)
        np.testing.assert_allclose(triplet(pids, x), triplet_reference(pids, x), rtol=1e-5)
        np.testing.assert_allclose(triplet(pids, x, 1.0), triplet_reference(pids, x, 1.0),
                                   rtol=1e-5, atol=1e-6)


def test_pure_functions_match_the_formula():
    x = features(7, 5, seed=2)
    pids = np.array([0, 0, 1, 1, 1, 2, 3])
    expected_d = np.array([[math.sqrt(float(np.sum((a.astype(np.float64) - b) ** 2)) + 1e-12)
                            for b in x] for a in x])
    d = pairwise_distance(x, x)
    assert d.dtype == "float32"
    np.testing.assert_allclose(np.asarray(d), expected_d, rtol=1e-6, atol=1e-6)
    # the diagonal is sqrt(1e-12) = 1e-6, never 0 (the gradient stays finite)
    np.testing.assert_allclose(np.diag(np.asarray(d)), 1e-6, rtol=1e-3)
    pos, neg = hardest_positive_and_negative(d, pids, pids)
    exp_pos, exp_neg = mined(pids, x)
    np.testing.assert_allclose(np.asarray(pos), exp_pos, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(neg), exp_neg, rtol=1e-6)
    assert np.asarray(pos)[6] == 0.0  # id 3 has one clip: no positive
    z = np.array([-1e4, -80.0, -3.0, 0.0, 2.5, 80.0, 1e4], "float32")
    np.testing.assert_allclose(np.asarray(soft_margin(z)), [softplus(float(v)) for v in z],
                               rtol=1e-6, atol=1e-30)


def test_mining_with_anchors_among_more_candidates():
    """anchor_positions: anchors are rows 2..4 of a 6-clip candidate set."""
    x = features(6, 4, seed=3)
    pids = np.array([0, 1, 1, 0, 2, 1])
    rows = [2, 3, 4]
    d = pairwise_distance(x[rows], x)
    pos, neg = hardest_positive_and_negative(d, pids[rows], pids, np.array(rows))
    exp_pos, exp_neg = mined(pids, x)
    np.testing.assert_allclose(np.asarray(pos), [exp_pos[r] for r in rows], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(neg), [exp_neg[r] for r in rows], rtol=1e-6)


def test_ties_duplicate_features():
    """Duplicated vectors, within an id and across ids: the distance is then
    sqrt(1e-12) = 1e-6 (a hardest negative at 1e-6 for the cross-id copy)."""
    x = features(8, 6, seed=4)
    pids = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    x[1] = x[0]  # same id, identical: positive distance 1e-6, never chosen over others
    x[3] = x[2]  # different ids, identical: hardest negative 1e-6
    x[6] = x[5]
    x[7] = x[5]  # an id whose clips all coincide: hardest positive 1e-6
    pos, neg = mined(pids, x)
    assert math.isclose(neg[2], 1e-6, rel_tol=1e-9) and math.isclose(pos[5], 1e-6, rel_tol=1e-9)
    for margin in ("soft", 0.5):
        np.testing.assert_allclose(triplet(pids, x, margin), triplet_reference(pids, x, margin),
                                   rtol=1e-5)
    # equal distances from one anchor (a tie inside the max / min)
    y = np.zeros((4, 2), "float32")
    y[1], y[2], y[3] = [3, 0], [0, 3], [-3, 0]  # anchor 0: every other clip at distance 3
    ids = np.array([0, 0, 1, 0])
    np.testing.assert_allclose(triplet(ids, y), triplet_reference(ids, y), rtol=1e-6)


def test_identity_with_a_single_clip():
    """An id with one clip has no positive: pos = 0, loss softplus(-neg)."""
    x = features(7, 8, seed=5)
    pids = np.array([0, 0, 1, 1, 2, 2, 9])  # id 9 alone
    pos, neg = mined(pids, x)
    assert pos[6] == 0.0
    for margin in ("soft", 0.5):
        np.testing.assert_allclose(triplet(pids, x, margin), triplet_reference(pids, x, margin),
                                   rtol=1e-5)


def test_a_batch_of_one_identity():
    """No negatives: neg ~ 1e5 + d, so softplus(z) underflows to 0 and the
    hinge is 0; the value is finite (no inf from an empty min)."""
    x = features(4, 8, seed=6)
    pids = np.array([5, 5, 5, 5])
    pos, neg = mined(pids, x)
    assert all(1e5 < v < 1e5 + 100 for v in neg)
    assert triplet_reference(pids, x) < 1e-30
    for margin in ("soft", 1.0):
        value = triplet(pids, x, margin)
        assert np.isfinite(value)
        np.testing.assert_allclose(value, triplet_reference(pids, x, margin), atol=1e-30)
    # one identity and one clip: z = 0 - (1e-6 + 1e5)
    assert triplet(np.array([2]), x[:1]) == 0.0


def test_float16_features_are_scored_in_float32():
    x32 = features(seed=7)
    x16 = x32.astype("float16")
    value = BatchHardTripletLoss()(PIDS, x16)
    assert value.dtype == "float32"
    # exactly the float32 loss of the float16-rounded features ...
    np.testing.assert_allclose(float(value), triplet_reference(PIDS, x16.astype("float32")), rtol=1e-5)
    # ... which is close to the float32 loss (float16 rounding is ~5e-4 relative)
    np.testing.assert_allclose(float(value), triplet(PIDS, x32), rtol=2e-3)
    logits32 = features(12, 5, seed=8) * 4
    ce = IdentityLoss()(PIDS % 5, logits32.astype("float16"))
    assert ce.dtype == "float32"
    np.testing.assert_allclose(float(ce), identity_reference(PIDS % 5, logits32.astype("float16")),
                               rtol=1e-5)
    np.testing.assert_allclose(float(ce), identity_reference(PIDS % 5, logits32), rtol=2e-3)


def test_float16_policy_still_returns_float32():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        value = BatchHardTripletLoss()(PIDS, features(seed=9).astype("float16"))
        ce = IdentityLoss()(PIDS % 3, features(12, 3, seed=9).astype("float16"))
    finally:
        keras.config.set_dtype_policy(previous)
    assert value.dtype == "float32" and ce.dtype == "float32"


def test_large_margins_are_stable():
    """z = +-1e4: log(1 + exp(z)) would overflow; softplus gives z and 0,
    and the gradient stays finite."""
    pids = np.array([0, 0, 1])
    x = np.zeros((3, 2), "float32")
    x[1] = [1e4, 0]  # anchor 0: hardest positive 1e4, negative at distance 1e-6 + 0
    far = x.copy()
    far[2] = [0, 1e4]  # one clip far from everything: z = -1e4 for it
    for batch in (x, far):
        z_pos, z_neg = mined(pids, batch)
        assert max(abs(p - q) for p, q in zip(z_pos, z_neg)) >= 1e4 - 1
        value = triplet(pids, batch)
        assert np.isfinite(value)
        np.testing.assert_allclose(value, triplet_reference(pids, batch), rtol=1e-6)
        var = tf.Variable(batch)
        with tf.GradientTape() as tape:
            loss = BatchHardTripletLoss()(pids, var)
        assert np.all(np.isfinite(tape.gradient(loss, var).numpy()))
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0]], "float32")
    for label_smoothing in (0.0, 0.1):
        ce = IdentityLoss(label_smoothing)(np.array([1, 1]), logits)
        assert np.isfinite(float(ce))
        np.testing.assert_allclose(float(ce), identity_reference([1, 1], logits, label_smoothing),
                                   rtol=1e-6)


# -----------------------------------------------------------------------------
# Identity loss
# -----------------------------------------------------------------------------
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 0.5])
def test_identity_loss_matches_the_formula(label_smoothing):
    logits = features(12, 7, seed=10) * 3
    pids = np.array([0, 6, 2, 2, 3, 5, 1, 1, 4, 0, 6, 3])
    value = IdentityLoss(label_smoothing)(pids, logits)
    np.testing.assert_allclose(float(value), identity_reference(pids, logits, label_smoothing),
                               rtol=1e-6)


def test_identity_loss_equals_torch_cross_entropy():
    torch = pytest.importorskip("torch")
    logits = features(8, 5, seed=11) * 2
    pids = np.array([0, 1, 2, 3, 4, 0, 1, 2])
    for e in (0.0, 0.2):
        expected = torch.nn.CrossEntropyLoss(label_smoothing=e)(
            torch.from_numpy(logits), torch.from_numpy(pids))
        np.testing.assert_allclose(float(IdentityLoss(e)(pids, logits)), float(expected), rtol=1e-6)


# -----------------------------------------------------------------------------
# Arguments and serialization
# -----------------------------------------------------------------------------
@pytest.mark.parametrize("margin", [-1, -0.5, "hard", None, "0.x"])
def test_invalid_margin(margin):
    with pytest.raises(ValueError, match="margin"):
        BatchHardTripletLoss(margin=margin)


@pytest.mark.parametrize("label_smoothing", [1.0, 1.5, -0.1])
def test_invalid_label_smoothing(label_smoothing):
    with pytest.raises(ValueError, match="label_smoothing"):
        IdentityLoss(label_smoothing=label_smoothing)


@pytest.mark.parametrize("loss", [BatchHardTripletLoss(), BatchHardTripletLoss(0.3),
                                  IdentityLoss(), IdentityLoss(0.1)])
def test_config_round_trip(loss):
    config = loss.get_config()
    clone = type(loss).from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(restored) is type(loss) and restored.get_config() == config
    x = features(6, 4, seed=12)
    pids = np.array([0, 0, 1, 1, 2, 3])
    np.testing.assert_allclose(float(clone(pids, x)), float(loss(pids, x)), rtol=0)


# -----------------------------------------------------------------------------
# Gradients: TensorFlow vs central finite differences of the float64 reference
# -----------------------------------------------------------------------------
def finite_difference(fn, x, h=1e-6):
    x = np.asarray(x, dtype=np.float64)
    grad = np.zeros_like(x)
    for index in np.ndindex(*x.shape):
        up, down = x.copy(), x.copy()
        up[index] += h
        down[index] -= h
        grad[index] = (fn(up) - fn(down)) / (2 * h)
    return grad


def tf_gradient(loss, pids, x):
    var = tf.Variable(np.asarray(x, "float32"))
    with tf.GradientTape() as tape:
        value = loss(pids, var)
    return tape.gradient(value, var).numpy()


def well_separated(pids, x, margin="soft", gap=1e-2):
    """True when every anchor's hardest positive and negative are unique by
    ``gap`` (no ties, so the loss is differentiable there) and no hinge sits
    at its kink."""
    x = np.asarray(x, np.float64)
    n = len(pids)
    for i in range(n):
        d = np.sqrt(((x[i] - x) ** 2).sum(1) + 1e-12)
        same = pids == pids[i]
        for mask in (same & (np.arange(n) != i), ~same):
            if mask.sum() > 1:
                top = np.sort(d[mask])
                if top[-1] - top[-2] < gap or top[1] - top[0] < gap:
                    return False
    if margin != "soft":
        pos, neg = mined(pids, x)
        if min(abs(p - q + margin) for p, q in zip(pos, neg)) < gap:
            return False
    return True


@pytest.mark.parametrize("margin", ["soft", 1.0])
def test_triplet_gradient_by_finite_differences(margin):
    pids = np.array([0, 0, 0, 1, 1, 2, 2, 2, 5])  # id 5 has one clip
    x = features(9, 5, seed=13).astype(np.float64)
    assert well_separated(pids, x, margin)
    expected = finite_difference(lambda v: triplet_reference(pids, v, margin), x)
    got = tf_gradient(BatchHardTripletLoss(margin), pids, x)
    assert np.abs(expected).max() > 1e-2  # a real gradient, not zeros
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_identity_gradient_by_finite_differences():
    pids = np.array([0, 3, 1, 1, 2])
    logits = features(5, 4, seed=14).astype(np.float64) * 2
    for e in (0.0, 0.1):
        expected = finite_difference(lambda v: identity_reference(pids, v, e), logits)
        got = tf_gradient(IdentityLoss(e), pids, logits)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)

"""Custom layers against NumPy implementations of the equations of docs/architecture.md."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from nvan_tf.models.layers import (  # noqa: E402
    BN_EPSILON,
    FeaturePooling,
    FrameGrouping,
    NonLocalBlock,
    StripeNonLocalBlock,
    TemporalMaxReduction,
)

RNG = np.random.default_rng(0)


def randomize(layer, seed=0):
    """Non-zero weights everywhere (BN gammas included), positive variances."""
    rng = np.random.default_rng(seed)
    for v in layer.weights:
        shape = tuple(v.shape)
        if v.path.endswith("moving_variance"):
            value = rng.uniform(0.5, 2.0, shape)
        elif v.path.endswith("gamma"):
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = rng.normal(0.0, 0.3, shape)
        v.assign(value.astype("float32"))


def np_softmax(f):
    f = f - f.max(axis=-1, keepdims=True)
    e = np.exp(f)
    return e / e.sum(axis=-1, keepdims=True)


def np_bn(x, bn):
    gamma, beta, mean, var = (np.asarray(w) for w in (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance))
    return gamma * (x - mean) / np.sqrt(var + BN_EPSILON) + beta


def np_attention(tokens, block):
    """docs/architecture.md: f = theta . phi^T; y = softmax(f) . g; return BN(W(y))."""
    def affine(x, dense):
        return x @ np.asarray(dense.kernel) + np.asarray(dense.bias)

    theta, phi, g = affine(tokens, block.theta), affine(tokens, block.phi), affine(tokens, block.g)
    f = theta @ np.swapaxes(phi, 1, 2)
    y = np_softmax(f) @ g
    return np_bn(affine(y, block.w), block.w_bn)


def np_nonlocal(x, block):
    b, t, h, w, c = x.shape
    tokens = x.reshape(b, t * h * w, c)
    return x + np_attention(tokens, block).reshape(x.shape)


def np_stripe_nonlocal(x, block, stripes):
    b, t, h, w, c = x.shape
    rows = h // stripes
    tokens = np.zeros((b, t, stripes, c))
    for s in range(stripes):
        tokens[:, :, s] = x[:, :, s * rows:(s + 1) * rows].mean(axis=(2, 3))
    z = np_attention(tokens.reshape(b, t * stripes, c), block).reshape(b, t, stripes, c)
    out = x.copy()
    for s in range(stripes):
        for r in range(s * rows, (s + 1) * rows):
            out[:, :, r] += z[:, :, s][:, :, None, :]
    return out


def video(shape):
    return RNG.normal(size=shape).astype("float32")


def test_nonlocal_is_identity_at_init():
    x = video((2, 4, 6, 4, 8))
    for block in (NonLocalBlock(), StripeNonLocalBlock(stripes=3)):
        np.testing.assert_array_equal(np.asarray(block(x)), x)


def test_nonlocal_matches_numpy_equations():
    x = video((2, 3, 4, 2, 8))
    block = NonLocalBlock()
    block.build(x.shape)
    randomize(block, 1)
    out = np.asarray(block(x, training=False))
    ref = np_nonlocal(x.astype("float64"), block)
    assert np.abs(ref - x).max() > 0.1  # the block does something
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


def test_nonlocal_inter_channels_default_is_half():
    block = NonLocalBlock()
    block.build((None, 2, 4, 4, 16))
    assert tuple(block.theta.kernel.shape) == (16, 8)
    assert tuple(block.w.kernel.shape) == (8, 16)


def test_stripe_nonlocal_matches_numpy_equations():
    x = video((2, 2, 8, 3, 6))
    block = StripeNonLocalBlock(stripes=4)
    block.build(x.shape)
    randomize(block, 2)
    out = np.asarray(block(x, training=False))
    ref = np_stripe_nonlocal(x.astype("float64"), block, 4)
    assert np.abs(ref - x).max() > 0.1
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


def test_stripe_output_is_constant_within_a_stripe():
    x = video((1, 2, 8, 3, 4))
    block = StripeNonLocalBlock(stripes=2)
    block.build(x.shape)
    randomize(block, 3)
    delta = np.asarray(block(x)) - x
    np.testing.assert_allclose(delta[:, :, :4], np.broadcast_to(delta[:, :, :1], delta[:, :, :4].shape), atol=1e-5)
    assert not np.allclose(delta[:, :, 0], delta[:, :, 4])


def test_stripes_must_divide_height():
    with pytest.raises(ValueError, match="stripes=3 for height 8"):
        StripeNonLocalBlock(stripes=3).build((None, 2, 8, 4, 8))
    with pytest.raises(ValueError, match="stripes"):
        StripeNonLocalBlock(stripes=0)


def test_frame_grouping_attends_within_groups_only():
    x = video((2, 4, 2, 2, 4))
    block = NonLocalBlock()
    grouped = FrameGrouping(block, group_size=2)
    grouped.build(x.shape)
    randomize(block, 4)
    out = np.asarray(grouped(x))
    ref = np.concatenate(
        [np_nonlocal(x[:, i:i + 2].astype("float64"), block) for i in (0, 2)], axis=1
    )
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
    whole = np_nonlocal(x.astype("float64"), block)
    assert np.abs(whole - ref).max() > 1e-3  # grouping changes the result


def test_frame_grouping_none_is_whole_clip_and_rejects_odd_frames():
    x = video((1, 3, 2, 2, 4))
    block = NonLocalBlock()
    grouped = FrameGrouping(block)
    grouped.build(x.shape)
    randomize(block, 5)
    np.testing.assert_allclose(np.asarray(grouped(x)), np_nonlocal(x.astype("float64"), block), atol=1e-4)
    with pytest.raises(ValueError, match="cannot split 3 frames into groups of 2"):
        FrameGrouping(NonLocalBlock(), group_size=2).build(x.shape)


def test_temporal_max_reduction():
    x = video((2, 8, 3, 2, 4))
    out = np.asarray(TemporalMaxReduction(2)(x))
    np.testing.assert_array_equal(out, np.maximum(x[:, 0::2], x[:, 1::2]))
    assert TemporalMaxReduction(2).compute_output_shape((None, 8, 3, 2, 4)) == (None, 4, 3, 2, 4)
    with pytest.raises(ValueError, match="divisible by 2. Received: 5 frames"):
        TemporalMaxReduction(2).compute_output_shape((None, 5, 3, 2, 4))


@pytest.mark.parametrize("per_frame", [False, True])
def test_feature_pooling(per_frame):
    x = video((3, 4, 2, 2, 6))
    layer = FeaturePooling(per_frame=per_frame)
    layer.build(x.shape)
    randomize(layer, 6)
    f, f_bn = (np.asarray(v) for v in layer(x, training=False))
    np.testing.assert_allclose(f, x.mean(axis=(1, 2, 3)), atol=1e-5)
    if per_frame:
        ref = np_bn(x.mean(axis=(2, 3)), layer.bn).mean(axis=1)
    else:
        ref = np_bn(x.mean(axis=(1, 2, 3)), layer.bn)
    np.testing.assert_allclose(f_bn, ref, rtol=1e-5, atol=1e-5)
    assert f.dtype == np.float32 and f_bn.dtype == np.float32
    assert not layer.bn.beta.trainable and layer.bn.gamma.trainable


def test_per_frame_bn_uses_frame_statistics_in_training():
    x = video((2, 4, 2, 2, 3)) * 3 + 1
    layer = FeaturePooling(per_frame=True)
    _, f_bn = layer(x, training=True)
    frames = x.mean(axis=(2, 3)).reshape(-1, 3)
    ref = ((frames - frames.mean(0)) / np.sqrt(frames.var(0) + BN_EPSILON)).reshape(2, 4, 3).mean(1)
    np.testing.assert_allclose(np.asarray(f_bn), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "make",
    [
        lambda: NonLocalBlock(inter_channels=3),
        lambda: StripeNonLocalBlock(stripes=2),
        lambda: FrameGrouping(StripeNonLocalBlock(stripes=2), group_size=2),
        lambda: TemporalMaxReduction(2),
    ],
)
def test_config_round_trip_and_shapes(make):
    layer = make()
    x = video((2, 4, 4, 2, 6))
    eager = layer(x)
    clone = layer.__class__.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    symbolic = layer(keras.Input(shape=x.shape[1:]))
    expected = layer.compute_output_shape((None,) + x.shape[1:])
    assert tuple(symbolic.shape) == tuple(expected)
    assert tuple(eager.shape) == (2,) + tuple(expected[1:])


BASE_CONFIG_MAKERS = {
    "nonlocal": lambda **kw: NonLocalBlock(inter_channels=3, **kw),
    "stripe": lambda **kw: StripeNonLocalBlock(stripes=2, **kw),
    "grouping": lambda **kw: FrameGrouping(StripeNonLocalBlock(stripes=2, **kw), group_size=2, **kw),
    "reduction": lambda **kw: TemporalMaxReduction(2, **kw),
    "pooling": lambda **kw: FeaturePooling(per_frame=True, **kw),
}


@pytest.mark.parametrize("kind", sorted(BASE_CONFIG_MAKERS))
def test_config_keeps_dtype_policy_trainable_and_name(kind):
    """A frozen bfloat16 layer comes back from its config frozen and in
    bfloat16 (FeaturePooling: float32, as given): its sublayers compute in
    the policy and their BN statistics stay put in training mode."""
    dtype = "float32" if kind == "pooling" else "mixed_bfloat16"
    layer = BASE_CONFIG_MAKERS[kind](dtype=dtype, trainable=False, name=f"my_{kind}")
    x = video((2, 4, 4, 2, 6))
    layer(x)
    clone = layer.__class__.from_config(layer.get_config())
    assert clone.name == f"my_{kind}" and clone.trainable is False
    assert clone.dtype_policy.name == dtype
    out = clone(x)
    outputs = out if isinstance(out, tuple) else (out,)
    assert all(o.dtype == keras.backend.standardize_dtype(clone.compute_dtype) for o in outputs)
    for w in clone.weights:  # BN gammas non-zero, so the BNs matter
        if w.path.endswith("gamma"):
            w.assign(np.ones(w.shape, "float32"))
    before = [np.asarray(w) for w in clone.weights]
    clone(x * 3.0 + 1.0, training=True)
    assert clone.trainable_weights == [] and not any(w.trainable for w in clone.weights)
    for w, old in zip(clone.weights, before):
        np.testing.assert_array_equal(np.asarray(w), old, err_msg=w.path)


def test_bn_neck_shift_stays_frozen_when_unfrozen_again():
    layer = FeaturePooling()
    layer.build((None, 2, 2, 2, 4))
    layer.trainable = False
    layer.trainable = True
    assert not layer.bn.beta.trainable and layer.bn.gamma.trainable
    assert not any(w is layer.bn.beta for w in layer.trainable_weights)

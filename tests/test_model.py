"""The five variants: shapes, temporal reduction, errors, serialisation."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import nvan_tf  # noqa: E402
from nvan_tf.models.model import VARIANTS, ModelConfig, NVANModel  # noqa: E402

SMALL = {"seq_len": 4, "height": 64, "width": 32}
# At 64x32 the res3 / res4 maps are 8 and 4 rows high: 16 stripes do not fit.
SMALL_STRIPES = {"nvan-stripe": 4, "ste-nvan": 2}


def small_model(variant, **overrides):
    if variant in SMALL_STRIPES:
        overrides.setdefault("stripes", SMALL_STRIPES[variant])
    return nvan_tf.build_model(variant, 7, **{**SMALL, **overrides})


def clips(batch=2, t=4, h=64, w=32, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, t, h, w, 3)).astype("float32")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_shapes_eager_and_symbolic(variant):
    model = small_model(variant)
    x = clips()
    features = model(x, training=False)
    f, logits = model(x, training=True)
    assert tuple(features.shape) == (2, 2048)
    assert tuple(f.shape) == (2, 2048) and tuple(logits.shape) == (2, 7)
    assert features.dtype == "float32"
    assert tuple(model.compute_output_shape((2,) + x.shape[1:])) == (2, 2048)
    symbolic = model(keras.Input(shape=x.shape[1:]))
    assert tuple(symbolic.shape) == (None, 2048)
    # Non-local blocks per variant: 0 for the baseline, 5 for the others.
    count = sum(len(stage) for stage in model.backbone.nonlocal_blocks)
    assert count == (0 if variant == "baseline" else 5)


def test_ste_nvan_reduces_frames_8_4_2():
    model = nvan_tf.build_model("ste-nvan", 3, seq_len=8, height=64, width=32, stripes=2)
    backbone = model.backbone
    x = keras.ops.convert_to_tensor(clips(1, 8))
    seen = []
    for index, block, nl, reduction in backbone._stages():
        if nl is not None:
            seen.append((index, nl.group_size))
        if reduction is not None:
            seen.append((index, "max"))
    assert seen == [(1, 2), (1, 2), (1, "max"), (2, 2), (2, 2), (2, 2), (2, "max")]
    assert backbone.compute_output_shape((None, 8, 64, 32, 3)) == (None, 2, 4, 2, 2048)
    assert tuple(backbone(x).shape) == (1, 2, 4, 2, 2048)
    nvan = nvan_tf.build_model("nvan", 3, seq_len=8, height=64, width=32)
    assert tuple(nvan.backbone(x).shape) == (1, 8, 4, 2, 2048)


def test_full_size_output_map():
    model = NVANModel(ModelConfig.from_variant("ste-nvan", 3))
    assert model.backbone.compute_output_shape((None, 8, 256, 128, 3)) == (None, 2, 16, 8, 2048)


def test_bad_sizes_are_rejected_clearly():
    with pytest.raises(ValueError, match="stripes=16 for height 8"):
        nvan_tf.build_model("nvan-stripe", 3, **SMALL)
    with pytest.raises(ValueError, match="divisible by 2. Received: 3 frames|groups of 2"):
        nvan_tf.build_model("ste-nvan", 3, seq_len=3, height=64, width=32, stripes=2)
    with pytest.raises(ValueError, match="Unknown variant 'nvan2'"):
        nvan_tf.build_model("nvan2", 3)
    with pytest.raises(TypeError, match="Unknown model option"):
        nvan_tf.build_model("nvan", 3, stripe=4)
    with pytest.raises(ValueError, match="non_local asks for 5 blocks in res3"):
        nvan_tf.build_model("nvan", 3, non_local=(0, 5, 0, 0), **SMALL)
    with pytest.raises(ValueError, match="num_identities"):
        nvan_tf.build_model("nvan", 0)
    model = small_model("baseline")
    with pytest.raises(ValueError, match=r"built for clips \(batch, 4, 64, 32, 3\)"):
        model(clips(1, 4, 32, 32))


def test_nonlocal_blocks_start_as_identity():
    """With zero-initialised W BNs, NVAN equals the plain ResNet-50."""
    nvan = small_model("nvan")
    plain = nvan_tf.build_model("nvan", 7, non_local=(0, 0, 0, 0), **SMALL)
    by_path = {w.path.split("/", 1)[1]: w for w in nvan.weights}
    for w in plain.weights:
        w.assign(by_path[w.path.split("/", 1)[1]])
    x = clips()
    np.testing.assert_allclose(np.asarray(nvan(x)), np.asarray(plain(x)), atol=1e-5)


def test_baseline_averages_frames():
    """docs/architecture.md: the baseline's test feature is the mean of per-frame BN features."""
    model = small_model("baseline")
    bn = model.pooling.bn
    rng = np.random.default_rng(1)
    bn.moving_mean.assign(rng.normal(size=2048).astype("float32"))
    bn.moving_variance.assign(rng.uniform(0.5, 2, size=2048).astype("float32"))
    bn.gamma.assign(rng.uniform(0.5, 1.5, size=2048).astype("float32"))
    x = clips(1)
    per_frame = [np.asarray(model(np.repeat(x[:, i:i + 1], 4, axis=1))) for i in range(4)]
    np.testing.assert_allclose(np.asarray(model(x)), np.mean(per_frame, axis=0), rtol=1e-4, atol=1e-4)


def test_normalized_embedding_option():
    model = small_model("nvan", normalize_embedding=True)
    out = np.asarray(model(clips()))
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)


def test_parameter_counts_match_spec():
    """docs/architecture.md: 23.5M (baseline) and 30.9M (NVAN models) without the classifier."""
    for variant, expected in (("baseline", 23.5e6), ("ste-nvan", 30.9e6)):
        model = NVANModel(ModelConfig.from_variant(variant, 5))
        model.build()
        params = sum(int(np.prod(w.shape)) for w in model.weights
                     if "moving_" not in w.path and "classifier" not in w.path)
        assert abs(params - expected) < 0.05e6, (variant, params)


def test_keras_save_load_round_trip(tmp_path):
    model = small_model("ste-nvan")
    for w in model.weights:  # non-trivial weights, non-local BNs included
        if "w_bn/gamma" in w.path:
            w.assign(np.full(w.shape, 0.5, "float32"))
    x = clips()
    path = tmp_path / "ste.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, NVANModel)
    assert loaded.config == model.config
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))
    clone = NVANModel.from_config(model.get_config())
    assert clone.get_config() == model.get_config()


def test_weight_names_are_stable():
    model = small_model("nvan")
    paths = {w.path for w in model.weights}
    assert "nvan/backbone/stem_conv/kernel" in paths
    assert "nvan/backbone/res3_nonlocal_1/nonlocal/theta/kernel" in paths
    assert "nvan/backbone/res4_block0/downsample_conv/kernel" in paths
    assert "nvan/feature_pooling/bnneck/gamma" in paths
    assert "nvan/classifier/kernel" in paths


def test_mixed_precision_keeps_float32_outputs():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = small_model("ste-nvan")
        assert model.backbone.compute_dtype == "bfloat16"
        x = clips()
        features = model(x, training=False)
        f, logits = model(x, training=True)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert features.dtype == "float32" and f.dtype == "float32" and logits.dtype == "float32"
    assert np.isfinite(np.asarray(features)).all()


def test_savedmodel_export_after_a_call(tmp_path):
    tf = pytest.importorskip("tensorflow")
    model = small_model("ste-nvan")
    x = clips()
    expected = np.asarray(model(x))
    model.export(str(tmp_path / "saved"), verbose=False)
    loaded = tf.saved_model.load(str(tmp_path / "saved"))
    np.testing.assert_allclose(loaded.serve(x).numpy(), expected, atol=1e-5)

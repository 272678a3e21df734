"""The five variants: shapes, temporal reduction, errors, serialisation."""

import re

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import nvan_tf  # noqa: E402
from tests import toy  # noqa: E402
from nvan_tf.models.model import VARIANTS, ModelConfig, NVANModel  # noqa: E402

# at the toy depth (tests/toy.py): shapes, serialisation and errors do not depend on it; the parameter
# counts and the full-size map below keep ResNet-50
SMALL = {"seq_len": 4, "height": 64, "width": 32, **toy.OVERRIDES}
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
    model = nvan_tf.build_model("ste-nvan", 3, seq_len=8, height=64, width=32, stripes=2, **toy.OVERRIDES)
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
    nvan = nvan_tf.build_model("nvan", 3, seq_len=8, height=64, width=32, **toy.OVERRIDES)
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
    """With zero-initialised W BNs, NVAN equals the plain ResNet of its depth."""
    nvan = small_model("nvan")
    plain = nvan_tf.build_model("nvan", 7, non_local=(0, 0, 0, 0), **SMALL)
    by_path = {w.path.split("/", 1)[1]: w for w in nvan.weights}
    for w in plain.weights:
        w.assign(by_path[w.path.split("/", 1)[1]])
    x = clips()
    np.testing.assert_allclose(np.asarray(nvan(x)), np.asarray(plain(x)), atol=1e-5)


def assert_close_to(actual, expected, tolerance=1e-4):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    scale = np.abs(expected).max()
    assert np.abs(actual - expected).max() <= tolerance * scale, np.abs(actual - expected).max() / scale


def test_baseline_averages_per_frame_bn_features():
    """docs/architecture.md: the baseline runs ResNet-50 on each frame alone,
    pools and batch-normalises every frame, and averages over frames: f_bn at
    test time; f and the logits in training, where the BN neck normalises
    with the statistics of all B*T frames. A NumPy reference of that head, on
    the backbone maps of each frame run on its own. Averaging anywhere before
    (the frames, or the maps before the last ReLU) changes the test feature;
    averaging before the BN neck changes its training statistics (at test
    time BN is affine per channel, so there the two orders agree)."""
    model = small_model("baseline")
    rng = np.random.default_rng(1)
    bn = model.pooling.bn
    bn.moving_mean.assign(rng.normal(size=2048).astype("float32"))
    bn.moving_variance.assign(rng.uniform(0.5, 2, size=2048).astype("float32"))
    bn.gamma.assign(rng.uniform(0.5, 1.5, size=2048).astype("float32"))
    kernel = rng.normal(0.0, 0.05, size=(2048, 7)).astype("float32")
    model.classifier.kernel.assign(kernel)
    gamma, moving_mean, moving_var = (np.asarray(w, np.float64) for w in
                                      (bn.gamma, bn.moving_mean, bn.moving_variance))
    x = clips(2, seed=3)

    # test time: each frame through the backbone alone, pooled, BN with the moving statistics
    maps = np.stack([np.asarray(model.backbone(x[:, i:i + 1]))[:, 0] for i in range(4)], axis=1)
    pooled = maps.astype(np.float64).mean(axis=(2, 3))  # (B, T, C)
    f_bn = (gamma * (pooled - moving_mean) / np.sqrt(moving_var + 1e-5)).mean(axis=1)
    assert_close_to(model(x, training=False), f_bn)

    # training: BN of every frame with the batch statistics of the B*T frames
    pooled = np.asarray(model.backbone(x, training=True), np.float64).mean(axis=(2, 3))
    frames = pooled.reshape(-1, 2048)
    normalised = gamma * (pooled - frames.mean(axis=0)) / np.sqrt(frames.var(axis=0) + 1e-5)
    f, logits = model(x, training=True)
    assert_close_to(f, pooled.mean(axis=1))
    assert_close_to(logits, normalised.mean(axis=1) @ kernel)


@pytest.mark.parametrize("field,value", [
    ("non_local", (0, 2.5, 0, 0)),   # truncated to 2 before
    ("non_local", (0, True, 3, 0)),
    ("non_local", (0, 2, 3)),
    ("non_local", "0,2,3,0"),
    ("stripes", 2.5),
    ("stripes", (None, 4, 4)),
    ("attention_group", 2.0),
    ("attention_group", True),
    ("seq_len", 8.0),
    ("height", "256"),
    ("num_identities", 0),
])
def test_config_refuses_what_is_not_a_whole_number(field, value):
    with pytest.raises(ValueError, match=re.escape(f"Received: {field}={value!r}")):
        ModelConfig(**{"num_identities": 7, field: value})


def test_config_takes_numpy_integers_as_plain_ints():
    config = ModelConfig(np.int64(7), seq_len=np.int64(4), height=np.int32(64), width=np.int64(32),
                         non_local=np.array([0, 2, 3, 0]), stripes=np.int64(2),
                         attention_group=np.int64(2), last_stride=np.int64(1))
    plain = ModelConfig(7, seq_len=4, height=64, width=32, non_local=(0, 2, 3, 0), stripes=2,
                        attention_group=2)
    assert config == plain
    for value in (config.num_identities, config.seq_len, config.height, config.width, config.stripes,
                  config.attention_group, config.last_stride, *config.non_local):
        assert type(value) is int
    assert ModelConfig(7, stripes=[np.int64(4), None, 4, 4]).stripes == (4, None, 4, 4)
    model = NVANModel(config)
    model.build()
    assert tuple(model(clips(1)).shape) == (1, 2048)


def test_non_local_table_rules():
    """One rule (models.check_non_local) for ModelConfig, the backbone and tuning."""
    check = nvan_tf.models.check_non_local
    assert check((0, 2, 3, 0)) == (0, 2, 3, 0) and check([0, np.int64(1), 0, 3]) == (0, 1, 0, 3)
    with pytest.raises(ValueError, match=r"res2 \(stage 1\).*max-pool g and phi by \(1, 2, 2\).*"
                                         r"Received: non_local=\(1, 2, 3, 0\)"):
        ModelConfig(7, non_local=(1, 2, 3, 0))
    for table, stage, blocks in (((0, 5, 0, 0), "res3", 4), ((0, 0, 7, 0), "res4", 6),
                                 ((0, 0, 0, 4), "res5", 3), ((0, -1, 0, 0), "res3", 4)):
        with pytest.raises(ValueError, match=f"asks for {table[['res2', 'res3', 'res4', 'res5'].index(stage)]} "
                                             f"blocks in {stage}, which has {blocks}"):
            check(table)
    with pytest.raises(ValueError, match="res2 \\(stage 1\\)"):
        nvan_tf.models.backbone.VideoResNet50(non_local=(1, 0, 0, 0))


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


def frozen_bfloat16(kind):
    """A built, frozen, bfloat16 part of the NVAN model (the global policy stays float32)."""
    from nvan_tf.models.backbone import Bottleneck, VideoResNet50

    kw = dict(dtype="mixed_bfloat16", trainable=False, name=f"my_{kind}")
    if kind == "bottleneck":
        layer, shape = Bottleneck(8, strides=2, downsample=True, **kw), (2, 8, 4, 16)
    elif kind == "backbone":
        layer, shape = VideoResNet50(non_local=(0, 1, 1, 0), stripes=2, attention_group=2,
                                     temporal_reduction=(False, True, False, False), stage_blocks=toy.BLOCKS,
                                     **kw), (1, 4, 64, 32, 3)
    else:
        layer = NVANModel(ModelConfig.from_variant("ste-nvan", 7, stripes=2, **SMALL), **kw)
        shape = (1, 4, 64, 32, 3)
    layer.build(shape)
    return layer, np.random.default_rng(0).normal(size=shape).astype("float32")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["bottleneck", "backbone", "model"])
def test_config_keeps_dtype_policy_trainable_and_name(kind):
    """get_config -> from_config keeps the base config: the clone is frozen
    (BN statistics fixed in training mode, no trainable weight) and computes
    in bfloat16 all through, as the original does."""
    layer, x = frozen_bfloat16(kind)
    config = layer.get_config()
    assert {"name", "trainable", "dtype"} <= set(config)
    clone = layer.__class__.from_config(config)
    clone.build(x.shape)
    assert clone.name == f"my_{kind}" and clone.trainable is False
    assert clone.dtype_policy.name == "mixed_bfloat16"
    inner = clone.backbone if kind == "model" else clone
    assert inner(x).dtype == "bfloat16"
    if kind == "model":
        assert clone(x).dtype == "float32"  # the BN neck and classifier stay float32
    clone.set_weights(layer.get_weights())
    before = [np.asarray(w) for w in clone.weights]
    clone(x, training=True)
    assert clone.trainable_weights == [] and not any(w.trainable for w in clone.weights)
    for w, old in zip(clone.weights, before):
        np.testing.assert_array_equal(np.asarray(w), old, err_msg=w.path)


@pytest.mark.slow
def test_frozen_bfloat16_model_keras_file_round_trip(tmp_path):
    model, x = frozen_bfloat16("model")
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.trainable is False and loaded.dtype_policy.name == "mixed_bfloat16"
    assert loaded.get_config() == model.get_config()
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))


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


@pytest.mark.slow
def test_savedmodel_export_after_a_call(tmp_path):
    tf = pytest.importorskip("tensorflow")
    model = small_model("ste-nvan", **toy.smallest("ste-nvan"))  # every block kind once: the export traces them all
    x = clips()
    expected = np.asarray(model(x))
    model.export(str(tmp_path / "saved"), verbose=False)
    loaded = tf.saved_model.load(str(tmp_path / "saved"))
    np.testing.assert_allclose(loaded.serve(x).numpy(), expected, atol=1e-5)

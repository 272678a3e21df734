"""Checkpoint import: same weights in, same embeddings out.

The ground truth is ``tests/torch_reference.py``, an independent PyTorch
re-implementation of the authors' modules written from docs/. A random
reference model is saved in the authors' checkpoint layout, converted, and the
Keras embeddings are compared with the PyTorch ones.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")

import nvan_tf  # noqa: E402
from nvan_tf.cli import convert as convert_cli
from nvan_tf.io import convert  # noqa: E402
from nvan_tf.io import loading  # noqa: E402
from tests.torch_reference import build_reference, randomize_, reference_state_dict  # noqa: E402

NUM_IDS = 11


def reference_checkpoint(tmp_path, variant, stripes=16, seed=0, prefix=True, blocks=None):
    ref = randomize_(build_reference(variant, NUM_IDS, stripes=stripes, blocks=blocks), seed).eval()
    state = reference_state_dict(ref)
    if not prefix:
        state = {k[len("module."):]: v for k, v in state.items()}
    path = tmp_path / f"{variant}.pth"
    torch.save(state, path)
    return ref, path


def torch_clips(batch, t, h, w, seed=0):
    x = np.random.default_rng(seed).normal(size=(batch, t, h, w, 3)).astype("float32")
    return x, torch.from_numpy(np.ascontiguousarray(x.transpose(0, 1, 4, 2, 3)))


def assert_close(keras_out, torch_out):
    """Max abs diff <= 1e-4 relative to the output scale (the issue's bar)."""
    keras_out, torch_out = np.asarray(keras_out), torch_out.detach().numpy()
    scale = np.abs(torch_out).max()
    assert scale > 1e-3 and np.isfinite(scale)
    assert np.abs(keras_out - torch_out).max() <= 1e-4 * scale, np.abs(keras_out - torch_out).max() / scale


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["nvan", "ste-nvan"])
def test_full_size_conversion_reproduces_pytorch_embeddings(tmp_path, variant):
    """256x128, T=8: the published configuration, through the command line."""
    ref, ckpt = reference_checkpoint(tmp_path, variant)
    out = tmp_path / f"{variant}.weights.h5"
    assert convert_cli.main(["--torch", str(ckpt), "--variant", variant, "--out", str(out)]) == 0
    model = nvan_tf.build_model(variant, NUM_IDS)
    model.load_weights(out)
    x, xt = torch_clips(1, 8, 256, 128)
    with torch.no_grad():
        expected = ref(xt)
    assert_close(model(x, training=False), expected)


SMALL_STRIPES = {"nvan-stripe": 4, "ste-nvan": 2}


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["baseline", "nvan", "nvan-stripe", "nvan-temporal", "ste-nvan"])
def test_every_variant_small(tmp_path, variant):
    stripes = SMALL_STRIPES.get(variant, 16)
    ref, ckpt = reference_checkpoint(tmp_path, variant, stripes=stripes, seed=1, prefix=False)
    overrides = {"stripes": stripes} if variant in SMALL_STRIPES else {}
    model = nvan_tf.build_model(variant, NUM_IDS, seq_len=4, height=64, width=32, **overrides)
    loading.load_torch_checkpoint(model, ckpt)
    x, xt = torch_clips(2, 4, 64, 32, seed=2)
    with torch.no_grad():
        expected = ref(xt)
    assert_close(model(x, training=False), expected)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["baseline", "ste-nvan"])
def test_training_outputs_match(tmp_path, variant):
    """Training mode (batch statistics): (f, logits) as the reference returns them."""
    stripes = SMALL_STRIPES.get(variant, 16)
    ref, ckpt = reference_checkpoint(tmp_path, variant, stripes=stripes, seed=3)
    overrides = {"stripes": stripes} if variant in SMALL_STRIPES else {}
    model = nvan_tf.build_model(variant, NUM_IDS, seq_len=4, height=64, width=32, **overrides)
    loading.load_torch_checkpoint(model, ckpt)
    x, xt = torch_clips(3, 4, 64, 32, seed=4)
    ref.train()
    with torch.no_grad():
        f_ref, logits_ref = ref(xt)
    f, logits = model(x, training=True)
    assert_close(f, f_ref)
    assert_close(logits, logits_ref)


@pytest.mark.parametrize("variant, blocks", [("ste-nvan", (1, 2, 3, 1)), ("baseline", (2, 1, 1, 2))])
def test_other_depths_reproduce_the_reference_of_that_depth(tmp_path, variant, blocks):
    """``stage_blocks``: the bottleneck ResNet of those counts, in the torchvision
    layout (layerK.i), gives the reference's embeddings and training outputs."""
    stripes = SMALL_STRIPES.get(variant, 16)
    ref, ckpt = reference_checkpoint(tmp_path, variant, stripes=stripes, seed=6, blocks=blocks)
    overrides = {"stripes": stripes} if variant in SMALL_STRIPES else {}
    model = nvan_tf.build_model(variant, NUM_IDS, seq_len=4, height=64, width=32, stage_blocks=blocks, **overrides)
    assert [len(stage) for stage in model.backbone.blocks] == list(blocks)
    loading.load_torch_checkpoint(model, ckpt)
    x, xt = torch_clips(2, 4, 64, 32, seed=7)
    with torch.no_grad():
        assert_close(model(x, training=False), ref(xt))
    ref.train()
    with torch.no_grad():
        f_ref, _ = ref(xt)
    assert_close(model(x, training=True)[0], f_ref)


def test_a_checkpoint_of_another_depth_is_refused_naming_the_blocks(tmp_path):
    _, ckpt = reference_checkpoint(tmp_path, "baseline")  # ResNet-50
    model = nvan_tf.build_model("baseline", NUM_IDS, seq_len=4, height=64, width=32, stage_blocks=(1, 2, 3, 1))
    with pytest.raises(convert.CheckpointError, match=r"unexpected keys .*layer1\.1\.bn1\.bias"):
        loading.load_torch_checkpoint(model, ckpt)
    with pytest.raises(ValueError, match=r"non_local asks for 3 blocks in res4, which has 2 residual blocks"):
        nvan_tf.build_model("nvan", NUM_IDS, stage_blocks=(1, 2, 2, 1))
    with pytest.raises(ValueError, match=r"stage_blocks needs at least one residual block per stage"):
        nvan_tf.build_model("baseline", NUM_IDS, stage_blocks=(3, 4, 0, 3))


def test_wrong_variant_lists_missing_keys(tmp_path):
    _, ckpt = reference_checkpoint(tmp_path, "baseline")
    model = nvan_tf.build_model("nvan", NUM_IDS, seq_len=4, height=64, width=32)
    before = [np.asarray(w).copy() for w in model.weights]
    with pytest.raises(convert.CheckpointError, match=r"missing keys \(60\):.*NL_2\.0\.W\.0\.bias"):
        loading.load_torch_checkpoint(model, ckpt)
    for w, b in zip(model.weights, before):  # nothing was loaded partially
        np.testing.assert_array_equal(np.asarray(w), b)


def test_nvan_checkpoint_into_baseline_lists_unexpected_keys(tmp_path):
    _, ckpt = reference_checkpoint(tmp_path, "nvan")
    model = nvan_tf.build_model("baseline", NUM_IDS, seq_len=4, height=64, width=32)
    with pytest.raises(convert.CheckpointError, match=r"unexpected keys \(65\):.*NL_2\.0\.theta\.weight.*\(45 more\)"):
        loading.load_torch_checkpoint(model, ckpt)


def test_wrong_identity_count_is_a_shape_mismatch(tmp_path):
    _, ckpt = reference_checkpoint(tmp_path, "baseline")
    model = nvan_tf.build_model("baseline", NUM_IDS + 1, seq_len=4, height=64, width=32)
    with pytest.raises(convert.CheckpointError, match=r"classifier\.weight: checkpoint \(11, 2048\)"):
        loading.load_torch_checkpoint(model, ckpt)
    loading.load_torch_checkpoint(model, ckpt, include_classifier=False)  # embedding only
    assert np.asarray(model.pooling.bn.gamma).std() > 0.1


@pytest.mark.slow
def test_cli_infers_identities_and_reports_errors(tmp_path, capsys):
    _, ckpt = reference_checkpoint(tmp_path, "baseline")
    out = tmp_path / "b.keras"
    assert convert_cli.main(["--torch", str(ckpt), "--variant", "baseline", "--out", str(out),
                         "--seq-len", "2", "--height", "64", "--width", "32"]) == 0
    loaded = keras.saving.load_model(out)
    assert loaded.config.num_identities == NUM_IDS
    assert convert_cli.main(["--torch", str(ckpt), "--variant", "nvan", "--out", str(out),
                         "--seq-len", "2", "--height", "64", "--width", "32"]) == 2
    assert "missing keys" in capsys.readouterr().err


def test_truncated_file_is_refused(tmp_path):
    _, ckpt = reference_checkpoint(tmp_path, "baseline")
    data = ckpt.read_bytes()
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(convert.CheckpointError, match="truncated.pth: not a readable PyTorch checkpoint"):
        convert.read_state_dict(bad)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        convert.read_state_dict(tmp_path / "missing.pth")


class Payload:
    """Anything that is not a tensor: weights_only loading must refuse it."""


def test_non_tensor_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"features.backbone.conv1.weight": Payload()}, path)
    with pytest.raises(convert.CheckpointError, match="refused to unpickle"):
        convert.read_state_dict(path)
    path = tmp_path / "numbers.pth"
    torch.save({"classifier.weight": torch.zeros(3, 2048), "epoch": 3}, path)
    with pytest.raises(convert.CheckpointError, match="not tensors: epoch"):
        convert.read_state_dict(path)


def test_torchvision_imagenet_initialisation(tmp_path):
    """A torchvision ResNet-50 state_dict initialises the backbone; fc is ignored."""
    ref = randomize_(build_reference("baseline", NUM_IDS), 5).eval()
    prefix = "features.backbone."
    state = {k[len(prefix):]: v for k, v in ref.state_dict().items() if k.startswith(prefix)}
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)
    path = tmp_path / "resnet50.pth"
    torch.save(state, path)
    model = nvan_tf.build_model("nvan", NUM_IDS, seq_len=2, height=64, width=32)
    loading.load_torchvision_resnet50(model, path)
    x, xt = torch_clips(1, 2, 64, 32, seed=6)
    with torch.no_grad():
        expected = ref.features.backbone(xt).permute(0, 2, 3, 4, 1)  # (B, T, H, W, C)
    # NL blocks are still the identity, so the NVAN backbone is the plain R50.
    assert_close(model.backbone(x), expected)
    state["layer9.0.conv1.weight"] = torch.zeros(1)
    torch.save(state, path)
    with pytest.raises(convert.CheckpointError, match="unexpected keys.*layer9"):
        loading.load_torchvision_resnet50(model, path)


@pytest.mark.slow
def test_keras_applications_weights_need_their_layout(tmp_path):
    """Keras-applications (v1 layout) weights load exactly into a v1-layout model, only."""
    source = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(64, 32, 3))
    rng = np.random.default_rng(7)
    for layer in source.layers:  # non-trivial BN statistics and conv biases
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(0, 0.1, layer.moving_mean.shape).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2, layer.moving_variance.shape).astype("float32"))
            layer.gamma.assign(rng.uniform(0.1, 0.5, layer.gamma.shape).astype("float32"))
        elif isinstance(layer, keras.layers.Conv2D):
            layer.bias.assign(rng.normal(0, 0.05, layer.bias.shape).astype("float32"))
    weights = tmp_path / "resnet50_notop.weights.h5"
    source.save_weights(weights)

    reference_layout = nvan_tf.build_model("baseline", 3, seq_len=1, height=64, width=32)
    with pytest.raises(ValueError, match="v1 layout"):
        loading.load_keras_applications_resnet50(reference_layout, str(weights))

    model = nvan_tf.build_model("baseline", 3, seq_len=1, height=64, width=32, last_stride=2,
                                **convert.KERAS_APPLICATIONS_LAYOUT)
    loading.load_keras_applications_resnet50(model, str(weights))
    x = np.random.default_rng(8).normal(size=(2, 1, 64, 32, 3)).astype("float32")
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    caffe = keras.applications.resnet50.preprocess_input((x[:, 0] * std + mean) * 255.0)
    expected = np.asarray(source(caffe.astype("float32")))
    ours = np.asarray(model.backbone(x))[:, 0]
    assert np.abs(ours - expected).max() <= 1e-4 * np.abs(expected).max()

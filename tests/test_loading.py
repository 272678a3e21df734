"""nvan_tf.io.loading: every format in, the right model out, or a clear refusal.

Tiny models (1 frame of 64 x 32) keep these fast; the numbers compared are
the model's own outputs before saving and after loading.
"""

import logging
import os

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import nvan_tf  # noqa: E402
from nvan_tf.cli import convert as convert_cli
from nvan_tf.io import convert  # noqa: E402
from nvan_tf.io import loading  # noqa: E402
from tests import toy  # noqa: E402

SIZE = {"seq_len": 1, "height": 64, "width": 32}
# our own formats at the toy depth (tests/toy.py): the record carries it; the PyTorch and
# Keras-applications files are ResNet-50's and keep SIZE
TOY = {**SIZE, **toy.OVERRIDES}


def randomized(variant, num_identities, seed=0, **kwargs):
    """A model with non-trivial weights everywhere (BN statistics included)."""
    model = nvan_tf.build_model(variant, num_identities, **{**SIZE, **kwargs})
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        variable.assign(rng.normal(1.0, 0.05, variable.shape).astype("float32"))
    return model


def clips(seed=1):
    return np.random.default_rng(seed).standard_normal((2, 1, 64, 32, 3)).astype("float32")


def weights_equal(a, b):
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))


@pytest.mark.slow
def test_save_weights_records_the_config_and_loads_without_flags(tmp_path):
    model = randomized("nvan", 7, stripes=None, **toy.OVERRIDES)
    path = loading.save_weights(model, str(tmp_path / "nvan.weights.h5"))
    recorded = loading.recorded_config(path)
    assert recorded["variant"] == "nvan" and recorded["num_identities"] == 7
    assert (recorded["seq_len"], recorded["height"], recorded["width"]) == (1, 64, 32)
    loaded = loading.load_model(path)
    assert loaded.config == model.config
    x = clips()
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-5, atol=1e-5)
    # The clip size is a build choice, not a weight: it may be changed.
    assert loading.load_model(path, seq_len=2).config.seq_len == 2


@pytest.mark.slow
def test_a_variant_that_disagrees_with_the_file_is_refused(tmp_path):
    # NVAN and NVAN-stripe weights have identical shapes: only the record tells.
    model = randomized("nvan", 5, **toy.OVERRIDES)
    weights = loading.save_weights(model, str(tmp_path / "nvan.weights.h5"))
    with pytest.raises(loading.LoadError, match="variant='nvan' but variant='nvan-stripe'"):
        loading.load_model(weights, variant="nvan-stripe", stripes=2)
    whole = str(tmp_path / "nvan.keras")
    model.save(whole)
    with pytest.raises(loading.LoadError, match="nvan.keras: .*variant='nvan' but variant='ste-nvan'"):
        loading.load_model(whole, variant="ste-nvan")
    with pytest.raises(loading.LoadError, match="height=64 but height=256"):
        loading.load_model(whole, height=256)
    assert loading.load_model(whole, variant="nvan").config.variant == "nvan"


def test_unknown_variant_is_refused_before_anything_is_read(tmp_path):
    with pytest.raises(loading.LoadError, match="unknown variant 'stenvan'.*ste-nvan"):
        loading.load_model(str(tmp_path / "does_not_exist.keras"), variant="stenvan")


def test_weights_without_a_record_need_and_log_the_assumed_variant(tmp_path, caplog):
    model = randomized("baseline", 3)
    path = str(tmp_path / "plain.weights.h5")
    model.save_weights(path)                      # plain Keras: nothing recorded
    assert loading.recorded_config(path) is None
    with pytest.raises(loading.LoadError, match="without a recorded config.*--variant"):
        loading.load_model(path)
    with pytest.raises(loading.LoadError, match="checkpoint has 3 identities, --num-identities 10"):
        loading.load_model(path, variant="baseline", num_identities=10, **SIZE)
    with caplog.at_level(logging.WARNING, logger="nvan_tf.io.loading"):
        loaded = loading.load_model(path, variant="baseline", **SIZE)
    assert "variant baseline ASSUMED" in caplog.text
    assert loaded.config.num_identities == 3      # read from the file
    x = clips()
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-5, atol=1e-5)


def test_keras_file_errors(tmp_path):
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(np.random.default_rng(0).bytes(2048))
    with pytest.raises(loading.LoadError, match="corrupt.keras exists but is not a valid Keras archive"):
        loading.load_model(str(corrupt))
    with pytest.raises(FileNotFoundError, match="model not found: .*missing.keras"):
        loading.load_model(str(tmp_path / "missing.keras"))
    with pytest.raises(loading.LoadError, match="unknown model format: .*model.onnx"):
        (tmp_path / "model.onnx").write_bytes(b"x")
        loading.load_model(str(tmp_path / "model.onnx"))
    model = nvan_tf.build_model("baseline", 4, **TOY)
    path = str(tmp_path / "b.keras")
    model.save(path)
    with pytest.raises(loading.LoadError, match="b.keras: checkpoint has 4 identities, --num-identities 10"):
        loading.load_model(path, num_identities=10)
    assert issubclass(loading.LoadError, ValueError)


def test_torch_checkpoint_identities_and_variant(tmp_path, caplog):
    torch = pytest.importorskip("torch")
    from tests.torch_reference import build_reference, randomize_, reference_state_dict

    reference = randomize_(build_reference("baseline", 6), seed=2).eval()
    path = str(tmp_path / "ckpt.pth.tar")
    torch.save(reference_state_dict(reference), path)
    with pytest.raises(loading.LoadError, match="records no variant: pass it"):
        loading.load_model(path)
    with pytest.raises(loading.LoadError, match="ckpt.pth.tar: checkpoint has 6 identities, --num-identities 10"):
        loading.load_model(path, variant="baseline", num_identities=10)
    with caplog.at_level(logging.WARNING, logger="nvan_tf.io.loading"):
        model = loading.load_model(path, variant="baseline", **SIZE)
    assert "baseline ASSUMED" in caplog.text
    assert model.config.num_identities == 6
    x = clips()
    with torch.no_grad():
        expected = reference(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 1, 4, 2, 3)))).numpy()
    assert np.abs(np.asarray(model(x)) - expected).max() <= 1e-4 * np.abs(expected).max()


def test_convert_cli_records_the_config(tmp_path):
    torch = pytest.importorskip("torch")
    from tests.torch_reference import build_reference, randomize_, reference_state_dict

    reference = randomize_(build_reference("baseline", 4), seed=3).eval()
    ckpt = tmp_path / "b.pth"
    torch.save(reference_state_dict(reference), ckpt)
    out = str(tmp_path / "b.weights.h5")
    assert convert_cli.main(["--torch", str(ckpt), "--variant", "baseline", "--out", out,
                         "--seq-len", "1", "--height", "64", "--width", "32"]) == 0
    loaded = loading.load_model(out)                # no flags: recorded in the file
    assert (loaded.config.variant, loaded.config.num_identities, loaded.config.seq_len) == ("baseline", 4, 1)


@pytest.mark.slow
def test_initialize_from_our_files_copies_the_classifier_only_when_it_fits(tmp_path):
    source = randomized("baseline", 5, seed=4, **toy.OVERRIDES)
    weights = loading.save_weights(source, str(tmp_path / "src.weights.h5"))
    whole = str(tmp_path / "src.keras")
    source.save(whole)

    same = nvan_tf.build_model("baseline", 5, **TOY)
    description = loading.initialize_from(same, weights)
    assert "classifier" in description and "embedding network only" not in description
    assert weights_equal(same.weights, source.weights)

    other = nvan_tf.build_model("baseline", 9, **TOY)
    classifier = np.asarray(other.classifier.kernel).copy()
    description = loading.initialize_from(other, whole)
    assert "embedding network only" in description and "5 identities" in description
    assert weights_equal(other.backbone.weights, source.backbone.weights)
    assert weights_equal(other.pooling.weights, source.pooling.weights)
    np.testing.assert_array_equal(np.asarray(other.classifier.kernel), classifier)

    nvan = nvan_tf.build_model("nvan", 5, **TOY)
    with pytest.raises(loading.LoadError, match="baseline backbone .* does not fit this nvan model"):
        loading.initialize_from(nvan, weights)


@pytest.mark.slow
def test_initialize_from_torch_files(tmp_path):
    torch = pytest.importorskip("torch")
    from tests.torch_reference import build_reference, randomize_, reference_state_dict

    reference = randomize_(build_reference("baseline", 6), seed=5).eval()
    state = reference_state_dict(reference)
    authors = tmp_path / "authors.pth"
    torch.save(state, authors)

    model = nvan_tf.build_model("baseline", 6, **SIZE)
    assert "classifier (6 identities)" in loading.initialize_from(model, str(authors))
    np.testing.assert_allclose(np.asarray(model.classifier.kernel),
                               state["module.classifier.weight"].numpy().T)
    model = nvan_tf.build_model("baseline", 3, **SIZE)
    assert "embedding network only" in loading.initialize_from(model, str(authors))
    np.testing.assert_allclose(np.asarray(model.pooling.bn.gamma), state["module.bottleneck.weight"].numpy())

    prefix = "module.features.backbone."
    torchvision = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    torchvision["fc.weight"] = torch.zeros(1000, 2048)
    tv_path = tmp_path / "resnet50.pth"
    torch.save(torchvision, tv_path)
    model = nvan_tf.build_model("nvan", 3, **SIZE)
    assert "torchvision ResNet-50" in loading.initialize_from(model, str(tv_path))
    np.testing.assert_allclose(np.asarray(model.backbone.stem_conv.kernel),
                               torchvision["conv1.weight"].numpy().transpose(2, 3, 1, 0))

    unknown = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(2, 2)}, unknown)
    with pytest.raises(loading.LoadError, match="other.pth: .*unrecognised keys.*torchvision ResNet-50"):
        loading.initialize_from(model, str(unknown))


@pytest.mark.slow
def test_initialize_from_refuses_what_it_cannot_use(tmp_path):
    import h5py

    source = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(64, 32, 3))
    applications = str(tmp_path / "resnet50_notop.weights.h5")
    source.save_weights(applications)
    model = nvan_tf.build_model("baseline", 3, **SIZE)
    with pytest.raises(loading.LoadError, match="v1 layout"):
        loading.initialize_from(model, applications)
    v1 = nvan_tf.build_model("baseline", 3, **SIZE, last_stride=2, **convert.KERAS_APPLICATIONS_LAYOUT)
    assert "Keras-applications" in loading.initialize_from(v1, applications)
    np.testing.assert_array_equal(np.asarray(v1.backbone.stem_conv.kernel),
                                  source.get_layer("conv1_conv").kernel.numpy())

    other_h5 = str(tmp_path / "other.h5")
    with h5py.File(other_h5, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(loading.LoadError, match="other.h5: an HDF5 file of unknown content; --init takes"):
        loading.initialize_from(model, other_h5)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a model")
    with pytest.raises(loading.LoadError, match="junk.bin: unrecognised file; --init takes .*torchvision"):
        loading.initialize_from(model, str(junk))
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        loading.initialize_from(model, os.path.join(tmp_path, "nothing.pth"))


def test_top_level_load_model_is_the_loading_one():
    assert nvan_tf.load_model is loading.load_model


@pytest.mark.slow
def test_keras_applications_weights_load_all_or_nothing(tmp_path, monkeypatch):
    """A truncated file, a file of other shapes, or one source weight that does
    not fit the model: refused with the file named, and the model keeps every
    weight it had (the check comes before any assignment)."""
    model = randomized("baseline", 3, last_stride=2, **convert.KERAS_APPLICATIONS_LAYOUT)
    before = [np.asarray(w).copy() for w in model.weights]
    source = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(64, 32, 3))
    good = tmp_path / "resnet50.weights.h5"
    source.save_weights(good)
    truncated = tmp_path / "truncated.weights.h5"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    other = tmp_path / "one_channel.weights.h5"  # a ResNet-50 on 1-channel input: conv1 is (7, 7, 1, 64)
    keras.applications.ResNet50(include_top=False, weights=None, input_shape=(64, 32, 1)).save_weights(other)
    for path in (truncated, other):
        with pytest.raises(loading.LoadError, match=f"{path.name}: not Keras-applications ResNet-50 weights"):
            loading.load_keras_applications_resnet50(model, str(path))
        assert weights_equal(model.weights, before)

    # a source whose last convolution does not fit: every other weight would fit
    real = keras.applications.ResNet50

    def last_conv_wrong(**kwargs):
        resnet = real(**kwargs)
        layer = resnet.get_layer("conv5_block3_3_conv")
        kernel, bias = layer.get_weights()
        layer.get_weights = lambda: [kernel[:, :, :256], bias]
        return resnet

    monkeypatch.setattr(keras.applications, "ResNet50", last_conv_wrong)
    with pytest.raises(convert.CheckpointError, match=r"conv5_block3_3_conv/kernel: checkpoint \(1, 1, 256, 2048\)"):
        loading.load_keras_applications_resnet50(model, str(good))
    assert weights_equal(model.weights, before)
    monkeypatch.undo()
    loading.load_keras_applications_resnet50(model, str(good))  # the good file does load
    np.testing.assert_array_equal(np.asarray(model.backbone.stem_conv.kernel),
                                  np.asarray(source.get_layer("conv1_conv").kernel))

"""nvan-export end to end: SavedModel from a saved model; its errors. ONNX fp32 and int8 through the
console script: the README's lines (tests/test_readme_commands.py, which checks the int8 line's comparison
with Keras is printed); int8's closeness to fp32: tests/test_export_onnx.py."""

import os

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from nvan_tf.cli import export as export_cli  # noqa: E402

try:
    from tests.test_export import H, T, W, keras_embedding, small_model
except ImportError:  # tests/ itself on sys.path
    from test_export import H, T, W, keras_embedding, small_model


@pytest.fixture(scope="module")
def model():
    return small_model("nvan-temporal", seed=3)


@pytest.fixture(scope="module")
def keras_file(model, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("cli") / "model.keras")
    model.save(path)
    return path


@pytest.mark.slow
def test_savedmodel_from_a_keras_file(model, keras_file, tmp_path, capsys):
    out = str(tmp_path / "nvan" / "1")
    assert export_cli.main(["--model", keras_file, "--out", out]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    clips = np.random.default_rng(0).normal(size=(2, T, H, W, 3)).astype("float32")
    served = tf.saved_model.load(out).signatures["embed_clips"](clips=clips)["embedding"]
    np.testing.assert_allclose(served.numpy(), keras_embedding(model, clips), atol=1e-5)
    assert export_cli.main(["--model", keras_file, "--out", out]) == 2
    assert "already exists; pass overwrite=True (--overwrite)" in capsys.readouterr().err
    assert export_cli.main(["--model", keras_file, "--out", out, "--overwrite"]) == 0


@pytest.mark.parametrize("extra, message", [
    (["--precision", "int8"], "a SavedModel is exported in fp32"),
    (["--format", "onnx", "--precision", "int8"], "--precision int8 needs calibration clips"),
])
def test_argument_errors(keras_file, tmp_path, capsys, extra, message):
    assert export_cli.main(["--model", keras_file, "--out", str(tmp_path / "o"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nvan-export: error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_missing_model(tmp_path, capsys):
    assert export_cli.main(["--model", str(tmp_path / "none.keras"), "--out", str(tmp_path / "o")]) == 2
    assert f"nvan-export: error: model not found: {tmp_path / 'none.keras'}" in capsys.readouterr().err


def test_tensorrt_without_gpu_says_so(keras_file, tmp_path, capsys, monkeypatch):
    from nvan_tf.deploy import tensorrt

    monkeypatch.setattr(tensorrt, "tensorrt_unavailable_reason",
                        lambda: "no NVIDIA GPU driver (libcuda.so.1 cannot be loaded)")
    code = export_cli.main(["--model", keras_file, "--out", str(tmp_path / "trt"), "--format", "tensorrt",
                        "--precision", "fp16"])
    assert code == 1
    assert capsys.readouterr().err.strip() == (
        "nvan-export: error: --format tensorrt needs an NVIDIA GPU and TensorRT: "
        "no NVIDIA GPU driver (libcuda.so.1 cannot be loaded)")
    assert not (tmp_path / "trt").exists()

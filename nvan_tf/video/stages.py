"""The chain from camera videos to identities, in resumable stages (what ``nvan-track`` runs).

``run_tracking(TrackConfig(...))`` runs, for every camera, then for all:

1. ``detect``: decode and detect (or read the camera's det.txt), written as
   ``detections/c<k>.txt`` (MOTChallenge) with ``detections/c<k>.json``
   (frames, frame rate, size, frame times, decode and detection seconds);
2. ``track``: the tracker over the detections: ``tracks/c<k>.txt``
   (MOTChallenge tracks);
3. ``tracklets``: tracks cut into tracklets, the frames decoded again and
   the boxes padded to 1:2 and cropped: ``crops/c<k>/t<n>/<frame>.jpg``,
   with ``crops/c<k>/tracklets.csv`` and ``crops/c<k>/boxes.txt`` (the
   tracklets' boxes, MOTChallenge, id = tracklet number);
4. ``embed``: one embedding per tracklet (``embeddings.npz``);
5. ``associate``: global identities (``identities.csv``, ``gallery.npz``,
   ``association.json``), the tracklets' boxes under their global ids next
   to the tracker's files (``tracks/global_c<k>.txt``, MOTChallenge, and
   ``tracks/mtmc.txt``, all cameras in the AI City multi-camera format:
   ``nvan_tf.video.mot.write_aicity``), and the tracklets in the project's folder layout
   (``dataset/{query,gallery}/<global id>/c<k>/t<n>/``, hard links to the
   crops), which ``build_dataset("folder", OUT/dataset)``, ``nvan-evaluate``
   and ``nvan-train`` read;
6. ``report``: ``report/index.html``, its strips and timeline, and
   ``report/videos/c<k>.mp4`` (annotated).

Everything a run needs is checked before the first stage starts, and
before the output folder is made: the settings (an ``--out`` that is a file
included), the detector (built) when a camera still has to be detected, and
the model (loaded) when embedding or calibration is still to run. A refused
run leaves nothing behind.

Every output is written atomically, and each finished stage (per camera for
the first three) leaves a record in ``stages/`` with a key of everything it
depends on. Run the same command again after a kill: finished stages are
skipped, so nothing is decoded or detected twice; a changed setting re-runs
the stages that depend on it, and only those. ``timings.json`` holds the
seconds and frames per second of each stage.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import logging
import os
import shutil
import time

import numpy as np

from nvan_tf.choices import BATCH_NORM_STATISTICS, DETECTORS, DISTANCE_METRICS, EMBEDDING_BASELINES, SAMPLING_MODES, \
    listing
from nvan_tf.core import records
from nvan_tf.core.digests import content_digest, stat_key
from nvan_tf.core.atomic import atomic_path, remove_stale, write_json, write_text
from nvan_tf.video import association, embedding, report
from nvan_tf.video.mot import MOTBoxes, read_mot, write_aicity, write_mot
from nvan_tf.video.sources import CameraReader, CameraSpec, parse_camera
from nvan_tf.video.tracking import TRACKERS, crop, cut_tracklets, make_tracker, pad_to_aspect, track_boxes

logger = logging.getLogger(__name__)

__all__ = ["STAGES", "TrackConfig", "run_tracking", "read_tracklets", "read_identities"]

ASSOCIATION = "embedding and association"  # the group of nvan-track's flags of the last stages
STAGES = ("detect", "track", "tracklets", "embed", "associate", "report")
TRACKLET_COLUMNS = ("camera", "tracklet", "track_id", "first_frame", "last_frame", "start_time", "end_time",
                    "frames")
IDENTITY_COLUMNS = ("global_id", "camera", "tracklet", "start_time", "end_time", "frames", "centre_distance")
VALLEY = "valley"  # --auto-threshold's label-free rule besides a quantile of the known negatives


class _AutoThresholdError(argparse.ArgumentTypeError, ValueError):
    """A bad ``--auto-threshold``: argparse prints its message; a ``TrackConfig`` raises it as a ValueError."""


def auto_threshold_value(text):
    """``--auto-threshold``'s value: ``'valley'`` or a quantile (a float)."""
    if isinstance(text, str) and text.strip().lower() == VALLEY:
        return VALLEY
    try:
        return float(text)
    except (TypeError, ValueError):
        raise _AutoThresholdError(f"--auto-threshold takes {VALLEY!r} or a quantile in [0, 1) such as 0.01. "
                                  f"Received: {text!r}") from None


@dataclasses.dataclass
class TrackConfig:
    """One ``nvan-track`` run. The metadata's help: ``nvan-track``'s flags
    (``nvan_tf.core.flags``); ``sampling``, ``batch_size``, ``flip``,
    ``batch_norm``, ``metric`` and ``rerank`` are the sampling-and-ranking flags it shares
    with ``nvan-evaluate`` (their help: ``EvaluationConfig``'s and
    ``RankingConfig``'s)."""

    cameras: list = dataclasses.field(metadata={
        "help": "a camera's video file or frame folder (repeat or list several)", "flag": "--camera",
        "nargs": "+", "action": "extend", "metavar": "[ID=]PATH[@START]", "required": True})
    output_dir: str = dataclasses.field(metadata={
        "help": "output folder (a run there is resumed)", "required": True})
    model: str | None = dataclasses.field(default=None, metadata={
        "help": "re-ID model: .keras, .weights.h5, SavedModel folder, ONNX; or "
                f"{listing(EMBEDDING_BASELINES)}", "required": True})
    threshold: float | None = dataclasses.field(default=None, metadata={
        "help": "distance under which tracklets are one person", "group": ASSOCIATION})
    calibrate: str | None = dataclasses.field(default=None, metadata={
        "help": "choose --threshold on this labelled folder dataset (best pairwise F1)",
        "metavar": "FOLDER_DATASET", "group": ASSOCIATION})
    auto_threshold: float | str | None = dataclasses.field(default=None, metadata={
        "help": "choose --threshold on this footage, without labels: 'valley', Otsu's split of each "
                "tracklet's distance to its nearest tracklet in another camera that it could be; or Q, the Q "
                "quantile (0.01, say) of the distances between tracklets the time rules say are two people "
                "(seen at once in one camera, or in two cameras that do not overlap)",
        "metavar": "valley|Q", "type": auto_threshold_value, "group": ASSOCIATION})
    overlapping: list | None = dataclasses.field(default=None, metadata={
        "help": "cameras whose views overlap, so one person can be in them at once: groups of camera ids "
                "joined by commas (1,2 3,4,5), or 'all' (every view overlaps, or the cameras' clocks are not "
                "known). By default none overlap: a person is in one camera at a time, on the clock the "
                "cameras' @START set", "nargs": "+", "metavar": "IDS", "group": ASSOCIATION})
    centre_cameras: bool = dataclasses.field(default=False, metadata={
        "help": "take each camera's mean embedding out of its tracklets' before associating (and of the "
                "--calibrate set's, per its cameras): what a camera's lighting and background add to everyone",
        "group": ASSOCIATION})
    min_transit: float = dataclasses.field(default=0.0, metadata={
        "help": "seconds a person needs, at least, from one camera to another that does not overlap it",
        "metavar": "SECONDS", "group": ASSOCIATION})
    match_cameras: float | None = dataclasses.field(default=None, metadata={
        "help": "after merging, match the identities seen in one camera of each pair and not the other one "
                "to one (Hungarian, on their centres' distances), merging matches under F times the threshold "
                "(1.25, say; default: no such pass)", "metavar": "F", "group": ASSOCIATION})
    detections: dict | None = dataclasses.field(default=None, metadata={
        "help": "MOTChallenge det.txt per camera (in --camera order, or ID=PATH); skips detection",
        "nargs": "+", "action": "extend", "metavar": "[ID=]DET.TXT", "group": "detection"})
    detector: str | None = dataclasses.field(default=None, metadata={
        "help": f"when no --detections: {listing(DETECTORS)} (default: ssdlite when its package is installed, "
                "else hog)", "group": "detection"})
    detect_threshold: float | None = dataclasses.field(default=None, metadata={
        "help": "ssdlite, onnx: person score below which boxes are dropped (default 0.3, onnx 0.25)",
        "group": "detection"})
    upscale: float = dataclasses.field(default=1.0, metadata={
        "help": "hog: scale frames by this first", "group": "detection"})
    detect_batch: int = dataclasses.field(default=8, metadata={
        "help": "frames per detector batch", "group": "detection"})
    max_frames: int | None = dataclasses.field(default=None, metadata={
        "help": "only the first N frames of every camera (default: all)", "group": "detection"})
    fps: float | None = dataclasses.field(default=None, metadata={
        "help": "frame rate of frame folders (default 25; videos carry their own)", "group": "detection"})
    tracker: str = dataclasses.field(default="bytetrack", metadata={
        "help": "multi-object tracker (Roboflow's trackers library)", "choices": TRACKERS, "group": "tracking"})
    lost_track_buffer: int = dataclasses.field(default=30, metadata={
        "help": "frames (at 30 fps) a lost track is kept", "group": "tracking"})
    track_threshold: float | None = dataclasses.field(default=None, metadata={
        "help": "detection score that starts a track (default: the tracker's)", "group": "tracking"})
    match_iou: float | None = dataclasses.field(default=None, metadata={
        "help": "least IoU of a box with a track's predicted box to continue it (default: the tracker's; "
                "ByteTrack 0.1)", "group": "tracking"})
    min_length: int = dataclasses.field(default=8, metadata={
        "help": "tracklets with fewer boxes are dropped", "group": "tracking"})
    max_gap: int = dataclasses.field(default=10, metadata={
        "help": "a track missing more frames is cut in two", "group": "tracking"})
    crop_size: tuple = dataclasses.field(default=(256, 128), metadata={
        "help": "size of the tracklet crops written (padded to the person aspect ratio)", "type": int,
        "nargs": 2, "metavar": ("HEIGHT", "WIDTH"), "group": "tracking"})
    sampling: str | None = None  # None: what the model was evaluated with, else rrs
    batch_size: int = 16
    flip: bool = False
    metric: str = "cosine"
    rerank: bool = False
    batch_norm: str = "model"
    gallery: str | None = dataclasses.field(default=None, metadata={
        "help": "a gallery .npz to continue: its ids are kept for those it holds", "group": ASSOCIATION})
    videos: bool = dataclasses.field(default=True, metadata={
        "help": "annotated videos in the report (--no-video: none)", "flag": "--video", "group": ASSOCIATION})
    verbose: int = dataclasses.field(default=1, metadata={
        "help": "no progress bars", "flag": "--quiet", "negate": True, "group": ASSOCIATION})

    @property
    def rules(self):
        """The :class:`~nvan_tf.video.association.TimeRules` of ``overlapping`` and ``min_transit``."""
        return association.TimeRules.parse(self.overlapping, self.min_transit)

    def __post_init__(self):
        from nvan_tf.video.detection import default_detector

        if not self.cameras:
            raise ValueError("no camera given (--camera)")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"--fps must be a positive frame rate. Received: {self.fps!r}")
        # a camera given as text ([ID=]PATH[@START]) is parsed here, with --fps for frame folders
        self.cameras = [c if isinstance(c, CameraSpec) else parse_camera(c, i, fps=self.fps)
                        for i, c in enumerate(self.cameras, start=1)]
        if os.path.exists(self.output_dir) and not os.path.isdir(self.output_dir):
            raise ValueError(f"--out {self.output_dir} is a file; the output is a folder (a new one, or a "
                             f"run's folder to resume)")
        if self.detector is None:
            self.detector = default_detector()
        if self.max_frames is not None and (int(self.max_frames) != self.max_frames or self.max_frames < 1):
            raise ValueError(f"--max-frames must be a positive integer. Received: {self.max_frames!r}")
        if self.match_iou is not None and not 0 <= self.match_iou <= 1:
            raise ValueError(f"--match-iou must be an IoU in [0, 1]. Received: {self.match_iou!r}")
        if self.detect_threshold is not None and not 0 <= self.detect_threshold <= 1:
            raise ValueError(f"--detect-threshold must be a score in [0, 1]. Received: {self.detect_threshold!r}")
        camids = [c.camid for c in self.cameras]
        if len(set(camids)) != len(camids):
            raise ValueError(f"camera ids must differ. Received: {camids}")
        if self.detections is not None:
            missing = sorted(set(camids) - set(self.detections))
            if missing:
                raise ValueError(f"--detections: no det.txt for camera(s) {missing}")
            for camid, path in self.detections.items():
                if not os.path.isfile(path):
                    raise FileNotFoundError(f"--detections: {path} (camera {camid}) does not exist")
        if self.tracker not in TRACKERS:
            raise ValueError(f"--tracker must be one of {', '.join(TRACKERS)}. Received: {self.tracker!r}")
        if self.sampling is not None and self.sampling not in SAMPLING_MODES:
            raise ValueError(f"--sampling must be one of {SAMPLING_MODES}. Received: {self.sampling!r}")
        if self.metric not in DISTANCE_METRICS:
            raise ValueError(f"--metric must be one of {DISTANCE_METRICS}. Received: {self.metric!r}")
        given = [name for name in ("threshold", "calibrate", "auto_threshold") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("give the association threshold (--threshold), a labelled folder dataset to choose it "
                             "on (--calibrate), or the label-free rule to choose it by on this footage "
                             f"(--auto-threshold): one of them. Received: {given or 'none'}")
        if self.auto_threshold is not None:
            self.auto_threshold = auto_threshold_value(self.auto_threshold)  # a config file's "0.01" too
            if self.auto_threshold != VALLEY and not 0 <= self.auto_threshold < 1:
                raise ValueError(f"--auto-threshold is a quantile in [0, 1) or {VALLEY!r}. "
                                 f"Received: {self.auto_threshold!r}")
        if self.match_cameras is not None and not self.match_cameras >= 1:
            raise ValueError(f"--match-cameras is a multiple of the threshold, at least 1. "
                             f"Received: {self.match_cameras!r}")
        if self.threshold is not None and not self.threshold >= 0:
            raise ValueError(f"--threshold must be a non-negative distance. Received: {self.threshold!r}")
        if self.calibrate is not None and not os.path.exists(self.calibrate):
            raise FileNotFoundError(f"--calibrate: {self.calibrate} does not exist")
        if self.rules.overlapping != "all":  # parsed (and checked) from --overlapping and --min-transit
            unknown = sorted({c for group in self.rules.overlapping for c in group} - set(camids))
            if unknown:
                raise ValueError(f"--overlapping names camera(s) {unknown}, which are not among --camera's {camids}")
        if self.model is None:
            raise ValueError("--model is required (a model file or folder, or colour-histogram)")
        if self.model not in embedding.BASELINES and not os.path.exists(self.model):
            raise FileNotFoundError(f"--model {self.model}: no such file or folder "
                                    f"(or one of {', '.join(embedding.BASELINES)})")
        if self.batch_norm not in BATCH_NORM_STATISTICS:
            raise ValueError(f"--batch-norm must be one of {listing(BATCH_NORM_STATISTICS)}. "
                             f"Received: {self.batch_norm!r}")
        if self.batch_norm != "model" and self.model in embedding.BASELINES:
            raise ValueError(f"--batch-norm {self.batch_norm}: --model {self.model} has no BatchNorm statistics "
                             f"(give a Keras model, or --batch-norm model)")
        if self.min_length < 1 or self.max_gap < 0:
            raise ValueError(f"--min-length must be >= 1 and --max-gap >= 0. Received: {self.min_length}, "
                             f"{self.max_gap}")


def _file_key(path, content=False):
    """What an input of a stage is (``nvan_tf.core.digests``): its path and
    size and ``st_mtime_ns`` (a folder: every file's), and with ``content``
    the sha256 of its bytes (the model: overwritten in the same second at the
    same size, it is still another model)."""
    if path is None or path in embedding.BASELINES:
        return path
    key = [os.path.abspath(path), stat_key(path)]
    return key + [content_digest(path)] if content else key


class _Stages:
    """Records of finished stages (``stages/<name>.json``: the run record of
    its settings and inputs, ``nvan_tf.core.records``, and its result). A
    stage whose record differs runs again, the log naming what changed."""

    def __init__(self, root):
        self.folder = os.path.join(root, "stages")

    def done(self, name, key):
        path = os.path.join(self.folder, f"{name}.json")
        if not os.path.isfile(path):
            return None
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
        changed = records.differences(record.get("key"), records.stamped(key))
        if changed:
            logger.info("stage %s runs again:\n%s", name, records.format_differences(changed, "when it ran"))
            return None
        return record["result"]

    def finish(self, name, key, result):
        write_json(os.path.join(self.folder, f"{name}.json"), {"key": records.stamped(key), "result": result})
        return result


def _progress(target, verbose, unit):
    """A Keras progress bar (one line at the end when stdout is not a terminal)."""
    import keras

    from nvan_tf.core.progress import progress_verbosity

    bar = keras.utils.Progbar(max(int(target), 1), unit_name=unit, verbose=progress_verbosity(verbose))
    return lambda current: bar.update(min(int(current), bar.target))


def _table(rows, columns):
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _read_table(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------
# Stages
# ----------------------------------------------------------------------------
def _detect(config, spec, out, detector):
    """Detections of one camera, from its det.txt or ``detector``; returns the stage record."""
    reader = CameraReader(spec, last=config.max_frames)
    meta = {"camera": spec.camid, "fps": reader.fps, "width": reader.width, "height": reader.height}
    if config.detections is not None:
        boxes = read_mot(config.detections[spec.camid], "det")
        frames = reader.announced_frames or int(boxes.frames.max(initial=0))
        if config.max_frames is not None:
            frames = min(frames, config.max_frames)
            boxes = boxes.select(boxes.frames <= frames)
        meta.update(frames=frames, times=None, decode_seconds=0.0, detect_seconds=0.0, problem=None,
                    source=os.path.abspath(config.detections[spec.camid]))
    else:
        logger.info("camera %d: detecting people with %r in %s", spec.camid, detector, spec.source)
        progress = _progress(min(reader.announced_frames or 1, config.max_frames or float("inf")),
                             config.verbose, "frame")
        parts, times, batch, indices = [], [], [], []
        decode_seconds = detect_seconds = 0.0
        frames = iter(reader)

        def flush():
            nonlocal detect_seconds
            started = time.perf_counter()
            found = detector(batch)
            detect_seconds += time.perf_counter() - started
            for index, boxes in zip(indices, found):
                boxes = np.asarray(boxes, np.float64).reshape(-1, 5)
                parts.append(MOTBoxes(np.full(len(boxes), index), np.full(len(boxes), -1),
                                      np.concatenate([boxes[:, :2], boxes[:, 2:4] - boxes[:, :2]], axis=1),
                                      boxes[:, 4]))
            progress(indices[-1])
            batch.clear()
            indices.clear()

        while True:
            started = time.perf_counter()
            frame = next(frames, None)
            decode_seconds += time.perf_counter() - started
            if frame is None:
                break
            batch.append(frame.image)
            indices.append(frame.index)
            times.append(round(frame.time, 4))
            if len(batch) >= detector.batch_size:
                flush()
        if batch:
            flush()
        boxes = MOTBoxes.concatenate(parts)
        meta.update(frames=reader.frames_read, times=times, decode_seconds=decode_seconds,
                    detect_seconds=detect_seconds, problem=reader.problem, source=repr(detector))
    write_json(os.path.join(out, "detections", f"c{spec.camid}.json"), meta)
    write_mot(os.path.join(out, "detections", f"c{spec.camid}.txt"), boxes, "det")
    return {k: v for k, v in meta.items() if k != "times"} | {"boxes": len(boxes)}


def _frame_times(out, camid):
    with open(os.path.join(out, "detections", f"c{camid}.json"), encoding="utf-8") as f:
        meta = json.load(f)
    times = meta.get("times")
    fps = meta["fps"]
    return meta, (lambda frame: times[frame - 1] if times and frame <= len(times) else (frame - 1) / fps)


def _track(config, spec, out):
    meta, _ = _frame_times(out, spec.camid)
    detections = read_mot(os.path.join(out, "detections", f"c{spec.camid}.txt"), "det")
    tracker = make_tracker(config.tracker, frame_rate=meta["fps"], lost_track_buffer=config.lost_track_buffer,
                           track_activation_threshold=config.track_threshold,
                           minimum_iou_threshold=config.match_iou)
    logger.info("camera %d: tracking %d detections over %d frames (%s)", spec.camid, len(detections),
                meta["frames"], config.tracker)
    started = time.perf_counter()
    tracks = track_boxes(detections, meta["frames"], tracker, progress=_progress(meta["frames"], config.verbose,
                                                                                 "frame"))
    seconds = time.perf_counter() - started
    write_mot(os.path.join(out, "tracks", f"c{spec.camid}.txt"), tracks, "tracks")
    return {"camera": spec.camid, "frames": meta["frames"], "boxes": len(tracks),
            "tracks": int(len(np.unique(tracks.ids))), "seconds": seconds}


def _tracklets(config, spec, out):
    _, frame_time = _frame_times(out, spec.camid)
    tracks = read_mot(os.path.join(out, "tracks", f"c{spec.camid}.txt"), "tracks")
    pieces = cut_tracklets(tracks, spec.camid, min_length=config.min_length, max_gap=config.max_gap)
    wanted = {}
    for piece in pieces:
        for frame, box in zip(piece.frames.tolist(), pad_to_aspect(piece.boxes)):
            wanted.setdefault(frame, []).append((piece.tracklet_id, box))
    height, width = config.crop_size
    folder = os.path.join(out, "crops", f"c{spec.camid}")
    written = {piece.tracklet_id: 0 for piece in pieces}
    logger.info("camera %d: %d tracks cut into %d tracklets; cropping", spec.camid, len(np.unique(tracks.ids)),
                len(pieces))
    started = time.perf_counter()
    from PIL import Image

    with atomic_path(folder, folder=True) as staged:
        if wanted:
            last = max(wanted)
            progress = _progress(last, config.verbose, "frame")
            for frame in CameraReader(spec, first=min(wanted), last=last):
                for tracklet_id, box in wanted.get(frame.index, ()):
                    target = os.path.join(staged, f"t{tracklet_id:04d}")
                    os.makedirs(target, exist_ok=True)
                    Image.fromarray(crop(frame.image, box, height, width)).save(
                        os.path.join(target, f"{frame.index:06d}.jpg"), quality=90)
                    written[tracklet_id] += 1
                progress(frame.index)
        rows, kept = [], []
        for piece in pieces:
            if not written[piece.tracklet_id]:
                logger.warning("camera %d: tracklet %d has no decodable frame; left out", spec.camid,
                               piece.tracklet_id)
                continue
            kept.append(piece)
            rows.append({"camera": spec.camid, "tracklet": piece.tracklet_id, "track_id": piece.track_id,
                         "first_frame": piece.first_frame, "last_frame": piece.last_frame,
                         "start_time": round(spec.start_time + frame_time(piece.first_frame), 4),
                         "end_time": round(spec.start_time + frame_time(piece.last_frame), 4),
                         "frames": written[piece.tracklet_id]})
        write_text(os.path.join(staged, "tracklets.csv"), _table(rows, TRACKLET_COLUMNS))
        boxes = MOTBoxes.concatenate([MOTBoxes(p.frames, np.full(len(p), p.tracklet_id), p.boxes, p.scores)
                                      for p in kept])
        write_mot(os.path.join(staged, "boxes.txt"), boxes, "tracks")
    return {"camera": spec.camid, "tracklets": len(rows), "crops": int(sum(r["frames"] for r in rows)),
            "seconds": time.perf_counter() - started}


def read_tracklets(out, cameras=None):
    """The tracklets of a run (``crops/c<k>/tracklets.csv``) as dicts, with
    ``record``: a ``nvan_tf.data.datasets.Tracklet`` over the crops."""
    from nvan_tf.data.datasets import Tracklet
    from nvan_tf.data.datasets.base import list_images

    folders = sorted(os.listdir(os.path.join(out, "crops")))
    rows = []
    for name in folders:
        path = os.path.join(out, "crops", name, "tracklets.csv")
        if not os.path.isfile(path) or (cameras is not None and int(name[1:]) not in cameras):
            continue
        for row in _read_table(path):
            row = {k: (float(v) if k.endswith("_time") else int(v)) for k, v in row.items()}
            folder = os.path.join(out, "crops", name, f"t{row['tracklet']:04d}")
            frames = [os.path.join(folder, f) for f in list_images(folder)]
            row["record"] = Tracklet(frames, 0, row["camera"], row["tracklet"])
            rows.append(row)
    return rows


def read_identities(out):
    """``identities.csv`` of a run, as dicts with numbers."""
    return [{k: (float(v) if k in ("start_time", "end_time", "centre_distance") else int(v))
             for k, v in row.items()} for row in _read_table(os.path.join(out, "identities.csv"))]


def _embed(config, out, extractor, sampling):
    rows = read_tracklets(out, {c.camid for c in config.cameras})
    if not rows:
        raise ValueError(f"no tracklet was found in any camera (see {os.path.join(out, 'tracks')}); "
                         f"nothing to embed. Lower --min-length, or check the detections")
    logger.info("embedding %d tracklets with %s (sampling %s)", len(rows), extractor.description, sampling)
    started = time.perf_counter()
    features = embedding.embed_tracklets(extractor, [r["record"] for r in rows], sampling=sampling,
                                         batch_size=config.batch_size, flip=config.flip, verbose=config.verbose,
                                         batch_norm=config.batch_norm)
    seconds = time.perf_counter() - started
    with atomic_path(os.path.join(out, "embeddings.npz")) as tmp, open(tmp, "wb") as f:
        np.savez(f, features=features, cameras=np.array([r["camera"] for r in rows]),
                 tracklets=np.array([r["tracklet"] for r in rows]))
    return {"tracklets": len(rows), "dim": int(features.shape[1]), "seconds": seconds,
            "crops": int(sum(r["frames"] for r in rows)), "model": extractor.description, "sampling": sampling,
            "batch_norm": config.batch_norm}


def _calibrate(config, extractor, sampling):
    """The threshold with the best pairwise F1 on the labelled folder dataset ``config.calibrate``."""
    from nvan_tf.data.datasets import build_dataset

    dataset = build_dataset("folder", config.calibrate, verbose=False)
    tracklets = dataset.test_set()[0] + [t for t in dataset.train]
    labelled = [t for t in tracklets if t.pid > 0]
    if len(labelled) < 2:
        raise ValueError(f"--calibrate {config.calibrate}: fewer than two labelled tracklets (pid > 0)")
    logger.info("choosing the threshold on %d labelled tracklets of %s", len(labelled), config.calibrate)
    features = embedding.embed_tracklets(extractor, labelled, sampling=sampling, batch_size=config.batch_size,
                                         flip=config.flip, verbose=config.verbose, batch_norm=config.batch_norm)
    # times, where the layout was written by nvan-track (its tracklets.csv); a
    # folder dataset of other origin records none: no same-camera overlap constraint then
    times = {}
    index = os.path.join(config.calibrate, "tracklets.csv")
    if os.path.isfile(index):
        times = {(int(r["camera"]), int(r["tracklet"])): (float(r["start_time"]), float(r["end_time"]))
                 for r in _read_table(index)}
    # (without times: far apart, so that no time rule applies)
    spans = np.array([times.get((t.camid, t.tracklet_id), (-1e9 * (1 + i),) * 2) for i, t in enumerate(labelled)])
    if config.centre_cameras:
        features = association.centre_by_camera(features, [t.camid for t in labelled])
    threshold, table = association.choose_threshold(
        features, np.array([t.pid for t in labelled]), np.array([t.camid for t in labelled]), spans[:, 0],
        spans[:, 1], metric=config.metric, rerank=config.rerank, rules=config.rules,
        match_cameras=config.match_cameras)
    best = dict(table)[threshold]["pairwise_f1"]
    near = [t for t, scores in table if scores["pairwise_f1"] >= best - 0.02]  # how sharply the set decides it
    return threshold, {"labelled_tracklets": len(labelled), "pairwise_f1": best,
                       "within_0.02_f1": [min(near), max(near)]}


def _link(source, target):
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def write_folder_layout(root, rows, ids, *, train=((), ())):
    """The tracklets under their global ids in the folder layout (hard links to
    the crops): every tracklet in ``gallery/``, and for identities seen by two
    or more cameras their first tracklet per camera in ``query/`` too; with
    ``tracklets.csv`` (camera, tracklet, global id, times), which
    ``--calibrate`` reads for the same-camera overlaps. ``train``: (rows,
    ids) written under ``train/`` as well (``nvan-train --dataset folder``)."""
    firsts = {}
    cameras_of = {}
    for row, identity in zip(rows, ids):
        cameras_of.setdefault(identity, set()).add(row["camera"])
        key = (identity, row["camera"])
        if key not in firsts or row["start_time"] < firsts[key]["start_time"]:
            firsts[key] = row
    with atomic_path(root, folder=True) as staged:
        write_text(os.path.join(staged, "tracklets.csv"), _table(
            [{**row, "global_id": int(identity)} for row, identity in zip(rows, ids)],
            ("camera", "tracklet", "global_id", "start_time", "end_time", "frames")))
        os.makedirs(os.path.join(staged, "query"))
        os.makedirs(os.path.join(staged, "gallery"))
        placed = [(row, identity, ["train"]) for row, identity in zip(*train)]
        for row, identity in zip(rows, ids):
            splits = ["gallery"]
            if len(cameras_of[identity]) > 1 and firsts[(identity, row["camera"])] is row:
                splits.append("query")
            placed.append((row, identity, splits))
        for row, identity, splits in placed:
            for split in splits:
                folder = os.path.join(staged, split, f"{identity:04d}", f"c{row['camera']}",
                                      f"t{row['tracklet']:04d}")
                os.makedirs(folder)
                for frame in row["record"].frames:
                    _link(frame, os.path.join(folder, os.path.basename(frame)))
    return root


def _associate(config, out, extractor, sampling):
    """``extractor``: the feature extractor (for ``--calibrate``; ``None`` without it)."""
    from nvan_tf.deploy.serving import Gallery

    rows = read_tracklets(out, {c.camid for c in config.cameras})
    with np.load(os.path.join(out, "embeddings.npz")) as data:
        features = data["features"]
    camids = np.array([r["camera"] for r in rows])
    starts, ends = np.array([r["start_time"] for r in rows]), np.array([r["end_time"] for r in rows])
    linked = association.centre_by_camera(features, camids) if config.centre_cameras else features
    started = time.perf_counter()  # the association's time: re-ranking, then the merge (calibration apart)
    reranked = association.reranked_distances(linked, config.metric) if config.rerank else None
    rerank_seconds = time.perf_counter() - started
    threshold, chosen, basis = config.threshold, "given", {}
    if config.calibrate is not None:
        threshold, basis = _calibrate(config, extractor, sampling)
        chosen = f"best pairwise F1 on {config.calibrate}"
    elif config.auto_threshold == VALLEY:
        threshold, basis = association.threshold_from_valley(linked, camids, starts, ends, metric=config.metric,
                                                             rules=config.rules, reranked=reranked)
        chosen = (f"Otsu's split of {basis['tracklets']} tracklets' nearest cross-camera distances "
                  f"(separation {basis['separation']:.2f})")
    elif config.auto_threshold is not None:
        threshold, basis = association.threshold_from_negatives(linked, camids, starts, ends,
                                                                quantile=config.auto_threshold,
                                                                metric=config.metric, rules=config.rules,
                                                                reranked=reranked)
        chosen = f"the {config.auto_threshold:g} quantile of {basis['known_negatives']} known negatives"
    started = time.perf_counter()
    result = association.associate(linked, camids, starts, ends, threshold=threshold, metric=config.metric,
                                   rerank=config.rerank, reranked=reranked, rules=config.rules,
                                   match_cameras=config.match_cameras)
    ids = result.ids
    gallery = Gallery.load(config.gallery) if config.gallery and os.path.isfile(config.gallery) else Gallery()
    if len(gallery):
        ids = _match_gallery(gallery, linked, ids, threshold, config.metric, config.rerank)
    seconds = time.perf_counter() - started + rerank_seconds
    sources = {c.camid: os.path.abspath(c.source) for c in config.cameras}  # a tracklet is held once per footage
    gallery.add(linked, ids, camids, tracklets=[f"{sources[r['camera']]}#{r['tracklet']}" for r in rows])
    gallery.save(os.path.join(out, "gallery.npz"))
    identities = [{"global_id": int(i), "camera": r["camera"], "tracklet": r["tracklet"],
                   "start_time": r["start_time"], "end_time": r["end_time"], "frames": r["frames"],
                   "centre_distance": round(float(d), 5)}
                  for r, i, d in zip(rows, ids, result.centre_distance)]
    identities.sort(key=lambda r: (r["global_id"], r["start_time"], r["camera"]))
    write_text(os.path.join(out, "identities.csv"), _table(identities, IDENTITY_COLUMNS))
    write_folder_layout(os.path.join(out, "dataset"), rows, ids)
    _write_global_tracks(out, config.cameras, {(r["camera"], r["tracklet"]): int(i) for r, i in zip(rows, ids)})
    summary = {"threshold": float(threshold), "threshold_chosen": chosen, "threshold_basis": basis,
               "metric": config.metric,
               "rerank": config.rerank, "match_cameras": config.match_cameras, "tracklets": len(rows),
               "global_ids": int(len(np.unique(ids))),
               "candidate_pairs": result.candidates, "seconds": seconds, "gallery_size": len(gallery)}
    write_json(os.path.join(out, "association.json"), summary)
    return summary


def _write_global_tracks(out, cameras, ids):
    """The tracklets' boxes under their global ids: ``tracks/global_c<k>.txt`` (MOTChallenge) and
    ``tracks/mtmc.txt`` (AI City multi-camera, every camera); ``ids``: ``{(camera, tracklet): id}``."""
    per_camera = {}
    for spec in cameras:
        boxes = read_mot(os.path.join(out, "crops", f"c{spec.camid}", "boxes.txt"), "tracks")
        keep = np.array([(spec.camid, t) in ids for t in boxes.ids.tolist()], bool)
        boxes = boxes.select(keep)
        boxes.ids = np.array([ids[(spec.camid, t)] for t in boxes.ids.tolist()], np.int64)
        write_mot(os.path.join(out, "tracks", f"global_c{spec.camid}.txt"), boxes, "tracks")
        per_camera[spec.camid] = boxes
    write_aicity(os.path.join(out, "tracks", "mtmc.txt"), per_camera)


def _match_gallery(gallery, features, ids, threshold, metric, rerank=False):
    """Identities matched to an existing gallery keep its ids (each gallery id
    claimed once, closest first); the others get new ids after its largest.
    With ``rerank`` the centres are matched on re-ranked distances, the scale
    the threshold is on."""
    from nvan_tf.evaluation.distance import l2_normalize

    if gallery.ids.dtype.kind == "U":
        raise ValueError("the gallery's ids are strings; nvan-track numbers identities (give an integer gallery)")
    groups = np.unique(ids)
    vectors = l2_normalize(features) if metric == "cosine" else features
    centres = np.stack([vectors[ids == g].mean(axis=0) for g in groups])
    matches = gallery.query(centres, k=1, metric=metric, rerank=rerank)
    order = np.argsort([m.distances[0] if len(m.distances) else np.inf for m in matches])
    mapping, claimed, next_id = {}, set(), int(gallery.ids.max()) + 1
    for i in order:
        match = matches[i]
        if len(match.ids) and match.distances[0] <= threshold and int(match.ids[0]) not in claimed:
            mapping[groups[i]] = int(match.ids[0])
            claimed.add(int(match.ids[0]))
    for g in groups:
        if g not in mapping:
            mapping[g], next_id = next_id, next_id + 1
    return np.array([mapping[g] for g in ids])


def _report(config, out):
    identities = read_identities(out)
    tracklets = {(r["camera"], r["tracklet"]): r for r in read_tracklets(out)}
    folder = os.path.join(out, "report")
    os.makedirs(folder, exist_ok=True)
    started = time.perf_counter()
    for row in identities:
        strip = os.path.join("strips", f"c{row['camera']}_t{row['tracklet']:04d}.jpg")
        report.write_strip(tracklets[(row["camera"], row["tracklet"])]["record"].frames,
                           os.path.join(folder, strip))
        row["strip"] = strip
    report.plot_timeline(identities, os.path.join(folder, "timeline.png"))
    videos, video_frames = [], 0
    if config.videos:
        ids = {(r["camera"], r["tracklet"]): r["global_id"] for r in identities}
        for spec in config.cameras:
            boxes = read_mot(os.path.join(out, "crops", f"c{spec.camid}", "boxes.txt"), "tracks")
            by_frame = {}
            for frame, tracklet, box in zip(boxes.frames.tolist(), boxes.ids.tolist(), boxes.boxes):
                if (spec.camid, tracklet) in ids:
                    by_frame.setdefault(frame, []).append((ids[(spec.camid, tracklet)], box))
            meta, _ = _frame_times(out, spec.camid)
            logger.info("camera %d: writing the annotated video", spec.camid)
            video = os.path.join("videos", f"c{spec.camid}.mp4")
            video_frames += report.annotate_video(spec, os.path.join(folder, video), by_frame,
                                                  last=config.max_frames, progress=_progress(meta["frames"], config.verbose, "frame"))
            videos.append(video)
    with open(os.path.join(out, "association.json"), encoding="utf-8") as f:
        summary = json.load(f)
    report.write_html(
        os.path.join(folder, "index.html"), identities, title="nvan-track: identities across cameras",
        summary=[("cameras", len(config.cameras)), ("tracklets", len(identities)),
                 ("global identities", summary["global_ids"]), ("threshold", f"{summary['threshold']:.3f} "
                                                                            f"({summary['metric']})")],
        timeline="timeline.png", videos=videos)
    return {"html": os.path.join(folder, "index.html"), "videos": len(videos), "video_frames": video_frames,
            "seconds": time.perf_counter() - started}


# ----------------------------------------------------------------------------
# The chain
# ----------------------------------------------------------------------------
def run_tracking(config):
    """Runs (or resumes) the chain described by ``config`` (a :class:`TrackConfig`).

    Returns:
        dict: the record of every stage, ``timings`` (seconds and frames/s per
        stage) and the paths of ``identities.csv`` and the report.
    """
    out = os.path.abspath(config.output_dir)
    stages = _Stages(out)
    # every stage's key first (they depend on settings and inputs, not on results), so that
    # what the stages still to run need is built, or refused, before anything is written
    plan, camera_keys = [], {}
    for spec in config.cameras:
        key = {"source": _file_key(spec.source), "camera": dataclasses.asdict(spec),
               "detections": _file_key(config.detections[spec.camid]) if config.detections else None,
               "detector": None if config.detections else [config.detector, config.upscale,
                                                           config.detect_threshold],
               "max_frames": config.max_frames}
        for stage, params in (
                ("detect", {}),
                ("track", {"tracker": config.tracker, "buffer": config.lost_track_buffer,
                           "thr": config.track_threshold, "iou": config.match_iou}),
                ("tracklets", {"min_length": config.min_length, "max_gap": config.max_gap,
                               "crop": list(config.crop_size)})):
            key = {"previous": key, **params}
            plan.append((f"{stage}-c{spec.camid}", stage, spec, key))
        camera_keys[spec.camid] = key
    sampling = config.sampling or (embedding.evaluated_sampling(config.model)
                                   if config.model not in embedding.BASELINES else "rrs")
    key = {"cameras": camera_keys, "model": _file_key(config.model, content=True), "sampling": sampling,
           "flip": config.flip}
    if config.batch_norm != "model":  # (absent with the model's own statistics: runs before it still resume)
        key["batch_norm"] = [config.batch_norm, config.batch_size]  # estimated from per-batch moments
    for stage, params in (
            ("embed", {}),
            ("associate", {"threshold": config.threshold, "calibrate": _file_key(config.calibrate),
                           "auto": config.auto_threshold,
                           "rules": dataclasses.asdict(config.rules), "centre": config.centre_cameras,
                           "metric": config.metric, "rerank": config.rerank, "gallery": _file_key(config.gallery),
                           "match_cameras": config.match_cameras,
                           "outputs": 2}),
            ("report", {"videos": config.videos})):
        key = {"previous": key, **params}
        plan.append((stage, stage, None, key))
    done = {name: stages.done(name, key) for name, _, _, key in plan}
    pending = {stage for name, stage, _, _ in plan if done[name] is None}
    detector = extractor = None
    if "detect" in pending and config.detections is None:
        from nvan_tf.video.detection import build_detector

        detector = build_detector(config.detector, upscale=config.upscale, batch_size=config.detect_batch,
                                  score_threshold=config.detect_threshold)
    if "embed" in pending or ("associate" in pending and config.calibrate is not None):
        extractor = embedding.load_embedder(config.model)
        from nvan_tf.evaluation.features import check_batch_norm

        check_batch_norm(extractor, config.batch_norm)  # a Keras model with BatchNorm, before anything runs
    os.makedirs(out, exist_ok=True)
    for sub in ("", "detections", "tracks", "crops", "stages", "report"):
        remove_stale(os.path.join(out, sub))
    steps = {"detect": lambda s: _detect(config, s, out, detector), "track": lambda s: _track(config, s, out),
             "tracklets": lambda s: _tracklets(config, s, out), "embed": lambda s: _embed(config, out, extractor,
                                                                                          sampling),
             "associate": lambda s: _associate(config, out, extractor, sampling),
             "report": lambda s: _report(config, out)}
    records = {}
    for name, stage, spec, key in plan:
        record = done[name]
        if record is None:
            record = stages.finish(name, key, steps[stage](spec))
        elif spec is not None:
            logger.info("camera %d: %s already done (%s)", spec.camid, stage, os.path.join(out, "stages"))
        else:
            logger.info("%s already done (%s)", stage, os.path.join(out, "stages"))
        records[name] = record
    timings = _timings(config, records)
    write_json(os.path.join(out, "timings.json"), timings)
    return {"stages": records, "timings": timings, "identities": os.path.join(out, "identities.csv"),
            "report": os.path.join(out, "report", "index.html"), "output_dir": out}


def _timings(config, records):
    """Seconds and frames/s per stage, summed over the cameras."""
    def total(stage, field):
        return sum(r.get(field, 0) or 0 for name, r in records.items() if name.split("-")[0] == stage)

    frames = total("detect", "frames")
    rows = {"decode": (total("detect", "decode_seconds"), frames),
            "detect": (total("detect", "detect_seconds"), frames),
            "track": (total("track", "seconds"), total("track", "frames")),
            "tracklets": (total("tracklets", "seconds"), total("tracklets", "crops")),
            "embed": (records["embed"]["seconds"], records["embed"]["crops"]),
            "associate": (records["associate"]["seconds"], records["associate"]["tracklets"]),
            "report": (records["report"]["seconds"], records["report"]["video_frames"])}
    units = {"tracklets": "crops", "embed": "crops", "associate": "tracklets", "report": "video frames"}
    return {name: {"seconds": round(s, 3), units.get(name, "frames"): n,
                   "per_second": round(n / s, 1) if s > 0 else None}
            for name, (s, n) in rows.items()}

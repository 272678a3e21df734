"""A synthetic multi-camera world: real video files, MOTChallenge files, identity truth.

    python -m nvan_tf.video.world --out world --cameras 3 --identities 6 --frames 100
    python -m nvan_tf.video.world --out held_out --held-out        # HELD_OUT_WORLD's settings
    python -m nvan_tf.video.world --out runs/worlds --training-set # re-ID tracklets cut from 5 worlds

Built on the synthetic tracklet generator (``nvan_tf.data.datasets.synthetic``):
the same identities (``random_identity``) and camera looks (``random_camera``:
background, clutter, lighting gain and colour cast, sensor noise), and people
drawn by its ``render_frame``. Each person is rendered twice on two flat key
backgrounds; the pixels the two renders share are the person, which is then
composited into the camera's full frame:

* three or more cameras, each with its own background and lighting, its own
  clock (camera ``k`` starts ``start_offset * (k - 1)`` seconds late) and
  static pillars in front of the walkers;
* identities walk across at different times, in different lanes (nearer is
  larger and lower), in either direction, and occlude each other; a share
  (``single_camera``) is seen by one camera only. The cameras do not
  overlap: a person seen by several walks through them one after another
  on the common clock, ``transit`` seconds between leaving one and entering
  the next (a visit that would start after its camera stops recording is
  left out).

Written per camera (``c<k>/``): ``video.mp4`` (H.264), ``gt/gt.txt`` (the
full box of every person in every frame it is in, with its visible share),
``det/det.txt`` (the ground truth with box noise, misses, more misses when
occluded, and false positives) and ``seqinfo.ini``; for the world:
``world.json`` (configuration and cameras) and ``identities.csv`` (which
identity was in which camera when: the cross-camera truth).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import logging
import os
import sys

import numpy as np

from nvan_tf.choices import SYNTHETIC_LOOKS
from nvan_tf.data.datasets.synthetic import Camera, random_camera, random_identity, render_frame
from nvan_tf.core.atomic import write_json, write_text
from nvan_tf.video.mot import MOTBoxes, write_mot
from nvan_tf.video.sources import CameraSpec, VideoWriter

logger = logging.getLogger(__name__)

__all__ = ["WorldConfig", "HELD_OUT_WORLD", "TRAINING_WORLD", "generate_world", "write_training_set", "read_world",
           "label_run", "main"]

_KEYS = ((255.0, 0.0, 255.0), (0.0, 255.0, 0.0))


@dataclasses.dataclass(frozen=True)
class WorldConfig:
    """What :func:`generate_world` draws (every random choice derives from ``seed``)."""

    cameras: int = 3
    identities: int = 6
    frames: int = 100                      # per camera
    fps: float = 10.0
    height: int = 180
    width: int = 320
    single_camera: float = 0.25            # share of identities that only one camera sees
    walk_seconds: tuple = (3.0, 6.0)       # time to cross the frame
    transit: tuple = (1.0, 4.0)            # seconds from leaving one camera to entering the next
    pillars: int = 1                       # static occluders per camera
    start_offset: float = 7.0              # seconds between the cameras' clocks
    det_miss: float = 0.05
    det_false_positives: float = 0.2       # per frame, on average
    det_jitter: float = 0.05               # box noise, a share of the box size
    looks: str = "standard"                # identities' and cameras' ranges: a name in synthetic.LOOKS
    seed: int = 0

    def __post_init__(self):
        if self.cameras < 1 or self.identities < 1 or self.frames < 2:
            raise ValueError(f"a world needs cameras >= 1, identities >= 1 and frames >= 2. Received: "
                             f"cameras={self.cameras}, identities={self.identities}, frames={self.frames}")
        if self.height % 2 or self.width % 2 or self.height < 64 or self.width < 64:
            raise ValueError(f"frame size must be even and at least 64x64. Received {self.width}x{self.height}")
        if not 0 <= self.single_camera <= 1:
            raise ValueError(f"single_camera is a share in [0, 1]. Received: {self.single_camera}")
        if self.looks not in SYNTHETIC_LOOKS:
            raise ValueError(f"looks must be one of {SYNTHETIC_LOOKS}. Received: {self.looks!r}")


# A world drawn with settings the demo's training never used: the "held-out" looks (lighting,
# colour casts, noise and clothing colours beyond the training ranges), a larger frame, more
# occluders, noisier and more cluttered det.txt, another walking pace and frame rate.
HELD_OUT_WORLD = dict(looks="held-out", height=216, width=384, fps=12.5, pillars=2, walk_seconds=(2.5, 7.0),
                      det_miss=0.08, det_false_positives=0.4, det_jitter=0.07, start_offset=9.0,
                      transit=(0.5, 6.0))


def _key_camera(colour):
    colour = np.asarray(colour, np.float32)
    return Camera(gain=1.0, cast=np.ones(3, np.float32), sky=colour, floor=colour, horizon=0.5, clutter=(),
                  scale=0.9, noise=0.0)


def _sprite(person, height, phase, rng):
    """(height, height // 2, 3) float32 RGB of ``person`` and its boolean mask."""
    width = max(4, height // 2)
    a, b = (render_frame(person, _key_camera(k), height, width, phase=phase, dx=0.0, dy=0.0, zoom=1.0,
                         occluder=None, rng=rng) for k in _KEYS)
    return a.astype(np.float32), (a == b).all(axis=-1)


def _background(camera, height, width):
    rows = np.arange(height, dtype=np.float32)[:, None] / height
    columns = np.arange(width, dtype=np.float32)[None, :] / width
    image = np.where((rows < camera.horizon)[..., None], camera.sky, camera.floor) + (rows - 0.5)[..., None] * 30
    image = np.broadcast_to(image, (height, width, 3)).copy()
    for cx, cy, cw, ch, colour in camera.clutter:
        inside = (columns >= cx - cw / 2) & (columns < cx + cw / 2) & (rows >= cy) & (rows < cy + ch)
        image[inside] = colour
    return image


def _plan(config, rng):
    """Visits (pid, camera, first frame, frames, lane, direction, phase, step) and pillars."""
    people = [random_identity(rng, config.looks) for _ in range(config.identities)]
    single = set(rng.choice(config.identities, size=int(round(config.single_camera * config.identities)),
                            replace=False).tolist()) if config.cameras > 1 else set()
    visits = []
    for pid in range(1, config.identities + 1):
        count = 1 if (pid - 1) in single or config.cameras == 1 else int(rng.integers(2, config.cameras + 1))
        previous_end = None  # on the common clock: one person is in one camera at a time
        for cam in sorted(rng.choice(config.cameras, size=count, replace=False).tolist()):
            length = int(round(rng.uniform(*config.walk_seconds) * config.fps))
            length = min(length, config.frames - 1)
            clock = config.start_offset * cam  # camera cam + 1's first frame on the common clock
            last_first = config.frames - length + 1  # the latest first frame that fits the walk
            if previous_end is None:  # the first visit: in the earlier half, to leave time for the others
                first = int(rng.integers(1, max(last_first // 2, 1) + 1))
            else:
                arrival = previous_end + rng.uniform(*config.transit) - clock
                first = max(int(np.ceil(arrival * config.fps)) + 1, 1)
                if first > last_first:
                    continue  # they would reach this camera after it stops recording
            previous_end = clock + (first + length - 2) / config.fps
            visits.append({"pid": pid, "camera": cam + 1, "first": first, "length": length,
                           "lane": float(rng.uniform(0, 1)), "direction": int(rng.choice([-1, 1])),
                           "phase": float(rng.uniform(0, 2 * np.pi)), "step": float(rng.uniform(0.5, 0.9))})
    pillars = {cam: [(float(rng.uniform(0.15, 0.85)), float(rng.uniform(0.03, 0.07)),
                      rng.uniform(40, 200, 3).astype(np.float32)) for _ in range(config.pillars)]
               for cam in range(1, config.cameras + 1)}
    return people, visits, pillars


def _render_camera(config, camera, camid, visits, people, pillars, rng):
    """Yields (frame image uint8, gt rows [(pid, box xywh, visibility)]) for every frame."""
    h, w = config.height, config.width
    background = _background(camera, h, w)
    mine = [v for v in visits if v["camera"] == camid]
    for frame in range(1, config.frames + 1):
        image = background.copy()
        owner = np.full((h, w), -1, np.int32)
        drawn = []
        present = [v for v in mine if v["first"] <= frame < v["first"] + v["length"]]
        for slot, visit in sorted(enumerate(present), key=lambda s: s[1]["lane"]):  # far lanes first
            person = people[visit["pid"] - 1]
            height = int(round(h * (0.4 + 0.3 * visit["lane"]) / (0.9 * person.height)))
            sprite, mask = _sprite(person, height, visit["phase"] + visit["step"] * (frame - visit["first"]), rng)
            progress = (frame - visit["first"]) / max(visit["length"] - 1, 1)
            if visit["direction"] < 0:
                progress = 1 - progress
            sw = sprite.shape[1]
            left = int(round(-sw / 2 + progress * (w + sw) - sw / 2))
            feet = 0.5 * height + 0.45 * height * person.height
            top = int(round(h * (0.72 + 0.26 * visit["lane"]) - feet))
            ys, xs = np.nonzero(mask)
            y0, y1 = max(top, 0), min(top + height, h)
            x0, x1 = max(left, 0), min(left + sw, w)
            if y0 >= y1 or x0 >= x1:
                continue
            window = mask[y0 - top:y1 - top, x0 - left:x1 - left]
            image[y0:y1, x0:x1][window] = sprite[y0 - top:y1 - top, x0 - left:x1 - left][window]
            owner[y0:y1, x0:x1][window] = slot
            box = np.array([left + xs.min(), top + ys.min(), left + xs.max() + 1, top + ys.max() + 1], np.float64)
            box[[0, 2]] = np.clip(box[[0, 2]], 0, w)
            box[[1, 3]] = np.clip(box[[1, 3]], 0, h)
            if box[2] - box[0] < 2 or box[3] - box[1] < 2:
                continue
            drawn.append((slot, visit["pid"], box, int(mask.sum())))
        for x, width, colour in pillars[camid]:
            columns = slice(int(x * w), int((x + width) * w))
            image[int(0.3 * h):, columns] = colour
            owner[int(0.3 * h):, columns] = -2
        image = image * (camera.gain * camera.cast) + rng.standard_normal(image.shape, np.float32) * camera.noise
        rows = []
        for slot, pid, box, area in drawn:
            visible = np.count_nonzero(owner[int(box[1]):int(box[3]), int(box[0]):int(box[2])] == slot)
            if visible:
                rows.append((pid, np.array([box[0], box[1], box[2] - box[0], box[3] - box[1]]), visible / area))
        yield np.clip(image, 0, 255).astype(np.uint8), rows


def _detections(config, gt, rng):
    """Noisy detections from the ground truth: jitter, misses, false positives."""
    keep = gt.visibility >= 0.25
    keep &= rng.random(len(gt)) >= config.det_miss + 0.3 * (gt.visibility < 0.5)
    truth = gt.select(keep)
    boxes = truth.boxes.copy()
    sizes = boxes[:, 2:].copy()
    boxes[:, :2] += rng.normal(0, config.det_jitter, (len(boxes), 2)) * sizes * [1.0, 0.5]
    boxes[:, 2:] *= np.exp(rng.normal(0, config.det_jitter, (len(boxes), 2)))
    scores = np.clip(0.55 + 0.4 * truth.visibility + rng.normal(0, 0.08, len(boxes)), 0.05, 1.0)
    count = rng.poisson(config.det_false_positives, config.frames)
    frames = np.repeat(np.arange(1, config.frames + 1), count)
    heights = rng.uniform(0.3, 0.7, len(frames)) * config.height
    widths = heights * rng.uniform(0.35, 0.55, len(frames))
    false = np.stack([rng.uniform(0, config.width - widths), rng.uniform(0, config.height - heights), widths,
                      heights], axis=1)
    detections = MOTBoxes(np.concatenate([truth.frames, frames]), np.full(len(boxes) + len(frames), -1),
                          np.concatenate([boxes, false]),
                          np.concatenate([scores, rng.uniform(0.1, 0.55, len(frames))]))
    return detections.sorted()


def _seqinfo(name, config):
    return (f"[Sequence]\nname={name}\nimDir=img1\nframeRate={config.fps:g}\nseqLength={config.frames}\n"
            f"imWidth={config.width}\nimHeight={config.height}\nimExt=.jpg\n")


def generate_world(out_dir, config=None, *, verbose=False):
    """Writes the world described by ``config`` (a :class:`WorldConfig`) under ``out_dir``.

    Returns:
        the ``world.json`` content (a dict): the configuration and, per
        camera, its video, gt, det, start time, fps, frames and size.
    """
    config = config or WorldConfig()
    rng = np.random.default_rng(config.seed)
    root = os.path.abspath(out_dir)
    os.makedirs(root, exist_ok=True)
    cameras = [random_camera(rng, config.looks) for _ in range(config.cameras)]
    people, visits, pillars = _plan(config, rng)
    truth, cams = [], []
    for camid, camera in enumerate(cameras, start=1):
        folder = os.path.join(root, f"c{camid}")
        start = config.start_offset * (camid - 1)
        gt_rows = []
        video = os.path.join(folder, "video.mp4")
        with VideoWriter(video, config.fps, config.width, config.height) as writer:
            for frame, (image, rows) in enumerate(
                    _render_camera(config, camera, camid, visits, people, pillars, rng), start=1):
                writer.write(image)
                gt_rows += [(frame, pid, box, vis) for pid, box, vis in rows]
        gt = MOTBoxes([r[0] for r in gt_rows], [r[1] for r in gt_rows], [r[2] for r in gt_rows],
                      np.ones(len(gt_rows)), np.ones(len(gt_rows)), [r[3] for r in gt_rows]).sorted()
        write_mot(os.path.join(folder, "gt", "gt.txt"), gt, "gt")
        write_mot(os.path.join(folder, "det", "det.txt"), _detections(config, gt, rng), "det")
        write_text(os.path.join(folder, "seqinfo.ini"), _seqinfo(f"c{camid}", config))
        for pid in np.unique(gt.ids).tolist():
            frames = gt.frames[gt.ids == pid]
            truth.append({"pid": pid, "camera": camid, "first_frame": int(frames.min()),
                          "last_frame": int(frames.max()),
                          "start_time": round(start + (frames.min() - 1) / config.fps, 3),
                          "end_time": round(start + (frames.max() - 1) / config.fps, 3)})
        cams.append({"camid": camid, "video": os.path.relpath(video, root), "gt": f"c{camid}/gt/gt.txt",
                     "det": f"c{camid}/det/det.txt", "start_time": start, "fps": config.fps,
                     "frames": config.frames, "width": config.width, "height": config.height})
        if verbose:
            logger.info("camera %d: %d frames, %d ground-truth boxes", camid, config.frames, len(gt))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(truth[0]) if truth else ["pid"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(sorted(truth, key=lambda r: (r["pid"], r["start_time"])))
    write_text(os.path.join(root, "identities.csv"), buffer.getvalue())
    world = {"config": dataclasses.asdict(config), "cameras": cams}
    write_json(os.path.join(root, "world.json"), world)
    return world


def read_world(root):
    """``(world dict, [CameraSpec])`` of a world written by :func:`generate_world`."""
    path = os.path.join(root, "world.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{root} holds no world.json: not a world written by nvan_tf.video.world")
    with open(path, encoding="utf-8") as f:
        world = json.load(f)
    specs = [CameraSpec(c["camid"], os.path.join(root, c["video"]), c["start_time"]) for c in world["cameras"]]
    return world, specs


def label_run(world_root, out):
    """The true identity of every tracklet of an ``nvan-track`` run on this
    world (``nvan_tf.video.track_metrics.label_tracklets`` against each camera's
    gt.txt), in the order of ``pipeline.read_tracklets(out)``; -1 where a
    tracklet is no one person.

    Returns:
        (the tracklet rows, (N,) labels).
    """
    from nvan_tf.video.track_metrics import label_tracklets
    from nvan_tf.video.mot import read_mot
    from nvan_tf.video.stages import read_tracklets
    from nvan_tf.video.tracking import CameraTracklet

    rows = read_tracklets(out)
    labels = np.full(len(rows), -1, np.int64)
    for camid in sorted({r["camera"] for r in rows}):
        boxes = read_mot(os.path.join(out, "crops", f"c{camid}", "boxes.txt"), "tracks")
        gt = read_mot(os.path.join(world_root, f"c{camid}", "gt", "gt.txt"), "gt")
        index = [i for i, r in enumerate(rows) if r["camera"] == camid]
        pieces = []
        for i in index:
            mine = boxes.ids == rows[i]["tracklet"]
            pieces.append(CameraTracklet(camid, rows[i]["tracklet"], 0, boxes.frames[mine], boxes.boxes[mine],
                                         boxes.scores[mine]))
        labels[index] = label_tracklets(pieces, gt)
    return rows, labels


TRAINING_WORLD = dict(cameras=4, identities=16, frames=200)


def write_training_set(out, *, worlds=5, looks="varied", seed=100, world=None, verbose=False):
    """Re-ID tracklets cut from synthetic worlds the way ``nvan-track`` cuts
    them (their det.txt boxes, ByteTrack, tracklets, crops: other people,
    pillars and detector noise in them), labelled by each world's gt.txt, in
    the folder layout ``nvan-train --dataset folder`` reads:
    ``OUT/data/{train,query,gallery}/``.

    ``worlds`` worlds of ``world`` (``WorldConfig`` fields; default
    :data:`TRAINING_WORLD`; seeds ``seed``, ``seed + 1``, ...; ``looks``):
    the last one's tracklets are the query and gallery (the first per
    camera of each identity seen by two or more cameras in ``query/``), the
    others train. Identity ``p`` of world ``w`` is
    ``100 * (w + 1) + p``. A world or run already written is reused.

    Returns:
        the dataset's root, ``OUT/data``.
    """
    from nvan_tf.video.stages import TrackConfig, run_tracking, write_folder_layout

    if worlds < 2:
        raise ValueError(f"a training set needs two worlds or more (training and test). Received: worlds={worlds}")
    root = os.path.abspath(out)
    training, test = ([], []), ([], [])
    for number in range(worlds):
        world_root, run = os.path.join(root, "worlds", f"w{number}"), os.path.join(root, "runs", f"w{number}")
        if not os.path.isfile(os.path.join(world_root, "world.json")):
            generate_world(world_root, WorldConfig(**{**TRAINING_WORLD, **(world or {}), "looks": looks,
                                                      "seed": seed + number}))
        written, cameras = read_world(world_root)
        run_tracking(TrackConfig(cameras=cameras, output_dir=run, model="colour-histogram", threshold=0.5,
                                 detections={c["camid"]: os.path.join(world_root, c["det"])
                                             for c in written["cameras"]},
                                 crop_size=(128, 64), videos=False, verbose=0))
        rows, labels = label_run(world_root, run)
        rows_out, ids_out = training if number < worlds - 1 else test
        for row, label in zip(rows, labels):
            if label > 0:
                rows_out.append(row)
                ids_out.append(100 * (number + 1) + int(label))
        if verbose:
            logger.info("world %d: %d labelled tracklets of %d", number, int(np.sum(labels > 0)), len(rows))
    data = write_folder_layout(os.path.join(root, "data"), *test, train=training)
    return data


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m nvan_tf.video.world",
                                     description=__doc__.strip().splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder")
    defaults = WorldConfig()
    for field in ("cameras", "identities", "frames", "height", "width"):
        parser.add_argument(f"--{field}", type=int, help=f"default {getattr(defaults, field)} "
                            f"({TRAINING_WORLD.get(field, getattr(defaults, field))} with --training-set)")
    parser.add_argument("--fps", type=float, help=f"default {defaults.fps:g}")
    parser.add_argument("--seed", type=int, help="default 0 (the first world's 100 with --training-set: away from "
                                                 "the worlds the demo and the benchmarks draw)")
    parser.add_argument("--looks", choices=SYNTHETIC_LOOKS, help="identities' and cameras' ranges (default: "
                        "standard; varied with --training-set; held-out with --held-out)")
    parser.add_argument("--training-set", action="store_true",
                        help="write re-ID tracklets cut from --worlds worlds (4 cameras, 16 identities, 200 frames "
                             "each) as nvan-track cuts them, in the folder layout, under OUT/data: "
                             "nvan-train --dataset folder --root OUT/data")
    parser.add_argument("--worlds", type=int, default=5, help="worlds of the --training-set (the last: its test)")
    parser.add_argument("--held-out", action="store_true",
                        help="the held-out world's settings (HELD_OUT_WORLD; its size and frame rate unless given)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    given = {k: getattr(args, k) for k in ("cameras", "identities", "frames", "height", "width", "fps")
             if getattr(args, k) is not None}
    if args.training_set:
        data = write_training_set(args.out, worlds=args.worlds, looks=args.looks or "varied",
                                  seed=100 if args.seed is None else args.seed, world=given, verbose=True)
        print(f"wrote a training set to {data}: nvan-train --dataset folder --root {data}")
        return 0
    config = WorldConfig(**{**(HELD_OUT_WORLD if args.held_out else {}), **given,
                            **({"seed": args.seed} if args.seed is not None else {}),
                            **({"looks": args.looks} if args.looks else {})})
    world = generate_world(args.out, config, verbose=True)
    print(f"wrote {len(world['cameras'])} cameras to {os.path.abspath(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

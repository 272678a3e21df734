"""Synthetic video re-ID tracklets written in the official MARS layout.

The demo and the tests run on these, through the real MARS reader and the
real input pipeline::

    python -m nvan_tf.data.datasets.synthetic --out /tmp/synth --ids 24 --cameras 4 --seed 0

    from nvan_tf.data.datasets import build_dataset
    dataset = build_dataset("mars", "/tmp/synth")

The tree is ``bbox_train/``, ``bbox_test/`` and ``info/`` (``train_name.txt``,
``test_name.txt``, ``tracks_train_info.mat``, ``tracks_test_info.mat``,
``query_IDX.mat``, MATLAB variables and 1-based indices as in
MARS-evaluation). Identities ``1 .. num_train_ids`` train, the rest test;
the test split also gets distractor (pid 0) and junk (pid -1) tracklets.
Every identity appears in at least two cameras; for each test identity one
tracklet per camera is a query (queries stay in the gallery, as in MARS).

What makes it learnable but not trivial:

* identities: upper-body colour and pattern (solid, horizontal stripes,
  vertical stripes, two-tone, checks), lower-body colour and style
  (trousers, shorts, skirt), skin and hair tone, build (width, height),
  an optional bag. Colours come from small palettes, so identities share
  attributes and only their combination is unique;
* cameras: illumination gain, colour cast, background (colours, floor line,
  clutter), person scale in the box and sensor noise;
* frames: walking (legs and arms swing, body bobs), bounding-box jitter,
  and in some tracklets a moving occluder.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import logging
import os
import sys

import numpy as np
import scipy.io
from PIL import Image

from nvan_tf.choices import SYNTHETIC_LOOKS
from nvan_tf.core.atomic import atomic_path

logger = logging.getLogger(__name__)

__all__ = ["Looks", "LOOKS", "generate", "render_tracklet", "main"]

UPPER_PALETTE = np.array([
    [200, 30, 30], [30, 60, 180], [240, 240, 235], [25, 25, 30], [40, 140, 60],
    [230, 200, 40], [130, 130, 135], [120, 60, 150], [240, 130, 30], [90, 170, 220],
], dtype=np.float32)
LOWER_PALETTE = np.array([
    [30, 40, 90], [25, 25, 28], [110, 110, 115], [190, 170, 130], [90, 60, 40], [220, 220, 215],
], dtype=np.float32)
SKIN = np.array([[235, 200, 170], [200, 150, 110], [140, 95, 60], [90, 60, 40]], dtype=np.float32)
HAIR = np.array([[20, 15, 10], [90, 60, 30], [200, 170, 90], [130, 130, 130]], dtype=np.float32)
UPPER_PATTERNS = ("solid", "hstripes", "vstripes", "twotone", "checks")
LOWER_STYLES = ("trousers", "shorts", "skirt")


@dataclasses.dataclass(frozen=True)
class Identity:
    upper: np.ndarray
    upper2: np.ndarray
    pattern: str
    lower: np.ndarray
    style: str
    skin: np.ndarray
    hair: np.ndarray
    width: float
    height: float
    bag: np.ndarray | None
    period: float


@dataclasses.dataclass(frozen=True)
class Camera:
    gain: float
    cast: np.ndarray
    sky: np.ndarray
    floor: np.ndarray
    horizon: float
    clutter: tuple
    scale: float
    noise: float


def _jitter(rng, colour, amount=18.0):
    return np.clip(colour + rng.normal(0, amount, 3), 0, 255).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Looks:
    """The ranges identities and cameras are drawn from (every range ``(low, high)``, uniform).

    The defaults are the demo's training world; :data:`LOOKS` names others.
    """

    colour_spread: float = 18.0            # clothing colour: palette colour + normal(0, spread) per channel
    skin_spread: float = 8.0
    body_width: tuple = (0.8, 1.25)
    body_height: tuple = (0.88, 1.0)
    bag: float = 0.35                       # share of identities with a bag
    stripe_period: tuple = (0.05, 0.09)     # pattern period, a share of the body height
    gain: tuple = (0.7, 1.25)               # camera illumination gain
    cast: tuple = (0.85, 1.15)              # per-channel colour cast
    noise: tuple = (2.0, 9.0)               # sensor noise (standard deviation, grey levels)
    scale: tuple = (0.72, 0.95)             # person height in the box (tracklet crops)
    background: tuple = (40.0, 220.0)       # sky and clutter colours; the floor's is 10 darker
    clutter: tuple = (1, 3)                 # background rectangles per camera (inclusive)
    bystander: float = 0.0                  # share of tracklets with another person beside, partly in the box

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, tuple) and not (len(value) == 2 and value[0] <= value[1]):
                raise ValueError(f"Looks.{field.name} must be a range (low, high) with low <= high. "
                                 f"Received: {value!r}")
        for name in ("bag", "bystander"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"Looks.{name} is a share in [0, 1]. Received: {getattr(self, name)!r}")


LOOKS = {
    # what the demo trains on and the demo worlds are drawn from
    "standard": Looks(),
    # wider on every axis: more body shapes, clothing colours off the palettes, harsher
    # lighting, casts and noise (a training recipe for footage unlike the standard world)
    "varied": Looks(colour_spread=30.0, skin_spread=12.0, body_width=(0.7, 1.35), body_height=(0.82, 1.0),
                    bag=0.45, stripe_period=(0.04, 0.11), gain=(0.6, 1.4), cast=(0.78, 1.22), noise=(2.0, 12.0),
                    scale=(0.65, 0.97), background=(25.0, 235.0), clutter=(0, 4), bystander=0.3),
    # the held-out world's: beyond "varied" on lighting, casts, noise and colour spread, so a
    # model trained on either has never seen its cameras
    "held-out": Looks(colour_spread=36.0, skin_spread=14.0, body_width=(0.75, 1.4), body_height=(0.85, 1.0),
                      bag=0.5, stripe_period=(0.045, 0.1), gain=(0.5, 1.5), cast=(0.7, 1.3), noise=(4.0, 15.0),
                      scale=(0.7, 0.95), background=(20.0, 240.0), clutter=(2, 5), bystander=0.3),
}


def _looks(looks):
    if isinstance(looks, Looks):
        return looks
    if looks not in LOOKS:
        raise ValueError(f"looks must be a Looks or one of {sorted(LOOKS)}. Received: {looks!r}")
    return LOOKS[looks]


def random_identity(rng: np.random.Generator, looks: Looks | str = "standard") -> Identity:
    looks = _looks(looks)
    upper = rng.integers(len(UPPER_PALETTE), size=2)
    return Identity(
        upper=_jitter(rng, UPPER_PALETTE[upper[0]], looks.colour_spread),
        upper2=_jitter(rng, UPPER_PALETTE[upper[1]], looks.colour_spread),
        pattern=UPPER_PATTERNS[rng.integers(len(UPPER_PATTERNS))],
        lower=_jitter(rng, LOWER_PALETTE[rng.integers(len(LOWER_PALETTE))], looks.colour_spread),
        style=LOWER_STYLES[rng.choice(3, p=[0.6, 0.25, 0.15])],
        skin=_jitter(rng, SKIN[rng.integers(len(SKIN))], looks.skin_spread),
        hair=_jitter(rng, HAIR[rng.integers(len(HAIR))], looks.skin_spread),
        width=float(rng.uniform(*looks.body_width)),
        height=float(rng.uniform(*looks.body_height)),
        bag=(_jitter(rng, UPPER_PALETTE[rng.integers(len(UPPER_PALETTE))], looks.colour_spread)
             if rng.random() < looks.bag else None),
        period=float(rng.uniform(*looks.stripe_period)),
    )


def random_camera(rng: np.random.Generator, looks: Looks | str = "standard") -> Camera:
    looks = _looks(looks)
    low, high = looks.background
    clutter = tuple(
        (rng.uniform(0, 1), rng.uniform(0, 0.8), rng.uniform(0.08, 0.3), rng.uniform(0.05, 0.3),
         rng.uniform(low, high, 3).astype(np.float32))
        for _ in range(rng.integers(looks.clutter[0], looks.clutter[1] + 1))
    )
    return Camera(
        gain=float(rng.uniform(*looks.gain)),
        cast=rng.uniform(*looks.cast, 3).astype(np.float32),
        sky=rng.uniform(low, high, 3).astype(np.float32),
        floor=rng.uniform(max(low - 10, 0), high - 20, 3).astype(np.float32),
        horizon=float(rng.uniform(0.45, 0.8)),
        clutter=clutter,
        scale=float(rng.uniform(*looks.scale)),
        noise=float(rng.uniform(*looks.noise)),
    )


def _box(yy, xx, top, bottom, left, right):
    return (yy >= top) & (yy < bottom) & (xx >= left) & (xx < right)


def _draw_person(img, yy, xx, person, camera, h, w, *, phase, dx, dy, zoom):
    """Draws ``person`` into ``img`` (float32, in place), centred ``dx`` right of the middle."""
    height, width = img.shape[:2]
    # person geometry
    ph = h * camera.scale * person.height * zoom
    feet = h * 0.5 + ph * 0.5 + dy
    top = feet - ph
    cx = w * 0.5 + dx
    half = w * 0.17 * person.width * zoom * camera.scale / 0.85
    bob = abs(np.sin(phase)) * ph * 0.015
    top += bob
    head_r = ph * 0.075
    neck = top + 2 * head_r
    waist = top + ph * 0.52
    swing = np.sin(phase) * half * 0.45
    leg_w = half * 0.42
    # legs
    legs = np.zeros((height, width), bool)
    for side in (-1, 1):
        centre = cx + side * (half * 0.45 + swing)
        legs |= _box(yy, xx, waist, feet, centre - leg_w, centre + leg_w)
    if person.style == "shorts":
        knee = waist + (feet - waist) * 0.45
        img[legs & (yy < knee)] = person.lower
        img[legs & (yy >= knee)] = person.skin
    else:
        img[legs] = person.lower
    if person.style == "skirt":
        spread = (yy - waist) / max(feet - waist, 1.0) * half * 0.6
        skirt = (yy >= waist) & (yy < waist + (feet - waist) * 0.55) & (np.abs(xx - cx) < half + spread)
        img[skirt] = person.lower
    img[_box(yy, xx, feet - ph * 0.03, feet, cx - half * 1.1, cx + half * 1.1) & legs] = 30.0  # shoes
    # torso with its pattern
    torso = _box(yy, xx, neck, waist, cx - half, cx + half)
    if person.pattern == "solid":
        second = np.zeros_like(torso)
    elif person.pattern == "hstripes":
        second = (((yy - neck) / (ph * person.period)).astype(np.int32) % 2) == 1
    elif person.pattern == "vstripes":
        second = (((xx - cx + half) / (ph * person.period * 0.8)).astype(np.int32) % 2) == 1
    elif person.pattern == "twotone":
        second = yy > (neck + waist) / 2
    else:
        cell = ph * person.period * 1.2
        second = ((((yy - neck) / cell).astype(np.int32) + ((xx - cx + half) / cell).astype(np.int32)) % 2) == 1
    img[torso] = person.upper
    img[torso & second] = person.upper2
    # arms swing against the legs
    arm_w = half * 0.28
    for side in (-1, 1):
        shift = -side * swing * 0.5
        arm = _box(yy, xx, neck + ph * 0.02, waist + ph * 0.05, cx + side * (half + arm_w) - arm_w + shift,
                   cx + side * (half + arm_w) + arm_w + shift)
        img[arm] = person.upper
        hand = _box(yy, xx, waist + ph * 0.05, waist + ph * 0.09, cx + side * (half + arm_w) - arm_w + shift,
                    cx + side * (half + arm_w) + arm_w + shift)
        img[hand] = person.skin
    if person.bag is not None:
        img[_box(yy, xx, neck + ph * 0.05, waist - ph * 0.05, cx + half * 0.55, cx + half * 1.35)] = person.bag
    # head and hair
    head_cy = top + head_r
    head = (yy - head_cy) ** 2 + ((xx - cx) * 1.15) ** 2 < head_r**2
    img[head] = person.skin
    img[head & (yy < head_cy - head_r * 0.2)] = person.hair


def render_frame(person: Identity, camera: Camera, height: int, width: int, *, phase: float,
                 dx: float, dy: float, zoom: float, occluder: tuple | None, rng: np.random.Generator,
                 bystander: tuple | None = None) -> np.ndarray:
    """One ``(height, width, 3)`` uint8 frame. Coordinates are in pixels.

    ``bystander``: ``(identity, dx, phase)`` of a second person drawn behind,
    ``dx`` pixels further right than the first."""
    # column / row vectors: masks broadcast to (height, width) only where needed
    yy = np.arange(height, dtype=np.float32)[:, None]
    xx = np.arange(width, dtype=np.float32)[None, :]
    h, w = float(height), float(width)
    # background: sky / floor split, clutter rectangles; it moves with the box jitter
    by, bx = yy - dy * 0.5, xx - dx * 0.5
    column = np.where((by < camera.horizon * h)[..., None], camera.sky, camera.floor) + (by / h - 0.5)[..., None] * 30.0
    img = np.repeat(column.astype(np.float32), width, axis=1)
    for cx, cy, cw, ch, colour in camera.clutter:
        mask = _box(by, bx, cy * h, (cy + ch) * h, cx * w - cw * w / 2, cx * w + cw * w / 2)
        img[mask] = colour
    if bystander is not None:  # another person beside, behind the one the box is of
        other, offset, other_phase = bystander
        _draw_person(img, yy, xx, other, camera, h, w, phase=other_phase, dx=dx + offset, dy=dy, zoom=zoom)
    _draw_person(img, yy, xx, person, camera, h, w, phase=phase, dx=dx, dy=dy, zoom=zoom)
    if occluder is not None:
        ox, ow, colour = occluder
        img[_box(yy, xx, h * 0.25, h, ox * w, (ox + ow) * w)] = colour
    img *= camera.gain * camera.cast
    img += rng.standard_normal(img.shape, dtype=np.float32) * camera.noise
    return np.clip(img, 0, 255).astype(np.uint8)


def render_tracklet(person: Identity, camera: Camera, num_frames: int, height: int, width: int,
                    rng: np.random.Generator, occlusion_prob: float = 0.3, bystander_prob: float = 0.0,
                    others: list | None = None) -> list[np.ndarray]:
    """Frames of one tracklet: walking phase, smooth box jitter, maybe a
    moving occluder, and (``bystander_prob``) maybe one of ``others`` walking
    beside, partly in the box."""
    phase0, speed = rng.uniform(0, 2 * np.pi), rng.uniform(0.5, 0.9)
    drift = np.cumsum(rng.normal(0, 0.6, (num_frames, 2)), axis=0) * (width / 64.0)
    zoom = 1.0 + 0.04 * np.sin(rng.uniform(0, 2 * np.pi) + np.arange(num_frames) * 0.3)
    occluder = None
    if rng.random() < occlusion_prob:
        start, velocity = rng.uniform(-0.4, 1.0), rng.uniform(-0.06, 0.06)
        occluder = (start, rng.uniform(0.15, 0.35), rng.uniform(20, 230, 3).astype(np.float32), velocity)
    beside = None
    if bystander_prob > 0 and others and rng.random() < bystander_prob:
        side = rng.choice([-1.0, 1.0])
        beside = (others[int(rng.integers(len(others)))], side * rng.uniform(0.45, 0.8) * width,
                  side * rng.uniform(-0.03, 0.03) * width, rng.uniform(0, 2 * np.pi))
    frames = []
    for f in range(num_frames):
        occ = None
        if occluder is not None:
            occ = (occluder[0] + occluder[3] * f, occluder[1], occluder[2])
        frames.append(render_frame(
            person, camera, height, width, phase=phase0 + speed * f,
            dx=float(np.clip(drift[f, 0], -width * 0.12, width * 0.12)),
            dy=float(np.clip(drift[f, 1], -height * 0.05, height * 0.05)),
            zoom=float(zoom[f]), occluder=occ, rng=rng,
            bystander=None if beside is None else (beside[0], beside[1] + beside[2] * f, beside[3] + speed * f),
        ))
    return frames


def _folder(pid: int) -> str:
    return "00-1" if pid == -1 else f"{pid:04d}"


# MAT 5 files start with a 116-byte text description; SciPy writes its
# creation time there. A fixed text keeps the output byte-reproducible.
MAT_DESCRIPTION = b"MATLAB 5.0 MAT-file, written by nvan-tf (synthetic MARS tree)"


def _savemat(path, mdict):
    """``scipy.io.savemat`` with a fixed header description (no timestamp)."""
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, mdict)
    data = bytearray(buffer.getvalue())
    data[:116] = MAT_DESCRIPTION.ljust(116)
    with open(path, "wb") as f:
        f.write(data)


def generate(
    out_dir: str,
    num_ids: int = 16,
    cameras: int = 4,
    seed: int = 0,
    *,
    height: int = 128,
    width: int = 64,
    frames: tuple[int, int] = (6, 24),
    tracklets_per_camera: tuple[int, int] = (1, 2),
    train_fraction: float = 0.5,
    distractors: int = 2,
    junk: int = 1,
    occlusion_prob: float = 0.3,
    quality: int = 90,
    looks: Looks | str = "standard",
) -> str:
    """Write a synthetic MARS-layout tree under ``out_dir`` and return its root.

    Read it back with ``build_dataset("mars", root)``.

    Args:
        out_dir: folder to write (created; an earlier synthetic tree there is
            replaced; a folder holding anything else is refused). The tree is
            written beside it and swapped in whole, so a killed generation
            leaves the earlier tree, or none, never a partial one.
        num_ids: identities in all; the first ``round(num_ids *
            train_fraction)`` train, the others test (at least 1 each).
        cameras: number of cameras (2..9); each identity appears in 2 or more.
        seed: everything (identities, cameras, motion, noise) derives from it.
        height, width: frame size in pixels (MARS frames are 256 x 128).
        frames: (min, max) frames per tracklet, inclusive.
        tracklets_per_camera: (min, max) tracklets per identity and camera.
        distractors, junk: extra test tracklets with pid 0 and -1.
        occlusion_prob: chance that a tracklet has a moving occluder.
        quality: JPEG quality.
        looks: the ranges identities and cameras are drawn from (a
            :class:`Looks`, or a name in :data:`LOOKS`).
    """
    if num_ids < 2:
        raise ValueError(f"num_ids must be at least 2 (one train, one test identity). Received: num_ids={num_ids}")
    if not 2 <= cameras <= 9:
        raise ValueError(f"cameras must be in 2..9 (MARS names use one digit). Received: cameras={cameras}")
    if height < 16 or width < 8:
        raise ValueError(f"Frames must be at least 16 x 8 pixels. Received: height={height}, width={width}")
    if not 1 <= frames[0] <= frames[1] <= 999:
        raise ValueError(f"frames must be (min, max) with 1 <= min <= max <= 999. Received: frames={frames}")
    looks = _looks(looks)
    rng = np.random.default_rng(seed)
    root = os.path.abspath(out_dir)
    if os.path.isdir(root) and os.listdir(root) and not _is_mars_tree(root):
        raise ValueError(f"{root} holds other files: the synthetic tree replaces the whole folder, so give an "
                         "empty or new folder (or one a previous generation wrote)")
    # written beside root and swapped in whole: a killed generation leaves no half tree at root
    with atomic_path(root, folder=True) as tree:
        info_dir = os.path.join(tree, "info")
        os.makedirs(info_dir)
        cams = [random_camera(rng, looks) for _ in range(cameras)]
        num_train = min(max(1, round(num_ids * train_fraction)), num_ids - 1)

        # plan: (pid, cam, tracklet number, num_frames, identity); pid 0 / -1 get random looks
        plan = {"train": [], "test": []}
        for pid in range(1, num_ids + 1):
            person = random_identity(rng, looks)
            split = "train" if pid <= num_train else "test"
            seen = sorted(rng.choice(cameras, size=int(rng.integers(2, cameras + 1)), replace=False))
            track = 0
            for cam in seen:
                for _ in range(int(rng.integers(tracklets_per_camera[0], tracklets_per_camera[1] + 1))):
                    track += 1
                    plan[split].append((pid, cam + 1, track, int(rng.integers(frames[0], frames[1] + 1)), person))
        for pid, count in ((0, distractors), (-1, junk)):
            for track in range(1, count + 1):
                cam = int(rng.integers(cameras))
                plan["test"].append((pid, cam + 1, track, int(rng.integers(frames[0], frames[1] + 1)),
                                     random_identity(rng, looks)))

        people = list({id(entry[4]): entry[4] for split in plan.values() for entry in split}.values())
        query_rows = []
        for split in ("train", "test"):
            bbox = os.path.join(tree, f"bbox_{split}")
            entries = []  # (name, pid, cam, track, frames)
            for pid, cam, track, n, person in plan[split]:
                folder = os.path.join(bbox, _folder(pid))
                os.makedirs(folder, exist_ok=True)
                names = [f"{_folder(pid)}C{cam}T{track:04d}F{f + 1:03d}.jpg" for f in range(n)]
                frames = render_tracklet(person, cams[cam - 1], n, height, width, rng, occlusion_prob,
                                         looks.bystander, others=[p for p in people if p is not person])
                for name, frame in zip(names, frames):
                    Image.fromarray(frame).save(os.path.join(folder, name), quality=quality)
                entries.append((names, pid, cam, track))
            # name file: sorted by folder then name; info rows follow it
            entries.sort(key=lambda e: (_folder(e[1]), e[0][0]))
            lines, info = [], []
            for names, pid, cam, track in entries:
                start = len(lines) + 1
                lines.extend(names)
                info.append([start, len(lines), pid, cam])
            with open(os.path.join(info_dir, f"{split}_name.txt"), "w", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
            _savemat(
                os.path.join(info_dir, f"tracks_{split}_info.mat"),
                {f"track_{split}_info": np.asarray(info, dtype=np.float64).reshape(-1, 4)},
            )
            if split == "test":
                first_per_cam = {}
                for row, (_, pid, cam, _) in enumerate(entries, start=1):
                    if pid > 0:
                        first_per_cam.setdefault((pid, cam), row)
                query_rows = sorted(first_per_cam.values())
        _savemat(os.path.join(info_dir, "query_IDX.mat"), {"query_IDX": np.asarray(query_rows, dtype=np.float64).reshape(1, -1)})
    logger.info("Wrote a synthetic MARS tree with %d identities, %d cameras to %s", num_ids, cameras, root)
    return root


def _is_mars_tree(folder: str) -> bool:
    return set(os.listdir(folder)) <= {"bbox_train", "bbox_test", "info"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nvan_tf.data.datasets.synthetic",
        description="Write synthetic video re-ID tracklets in the MARS layout (read back with build_dataset('mars', OUT)).",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--ids", type=int, default=16, help="identities (half train, half test)")
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--frames", type=int, nargs=2, default=(6, 24), metavar=("MIN", "MAX"))
    parser.add_argument("--looks", choices=SYNTHETIC_LOOKS, default="standard",
                        help="ranges of body shapes, clothing colours, lighting, casts and noise")
    args = parser.parse_args(argv)
    root = generate(args.out, args.ids, args.cameras, args.seed, height=args.height, width=args.width,
                    frames=tuple(args.frames), looks=args.looks)
    from nvan_tf.data.datasets.mars import MARS

    print(MARS(root, verbose=False).format_statistics())
    print(f"Read it with: build_dataset('mars', {root!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

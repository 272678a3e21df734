"""tf.data input pipeline: tracklets -> batches of normalised clips.

Python (NumPy) decides *which* frames go into a batch (the P x K sampler,
RRS / evenly / dense indices, flips, erasing boxes: all from one seed, so a
stream is reproducible) and reads and checks their bytes; TensorFlow
decodes (JPEG and PNG), resizes and normalises the frames in parallel
(``AUTOTUNE``), in order, and prefetches.

* :func:`train_dataset`: endless stream of P x K batches,
  ``(clips float32 (P*K, T, H, W, 3), pids int32 (relabelled), camids int32)``;
  ``k`` consecutive clips per identity. One random frame per RRS chunk,
  whole-clip horizontal flip with ``flip_prob``, optional random erasing
  (per frame, off by default as in the reference).
* :func:`eval_dataset`: finite and ordered, ``(clips, pids, camids,
  track_index)``; every tracklet once (``"rrs"``, ``"evenly"``) or as
  several consecutive clips sharing its ``track_index`` (``"dense"``; the
  caller averages their features). :func:`num_eval_clips` counts the clips.

Frames: resized to ``height x width`` with bilinear interpolation
(antialiased when shrinking, as PIL's resize that torchvision uses), scaled
to [0, 1], normalised with the ImageNet mean and std; channels last.

Bad frames: each frame a clip needs is read once, in Python, and checked on
the bytes read, which are the bytes decoded (readable, non-empty, a
parseable image header, JPEG end-of-image marker / PNG ``IEND`` chunk
present). A bad frame is counted, logged, and replaced by the nearest good
frame of its tracklet; a tracklet with no good frame at all gives mean-grey
(all-zero) frames and is counted too. The counts are in
:func:`bad_frame_report` (or the ``checker`` you pass); only bad frames are
remembered, so the memory does not grow with the frames read.
"""

from __future__ import annotations

import io
import logging
import math
import threading
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from PIL import Image

from nvan_tf.data.datasets.base import Tracklet
from nvan_tf.data.imagenet import IMAGENET_MEAN, IMAGENET_STD
from nvan_tf.data.sampling import (
    TEST_MODES,
    PKSampler,
    num_test_clips,
    sample_test_indices,
    sample_train_indices,
)

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "FrameChecker",
    "TooManyBadFrames",
    "bad_frame_report",
    "decode_frame",
    "normalize",
    "resize_frames",
    "eval_dataset",
    "num_eval_clips",
    "steps_per_epoch",
    "train_dataset",
]


# -- bad frames -----------------------------------------------------------------

LOG_FIRST = 10  # bad frames logged one by one; after that at 100, 1000, ...


def check_frame(data: bytes) -> str | None:
    """``None`` if the encoded bytes ``data`` look like a decodable image, else the reason."""
    if not data:
        return "empty file"
    if data[:2] == b"\xff\xd8":
        if b"\xff\xd9" not in data[-64:]:
            return "truncated JPEG (no end-of-image marker)"
    elif data[:8] == b"\x89PNG\r\n\x1a\n":
        if b"IEND" not in data[-16:]:
            return "truncated PNG (no IEND chunk)"
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format not in ("JPEG", "PNG", "BMP", "GIF"):
                return f"unsupported image format {image.format}"
            if image.format == "PNG":
                image.verify()
            elif image.width < 1 or image.height < 1:
                return "zero-sized image"
    except Exception as err:  # PIL raises many types for broken files
        return f"corrupt ({type(err).__name__}: {err})"
    return None


def _read_frame(path: str) -> tuple[bytes, str | None]:
    """The bytes of ``path`` and :func:`check_frame`'s verdict on them."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        return b"", f"unreadable ({type(err).__name__}: {err.strerror or err})"
    return data, check_frame(data)


class FrameChecker:
    """Reads the frames of a clip, checks them, and substitutes bad frames.

    ``read(frames, indices)`` returns the encoded bytes of frames ``indices``
    of a tracklet (``frames``: its paths), each file read once and checked on
    those same bytes, which the pipeline then decodes. A bad frame is
    replaced by the nearest good frame of the tracklet (the earlier one on a
    tie); ``b""`` when the tracklet has no good frame (the pipeline then
    emits an all-zero, i.e. mean-grey, frame).

    Nothing is kept about good frames (each read is checked anew), so the
    memory grows with the number of bad frames only; a frame found bad is
    not read again.

    Attributes:
        bad: ``{path: reason}`` of the bad frames found so far.
        substitutions: how many sampled frames were replaced.
        empty_tracklets: how many clips came from tracklets without a good frame.
    """

    def __init__(self):
        self.bad: dict[str, str] = {}
        self.substitutions = 0
        self.empty_tracklets = 0
        self.frames_read = 0
        self._lock = threading.Lock()

    def _good_bytes(self, path: str) -> bytes | None:
        """The bytes of ``path`` if it is a good frame, else ``None`` (recorded)."""
        with self._lock:
            self.frames_read += 1
        if path in self.bad:
            return None
        data, reason = _read_frame(path)
        if reason is None:
            return data
        with self._lock:
            self.bad[path] = reason
            count = len(self.bad)
        if count <= LOG_FIRST or math.log10(count).is_integer():
            logger.warning("Bad frame %s: %s; the nearest good frame of its tracklet is used "
                           "(%d bad frames so far).", path, reason, count)
        return None

    def read(self, frames: Sequence[str], indices: np.ndarray) -> list[bytes]:
        seen: dict[int, bytes | None] = {}  # this clip's reads: a repeated index is read once

        def good(i):
            if i not in seen:
                seen[i] = self._good_bytes(frames[i])
            return seen[i]

        out = []
        for i in indices:
            i = int(i)
            data = good(i)
            if data is None:
                data = next((good(j) for d in range(1, len(frames)) for j in (i - d, i + d)
                             if 0 <= j < len(frames) and good(j) is not None), b"")
                with self._lock:
                    self.substitutions += 1
            out.append(data)
        if out and not any(out):
            with self._lock:
                self.empty_tracklets += 1
            logger.warning("No readable frame in the tracklet of %s (%d frames); it gives grey frames.",
                           frames[0], len(frames))
        return out

    def report(self) -> dict:
        """``{"bad_frames", "frames_read", "substitutions", "empty_tracklets", "examples"}``."""
        with self._lock:
            return {
                "bad_frames": len(self.bad),
                "frames_read": self.frames_read,
                "substitutions": self.substitutions,
                "empty_tracklets": self.empty_tracklets,
                "examples": dict(list(self.bad.items())[:10]),
            }

    def check_share(self, limit: float) -> None:
        """Raises :class:`TooManyBadFrames`, naming the bad files, when the
        sampled frames that had to be replaced exceed the share ``limit`` of
        the frames read (a dataset that is partly broken must not train or
        evaluate "successfully")."""
        with self._lock:
            read, replaced, bad = self.frames_read, self.substitutions, dict(list(self.bad.items())[:10])
            count = len(self.bad)
        if read and replaced / read > limit:
            listing = "\n".join(f"  {path}: {reason}" for path, reason in bad.items())
            raise TooManyBadFrames(
                f"{replaced} of {read} frames read ({100 * replaced / read:.1f}%) were bad and replaced by "
                f"their neighbours, above the limit of {100 * limit:g}% (--max-bad-frames); {count} bad files, "
                f"the first:\n{listing}\nRepair or remove them, or raise --max-bad-frames.")


class TooManyBadFrames(ValueError):
    """More bad frames than the allowed share of the frames read."""


DEFAULT_CHECKER = FrameChecker()


def bad_frame_report() -> dict:
    """Counts of the default :class:`FrameChecker`: every pipeline of this
    process built without an explicit ``checker``."""
    return DEFAULT_CHECKER.report()


# -- TensorFlow side --------------------------------------------------------------


def decode_frame(data: tf.Tensor) -> tf.Tensor:
    """Encoded JPEG / PNG (or BMP, GIF) bytes -> uint8 ``(H, W, 3)``."""
    image = tf.cond(
        tf.io.is_jpeg(data),
        lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(data, channels=3, expand_animations=False),
    )
    image.set_shape([None, None, 3])
    return image


def resize_frames(images: tf.Tensor, height: int, width: int) -> tf.Tensor:
    """uint8 frames ``(H, W, 3)`` or ``(N, H, W, 3)`` -> ``height x width``.

    Bilinear, antialiased when shrinking, rounded back to 8 bits as PIL's
    resize (which torchvision uses) does; frames already at the size pass
    through untouched."""
    shape = tf.shape(images)
    same = tf.logical_and(tf.equal(shape[-3], height), tf.equal(shape[-2], width))

    def resize():
        resized = tf.image.resize(images, [height, width], method="bilinear", antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)

    return tf.cond(same, lambda: images, resize)


def _load_frame(data, flip, height, width):
    """One frame: decode the encoded bytes, resize, flip -> uint8 (H, W, 3).

    ``data == ""`` (a tracklet without any good frame) gives a mean-grey
    frame, i.e. zeros after normalisation."""

    def decode():
        image = resize_frames(decode_frame(data), height, width)
        return tf.ensure_shape(image, [height, width, 3])

    grey = tf.cast(tf.round(tf.constant(IMAGENET_MEAN) * 255.0), tf.uint8)
    image = tf.cond(
        tf.equal(data, ""), lambda: tf.broadcast_to(grey, [height, width, 3]), decode
    )
    image = tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)
    return tf.ensure_shape(image, [height, width, 3])


def normalize(images: tf.Tensor) -> tf.Tensor:
    """uint8 RGB in [0, 255] -> float32 ``(x / 255 - mean) / std``, any leading shape."""
    std = tf.constant(IMAGENET_STD)
    return tf.cast(images, tf.float32) * (1.0 / (255.0 * std)) - tf.constant(IMAGENET_MEAN) / std


def _erase(clips: tf.Tensor, boxes: tf.Tensor) -> tf.Tensor:
    """Zero the box ``(y0, x0, h, w)`` (pixels; h == 0: none) of every frame.

    clips: (B, T, H, W, 3) float32; boxes: (B, T, 4) int32."""
    height, width = clips.shape[2], clips.shape[3]
    y0, x0, h, w = (boxes[..., i][:, :, None, None] for i in range(4))
    rows = tf.range(height)[None, None, :, None]
    cols = tf.range(width)[None, None, None, :]
    box = (rows >= y0) & (rows < y0 + h) & (cols >= x0) & (cols < x0 + w)
    return tf.where(box[..., None], 0.0, clips)


def _clips_from_frames(frames: tf.data.Dataset, seq_len, height, width) -> tf.data.Dataset:
    """Per-frame elements (encoded bytes, flip, *labels) -> per-clip (uint8 clip, *labels)."""
    frames = frames.map(
        lambda data, flip, *labels: (_load_frame(data, flip, height, width), *labels),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    clips = frames.batch(seq_len, drop_remainder=True)
    # per-clip scalars (now (T,)) keep their first entry; per-frame vectors stay (T, n)
    return clips.map(lambda clip, *labels: (clip, *(x[0] if x.shape.rank == 1 else x for x in labels)))


def _seed_sequences(seed):
    """The sampler's, the frames' and the colours' seeds (independent
    children: the first two are those of before the colour jitter)."""
    root = np.random.SeedSequence(seed)
    return root.spawn(3)


def _erase_box(rng, probability, height, width, scale=(0.02, 0.33), ratio=(0.3, 3.3)):
    """torchvision ``RandomErasing`` box (y0, x0, h, w) in pixels, or zeros."""
    if probability <= 0 or rng.random() >= probability:
        return (0, 0, 0, 0)
    area = height * width
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        h = int(round(math.sqrt(target * aspect)))
        w = int(round(math.sqrt(target / aspect)))
        if 0 < h < height and 0 < w < width:
            return (int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w)
    return (0, 0, 0, 0)


def _check_common(tracklets, seq_len, height, width):
    if not tracklets:
        raise ValueError("The pipeline needs at least one tracklet. Received an empty list.")
    if not all(isinstance(t, Tracklet) for t in tracklets):
        raise TypeError("tracklets must be nvan_tf.data.datasets.base.Tracklet records.")
    for name, value in (("seq_len", seq_len), ("height", height), ("width", width)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer. Received: {name}={value}")


def train_dataset(
    tracklets: Sequence[Tracklet],
    *,
    p: int = 8,
    k: int = 4,
    seq_len: int = 8,
    height: int = 256,
    width: int = 128,
    flip_prob: float = 0.5,
    random_erasing: float = 0.0,
    colour_jitter: float = 0.0,
    seed: int | None = None,
    replacement: str = "always",
    checker: FrameChecker | None = None,
    start_step: int = 0,
    shard: tuple[int, int] = (0, 1),
) -> tf.data.Dataset:
    """Endless P x K training stream.

    Elements: ``(clips float32 (p*k, seq_len, height, width, 3), pids int32
    (p*k,), camids int32 (p*k,))``; pids relabelled ``sorted(set(pids)) ->
    0..N-1``; identity ``i`` of a batch fills rows ``i*k .. i*k+k-1``.
    ``random_erasing`` is the per-frame erasing probability (torchvision
    defaults: area 2-33 %, aspect 0.3-3.3, fill 0 after normalisation).
    ``colour_jitter`` ``c`` multiplies each clip's red, green and blue by
    gains ``exp(u)``, ``u ~ U(-c, c)`` drawn per clip and channel (a change
    of illumination and colour cast, as between cameras; 0: off, as the
    reference). ``seed`` fixes the whole stream (each new iterator restarts it);
    ``None`` draws fresh entropy. ``replacement`` (one of
    ``nvan_tf.choices.PK_REPLACEMENT``): ``"always"`` draws an identity's
    ``k`` tracklets with replacement, as the reference does; ``"as_needed"``
    without when it has ``k`` or more (see
    :class:`nvan_tf.data.sampling.PKSampler`).
    One epoch (one pass over the identities) is :func:`steps_per_epoch` batches.

    ``start_step`` skips that many batches of the stream without reading a
    frame (the random draws are replayed), so a resumed run sees exactly the
    batches an uninterrupted one would. ``shard=(index, count)`` keeps rows
    ``index * n / count .. (index + 1) * n / count`` of every ``n = p * k``
    batch (whole clips; ``count`` must divide ``n``): each worker of a
    multi-worker run reads only its part of the same global batch.
    """
    tracklets = list(tracklets)
    _check_common(tracklets, seq_len, height, width)
    if not 0.0 <= flip_prob <= 1.0:
        raise ValueError(f"flip_prob must be in [0, 1]. Received: flip_prob={flip_prob}")
    if not 0.0 <= random_erasing <= 1.0:
        raise ValueError(f"random_erasing must be in [0, 1]. Received: random_erasing={random_erasing}")
    if not 0.0 <= colour_jitter <= 1.0:
        raise ValueError(f"colour_jitter must be in [0, 1]. Received: colour_jitter={colour_jitter}")
    mapping = {pid: label for label, pid in enumerate(sorted({t.pid for t in tracklets}))}
    labels = np.asarray([mapping[t.pid] for t in tracklets], dtype=np.int32)
    camids = np.asarray([t.camid for t in tracklets], dtype=np.int32)
    PKSampler(labels, p, k, replacement=replacement)  # checks p, k and replacement now
    checker = DEFAULT_CHECKER if checker is None else checker
    if int(start_step) != start_step or start_step < 0:
        raise ValueError(f"start_step must be a non-negative integer. Received: start_step={start_step}")
    shard_index, shard_count = (int(v) for v in shard)
    if shard_count < 1 or not 0 <= shard_index < shard_count or (p * k) % shard_count:
        raise ValueError(
            f"shard=(index, count) needs 0 <= index < count and count dividing the batch "
            f"p*k={p * k}. Received: shard={tuple(shard)}"
        )
    batch = p * k // shard_count
    rows = slice(shard_index * batch, (shard_index + 1) * batch)

    def generate():
        sampler_seed, frame_seed, colour_seed = _seed_sequences(seed)
        sampler = PKSampler(labels, p, k, seed=int(sampler_seed.generate_state(1)[0]), replacement=replacement)
        rng = np.random.default_rng(frame_seed)
        colour_rng = np.random.default_rng(colour_seed)
        for step, indices in enumerate(sampler):
            # the draws of the whole global batch, in a fixed order
            chosen = [sample_train_indices(len(tracklets[i].frames), seq_len, rng) for i in indices]
            erase = [[_erase_box(rng, random_erasing, height, width) for _ in range(seq_len)]
                     for _ in indices]
            flips = rng.random(len(indices)) < flip_prob
            # from their own generator: with or without jitter, the same clips are drawn
            gains = np.exp(colour_rng.uniform(-colour_jitter, colour_jitter, (len(indices), 3)))
            if step < start_step:
                continue
            indices, chosen, erase, flips, gains = (indices[rows], chosen[rows], erase[rows], flips[rows],
                                                    gains[rows])
            data = []
            for i, frame_indices in zip(indices, chosen):
                data.extend(checker.read(tracklets[i].frames, frame_indices))
            yield (
                np.asarray(data, dtype=object),
                np.repeat(flips, seq_len),
                np.asarray(erase, dtype=np.int32).reshape(-1, 4),
                np.repeat(gains, seq_len, axis=0).astype(np.float32),
                np.repeat(labels[indices], seq_len),
                np.repeat(camids[indices], seq_len),
            )

    n = batch * seq_len
    plan = tf.data.Dataset.from_generator(
        generate,
        output_signature=(
            tf.TensorSpec([n], tf.string),
            tf.TensorSpec([n], tf.bool),
            tf.TensorSpec([n, 4], tf.int32),
            tf.TensorSpec([n, 3], tf.float32),
            tf.TensorSpec([n], tf.int32),
            tf.TensorSpec([n], tf.int32),
        ),
    )
    clips = _clips_from_frames(plan.unbatch(), seq_len, height, width)
    clips = clips.batch(batch, drop_remainder=True)

    def finish(x, boxes, gains, pid, cam):
        if colour_jitter:  # gains (B, T, 3): one per clip, repeated over its frames
            x = tf.clip_by_value(tf.cast(x, tf.float32) * gains[:, :, None, None, :], 0.0, 255.0)
        x = normalize(x)
        return (_erase(x, boxes) if random_erasing > 0 else x), pid, cam

    return clips.map(finish).prefetch(tf.data.AUTOTUNE)


def steps_per_epoch(tracklets: Sequence[Tracklet], p: int = 8) -> int:
    """Batches in one pass over the identities: ``num_ids // p``."""
    return len({t.pid for t in tracklets}) // p


def _check_sampling(sampling):
    if sampling not in TEST_MODES:
        raise ValueError(f"sampling must be one of {TEST_MODES}. Received: sampling={sampling!r}")


def num_eval_clips(tracklets: Sequence[Tracklet], seq_len: int = 8, sampling: str = "rrs") -> int:
    """Clips :func:`eval_dataset` yields (one per tracklet unless ``dense``)."""
    _check_sampling(sampling)
    return sum(num_test_clips(t.num_frames, seq_len, sampling) for t in tracklets)


def eval_dataset(
    tracklets: Sequence[Tracklet],
    *,
    seq_len: int = 8,
    sampling: str = "rrs",
    batch_size: int = 16,
    height: int = 256,
    width: int = 128,
    checker: FrameChecker | None = None,
) -> tf.data.Dataset:
    """Ordered, finite evaluation stream.

    Elements: ``(clips float32 (b, seq_len, height, width, 3), pids int32
    (b,), camids int32 (b,), track_index int64 (b,))`` with ``b <=
    batch_size`` (the last batch may be smaller); ``track_index`` is the
    tracklet's position in ``tracklets``. ``sampling``: ``"rrs"`` (first
    frame of each RRS chunk), ``"evenly"`` or ``"dense"`` (see
    :mod:`nvan_tf.data.sampling`); in dense mode a tracklet gives
    ``ceil(F / seq_len)`` consecutive clips with the same ``track_index``.
    No flip, no erasing. :func:`num_eval_clips` tells the number of clips.
    """
    tracklets = list(tracklets)
    _check_common(tracklets, seq_len, height, width)
    _check_sampling(sampling)
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer. Received: batch_size={batch_size}")
    checker = DEFAULT_CHECKER if checker is None else checker
    no_flip = np.zeros(seq_len, bool)

    def generate():
        for index, t in enumerate(tracklets):
            for clip in sample_test_indices(t.num_frames, seq_len, sampling):
                yield (
                    np.asarray(checker.read(t.frames, clip), dtype=object),
                    no_flip,
                    np.full(seq_len, t.pid, np.int32),
                    np.full(seq_len, t.camid, np.int32),
                    np.full(seq_len, index, np.int64),
                )

    plan = tf.data.Dataset.from_generator(
        generate,
        output_signature=(
            tf.TensorSpec([seq_len], tf.string),
            tf.TensorSpec([seq_len], tf.bool),
            tf.TensorSpec([seq_len], tf.int32),
            tf.TensorSpec([seq_len], tf.int32),
            tf.TensorSpec([seq_len], tf.int64),
        ),
    )
    clips = _clips_from_frames(plan.unbatch(), seq_len, height, width)
    clips = clips.batch(batch_size).map(lambda x, *labels: (normalize(x), *labels))
    total = num_eval_clips(tracklets, seq_len, sampling)
    clips = clips.apply(tf.data.experimental.assert_cardinality(math.ceil(total / batch_size)))
    return clips.prefetch(tf.data.AUTOTUNE)


"""Frame and identity sampling for video re-ID (plain Python + NumPy).

Frame sampling works on frame *indices* ``0 .. num_frames - 1`` of one
tracklet; the input pipeline turns them into file paths.

Restricted random sampling (RRS), as in the reference code (docs/sampling.md):

* A tracklet of ``F`` frames is cut into ``S = seq_len`` chunks.
  If ``F < S``: chunk ``i`` is ``[i]`` for ``i < F``; the remaining chunks
  repeat the last frame ``[F - 1]``.
  Else ``interval = ceil(F / S)``; the frame list is padded with the last
  frame to ``interval * S`` entries and chunk ``i`` is
  ``frames[i * interval:(i + 1) * interval]``.
* Training (``sample_train_indices``) draws one frame uniformly from every
  chunk (padding entries included, exactly as the reference does).
* Test ``"rrs"`` takes the first frame of every chunk: one clip per tracklet.

Other test modes (``sample_test_indices``):

* ``"evenly"``: ``S`` frames evenly spaced over the whole tracklet,
  ``floor(i * F / S)`` for ``i < S`` (``F < S``: every frame, then the last
  one repeated). One clip per tracklet.
* ``"dense"``: consecutive, non-overlapping ``S``-frame clips covering every
  frame; the last clip is padded with the last frame. ``ceil(F / S)`` clips;
  the caller averages their features.

Identity sampling: :class:`PKSampler` yields batches of ``P`` identities with
``K`` tracklets each. Everything takes a seed or a ``numpy.random.Generator``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np

from nvan_tf.choices import PK_REPLACEMENT, SAMPLING_MODES

TEST_MODES = SAMPLING_MODES

__all__ = [
    "TEST_MODES",
    "PKSampler",
    "num_test_clips",
    "rrs_chunks",
    "sample_test_indices",
    "sample_train_indices",
]


def _check_lengths(num_frames, seq_len):
    if int(num_frames) != num_frames or num_frames < 1:
        raise ValueError(
            f"num_frames must be a positive integer (a tracklet needs at least "
            f"one frame). Received: num_frames={num_frames}"
        )
    if int(seq_len) != seq_len or seq_len < 1:
        raise ValueError(
            f"seq_len must be a positive integer. Received: seq_len={seq_len}"
        )
    return int(num_frames), int(seq_len)


def rrs_chunks(num_frames: int, seq_len: int) -> np.ndarray:
    """RRS chunks of a tracklet as an ``(seq_len, interval)`` int64 array.

    Row ``i`` holds the frame indices of chunk ``i`` (padded with the last
    frame). ``interval`` is 1 when ``num_frames < seq_len``, else
    ``ceil(num_frames / seq_len)``.
    """
    num_frames, seq_len = _check_lengths(num_frames, seq_len)
    if num_frames < seq_len:
        strip = np.minimum(np.arange(seq_len), num_frames - 1)
        return strip.reshape(seq_len, 1).astype(np.int64)
    interval = math.ceil(num_frames / seq_len)
    strip = np.minimum(np.arange(interval * seq_len), num_frames - 1)
    return strip.reshape(seq_len, interval).astype(np.int64)


def sample_train_indices(
    num_frames: int, seq_len: int, rng: np.random.Generator
) -> np.ndarray:
    """RRS training clip: one uniformly random frame per chunk, ``(seq_len,)``."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator (np.random.default_rng(seed)). "
            f"Received: {type(rng).__name__}"
        )
    chunks = rrs_chunks(num_frames, seq_len)
    columns = rng.integers(0, chunks.shape[1], size=chunks.shape[0])
    return chunks[np.arange(chunks.shape[0]), columns]


def sample_test_indices(num_frames: int, seq_len: int, mode: str = "rrs") -> np.ndarray:
    """Deterministic test clips of a tracklet, ``(num_clips, seq_len)`` int64.

    ``mode`` is ``"rrs"`` (first frame of each RRS chunk), ``"evenly"`` or
    ``"dense"`` (see the module docstring). ``num_clips`` is 1 except for
    ``"dense"``.
    """
    num_frames, seq_len = _check_lengths(num_frames, seq_len)
    if mode == "rrs":
        return rrs_chunks(num_frames, seq_len)[:, 0].reshape(1, seq_len)
    if mode == "evenly":
        if num_frames < seq_len:
            idx = np.minimum(np.arange(seq_len), num_frames - 1)
        else:
            idx = (np.arange(seq_len) * num_frames) // seq_len
        return idx.astype(np.int64).reshape(1, seq_len)
    if mode == "dense":
        num_clips = math.ceil(num_frames / seq_len)
        idx = np.minimum(np.arange(num_clips * seq_len), num_frames - 1)
        return idx.astype(np.int64).reshape(num_clips, seq_len)
    raise ValueError(
        f"Unknown test sampling mode. Expected one of {TEST_MODES}. "
        f"Received: mode={mode!r}"
    )


def num_test_clips(num_frames: int, seq_len: int, mode: str = "rrs") -> int:
    """Number of clips :func:`sample_test_indices` gives for one tracklet."""
    num_frames, seq_len = _check_lengths(num_frames, seq_len)
    if mode not in TEST_MODES:
        raise ValueError(
            f"Unknown test sampling mode. Expected one of {TEST_MODES}. "
            f"Received: mode={mode!r}"
        )
    return math.ceil(num_frames / seq_len) if mode == "dense" else 1


class PKSampler:
    """Endless P x K identity sampler over tracklets.

    Each batch holds ``p`` distinct identities and, for each, ``k`` of its
    tracklets, laid out identity by identity (``k`` consecutive entries per
    identity): a batch is an int64 array of ``p * k`` tracklet indices.

    One epoch is one pass over the identities in a random order, ``p`` at a
    time, the incomplete last group dropped (as the reference's
    ``DataLoader(shuffle=True, drop_last=True)`` over identities):
    ``batches_per_epoch = num_ids // p``.

    Args:
        pids: identity of every tracklet (any hashable labels).
        p: identities per batch.
        k: tracklets per identity.
        seed: seed of the sampler's ``numpy.random.Generator``; ``None`` draws
            fresh entropy. Iterating a sampler twice restarts the same stream.
        replacement: ``"always"`` (default) draws an identity's ``k``
            tracklets with replacement whatever their number, as the
            reference code (``np.random.choice(tracks, K)``) does, so a batch
            may hold the same tracklet twice (with other random frames);
            ``"as_needed"`` draws without replacement when the identity has at
            least ``k`` tracklets, with replacement otherwise.
    """

    def __init__(
        self,
        pids: Sequence,
        p: int = 8,
        k: int = 4,
        seed: int | None = None,
        replacement: str = "always",
    ):
        if int(p) != p or p < 1:
            raise ValueError(f"p must be a positive integer. Received: p={p}")
        if int(k) != k or k < 1:
            raise ValueError(f"k must be a positive integer. Received: k={k}")
        if replacement not in PK_REPLACEMENT:
            raise ValueError(
                f"replacement must be one of {PK_REPLACEMENT}. "
                f"Received: replacement={replacement!r}"
            )
        pids = list(pids)
        groups: dict = {}
        for index, pid in enumerate(pids):
            groups.setdefault(pid, []).append(index)
        if len(groups) < p:
            raise ValueError(
                f"A P x K batch needs at least p={p} identities; the tracklets "
                f"hold {len(groups)} identities."
            )
        self.p = int(p)
        self.k = int(k)
        self.seed = seed
        self.replacement = replacement
        self.ids = sorted(groups)
        self._groups = [np.asarray(groups[i], dtype=np.int64) for i in self.ids]
        self._entropy = (
            np.random.SeedSequence(seed).entropy if seed is None else seed
        )

    @property
    def num_ids(self) -> int:
        return len(self.ids)

    @property
    def batch_size(self) -> int:
        return self.p * self.k

    @property
    def batches_per_epoch(self) -> int:
        return self.num_ids // self.p

    def _draw(self, group: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        replace = self.replacement == "always" or len(group) < self.k
        return rng.choice(group, size=self.k, replace=replace)

    def epoch(self, rng: np.random.Generator) -> Iterator[np.ndarray]:
        """One epoch of batches drawn with ``rng``."""
        order = rng.permutation(self.num_ids)
        for b in range(self.batches_per_epoch):
            chosen = order[b * self.p : (b + 1) * self.p]
            yield np.concatenate([self._draw(self._groups[i], rng) for i in chosen])

    def __iter__(self) -> Iterator[np.ndarray]:
        rng = np.random.default_rng(self._entropy)
        while True:
            yield from self.epoch(rng)

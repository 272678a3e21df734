"""A validation split held out from the training identities (plain Python + NumPy).

Model selection (the best epoch, a hyper-parameter search) on the test split
makes the reported test numbers optimistic by construction. This holds out
some training identities instead: they are never trained on, and are ranked
the way the test protocol ranks (MARS): for each held-out identity and
camera one tracklet is a query, every held-out tracklet is in the gallery
(queries included; the protocol ignores same-identity, same-camera matches).

>>> split = hold_out(dataset.train, count=50, seed=0)
>>> split.train                 # the tracklets left to train on, pids 0..N-1
>>> split.test_set              # (tracklets, query_index, gallery_index), as dataset.test_set()
>>> split.pids                  # the held-out identities, as dataset.train numbers them
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from nvan_tf.data.datasets.base import Tracklet, relabel

__all__ = ["ValidationSplit", "hold_out", "count_of"]


@dataclasses.dataclass(frozen=True)
class ValidationSplit:
    """``train``: the tracklets left to train on (relabelled 0..N-1);
    ``test_set``: the held-out tracklets as ``(tracklets, query_index,
    gallery_index)``; ``pids``: the held-out identities (the labels of the
    ``train`` list given to :func:`hold_out`)."""

    train: list
    test_set: tuple
    pids: tuple

    @property
    def num_train_ids(self) -> int:
        return len({t.pid for t in self.train})

    def summary(self) -> dict:
        tracklets, query, gallery = self.test_set
        return {"identities": len(self.pids), "pids": list(self.pids), "query": int(len(query)),
                "gallery": int(len(gallery)), "tracklets": len(tracklets)}


def count_of(num_train_ids: int, count: int = 0, fraction: float = 0.0) -> int:
    """The identities to hold out: ``count``, or ``round(fraction * ids)``."""
    if count and fraction:
        raise ValueError(f"give val_ids or val_fraction, not both. Received: val_ids={count}, "
                         f"val_fraction={fraction}")
    return int(count) if count else int(round(float(fraction) * num_train_ids))


def hold_out(train: Sequence[Tracklet], count: int = 0, fraction: float = 0.0, seed: int = 0) -> ValidationSplit:
    """Holds out ``count`` (or ``fraction`` of the) training identities, drawn
    by ``seed`` among those seen by two or more cameras (a query needs a
    match in another camera). Deterministic: the same list, count and seed
    give the same split."""
    train = list(train)
    cameras: dict[int, set] = {}
    for t in train:
        cameras.setdefault(t.pid, set()).add(t.camid)
    n = count_of(len(cameras), count, fraction)
    if n <= 0:
        raise ValueError(f"a validation split needs at least one identity. Received: val_ids={count}, "
                         f"val_fraction={fraction} of {len(cameras)} training identities")
    candidates = sorted(pid for pid, cams in cameras.items() if len(cams) >= 2)
    if n > len(candidates) or n >= len(cameras):
        raise ValueError(
            f"cannot hold out {n} validation identities: of {len(cameras)} training identities "
            f"{len(candidates)} are seen by two or more cameras, and at least one must be left to train on")
    chosen = tuple(int(p) for p in sorted(np.random.default_rng(seed).choice(candidates, n, replace=False)))
    held = set(chosen)
    rest, _ = relabel([t for t in train if t.pid not in held])
    tracklets = [t for t in train if t.pid in held]
    query, seen = [], set()
    for i, t in enumerate(tracklets):
        if (t.pid, t.camid) not in seen:
            seen.add((t.pid, t.camid))
            query.append(i)
    test_set = (tracklets, np.asarray(query, np.int64), np.arange(len(tracklets), dtype=np.int64))
    return ValidationSplit(train=rest, test_set=test_set, pids=chosen)

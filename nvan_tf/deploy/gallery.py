"""A gallery of tracklet embeddings with their ids, cameras and tracklet keys,
searched through :class:`nvan_tf.deploy.index.NeighbourIndex`.

    gallery = Gallery()
    gallery.add(embeddings, ids=["anna", "ben"], cameras=[1, 2], tracklets=["day1/t1", "day1/t2"])
    gallery.save("gallery.npz")                        # atomic
    matches = Gallery.load("gallery.npz").query(query_embeddings, k=5)
    matches[0].ids, matches[0].distances
    Gallery.load("gallery.npz", view=True)             # memory-mapped, read-only

**Search.** Exact (the project's distances) below ``exact_below`` entries
(20,000 by default), an HNSW graph (usearch) from there on; README,
Benchmarks has the measured recall and latency up to 10^6 entries.

**Keys.** An entry may carry a tracklet key (an integer or a string, unique
within its camera). ``add`` leaves out every entry whose ``(camera,
tracklet)`` the gallery already holds, so adding the same tracklets twice
changes nothing and the ids held are kept; entries without a key are always
added. ``remove`` takes ids or ``(camera, tracklet)`` pairs.

**File.** An uncompressed ``.npz`` (no pickles), written atomically
(``nvan_tf.core.atomic``): a kill during ``save`` leaves the previous file.
Format 2 (``format``: 2) holds ``embeddings`` (float32), ``ids``,
``cameras``, ``tracklets`` (strings; "" for none), ``keys`` (the index's
int64 keys), ``options`` (JSON: metric and index settings) and, once built,
``graph`` (usearch's serialised HNSW graph, so a load does not rebuild
it). Format 1 (``embeddings``, ``ids``, ``cameras`` only: galleries written
before the index) is read; a newer format is refused with a message.

Plain Python and NumPy (and usearch): no TensorFlow import.
"""

from __future__ import annotations

import dataclasses
import json
import mmap
import os
import struct
import zipfile

import numpy as np

from nvan_tf.deploy.index import EXACT_BELOW, RERANK_LIMIT, NeighbourIndex
from nvan_tf.evaluation import distance
from nvan_tf.evaluation import reranking
from nvan_tf.core.atomic import atomic_path

__all__ = ["FORMAT", "Gallery", "Match"]

FORMAT = 2
_INDEX_OPTIONS = ("exact_below", "dtype", "connectivity", "expansion_add", "expansion_search")


@dataclasses.dataclass
class Match:
    """The top-k gallery entries for one query, best first."""

    indices: np.ndarray
    ids: np.ndarray
    cameras: np.ndarray
    distances: np.ndarray


def _tracklet_labels(tracklets, n):
    if tracklets is None:
        return np.full(n, "", dtype="U1")
    labels = np.asarray(tracklets)
    if labels.shape != (n,):
        raise ValueError(f"Need one tracklet key per embedding: {n} embeddings, tracklets of shape {labels.shape}")
    if labels.dtype.kind not in "iuU":
        raise ValueError(f"tracklet keys must be integers or strings. Received dtype {labels.dtype}")
    return labels.astype(str)


class Gallery:
    """Embeddings of known tracklets with their ids, cameras and tracklet keys.

    Args:
        embeddings, ids, cameras, tracklets: a first :meth:`add`.
        metric: ``"cosine"`` or ``"euclidean"``: what the index searches by.
        exact_below: entries below which a query is exact (see the module docstring).
        dtype, connectivity, expansion_add, expansion_search: the HNSW graph's
            settings (``nvan_tf.deploy.index.NeighbourIndex``).

    ``ids`` may be integers or strings; ``cameras`` are integers.
    """

    def __init__(self, embeddings=None, ids=None, cameras=None, *, tracklets=None, metric="cosine",
                 exact_below=EXACT_BELOW, dtype="f16", connectivity=16, expansion_add=128, expansion_search=64):
        self.metric = metric
        self.options = {"exact_below": exact_below, "dtype": dtype, "connectivity": connectivity,
                        "expansion_add": expansion_add, "expansion_search": expansion_search}
        NeighbourIndex(1, metric=metric, **self.options)  # the settings checked now, not at the first add
        self.index = None
        self.ids = np.zeros((0,), np.int64)
        self.cameras = np.zeros((0,), np.int64)
        self.tracklets = np.zeros((0,), "U1")
        self._next_key = 0
        self._held = set()
        if embeddings is not None:
            self.add(embeddings, ids, cameras, tracklets=tracklets)

    def __len__(self):
        return len(self.ids)

    @property
    def embeddings(self):
        """(N, D) float32, in the order added (read-only for a memory-mapped view)."""
        return self.index.vectors if self.index is not None else np.zeros((0, 0), np.float32)

    @property
    def read_only(self):
        return self.index is not None and self.index.read_only

    def _keys_of(self, cameras, labels):
        return [(int(c), t) for c, t in zip(cameras.tolist(), labels.tolist())]

    def add(self, embeddings, ids, cameras, *, tracklets=None):
        """Appends ``(n, D)`` embeddings with their ``n`` ids, cameras and
        (optionally) tracklet keys; an entry whose ``(camera, tracklet)`` is
        held already is left out. Returns how many were added."""
        if self.read_only:
            raise ValueError("this gallery is a read-only memory-mapped view: load it without view=True to add")
        embeddings = distance.check_features(embeddings, "embeddings").astype(np.float32)
        ids, cameras = np.asarray(ids), np.asarray(cameras)
        n = len(embeddings)
        if ids.shape != (n,) or cameras.shape != (n,):
            raise ValueError(f"Need one id and one camera per embedding: {n} embeddings, "
                             f"ids of shape {ids.shape}, cameras of shape {cameras.shape}")
        if not np.issubdtype(cameras.dtype, np.integer):
            raise ValueError(f"cameras must be integers. Received dtype {cameras.dtype}")
        if ids.dtype.kind not in "iuU":
            raise ValueError(f"ids must be integers or strings. Received dtype {ids.dtype}")
        labels = _tracklet_labels(tracklets, n)
        if len(self) and embeddings.shape[1] != self.index.dim:
            raise ValueError(f"The gallery holds {self.index.dim}-d embeddings. "
                             f"Received {embeddings.shape[1]}-d ones")
        if len(self) and (ids.dtype.kind == "U") != (self.ids.dtype.kind == "U"):
            raise ValueError("ids must all be strings or all integers, as the gallery's are "
                             f"({self.ids.dtype}). Received dtype {ids.dtype}")
        new, seen = np.ones(n, bool), set()
        for i, key in enumerate(self._keys_of(cameras, labels)):
            if key[1] and (key in self._held or key in seen):
                new[i] = False
            seen.add(key)
        if not new.any():
            return 0
        embeddings, ids, cameras, labels = embeddings[new], ids[new], cameras[new].astype(np.int64), labels[new]
        if self.index is None or not len(self):
            self.index = NeighbourIndex(embeddings.shape[1], metric=self.metric, **self.options)
        keys = np.arange(self._next_key, self._next_key + len(embeddings), dtype=np.int64)
        self.index.add(keys, embeddings)
        self._next_key += len(embeddings)
        if len(self.ids):
            self.ids = np.concatenate([self.ids, ids])
            self.cameras = np.concatenate([self.cameras, cameras])
            self.tracklets = np.concatenate([self.tracklets, labels])
        else:
            self.ids, self.cameras, self.tracklets = ids, cameras, labels
        self._held.update(k for k in self._keys_of(cameras, labels) if k[1])
        return int(len(keys))

    def remove(self, ids=None, *, tracklets=None):
        """Removes the entries of ``ids``, and those of ``tracklets`` (``(camera,
        tracklet)`` pairs); returns how many went."""
        if self.read_only:
            raise ValueError("this gallery is a read-only memory-mapped view: load it without view=True to remove")
        gone = np.zeros(len(self), bool)
        if ids is not None:
            gone |= np.isin(self.ids, np.asarray(ids))
        if tracklets is not None:
            wanted = {(int(c), str(t)) for c, t in tracklets}
            gone |= np.array([key in wanted for key in self._keys_of(self.cameras, self.tracklets)], bool)
        if not gone.any():
            return 0
        self.index.remove(self.index.keys[gone])
        self.ids, self.cameras, self.tracklets = self.ids[~gone], self.cameras[~gone], self.tracklets[~gone]
        self._held = {k for k in self._keys_of(self.cameras, self.tracklets) if k[1]}
        return int(gone.sum())

    # -- file -------------------------------------------------------------------------

    def save(self, path):
        """Writes the ``.npz`` (format 2) atomically (``nvan_tf.core.atomic``)."""
        path = os.path.abspath(os.fspath(path))
        if not path.endswith(".npz"):
            raise ValueError(f"A gallery is saved as .npz. Received: {path}")
        arrays = {"format": np.array(FORMAT), "embeddings": self.embeddings, "ids": self.ids,
                  "cameras": self.cameras, "tracklets": self.tracklets,
                  "keys": self.index.keys if self.index is not None else np.zeros(0, np.int64),
                  "next_key": np.array(self._next_key, np.int64),
                  "options": np.array(json.dumps({"metric": self.metric, **self.options}))}
        graph = self.index.to_buffer() if self.index is not None else None
        if graph is not None:
            arrays["graph"] = np.frombuffer(graph, np.uint8)
        with atomic_path(path) as staged, open(staged, "wb") as f:
            np.savez(f, **arrays)
        return path

    @classmethod
    def load(cls, path, *, view=False):
        """Reads a gallery written by :meth:`save` (format 1 or 2).

        ``view=True`` memory-maps the embeddings and the graph instead of
        reading them (a read-only gallery: ``add`` and ``remove`` refuse).
        """
        path = os.fspath(path)
        try:
            with zipfile.ZipFile(path) as archive:
                names = {name[:-4] for name in archive.namelist() if name.endswith(".npy")}
                with np.load(path, allow_pickle=False) as data:
                    small = {name: data[name] for name in names if name not in ("embeddings", "graph")}
                    if not view:
                        small.update({name: data[name] for name in names & {"embeddings", "graph"}})
        except (OSError, EOFError, ValueError, zipfile.BadZipFile) as err:
            raise ValueError(f"{path} cannot be read as a gallery .npz: {err}") from err
        version = int(small["format"]) if "format" in small else 1
        if version > FORMAT:
            raise ValueError(f"{path} is a gallery of format {version}, written by a newer nvan-tf; this one "
                             f"reads formats 1 to {FORMAT}")
        needed = {"embeddings", "ids", "cameras"} | ({"tracklets", "keys", "next_key", "options"} if version >= 2
                                                     else set())
        missing = needed - names
        if missing:
            kind = f"a gallery of format {version}" if version > 1 else "a gallery"
            raise ValueError(f"{path} is not {kind}: no {sorted(missing)} in it (found {sorted(names)})")
        options = json.loads(str(small["options"])) if version >= 2 else {}
        gallery = cls(metric=options.get("metric", "cosine"), **{k: options[k] for k in _INDEX_OPTIONS if k in options})
        if view:
            embeddings, graph, keep = _mapped(path, names)
        else:
            embeddings, graph, keep = small["embeddings"], small.get("graph"), None
        ids, cameras = small["ids"], small["cameras"]
        n = len(ids)
        if version == 1:
            tracklets, keys, next_key = np.full(n, "", "U1"), np.arange(n, dtype=np.int64), n
        else:
            tracklets, keys, next_key = small["tracklets"], small["keys"], int(small["next_key"])
        shapes = {"embeddings": embeddings.shape[:1], "ids": ids.shape, "cameras": cameras.shape,
                  "tracklets": tracklets.shape, "keys": keys.shape}
        if len(set(shapes.values())) != 1 or embeddings.ndim != 2 or ids.ndim != 1:
            raise ValueError(f"{path} is not a consistent gallery: lengths {shapes}")
        if not n:
            return gallery
        if (ids.dtype.kind not in "iuU" or not np.issubdtype(cameras.dtype, np.integer)
                or embeddings.dtype != np.float32 or keys.dtype != np.int64):
            raise ValueError(f"{path} is not a gallery: ids {ids.dtype}, cameras {cameras.dtype}, "
                             f"embeddings {embeddings.dtype}, keys {keys.dtype}")
        gallery.index = NeighbourIndex(embeddings.shape[1], metric=gallery.metric, **gallery.options)
        gallery.index.attach(keys, embeddings, graph, view=view)
        gallery.index.mapping = keep  # the memory map stays open as long as the gallery
        gallery.ids, gallery.cameras, gallery.tracklets = ids, cameras.astype(np.int64), tracklets.astype(str)
        gallery._next_key = next_key
        gallery._held = {k for k in gallery._keys_of(gallery.cameras, gallery.tracklets) if k[1]}
        return gallery

    # -- search -----------------------------------------------------------------------

    def query(self, embeddings, k=10, *, cameras=None, exclude_same_camera=False, metric=None, rerank=False,
              k1=20, k2=6, lambda_value=0.3, exact=None):
        """The ``k`` nearest gallery entries of each query.

        Args:
            embeddings: ``(D,)`` or ``(n, D)`` query embeddings.
            k: matches per query (at most the gallery size).
            cameras: the queries' cameras, needed for ``exclude_same_camera``.
            exclude_same_camera: leave out entries of the query's own camera
                (cross-camera search, as the re-ID protocols rank).
            metric: ``"cosine"`` or ``"euclidean"``; None: the gallery's. Another
                metric than the gallery's is searched exactly.
            rerank: k-reciprocal re-ranking (``nvan_tf.evaluation.reranking``) with
                ``k1``, ``k2``, ``lambda_value``; it builds the gallery x gallery
                distance matrix, so it is refused above ``RERANK_LIMIT`` entries.
            exact: True: exact search at any size; False: the graph at any
                size; None: exact below ``exact_below`` entries.

        Returns:
            one :class:`Match` per query.
        """
        if not len(self):
            raise ValueError("The gallery is empty: add embeddings before querying")
        queries = np.asarray(embeddings)
        queries = queries[None] if queries.ndim == 1 else queries
        queries = distance.check_features(queries, "query embeddings")
        if queries.shape[1] != self.index.dim:
            raise ValueError(f"The gallery holds {self.index.dim}-d embeddings. "
                             f"Received {queries.shape[1]}-d queries")
        if int(k) != k or k < 1:
            raise ValueError(f"k must be a positive integer. Received: k={k!r}")
        metric = self.metric if metric is None else metric
        if exclude_same_camera:
            if cameras is None:
                raise ValueError("exclude_same_camera needs the queries' cameras")
            cameras = np.atleast_1d(np.asarray(cameras))
            if cameras.shape != (len(queries),):
                raise ValueError(f"Need one camera per query: {len(queries)} queries, cameras of "
                                 f"shape {cameras.shape}")
        if rerank:
            rows, dist = self._reranked(queries, int(k), cameras if exclude_same_camera else None, metric,
                                        k1, k2, lambda_value)
        else:
            allowed = None
            if exclude_same_camera:
                allowed = lambda q, rows: self.cameras[rows] != cameras[q][:, None]  # noqa: E731
            rows, dist = self.index.search(queries, min(int(k), len(self)), allowed=allowed,
                                           exact=exact, metric=metric)
        matches = []
        for row, d in zip(rows, dist):
            keep = row >= 0
            row, d = row[keep], d[keep]
            matches.append(Match(row, self.ids[row], self.cameras[row], d))
        return matches

    def _reranked(self, queries, k, cameras, metric, k1, k2, lambda_value):
        if len(self) > RERANK_LIMIT:
            raise ValueError(f"rerank=True builds the {len(self)} x {len(self)} gallery distance matrix; it is "
                             f"limited to {RERANK_LIMIT} entries. Query without re-ranking")
        gallery = np.asarray(self.embeddings)
        dist = reranking.re_ranking(
            distance.pairwise_distance(queries, gallery, metric=metric),
            distance.pairwise_distance(queries, metric=metric),
            distance.pairwise_distance(gallery, metric=metric),
            k1=k1, k2=k2, lambda_value=lambda_value,
        ).astype(np.float32)
        if cameras is not None:
            dist = np.where(cameras[:, None] == self.cameras[None, :], np.inf, dist)
        rows = distance.stable_argsort(dist, stop=min(k, len(self)))
        dist = np.take_along_axis(dist, rows, axis=1)
        return np.where(np.isfinite(dist), rows, -1), dist


def _mapped(path, names):
    """The embeddings (a read-only array over a memory map of ``path``) and the
    graph's bytes (a memoryview of it), and the map itself."""
    with open(path, "rb") as f:
        mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    with zipfile.ZipFile(path) as archive:
        def member(name):
            info = archive.getinfo(name + ".npy")
            if info.compress_type != zipfile.ZIP_STORED:
                raise ValueError(f"{path}: {name} is compressed; a memory-mapped view needs the file as "
                                 "Gallery.save writes it")
            local = info.header_offset
            name_length, extra_length = struct.unpack("<HH", mapping[local + 26:local + 30])
            start = local + 30 + name_length + extra_length
            with open(path, "rb") as f:
                f.seek(start)
                version = np.lib.format.read_magic(f)
                shape, fortran, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                                         else np.lib.format.read_array_header_2_0(f))
                offset = f.tell()
            if fortran or dtype.hasobject:
                raise ValueError(f"{path}: {name} is not a plain C-ordered array")
            count = int(np.prod(shape))
            return np.frombuffer(mapping, dtype, count=count, offset=offset).reshape(shape)

        embeddings = member("embeddings")
        graph = memoryview(member("graph")) if "graph" in names else None
    return embeddings, graph, mapping

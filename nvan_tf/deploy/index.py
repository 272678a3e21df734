"""Nearest-neighbour search over keyed vectors: exact (NumPy) while small,
an HNSW graph (the ``usearch`` library) above ``exact_below`` vectors.

One home for the search that :class:`nvan_tf.deploy.gallery.Gallery` ranks
with and that :func:`nvan_tf.video.association.candidate_pairs` builds its
graph from:

    index = NeighbourIndex(dim=2048)                   # cosine
    index.add(keys, vectors)                           # int64 keys >= 0, kept with the vectors
    keys, distances = index.search(queries, k=10)      # (n, k): nearest first, -1 / inf past the end
    index.remove(keys[:3, 0])

**Exact below a size.** With fewer than ``exact_below`` vectors a search is
the project's distances (``nvan_tf.evaluation.distance``) against all of
them, a block of queries at a time: at 20,000 x 2048 a single query is a few
milliseconds. From ``exact_below`` on, a usearch HNSW graph is built (once;
then kept up to date by ``add`` and ``remove``) and searched instead. Its
vectors are stored in ``dtype`` (``"f16"`` by default: half the memory of
float32; ``"i8"`` a quarter, with a lower recall); the distances a search
returns are recomputed from the float32 vectors, so only which neighbours
are found is approximate, never how far they are.

**Filtered search.** ``allowed(query_rows, rows)`` (bool, broadcast to the
shape of ``rows``: ``(n, m)`` candidates of the ``n`` queries, or ``(1, N)``
the same for all) leaves out candidates (another camera only; not a same-camera
tracklet at the same time). The graph is asked for more neighbours than
``k`` until each query has ``k`` allowed ones or all of them were seen.

``metric`` is ``"cosine"`` (``1 - cos``) or ``"euclidean"``; a gallery
ranks and association links with the same one. The graph is serialised
with :meth:`to_buffer` and restored, or memory-mapped read-only
(``view=True``), with :meth:`from_buffer`.
"""

from __future__ import annotations

import logging

import numpy as np

from nvan_tf.choices import DISTANCE_METRICS
from nvan_tf.evaluation import distance as distance_lib

logger = logging.getLogger(__name__)

__all__ = ["EXACT_BELOW", "RERANK_LIMIT", "INDEX_DTYPES", "NeighbourIndex"]

# Below this many vectors a search is exact (see the module docstring;
# README, Benchmarks: the gallery index).
EXACT_BELOW = 20_000
# k-reciprocal re-ranking builds the N x N distance matrix of what it ranks
# (association's tracklets, a gallery): refused above this size.
RERANK_LIMIT = 5000
INDEX_DTYPES = ("f32", "f16", "i8")
_USEARCH_METRICS = {"cosine": "cos", "euclidean": "l2sq"}
_BLOCK_ROWS = 1024


def _usearch():
    try:  # usearch 2.26.6's compiled module loaded before onnxruntime (1.31.1) makes `import onnxruntime`
        import onnxruntime  # noqa: F401  crash the process (a segfault); loaded the other way round, both work
    except ImportError:
        pass
    try:
        from usearch.index import Index
    except ImportError as err:  # a core dependency (setup.py); said plainly where it is missing
        raise ImportError("the gallery index needs the usearch package (pip install usearch); "
                          f"it cannot be imported: {err}") from err
    return Index


class NeighbourIndex:
    """Vectors with int64 keys (unique, >= 0, increasing in the order added),
    searched exactly or on an HNSW graph (see the module docstring).

    Args:
        dim: the vectors' dimension.
        metric: ``"cosine"`` or ``"euclidean"``.
        exact_below: below this many vectors, exact search; from it on, the graph.
        dtype: how the graph stores vectors: ``"f32"``, ``"f16"`` or ``"i8"``.
        connectivity, expansion_add, expansion_search: the HNSW graph's
            ``M``, ``efConstruction`` and ``efSearch``.
        threads: threads for building and batch search (0: all cores).
    """

    def __init__(self, dim, *, metric="cosine", exact_below=EXACT_BELOW, dtype="f16", connectivity=16,
                 expansion_add=128, expansion_search=64, threads=0):
        if int(dim) != dim or dim < 1:
            raise ValueError(f"dim must be a positive integer. Received: dim={dim!r}")
        if metric not in DISTANCE_METRICS:
            raise ValueError(f"metric must be one of {DISTANCE_METRICS}. Received: metric={metric!r}")
        if dtype not in INDEX_DTYPES:
            raise ValueError(f"dtype must be one of {INDEX_DTYPES}. Received: dtype={dtype!r}")
        if int(exact_below) != exact_below or exact_below < 0:
            raise ValueError(f"exact_below must be a non-negative integer. Received: {exact_below!r}")
        self.dim = int(dim)
        self.metric = metric
        self.exact_below = int(exact_below)
        self.options = {"dtype": dtype, "connectivity": int(connectivity), "expansion_add": int(expansion_add),
                        "expansion_search": int(expansion_search)}
        self.threads = int(threads)
        self.keys = np.zeros(0, np.int64)
        self.vectors = np.zeros((0, self.dim), np.float32)
        self.graph = None        # the usearch Index, once built
        self.read_only = False   # a memory-mapped view
        self.mapping = None      # what a view maps (kept open as long as the index)
        self._norms = None

    def __len__(self):
        return len(self.keys)

    @property
    def exact(self):
        """Whether searches are exact now (no graph built, or too few vectors for it)."""
        return self.graph is None

    def _writable(self):
        if self.read_only:
            raise ValueError("this index is a read-only memory-mapped view: load it without view=True to change it")

    def add(self, keys, vectors):
        """Appends ``(n, dim)`` vectors under ``n`` new keys, each larger than every key held."""
        self._writable()
        vectors = distance_lib.check_features(vectors, "vectors").astype(np.float32, copy=False)
        keys = np.asarray(keys)
        if keys.shape != (len(vectors),) or (len(keys) and not np.issubdtype(keys.dtype, np.integer)):
            raise ValueError(f"Need one integer key per vector: {len(vectors)} vectors, keys of shape "
                             f"{keys.shape} and dtype {keys.dtype}")
        if vectors.shape[1] != self.dim:
            raise ValueError(f"The index holds {self.dim}-d vectors. Received {vectors.shape[1]}-d ones")
        keys = keys.astype(np.int64)
        if len(keys) and (keys.min() < 0 or np.any(np.diff(keys) <= 0)
                          or (len(self.keys) and keys[0] <= self.keys[-1])):
            raise ValueError("keys must be non-negative, increasing, and larger than every key held")
        self.keys = np.concatenate([self.keys, keys])
        self.vectors = np.concatenate([self.vectors, vectors]) if len(self.vectors) else vectors.copy()
        if self.graph is not None:
            self.graph.add(keys, vectors, threads=self.threads)
        elif len(self) >= self.exact_below:
            self.build()
        return self

    def build(self):
        """Builds the HNSW graph over every vector held (``add`` does it at ``exact_below``)."""
        self._writable()
        index = _usearch()
        self.graph = index(ndim=self.dim, metric=_USEARCH_METRICS[self.metric], **self.options)
        if len(self):
            logger.info("building the nearest-neighbour graph of %d vectors (%s)", len(self), self.options["dtype"])
            self.graph.add(self.keys, self.vectors, threads=self.threads)
        return self

    def remove(self, keys):
        """Removes the vectors of ``keys`` (keys not held are ignored); returns how many went."""
        self._writable()
        keys = np.asarray(keys, np.int64).reshape(-1)
        gone = np.isin(self.keys, keys)
        if not gone.any():
            return 0
        if self.graph is not None:
            self.graph.remove(self.keys[gone])
        self.keys, self.vectors, self._norms = self.keys[~gone], self.vectors[~gone], None
        return int(gone.sum())

    def _distances(self, queries, rows):
        """Exact distances of each query to the vectors of its rows ((n, m) rows, -1 = none)."""
        candidates = self.vectors[np.maximum(rows, 0)]
        if self.metric == "cosine":
            q = distance_lib.l2_normalize(queries)
            c = candidates / np.maximum(np.linalg.norm(candidates, axis=2, keepdims=True), 1e-12)
            d = np.maximum(1.0 - np.einsum("nd,nmd->nm", q, c), 0.0)
        else:
            d = np.sqrt(np.maximum(np.einsum("nmd,nmd->nm", candidates - queries[:, None], candidates
                                             - queries[:, None]), 0.0))
        return np.where(rows >= 0, d, np.inf).astype(np.float32)

    def search(self, queries, k=10, *, allowed=None, exact=None, metric=None):
        """The ``k`` nearest allowed vectors of each query.

        Args:
            queries: ``(n, dim)``.
            k: neighbours per query.
            allowed: optional ``allowed(query_rows, rows) -> bool array`` (the
                shape of ``rows``, rows of this index) to leave candidates out.
            exact: force exact search (True) or the graph (False, built if
                needed); None: exact below ``exact_below`` vectors.
            metric: None: the index's; another metric is searched exactly.

        Returns:
            ``(rows, distances)``, each ``(n, k)``, nearest first (ties by row):
            row positions (``self.keys[rows]`` are the keys) and distances;
            ``-1`` and ``inf`` where fewer than ``k`` allowed vectors exist.
        """
        queries = distance_lib.check_features(queries, "queries").astype(np.float32, copy=False)
        if queries.shape[1] != self.dim:
            raise ValueError(f"The index holds {self.dim}-d vectors. Received {queries.shape[1]}-d queries")
        if int(k) != k or k < 1:
            raise ValueError(f"k must be a positive integer. Received: k={k!r}")
        k = int(k)
        metric = self.metric if metric is None else metric
        if metric not in DISTANCE_METRICS:
            raise ValueError(f"metric must be one of {DISTANCE_METRICS}. Received: metric={metric!r}")
        exact = True if metric != self.metric else exact
        use_graph = (not exact) and (self.graph is not None or exact is False) and len(self) > 0
        if use_graph and self.graph is None:
            self.build()
        rows_out = np.full((len(queries), k), -1, np.int64)
        dist_out = np.full((len(queries), k), np.inf, np.float32)
        if not len(self):
            return rows_out, dist_out
        search = self._graph_search if use_graph else self._exact_search
        step = _BLOCK_ROWS // 4 if use_graph else _BLOCK_ROWS   # the graph's re-scoring holds rows x m x dim
        for start in range(0, len(queries), step):
            block = slice(start, min(start + step, len(queries)))
            rows, dist = search(queries[block], np.arange(len(queries))[block], k, allowed, metric)
            rows_out[block, :rows.shape[1]], dist_out[block, :rows.shape[1]] = rows, dist
        return rows_out, dist_out

    def _squared_norms(self):
        """|v|^2 of every vector, computed once (not per query) and kept up to date."""
        if self._norms is None or len(self._norms) != len(self.vectors):
            self._norms = np.einsum("ij,ij->i", self.vectors, self.vectors)
        return self._norms

    def _exact_distances(self, queries, metric):
        """(n, N) float32 distances to every vector: ``nvan_tf.evaluation.distance``'s
        formulas, with the vectors' norms computed once rather than per query."""
        squared = self._squared_norms()
        dots = queries @ self.vectors.T
        if metric == "cosine":
            norms = np.sqrt(np.einsum("ij,ij->i", queries, queries))[:, None] * np.sqrt(squared)[None, :]
            dots /= np.maximum(norms, 1e-12)
            np.subtract(1, dots, out=dots)
        else:
            dots *= -2
            dots += np.einsum("ij,ij->i", queries, queries)[:, None] + squared[None, :]
            np.maximum(dots, 0, out=dots)
            np.sqrt(dots, out=dots)
        return np.maximum(dots, 0, out=dots)

    def _exact_search(self, queries, query_rows, k, allowed, metric):
        dist = self._exact_distances(queries, metric)
        if allowed is not None:
            every = np.arange(len(self))[None, :]   # the same candidates for each query: (1, N)
            dist[~np.broadcast_to(np.asarray(allowed(query_rows, every), bool), dist.shape)] = np.inf
        rows = distance_lib.stable_argsort(dist, stop=min(k, len(self)))
        dist = np.take_along_axis(dist, rows, axis=1)
        return np.where(np.isfinite(dist), rows, -1), dist

    def _graph_search(self, queries, query_rows, k, allowed, metric):
        n = len(self)
        want = min(n, 2 * k if allowed is not None else k)
        todo = np.arange(len(queries))
        rows_out = np.full((len(queries), min(k, n)), -1, np.int64)
        dist_out = np.full(rows_out.shape, np.inf, np.float32)
        while len(todo):
            matches = self.graph.search(queries[todo], want, threads=self.threads)
            if hasattr(matches, "counts"):   # BatchMatches: (n, want) keys, each row's count
                keys, counts = np.asarray(matches.keys, np.int64), np.asarray(matches.counts).reshape(-1)
            else:                            # Matches (one query): as many keys as found
                keys = np.zeros((1, want), np.int64)
                keys[0, :len(matches.keys)] = matches.keys
                counts = np.array([len(matches.keys)])
            valid = np.arange(keys.shape[1])[None, :] < counts[:, None]
            rows = np.where(valid, np.searchsorted(self.keys, np.where(valid, keys, 0)), -1)
            if allowed is not None:
                ok = np.asarray(allowed(query_rows[todo], np.maximum(rows, 0)), bool)
                rows = np.where(ok & valid, rows, -1)
            dist = self._distances(queries[todo], rows)
            order = np.lexsort((np.where(rows >= 0, rows, n), dist), axis=1)[:, :rows_out.shape[1]]
            rows, dist = np.take_along_axis(rows, order, axis=1), np.take_along_axis(dist, order, axis=1)
            found = np.sum(rows >= 0, axis=1)
            done = (found >= rows_out.shape[1]) | (counts >= n) | (want >= n)
            rows_out[todo[done]], dist_out[todo[done]] = rows[done], dist[done]
            todo, want = todo[~done], min(n, want * 4)
        return rows_out, dist_out

    # -- persistence ----------------------------------------------------------------

    def to_buffer(self):
        """The graph serialised (usearch's format), or None when there is none."""
        return None if self.graph is None else self.graph.save()

    def attach(self, keys, vectors, buffer=None, *, view=False):
        """Sets the keys and vectors (as read back) and the graph from ``buffer``
        (``to_buffer``'s bytes, or a memory-mapped slice when ``view``)."""
        self.keys = np.asarray(keys, np.int64)
        self.vectors, self._norms = vectors, None
        self.read_only = bool(view)
        self.graph = None
        if buffer is not None:
            graph = _usearch().restore(buffer, view=bool(view))
            if graph is None or graph.size != len(self.keys) or graph.ndim != self.dim:
                raise ValueError(f"the stored graph does not match the vectors: "
                                 f"{None if graph is None else graph.size} vectors of "
                                 f"{None if graph is None else graph.ndim} dims for {len(self.keys)} of {self.dim}")
            graph.expansion_search = self.options["expansion_search"]
            self.graph = graph
        return self

"""Cross-camera association: tracklet embeddings linked into global identities (NumPy only).

:func:`associate` is constrained agglomerative clustering on a sparse
nearest-neighbour graph:

1. **Candidates.** Each tracklet's ``k`` nearest others, by the project's
   distances (``nvan_tf.evaluation.distance``: cosine or Euclidean), found
   by ``nvan_tf.deploy.index.NeighbourIndex``, the Gallery's search: exact
   (a block of rows at a time: memory ``block x N``) below its
   ``EXACT_BELOW`` tracklets, an HNSW graph (usearch) above. With
   ``rerank`` (k-reciprocal re-ranking by ``nvan_tf.evaluation.reranking``)
   the ``N x N`` matrix is built, so it is refused above ``RERANK_LIMIT``
   tracklets.
2. **Cannot-link** (:class:`TimeRules`). Two tracklets of one camera that
   overlap in time are two people, always. Cameras that do not overlap (all
   of them, unless ``overlapping`` names groups that do) cannot see one
   person at once: tracklets of two such cameras that overlap in time, or
   that are less than ``min_transit`` seconds apart, are two people too
   (this reads the cameras' times on one clock: give each camera its start).
   Such pairs are never candidates, and two groups are never merged when
   any of their tracklets are such a pair.
3. **Merging.** Candidate pairs closer than ``threshold`` are taken in
   order of distance; the two groups merge when, in addition, the distance
   between their centres (the mean of their L2-normalised embeddings for
   cosine, of the embeddings for Euclidean) is under ``threshold`` (so one
   close pair cannot chain two different people together) and no
   cannot-link pair spans them.
4. **Matching between cameras** (``match_cameras``, optional). For each
   pair of cameras, the groups seen in one and not the other are matched
   one to one (the Hungarian algorithm on their centres' distances), and a
   match merges when its distance is under ``match_cameras`` times the
   threshold and no cannot-link pair spans it: a looser distance, held in
   check by each group taking one partner at most.

Global ids number the groups 1, 2, ... in order of their first appearance.
:func:`choose_threshold` picks the threshold on a labelled set (the best
pairwise F1 of :func:`nvan_tf.video.track_metrics.association_scores`);
:func:`threshold_from_negatives` and :func:`threshold_from_valley` pick it
on the footage itself, without labels.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np

from nvan_tf.choices import DISTANCE_METRICS
from nvan_tf.deploy.index import RERANK_LIMIT, NeighbourIndex
from nvan_tf.evaluation import distance as distance_lib
from nvan_tf.evaluation.reranking import k_reciprocal_rerank
from nvan_tf.video.track_metrics import association_scores

logger = logging.getLogger(__name__)

__all__ = ["RERANK_LIMIT", "Association", "TimeRules", "candidate_pairs", "associate", "centre_by_camera",
           "choose_threshold", "known_negative_distances", "nearest_allowed_distances", "threshold_from_negatives",
           "threshold_from_valley", "time_conflicts"]


@dataclasses.dataclass(frozen=True)
class TimeRules:
    """Which tracklet pairs cannot be one person, from their cameras and times.

    Attributes:
        overlapping: cameras whose views overlap, so one person can be in them
            at once: groups of camera ids (``((1, 2),)``: 1 and 2 overlap), or
            ``"all"`` (every camera may see anyone at any time: only the
            one-camera rule is left).
        min_transit: seconds a person needs, at least, from leaving one
            camera to entering another that does not overlap it.
    """

    overlapping: tuple | str = ()
    min_transit: float = 0.0

    def __post_init__(self):
        if self.overlapping != "all":
            groups = tuple(tuple(sorted(int(c) for c in group)) for group in self.overlapping)
            if any(len(group) < 2 for group in groups):
                raise ValueError(f"overlapping: each group names two or more cameras. Received: {self.overlapping!r}")
            object.__setattr__(self, "overlapping", groups)
        if not (np.isfinite(self.min_transit) and self.min_transit >= 0):
            raise ValueError(f"min_transit must be a non-negative number of seconds. Received: {self.min_transit!r}")

    @classmethod
    def parse(cls, overlapping=None, min_transit=0.0):
        """From the command line's text: ``overlapping`` ``"all"``, or groups ``["1,2", "3,4,5"]``."""
        if overlapping in (None, [], ()):
            return cls((), min_transit)
        if overlapping == "all" or list(overlapping) == ["all"]:
            return cls("all", min_transit)
        try:
            groups = [[int(c) for c in str(group).split(",")] for group in overlapping]
        except ValueError:
            raise ValueError(f"--overlapping takes camera ids joined by commas (1,2) or 'all'. Received: "
                             f"{overlapping!r}") from None
        return cls(tuple(groups), min_transit)

    def _overlap(self, cams_a, cams_b):
        if self.overlapping == "all":
            return cams_a != cams_b
        together = np.zeros(np.broadcast(cams_a, cams_b).shape, bool)
        for group in self.overlapping:
            together |= np.isin(cams_a, group) & np.isin(cams_b, group) & (cams_a != cams_b)
        return together

    def forbidden(self, cams_a, starts_a, ends_a, cams_b, starts_b, ends_b):
        """Elementwise (broadcast) bool: the two tracklets cannot be one person."""
        gap = np.maximum(starts_b - ends_a, starts_a - ends_b)  # <= 0: they overlap in time (closed intervals)
        same = cams_a == cams_b
        apart = ~same & ~self._overlap(cams_a, cams_b)
        return (same & (gap <= 0)) | (apart & ((gap <= 0) | (gap < self.min_transit)))


@dataclasses.dataclass
class Association:
    """The outcome of :func:`associate`.

    Attributes:
        ids: (N,) global identity of each tracklet (1, 2, ...).
        centre_distance: (N,) distance of each tracklet to its identity's centre.
        threshold: the distance threshold used.
        candidates: how many candidate pairs were considered.
    """

    ids: np.ndarray
    centre_distance: np.ndarray
    threshold: float
    candidates: int


def _check(features, camids, starts, ends, metric):
    features = distance_lib.check_features(features, "tracklet embeddings")
    n = len(features)
    camids, starts, ends = (np.asarray(v) for v in (camids, starts, ends))
    for name, values in (("camids", camids), ("starts", starts), ("ends", ends)):
        if values.shape != (n,):
            raise ValueError(f"{name} needs one value per tracklet: {n} embeddings, {name} of shape {values.shape}")
    if np.any(ends < starts):
        bad = int(np.flatnonzero(ends < starts)[0])
        raise ValueError(f"tracklet {bad} ends ({ends[bad]}) before it starts ({starts[bad]})")
    if metric not in DISTANCE_METRICS:
        raise ValueError(f"metric must be one of {DISTANCE_METRICS}. Received: {metric!r}")
    return features, camids, starts.astype(np.float64), ends.astype(np.float64)


def centre_by_camera(features, camids):
    """Each embedding, L2-normalised, less the mean of its camera's: what a
    camera adds to every person it sees (its background, lighting and colour
    cast) taken out, before cosine distances. Needs several people per camera
    to estimate; a camera with one tracklet keeps its embedding normalised."""
    vectors = distance_lib.l2_normalize(np.asarray(features, np.float64))
    camids = np.asarray(camids)
    centred = vectors.copy()
    for camid in np.unique(camids):
        mine = camids == camid
        if mine.sum() > 1:
            centred[mine] -= vectors[mine].mean(axis=0)
    return centred


def time_conflicts(camids_a, starts_a, ends_a, camids_b, starts_b, ends_b):
    """(A, B) bool: same camera and overlapping in time (closed intervals): the
    one rule of ``TimeRules(overlapping="all")``."""
    a = [np.asarray(v)[:, None] for v in (camids_a, starts_a, ends_a)]
    b = [np.asarray(v)[None, :] for v in (camids_b, starts_b, ends_b)]
    return TimeRules("all").forbidden(*a, *b)


def reranked_distances(features, metric="cosine"):
    """The ``N x N`` k-reciprocal re-ranked distances of ``features`` (refused
    above ``RERANK_LIMIT`` tracklets): the one scale of a re-ranked association,
    for its candidate pairs and its merge checks alike."""
    n = len(features)
    if n > RERANK_LIMIT:
        raise ValueError(f"--rerank builds the {n} x {n} distance matrix; it is limited to "
                         f"{RERANK_LIMIT} tracklets. Associate without re-ranking")
    everything = np.arange(n)
    return k_reciprocal_rerank(distance_lib.pairwise_distance(features, metric=metric), everything,
                               everything, k1=min(20, n - 1), k2=min(6, n - 1)).astype(np.float64)


def candidate_pairs(features, camids, starts, ends, *, metric="cosine", k=20, max_distance=np.inf,
                    rerank=False, exact=None, reranked=None, rules=TimeRules()):
    """The sparse candidate graph: pairs ``(i, j)``, ``i < j``, each among the
    other's ``k`` nearest allowed tracklets, no further than ``max_distance``.

    The neighbours come from :class:`nvan_tf.deploy.index.NeighbourIndex`
    (the Gallery's search): exact below its ``EXACT_BELOW`` tracklets, an
    HNSW graph above (``exact`` True / False forces one). With ``rerank``
    the re-ranked ``N x N`` matrix (``reranked``, or
    :func:`reranked_distances`) is searched exactly (refused above
    ``RERANK_LIMIT`` tracklets). ``rules``: the :class:`TimeRules` of pairs
    that cannot be one person.

    Returns:
        (pairs (M, 2) int64, distances (M,) float64), sorted by distance.
    """
    features, camids, starts, ends = _check(features, camids, starts, ends, metric)
    n = len(features)
    if n < 2:
        return np.zeros((0, 2), np.int64), np.zeros(0)
    k = int(min(max(int(k), 1), n - 1))

    def allowed(query_rows, rows):  # not forbidden by the rules (a tracklet with itself included)
        q = query_rows[:, None]
        return ~rules.forbidden(camids[q], starts[q], ends[q], camids[rows], starts[rows], ends[rows])

    if rerank or reranked is not None:
        everything = np.arange(n)
        full = (reranked_distances(features, metric) if reranked is None else reranked).astype(np.float32)
        full[~allowed(everything, everything[None, :])] = np.inf
        cols = distance_lib.stable_argsort(full, stop=k)
        dists = np.take_along_axis(full, cols, axis=1)
    else:
        index = NeighbourIndex(features.shape[1], metric=metric)
        index.add(np.arange(n), features)
        cols, dists = index.search(features, k, allowed=allowed, exact=exact)
    rows = np.repeat(np.arange(n), k)
    cols, dists = cols.ravel(), dists.ravel().astype(np.float64)
    keep = np.isfinite(dists) & (dists <= max_distance) & (cols >= 0)
    rows, cols, dists = rows[keep], cols[keep], dists[keep]
    pairs = np.sort(np.stack([rows, cols], axis=1), axis=1)
    order = np.lexsort((pairs[:, 1], pairs[:, 0], dists))   # nearest first; a pair found twice once
    pairs, dists = pairs[order], dists[order]
    pairs, first = np.unique(pairs, axis=0, return_index=True)
    dists = dists[first]
    order = np.argsort(dists, kind="stable")
    return pairs[order].astype(np.int64), dists[order]


def _merge(pairs, dists, features, camids, starts, ends, threshold, metric, reranked=None, rules=TimeRules()):
    """Union-find over the candidate pairs (see the module docstring); returns
    group roots. Two groups' distance is their centres' on the raw metric, or,
    re-ranked (``reranked``: the pairs' own scale), the mean re-ranked
    distance between their members."""
    n = len(features)
    members = {i: [i] for i in range(n)}
    parent = list(range(n))
    sums = (distance_lib.l2_normalize(features) if metric == "cosine" else features).astype(np.float64)
    squares = np.einsum("ij,ij->i", sums, sums).tolist()
    sizes = [1] * n

    def find(i):
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:
            parent[i], i = root, parent[i]
        return root

    def centre_distance(a, b):
        if reranked is not None:
            return float(reranked[np.ix_(members[a], members[b])].mean())
        dot = float(sums[a] @ sums[b])
        if metric == "cosine":
            return 1.0 - dot / max(math.sqrt(squares[a] * squares[b]), 1e-12)
        squared = squares[a] / sizes[a] ** 2 + squares[b] / sizes[b] ** 2 - 2 * dot / (sizes[a] * sizes[b])
        return math.sqrt(max(squared, 0.0))

    def conflict(a, b):  # any member of a and any of b cannot be one person
        x, y = np.array(members[a])[:, None], np.array(members[b])[None, :]
        return bool(rules.forbidden(camids[x], starts[x], ends[x], camids[y], starts[y], ends[y]).any())

    for (i, j), d in zip(pairs.tolist(), dists.tolist()):
        if d > threshold:
            break
        a, b = find(i), find(j)
        if a == b or centre_distance(a, b) > threshold or conflict(a, b):
            continue
        if sizes[a] < sizes[b]:
            a, b = b, a
        parent[b] = a
        sums[a] += sums[b]
        squares[a] = float(sums[a] @ sums[a])
        sizes[a] += sizes[b]
        members[a].extend(members.pop(b))
    return np.array([find(i) for i in range(n)])


def _centres(vectors, group, count):
    """(count, D) float64: the mean of each group's ``vectors`` (``group``: each row's, 0 .. count-1)."""
    centres = np.zeros((count, vectors.shape[1]), np.float64)
    np.add.at(centres, group, vectors)
    return centres / np.bincount(group, minlength=count)[:, None]


def _match_cameras(roots, features, camids, starts, ends, gate, metric, reranked=None, rules=TimeRules()):
    """The second pass of ``associate(match_cameras=...)``: for each pair of
    cameras, the groups seen in one of them and not the other are matched
    one to one (the Hungarian algorithm on their centres' distances, as
    :func:`_merge` measures them), and each match under ``gate`` whose
    groups no cannot-link pair spans is merged; over again until nothing
    merges. Returns group roots."""
    from scipy.optimize import linear_sum_assignment

    roots = np.asarray(roots).copy()
    vectors = distance_lib.l2_normalize(features) if metric == "cosine" else np.asarray(features, np.float64)
    cameras = np.unique(camids)
    pairs = [(a, b) for i, a in enumerate(cameras) for b in cameras[i + 1:]]
    while True:
        groups, group = np.unique(roots, return_inverse=True)  # group: each tracklet's, 0 .. G-1
        centres = None if reranked is not None else _centres(vectors, group, len(groups))
        for a, b in pairs:  # after a pair merges, from the first pair again
            seen_a, seen_b = np.zeros(len(groups), bool), np.zeros(len(groups), bool)
            seen_a[group[camids == a]], seen_b[group[camids == b]] = True, True
            only_a, only_b = np.flatnonzero(seen_a & ~seen_b), np.flatnonzero(seen_b & ~seen_a)
            if not len(only_a) or not len(only_b):
                continue
            place_a, place_b = np.full(len(groups), -1), np.full(len(groups), -1)
            place_a[only_a], place_b[only_b] = np.arange(len(only_a)), np.arange(len(only_b))
            x, y = np.flatnonzero(place_a[group] >= 0), np.flatnonzero(place_b[group] >= 0)  # their tracklets
            rows, cols = place_a[group[x]], place_b[group[y]]
            if reranked is not None:  # the mean re-ranked distance between members, as in _merge
                cost = np.zeros((len(only_a), len(only_b)))
                np.add.at(cost, (rows[:, None], cols[None, :]), reranked[np.ix_(x, y)])
                cost /= np.bincount(rows)[:, None] * np.bincount(cols)[None, :]
            else:
                cost = distance_lib.pairwise_distance(centres[only_a], centres[only_b], metric=metric)
                cost = cost.astype(np.float64)
            never = np.zeros(cost.shape, bool)  # a cannot-link pair spans the two groups
            i, j = np.nonzero(rules.forbidden(camids[x][:, None], starts[x][:, None], ends[x][:, None],
                                              camids[y][None], starts[y][None], ends[y][None]))
            never[rows[i], cols[j]] = True
            big = (min(cost.shape) + 1) * (cost.max() + 1.0)  # more than any matching without a forbidden pair
            matches = [(i, j) for i, j in zip(*linear_sum_assignment(np.where(never, big, cost)))
                       if cost[i, j] < gate and not never[i, j]]
            for i, j in matches:
                roots[roots == groups[only_b[j]]] = groups[only_a[i]]
            if matches:
                break
        else:
            return roots


def associate(features, camids, starts, ends, *, threshold, metric="cosine", rerank=False, k=20, pairs=None,
              reranked=None, rules=TimeRules(), match_cameras=None):
    """Global identities of tracklets (see the module docstring).

    Args:
        features: (N, D) tracklet embeddings.
        camids: (N,) cameras.
        starts, ends: (N,) first and last time of each tracklet, in seconds
            on one clock.
        threshold: the largest distance at which two tracklets (and two
            groups' centres) are one person.
        metric: ``cosine`` or ``euclidean``.
        rerank: k-reciprocal re-ranking of the distances first; the threshold
            then applies to re-ranked distances everywhere (pairs, group
            checks, centre distances), one scale.
        k: candidates per tracklet.
        pairs: precomputed ``candidate_pairs(...)`` (threshold searches reuse them).
        reranked: precomputed :func:`reranked_distances` (with ``rerank``).
        rules: the :class:`TimeRules` (default: no cameras overlap, no
            transit time).
        match_cameras: a second pass after the merge (``None``: none): for
            each pair of cameras, the groups seen in one and not the other
            are matched one to one (Hungarian), and matches whose centres
            are under ``match_cameras`` times ``threshold`` (and that no
            cannot-link pair spans) merge: each group takes one partner at
            most, so the looser distance cannot gather several people into
            one.

    Returns:
        an :class:`Association`.
    """
    features, camids, starts, ends = _check(features, camids, starts, ends, metric)
    if not np.isfinite(threshold) or threshold < 0:
        raise ValueError(f"the association threshold must be a non-negative distance. Received: {threshold!r}")
    if rerank and reranked is None:
        reranked = reranked_distances(features, metric)
    if pairs is None:
        pairs = candidate_pairs(features, camids, starts, ends, metric=metric, k=k, max_distance=threshold,
                                reranked=reranked, rules=rules)
    roots = _merge(*pairs, features, camids, starts, ends, float(threshold), metric, reranked, rules)
    if match_cameras is not None:
        if not match_cameras >= 1:
            raise ValueError(f"match_cameras is a multiple of the threshold, at least 1. Received: {match_cameras!r}")
        roots = _match_cameras(roots, features, camids, starts, ends, match_cameras * float(threshold), metric,
                               reranked, rules)
    groups, inverse = np.unique(roots, return_inverse=True)
    first_seen = np.full(len(groups), np.inf)
    np.minimum.at(first_seen, inverse, starts)
    order = np.lexsort((groups, first_seen))
    rank = np.empty(len(groups), np.int64)
    rank[order] = np.arange(1, len(groups) + 1)
    ids = rank[inverse]
    vectors = distance_lib.l2_normalize(features) if metric == "cosine" else features
    centres = _centres(vectors, inverse, len(groups))
    if reranked is not None:  # the mean re-ranked distance to the other members (0 alone)
        same = inverse[:, None] == inverse[None, :]
        np.fill_diagonal(same, False)
        counts = same.sum(axis=1)
        centre_distance = np.where(counts > 0, (reranked * same).sum(axis=1) / np.maximum(counts, 1), 0.0)
    elif metric == "cosine":
        centre_distance = 1.0 - np.einsum("ij,ij->i", vectors, distance_lib.l2_normalize(centres)[inverse])
    else:
        centre_distance = np.linalg.norm(vectors - centres[inverse], axis=1)
    return Association(ids, np.maximum(centre_distance, 0.0), float(threshold), int(len(pairs[0])))


def choose_threshold(features, truth, camids, starts, ends, *, metric="cosine", rerank=False, k=20,
                     candidates=None, rules=TimeRules(), match_cameras=None):
    """The threshold with the best pairwise F1 on a labelled set (the lowest of
    those as good).

    Args:
        features, camids, starts, ends: as :func:`associate`, for labelled tracklets.
        truth: (N,) their true identities (> 0).
        candidates: thresholds to try (default: 40 quantiles of the candidate pair distances).
        match_cameras: as :func:`associate` (each threshold scored with its second pass).

    Returns:
        (threshold, list of (threshold, association_scores dict) tried).
    """
    truth = np.asarray(truth)
    if not np.any(truth > 0):
        raise ValueError("choosing a threshold needs labelled tracklets (identities > 0); none has one")
    reranked = reranked_distances(features, metric) if rerank else None
    pairs = candidate_pairs(features, camids, starts, ends, metric=metric, k=k, reranked=reranked, rules=rules)
    if candidates is None:
        distances = pairs[1][np.isfinite(pairs[1])]
        if not len(distances):
            raise ValueError("no candidate pairs to choose a threshold from (every pair is one camera at one time)")
        candidates = np.unique(np.quantile(distances, np.linspace(0.01, 0.99, 40)))
    table = []
    for threshold in np.asarray(candidates, np.float64):
        result = associate(features, camids, starts, ends, threshold=float(threshold), metric=metric, pairs=pairs,
                           rerank=rerank, reranked=reranked, rules=rules, match_cameras=match_cameras)
        table.append((float(threshold), association_scores(result.ids, truth)))
    # of thresholds equally good here, the lowest: footage with more people than the labelled set puts
    # more of them under any threshold, so a loose one costs precision there first
    best = max(table, key=lambda row: (row[1]["pairwise_f1"], -row[0]))
    logger.info("association threshold %.4f chosen on %d labelled tracklets (pairwise F1 %.3f)",
                best[0], int(np.sum(truth > 0)), best[1]["pairwise_f1"])
    return best[0], table


def _blocks(features, metric, reranked, pairs, block=1024):
    """The distances of a block of rows at a time (memory: ``block x N``):
    ``(rows (B, 1), cols (1, N), mask, distances)`` for each block where
    ``pairs(rows, cols)``, the (B, N) mask of the pairs wanted, holds any;
    from ``reranked`` when given, else ``metric`` on ``features``."""
    cols = np.arange(len(features))[None, :]
    for start in range(0, len(features), block):
        rows = np.arange(start, min(start + block, len(features)))[:, None]
        mask = pairs(rows, cols)
        if mask.any():
            yield rows, cols, mask, (distance_lib.pairwise_distance(features[rows[:, 0]], features, metric=metric)
                                     if reranked is None else reranked[rows[:, 0]])


def known_negative_distances(features, camids, starts, ends, *, metric="cosine", rules=TimeRules(), reranked=None):
    """Distances of the pairs that ``rules`` say are two people (seen at once in
    one camera, or in two cameras that do not overlap): labels the footage
    gives for free. ``reranked``: the :func:`reranked_distances` of
    ``features``, to read them on the re-ranked scale instead.

    Returns:
        (cross-camera pairs' distances, one-camera pairs' distances), float64.
    """
    features, camids, starts, ends = _check(features, camids, starts, ends, metric)
    cross, within = [], []
    for rows, cols, mask, distances in _blocks(
            features, metric, reranked,
            lambda r, c: (c > r) & rules.forbidden(camids[r], starts[r], ends[r], camids[c], starts[c], ends[c])):
        same = camids[rows] == camids[cols]
        cross.append(distances[mask & ~same])
        within.append(distances[mask & same])
    join = lambda parts: np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)  # noqa: E731
    return join(cross), join(within)


def threshold_from_negatives(features, camids, starts, ends, *, quantile=0.01, metric="cosine", rules=TimeRules(),
                             least=10, least_cross=3, reranked=None):
    """A threshold chosen without labels, on the footage itself: the
    ``quantile`` of the distances between tracklets known to be two people
    (:func:`known_negative_distances`): the cross-camera ones, which carry the
    cameras' differences as true matches do, when there are ``least_cross``
    or more, and the one-camera ones as well when there are fewer (two
    tracklets of one camera share its background and lighting, so their
    distances sit lower, on another scale than a match across cameras; on
    held-out worlds with 6-7 cross-camera negatives among 100+ they pulled
    the threshold under nearly every true match). ``least``: the known
    negatives needed at all. With ``reranked`` (the
    :func:`reranked_distances` an association with ``rerank`` uses) the
    quantile is taken on that scale, the one its threshold applies to.

    Returns:
        (threshold, a dict of what it rests on: ``known_negatives``,
        ``cross_camera``, ``quantile``, and ``linked_negatives``, the share
        of those pairs the threshold would still link).
    """
    if not 0 <= quantile < 1:
        raise ValueError(f"the negatives' quantile must be in [0, 1). Received: {quantile!r}")
    cross, within = known_negative_distances(features, camids, starts, ends, metric=metric, rules=rules,
                                             reranked=reranked)
    if len(cross) + len(within) < least:
        raise ValueError(f"choosing a threshold without labels needs at least {least} pairs of tracklets known to "
                         f"be two people (seen at once in one camera, or in two cameras that do not overlap); "
                         f"this footage has {len(cross) + len(within)}. Give --threshold or --calibrate")
    negatives = cross if len(cross) >= least_cross else np.concatenate([cross, within])
    threshold = float(np.quantile(negatives, quantile))
    info = {"known_negatives": int(len(negatives)), "cross_camera": int(len(cross)), "quantile": float(quantile),
            "linked_negatives": float(np.mean(negatives <= threshold))}
    logger.info("association threshold %.4f: the %g quantile of %d pairs known to be two people",
                threshold, quantile, len(negatives))
    return threshold, info


def nearest_allowed_distances(features, camids, starts, ends, *, metric="cosine", rules=TimeRules(), reranked=None):
    """Each tracklet's distance to its nearest tracklet in another camera that
    ``rules`` allow to be the same person (``inf`` where there is none).
    ``reranked``: the :func:`reranked_distances` of ``features``, to read them
    on that scale instead. Float64, one per tracklet."""
    features, camids, starts, ends = _check(features, camids, starts, ends, metric)
    nearest = np.full(len(features), np.inf)
    for rows, _, allowed, distances in _blocks(
            features, metric, reranked,
            lambda r, c: (camids[r] != camids[c]) & ~rules.forbidden(camids[r], starts[r], ends[r], camids[c],
                                                                     starts[c], ends[c])):
        nearest[rows[:, 0]] = np.where(allowed, distances, np.inf).min(axis=1)
    return nearest


def threshold_from_valley(features, camids, starts, ends, *, metric="cosine", rules=TimeRules(), least=4,
                          reranked=None):
    """A threshold chosen without labels, on the footage itself: Otsu's split
    of every tracklet's nearest allowed cross-camera distance
    (:func:`nearest_allowed_distances`). A person seen in two cameras has
    their other tracklet nearest, close; one seen by one camera only has a
    stranger nearest, further: the two clusters of those distances, split
    where the variance between them is largest (Otsu, 1979), with nothing to
    tune. Unlike :func:`threshold_from_negatives` it does not hang on the few
    pairs the time rules mark as two people. ``least``: the tracklets with
    an allowed cross-camera neighbour needed at all. With ``reranked`` the
    distances are read on the re-ranked scale, the one its threshold applies
    to.

    Returns:
        (threshold: midway between the two values the split falls between,
        a dict of what it rests on: ``tracklets`` (those with an allowed
        cross-camera neighbour), ``below`` (how many of them lie under the
        threshold), and ``separation``, Otsu's effectiveness: the share of
        the distances' variance that lies between the two sides, in [0, 1]:
        1 is two tight, far-apart clusters, low values a split with no
        valley to rest on).
    """
    nearest = nearest_allowed_distances(features, camids, starts, ends, metric=metric, rules=rules,
                                        reranked=reranked)
    values = np.sort(nearest[np.isfinite(nearest)])
    n = len(values)
    if n < least or values[0] == values[-1]:
        raise ValueError(f"choosing a threshold from the valley needs at least {least} tracklets with a "
                         f"tracklet in another camera they could be, at different distances; this footage has "
                         f"{n}. Give --threshold or --calibrate")
    below = np.arange(1, n)                         # a split after the first i values, i = 1 .. n-1
    sums = np.cumsum(values)[:-1]
    mean_low, mean_high = sums / below, (values.sum() - sums) / (n - below)
    between = below * (n - below) / n ** 2 * (mean_low - mean_high) ** 2
    between[values[1:] == values[:-1]] = -1.0       # never between two equal values
    i = int(np.argmax(between))
    threshold = float((values[i] + values[i + 1]) / 2)
    info = {"tracklets": int(n), "below": int(i + 1), "separation": float(between[i] / values.var())}
    logger.info("association threshold %.4f: Otsu's split of %d tracklets' nearest cross-camera distances "
                "(%d below; separation %.2f)", threshold, n, i + 1, info["separation"])
    return threshold, info

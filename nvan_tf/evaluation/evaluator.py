"""Evaluation glue: load a model, extract tracklet features, rank, report.

``run_evaluation(EvaluationConfig(...))`` does the whole job behind
``evaluate.py``:

1. load the model (``nvan_tf.io.loading``: ``.keras``, ``.weights.h5``, a
   SavedModel folder, or an authors' PyTorch checkpoint + variant) as a
   :class:`FeatureExtractor`, before the dataset is read, so a bad model
   path or variant is reported at once;
2. read the dataset's test split (``build_dataset(...).test_set()``);
3. extract one feature per tracklet with the ordered test pipeline (RRS-test,
   evenly or dense sampling; dense clips of a tracklet are averaged;
   optional flip averaging), with a progress bar, and cache them (.npz);
4. compute distances (cosine / Euclidean, optional query expansion and
   k-reciprocal re-ranking) and CMC / mAP / mINP (``nvan_tf.evaluation.metrics``);
5. write ``results.json`` and, with ``visualize``, the PNGs of
   ``nvan_tf.evaluation.report``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time

import numpy as np

from nvan_tf.choices import DISTANCE_METRICS, SAMPLING_MODES
from nvan_tf.evaluation import metrics
from nvan_tf.cli import progress_verbosity

logger = logging.getLogger(__name__)

__all__ = [
    "ModelSpec",
    "RankingConfig",
    "EvaluationConfig",
    "FeatureExtractor",
    "load_feature_extractor",
    "extract_features",
    "save_feature_cache",
    "load_feature_cache",
    "evaluate_features",
    "run_evaluation",
    "format_table",
    "SAMPLING_MODES",
]

DEFAULT_CLIP = (8, 256, 128)
CACHE_VERSION = 1


@dataclasses.dataclass
class ModelSpec:
    """Where the model comes from, and what it must be (``loading.load_model``
    checks these against the file; ``None`` takes them from the file)."""

    path: str
    variant: str | None = None
    num_identities: int | None = None
    seq_len: int | None = None    # None: the model's own, else 8
    height: int | None = None     # None: the model's own, else 256
    width: int | None = None      # None: the model's own, else 128
    overrides: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class RankingConfig:
    """How tracklets are compared and scored."""

    protocol: str = "mars"
    metric: str = "cosine"
    max_rank: int = 20
    rank_size: int | None = None
    rerank: bool = False
    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3
    query_expansion: int = 0

    def __post_init__(self):
        if self.protocol not in metrics.PROTOCOLS:
            raise ValueError(f"protocol must be one of {metrics.PROTOCOLS}; received {self.protocol!r}")
        if self.metric not in DISTANCE_METRICS:
            raise ValueError(f"metric must be one of {DISTANCE_METRICS}; received {self.metric!r}")
        if self.query_expansion < 0:
            raise ValueError(f"query_expansion must be >= 0; received {self.query_expansion}")


@dataclasses.dataclass
class EvaluationConfig:
    """One evaluation run (see ``evaluate.py --help``)."""

    model: ModelSpec | None
    dataset: str = "mars"
    root: str | None = None
    dataset_kwargs: dict = dataclasses.field(default_factory=dict)
    output_dir: str = "evaluation"
    sampling: str = "rrs"
    batch_size: int = 16
    flip: bool = False
    ranking: RankingConfig = dataclasses.field(default_factory=RankingConfig)
    features: str | None = None       # cache path; default output_dir/features.npz
    reuse_features: bool = True
    visualize: bool = False
    num_visualize: int = 8
    verbose: int = 1

    def __post_init__(self):
        if self.sampling not in SAMPLING_MODES:
            raise ValueError(f"sampling must be one of {SAMPLING_MODES}; received {self.sampling!r}")
        if int(self.batch_size) != self.batch_size or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer; received {self.batch_size!r}")


# ----------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------
class FeatureExtractor:
    """Maps clips ``(B, T, H, W, 3)`` float32 to features ``(B, D)`` (NumPy).

    Attributes:
        seq_len, height, width: the clip size the model takes.
        description: what was loaded, for logs and results.json.
    """

    def __init__(self, fn, seq_len, height, width, description):
        self._fn = fn
        self.seq_len = int(seq_len)
        self.height = int(height)
        self.width = int(width)
        self.description = description

    def __call__(self, clips):
        features = np.asarray(self._fn(clips), dtype=np.float32)
        if features.ndim != 2 or features.shape[0] != clips.shape[0]:
            raise ValueError(
                f"{self.description} returned features of shape {features.shape} "
                f"for {clips.shape[0]} clips; expected (batch, feature_dim)"
            )
        return features


def _keras_extractor(model, spec, description):
    import tensorflow as tf

    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "seq_len"):
        seq_len, height, width = config.seq_len, config.height, config.width
    else:
        shape = getattr(model, "input_shape", None)
        if isinstance(shape, tuple) and len(shape) == 5 and None not in shape[1:4]:
            seq_len, height, width = shape[1:4]
        else:
            seq_len, height, width = _clip_size(spec, (None, None, None))
    signature = tf.TensorSpec((None, seq_len, height, width, 3), tf.float32)

    @tf.function(input_signature=[signature], reduce_retracing=True)
    def infer(clips):
        return model(clips, training=False)

    return FeatureExtractor(lambda clips: infer(clips).numpy(), seq_len, height, width, description)


def _clip_size(spec, fixed):
    """The clip size: what the model fixes, else the spec's, else 8 x 256 x 128."""
    given = (spec.seq_len, spec.height, spec.width)
    return tuple(f or g or d for f, g, d in zip(fixed, given, DEFAULT_CLIP))


def load_feature_extractor(spec):
    """Loads ``spec.path`` (``nvan_tf.io.loading``) as a :class:`FeatureExtractor`.

    Formats: a SavedModel folder (its ``serving_default`` signature, first
    output), or anything ``loading.load_model`` reads (``.keras``,
    ``.weights.h5``, an authors' PyTorch checkpoint); the spec's variant,
    identities and sizes are checked against the file there.
    """
    from nvan_tf.io import loading

    path = spec.path
    if os.path.isdir(path):
        served = loading.load_saved_model(path)
        if spec.variant:
            raise loading.LoadError(f"{path} is a SavedModel, which records no variant: "
                                    f"cannot check variant {spec.variant!r}; omit it")
        seq_len, height, width = _clip_size(spec, served.clip_shape)
        return FeatureExtractor(served, seq_len, height, width, f"SavedModel {path}")
    model = loading.load_model(
        path, variant=spec.variant, num_identities=spec.num_identities,
        seq_len=spec.seq_len, height=spec.height, width=spec.width, **spec.overrides,
    )
    config = getattr(model, "config", None)
    if config is None:
        description = f"Keras model {path}"
    else:
        description = f"{config.variant} ({config.num_identities} identities) from {path}"
    return _keras_extractor(model, spec, description)


# ----------------------------------------------------------------------------
# Features
# ----------------------------------------------------------------------------
def extract_features(extractor, tracklets, *, sampling="rrs", batch_size=16,
                     flip=False, verbose=1):
    """One feature per tracklet, in the order of ``tracklets``.

    Args:
        extractor: a :class:`FeatureExtractor` (or any object with
            ``seq_len``, ``height``, ``width`` and ``__call__(clips)``).
        tracklets: sequence of ``Tracklet``.
        sampling: "rrs" (the reference's test clip), "evenly" or "dense"
            (all clips of a tracklet, features averaged).
        batch_size: clips per batch.
        flip: also run the horizontally flipped clips and average.
        verbose: 1 shows a progress bar (a one-line summary when stdout is
            not a terminal, so logs hold no control codes), 0 nothing.

    Returns:
        (features (N, D) float32, pids (N,) int64, camids (N,) int64).
    """
    import keras
    import tensorflow as tf

    from nvan_tf.data import pipeline

    tracklets = list(tracklets)
    if not tracklets:
        raise ValueError("tracklets is empty: nothing to extract")
    if sampling not in SAMPLING_MODES:
        raise ValueError(f"sampling must be one of {SAMPLING_MODES}; received {sampling!r}")
    dataset = pipeline.eval_dataset(
        tracklets, seq_len=extractor.seq_len, sampling=sampling,
        batch_size=batch_size, height=extractor.height, width=extractor.width,
    )
    steps = int(dataset.cardinality())
    progbar = keras.utils.Progbar(steps if steps > 0 else None, unit_name="batch",
                                  verbose=progress_verbosity(verbose))
    sums = None
    counts = np.zeros(len(tracklets), dtype=np.int64)
    for clips, _, _, track_index in dataset:
        features = extractor(clips)
        if flip:
            features = 0.5 * (features + extractor(tf.reverse(clips, axis=[3])))
        if sums is None:
            sums = np.zeros((len(tracklets), features.shape[1]), dtype=np.float64)
        index = track_index.numpy()
        np.add.at(sums, index, features)
        np.add.at(counts, index, 1)
        progbar.add(1)
    missing = np.flatnonzero(counts == 0)
    if missing.size:
        raise RuntimeError(f"{missing.size} tracklets got no clip, first {missing[:5].tolist()}")
    features = (sums / counts[:, None]).astype(np.float32)
    if not np.isfinite(features).all():
        raise ValueError("the model produced NaN or inf features")
    pids = np.asarray([t.pid for t in tracklets], dtype=np.int64)
    camids = np.asarray([t.camid for t in tracklets], dtype=np.int64)
    return features, pids, camids


def save_feature_cache(path, features, pids, camids, query_index, gallery_index, key=None):
    """Writes features and labels to an .npz; ``key`` (a JSON-able dict)
    records what produced them, so a stale cache is detected."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = path + ".tmp.npz"
    np.savez(
        tmp, features=features, pids=pids, camids=camids,
        query_index=query_index, gallery_index=gallery_index,
        key=np.asarray(json.dumps(key or {}, sort_keys=True)),
        version=np.asarray(CACHE_VERSION),
    )
    os.replace(tmp, path)
    logger.info("cached %s features to %s", features.shape, path)
    return path


def load_feature_cache(path, key=None):
    """Reads an .npz written by ``save_feature_cache``.

    Returns:
        dict of arrays, or ``None`` when the file is missing, was written by
        another cache version, or (if ``key`` is given) by other settings.
    """
    if not os.path.exists(path):
        return None
    with np.load(path, allow_pickle=False) as data:
        if int(data["version"]) != CACHE_VERSION:
            logger.info("feature cache %s has another version; recomputing", path)
            return None
        stored = json.loads(str(data["key"]))
        if key is not None and stored != json.loads(json.dumps(key, sort_keys=True)):
            logger.info("feature cache %s was made with other settings; recomputing", path)
            return None
        return {name: data[name] for name in
                ("features", "pids", "camids", "query_index", "gallery_index")} | {"key": stored}


def _cache_key(config, tracklets, extractor_shape):
    model_path = os.path.abspath(config.model.path)
    stat = os.stat(model_path)
    digest = hashlib.sha1()
    for t in tracklets:
        digest.update(f"{t.frames[0]}|{len(t.frames)}|{t.pid}|{t.camid}\n".encode())
    return {
        "model": model_path,
        "model_mtime": int(stat.st_mtime),
        "model_size": int(stat.st_size) if not os.path.isdir(model_path) else 0,
        "variant": config.model.variant,
        "clip": list(extractor_shape),
        "sampling": config.sampling,
        "flip": bool(config.flip),
        "dataset": config.dataset,
        "tracklets": digest.hexdigest(),
    }


# ----------------------------------------------------------------------------
# Ranking and reporting
# ----------------------------------------------------------------------------
def evaluate_features(features, pids, camids, query_index, gallery_index, ranking=None):
    """Ranks and scores cached features.

    Returns:
        (result dict of ``metrics.evaluate_rank``, (Nq, Ng) distances).
    """
    ranking = ranking or RankingConfig()
    distmat = metrics.query_gallery_distance(
        features, query_index, gallery_index, metric=ranking.metric,
        rerank=ranking.rerank, k1=ranking.k1, k2=ranking.k2,
        lambda_value=ranking.lambda_value, query_expansion=ranking.query_expansion,
    )
    pids, camids = np.asarray(pids), np.asarray(camids)
    result = metrics.evaluate_rank(
        distmat, pids[query_index], pids[gallery_index], camids[query_index],
        camids[gallery_index], protocol=ranking.protocol, max_rank=ranking.max_rank,
        rank_size=ranking.rank_size,
    )
    return result, distmat


def format_table(results):
    """Plain-text table of the headline numbers (in %) of ``results``."""
    m = results["metrics"]
    rows = [("rank-1", m["rank1"]), ("rank-5", m["rank5"]), ("rank-10", m["rank10"]),
            ("rank-20", m["rank20"]), ("mAP", m["mAP"]), ("mINP", m["mINP"])]
    counts = results["queries"]
    title = (f"{results.get('dataset', '')} | protocol {results['ranking']['protocol']}"
             f" | {results['ranking']['metric']}"
             + (" + re-ranking" if results["ranking"]["rerank"] else "")
             + (f" + AQE({results['ranking']['query_expansion']})"
                if results["ranking"]["query_expansion"] else ""))
    lines = [title.strip(" |"), f"{'metric':<8} | {'value (%)':>9}", "-" * 8 + "-+-" + "-" * 9]
    lines += [f"{name:<8} | {100 * value:9.2f}" for name, value in rows]
    lines.append(
        f"queries: {counts['valid']} evaluated, {counts['skipped']} skipped "
        f"(no good match), gallery {counts['gallery']}"
    )
    return "\n".join(lines)


def _visualize(output_dir, result, distmat, tracklets, query_index, gallery_index,
               ranking, num_visualize):
    from nvan_tf.evaluation import report as visualize

    folder = os.path.join(output_dir, "visualize")
    pids = np.asarray([t.pid for t in tracklets])
    camids = np.asarray([t.camid for t in tracklets])
    paths = [visualize.plot_cmc({ranking.metric: result["cmc"]}, os.path.join(folder, "cmc.png"))]
    paths.append(visualize.plot_distance_histograms(
        distmat, pids[query_index], pids[gallery_index], camids[query_index],
        camids[gallery_index], os.path.join(folder, "distances.png"),
        metric=ranking.metric, protocol=ranking.protocol,
    ))
    gallery_frames = [tracklets[g].frames for g in gallery_index]
    for q in visualize.select_queries(result["ap"], num_visualize, mode="mixed"):
        track = tracklets[query_index[q]]
        path = os.path.join(
            folder, "ranked_lists",
            f"query{int(q):05d}_id{track.pid}_ap{100 * result['ap'][q]:05.1f}.png",
        )
        visualize.plot_ranked_list(
            distmat[q], track.frames, gallery_frames, track.pid, track.camid,
            pids[gallery_index], camids[gallery_index], path, protocol=ranking.protocol,
        )
        paths.append(path)
    logger.info("wrote %d pictures under %s", len(paths), folder)
    return paths


def run_evaluation(config):
    """Runs the evaluation described by ``config`` (an ``EvaluationConfig``).

    Returns:
        the JSON-able results dict also written to ``output_dir/results.json``.
    """
    from nvan_tf.data.datasets import build_dataset

    if config.root is None:
        raise ValueError("root is required: the folder of the dataset to evaluate on")
    started = time.perf_counter()
    # The model first: a missing file or a wrong variant is reported before
    # the (possibly large) dataset is read.
    extractor = load_feature_extractor(config.model) if config.model is not None else None
    dataset = build_dataset(config.dataset, config.root, verbose=False, **config.dataset_kwargs)
    tracklets, query_index, gallery_index = dataset.test_set()
    logger.info("%s: %d test tracklets, %d queries, %d gallery", config.dataset,
                len(tracklets), len(query_index), len(gallery_index))
    os.makedirs(config.output_dir, exist_ok=True)
    cache_path = config.features or os.path.join(config.output_dir, "features.npz")

    cached = None
    if extractor is None:
        cached = load_feature_cache(cache_path)
        if cached is None:
            raise ValueError(f"no model given and no feature cache at {cache_path}")
        if cached["features"].shape[0] != len(tracklets):
            raise ValueError(
                f"feature cache {cache_path} has {cached['features'].shape[0]} rows "
                f"but {config.dataset} has {len(tracklets)} test tracklets"
            )
        key = cached["key"]
    else:
        key = _cache_key(config, tracklets, (extractor.seq_len, extractor.height, extractor.width))
        if config.reuse_features:
            cached = load_feature_cache(cache_path, key)
    extract_seconds = 0.0
    if cached is not None:
        logger.info("using cached features from %s", cache_path)
        features, pids, camids = cached["features"], cached["pids"], cached["camids"]
    else:
        start = time.perf_counter()
        features, pids, camids = extract_features(
            extractor, tracklets, sampling=config.sampling, batch_size=config.batch_size,
            flip=config.flip, verbose=config.verbose,
        )
        extract_seconds = time.perf_counter() - start
        save_feature_cache(cache_path, features, pids, camids, query_index, gallery_index, key)

    start = time.perf_counter()
    result, distmat = evaluate_features(features, pids, camids, query_index,
                                        gallery_index, config.ranking)
    rank_seconds = time.perf_counter() - start

    results = {
        "dataset": config.dataset,
        "root": os.path.abspath(config.root),
        "model": extractor.description if extractor else key.get("model"),
        "sampling": config.sampling,
        "flip": bool(config.flip),
        "ranking": dataclasses.asdict(config.ranking),
        "metrics": {
            "rank1": result["rank1"], "rank5": result["rank5"],
            "rank10": result["rank10"], "rank20": result["rank20"],
            "mAP": result["mAP"], "mINP": result["mINP"],
            "cmc": [float(v) for v in result["cmc"]],
        },
        "queries": {
            "total": result["num_queries"], "valid": result["num_valid_queries"],
            "skipped": result["num_skipped_queries"],
            "skipped_indices": result["skipped_queries"].tolist(),
            "gallery": int(len(gallery_index)),
        },
        "features": {"path": os.path.abspath(cache_path), "shape": list(features.shape),
                     "from_cache": cached is not None},
        "seconds": {"extract": extract_seconds, "rank": rank_seconds},
    }
    if config.visualize:
        results["pictures"] = _visualize(
            config.output_dir, result, distmat, tracklets, query_index, gallery_index,
            config.ranking, config.num_visualize,
        )
    results["seconds"]["total"] = time.perf_counter() - started
    with open(os.path.join(config.output_dir, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    return results

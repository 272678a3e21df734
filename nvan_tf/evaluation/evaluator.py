"""Evaluation glue: load a model, extract tracklet features, rank, report.

``run_evaluation(EvaluationConfig(...))`` does the whole job behind
``nvan-evaluate``:

1. load the model (``load_feature_extractor``: ``.keras``, ``.weights.h5``,
   an authors' PyTorch checkpoint + variant, a SavedModel folder, or an
   ONNX file, fp32 or int8) as a :class:`FeatureExtractor`, before the
   dataset is read, so a bad model path or variant is reported at once;
2. read the dataset's test split (``build_dataset(...).test_set()``);
3. extract one feature per tracklet (``nvan_tf.evaluation.features``), or
   reuse the cache whose key (``feature_cache_key``) matches: the model's
   content hash and load options, the sampling, the flip, the dataset, its
   root, split and test tracklets; without a model, a cache is only used
   for the dataset, split and tracklets it was computed on;
4. rank and score them (``nvan_tf.evaluation.ranking.evaluate_indices``);
5. write ``results.json`` and, with ``visualize``, the PNGs of
   ``nvan_tf.evaluation.report``, all atomically.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time

import numpy as np

from nvan_tf.choices import BATCH_NORM_STATISTICS, DATASETS, DISTANCE_METRICS, PROTOCOLS, SAMPLING_MODES
from nvan_tf.evaluation import metrics, ranking
from nvan_tf.evaluation.features import (
    FeatureExtractor,
    check_batch_norm,
    extract_features,
    file_digest,
    load_feature_cache,
    read_feature_cache,
    save_feature_cache,
    tracklets_digest,
)
from nvan_tf.core.atomic import write_json

logger = logging.getLogger(__name__)

__all__ = [
    "ModelSpec",
    "RankingConfig",
    "EvaluationConfig",
    "FeatureExtractor",
    "model_extractor",
    "load_feature_extractor",
    "extract_features",
    "save_feature_cache",
    "read_feature_cache",
    "load_feature_cache",
    "dataset_key",
    "feature_cache_key",
    "check_cache_matches",
    "run_evaluation",
    "format_table",
    "SAMPLING_MODES",
]

DEFAULT_CLIP = (8, 256, 128)
ONNX_SUFFIX = ".onnx"


@dataclasses.dataclass
class ModelSpec:
    """Where the model comes from, and what it must be (``loading.load_model``
    checks these against the file; ``None`` takes them from the file). The
    flags of the model fields: ``nvan_tf.core.flags.ModelShape``'s."""

    path: str = dataclasses.field(metadata={
        "flag": "--model", "dest": "model",
        "help": ".keras file, .weights.h5, SavedModel folder, ONNX file (fp32 or int8, from nvan-export) or "
                "PyTorch checkpoint (.pth/.pt/.tar/.ckpt); omit to reuse --features"})
    variant: str | None = None
    num_identities: int | None = None
    seq_len: int | None = None    # None: the model's own, else 8
    height: int | None = None     # None: the model's own, else 256
    width: int | None = None      # None: the model's own, else 128
    overrides: dict = dataclasses.field(default_factory=dict, metadata={"cli": False})


@dataclasses.dataclass
class RankingConfig:
    """How tracklets are compared and scored (the options of ``ranking.evaluate_indices``;
    the metadata's help: ``nvan-evaluate``'s flags, ``metric`` and ``rerank`` also ``nvan-track``'s)."""

    protocol: str = dataclasses.field(default="mars", metadata={
        "help": "mars: official MARS rule; market: torchreid's rule", "choices": PROTOCOLS})
    metric: str = dataclasses.field(default="cosine", metadata={
        "help": "distance between features (cosine, as the reference)", "choices": DISTANCE_METRICS})
    max_rank: int = dataclasses.field(default=20, metadata={"help": "CMC length"})
    rank_size: int | None = dataclasses.field(default=None, metadata={
        "help": "rank cut for AP/CMC; default: 10000 for mars, none for market"})
    rerank: bool = dataclasses.field(default=False, metadata={
        "help": "k-reciprocal re-ranking (nvan-track: before linking)"})
    k1: int = dataclasses.field(default=20, metadata={"help": "re-ranking k1"})
    k2: int = dataclasses.field(default=6, metadata={"help": "re-ranking k2"})
    lambda_value: float = dataclasses.field(default=0.3, metadata={
        "help": "re-ranking weight of the original distance", "flag": "--lambda"})
    query_expansion: int = dataclasses.field(default=0, metadata={
        "help": "average query expansion with the top K gallery items (0: off)", "metavar": "K"})

    def __post_init__(self):
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}; received {self.protocol!r}")
        if self.metric not in DISTANCE_METRICS:
            raise ValueError(f"metric must be one of {DISTANCE_METRICS}; received {self.metric!r}")
        if self.query_expansion < 0:
            raise ValueError(f"query_expansion must be >= 0; received {self.query_expansion}")


@dataclasses.dataclass
class EvaluationConfig:
    """One evaluation run. The metadata's help: ``nvan-evaluate``'s flags
    (``nvan_tf.core.flags``); ``sampling``, ``batch_size`` and ``flip`` are
    also ``nvan-track``'s."""

    model: ModelSpec | None = dataclasses.field(metadata={"cli": False})
    dataset: str = dataclasses.field(default="mars", metadata={
        "help": "dataset reader", "choices": DATASETS, "group": "data"})
    root: str | None = dataclasses.field(default=None, metadata={
        "help": "dataset folder", "required": True, "group": "data"})
    dataset_kwargs: dict = dataclasses.field(default_factory=dict, metadata={"cli": False})  # the reader's
    split_id: int | None = dataclasses.field(default=None, metadata={
        "help": "split of iLIDS-VID / PRID-2011; default: the reader's (0)", "group": "data"})
    splits: str | None = dataclasses.field(default=None, metadata={
        "help": "split file of iLIDS-VID / PRID-2011: read if it exists, else the generated random splits are "
                "recorded there; default: the published file in the dataset, else a record in "
                "$NVAN_TF_CACHE/splits (~/.cache/nvan_tf)", "metavar": "FILE", "group": "data"})
    output_dir: str = dataclasses.field(default="evaluation", metadata={
        "help": "where results.json, features.npz and pictures go"})
    sampling: str = dataclasses.field(default="rrs", metadata={
        "help": "test-time clip sampling (rrs: the reference's; nvan-track, when not given: what the model was "
                "evaluated with, else rrs)", "choices": SAMPLING_MODES})
    batch_size: int = dataclasses.field(default=16, metadata={"help": "clips per batch"})
    flip: bool = dataclasses.field(default=False, metadata={"help": "average with horizontally flipped clips"})
    batch_norm: str = dataclasses.field(default="model", metadata={
        "help": "the BatchNorm statistics features are taken with: the model's own (model), estimated again on "
                "the tracklets embedded (all), or on each camera's tracklets for that camera's (camera: "
                "camera-based BatchNorm, for data unlike the training data's, each camera's lighting and colour "
                "cast normalised away). A Keras model (.keras, .weights.h5, an authors' checkpoint) only",
        "choices": BATCH_NORM_STATISTICS})
    ranking: RankingConfig = dataclasses.field(default_factory=RankingConfig, metadata={"cli": False})
    features: str | None = dataclasses.field(default=None, metadata={   # cache path; default output_dir/features.npz
        "help": "feature cache (.npz); default: OUTPUT_DIR/features.npz", "group": "output"})
    reuse_features: bool = dataclasses.field(default=True, metadata={
        "help": "ignore a matching feature cache", "flag": "--recompute", "negate": True, "group": "output"})
    visualize: bool = dataclasses.field(default=False, metadata={
        "help": "write the CMC curve, ranked lists and distance histograms", "group": "output"})
    num_visualize: int = dataclasses.field(default=8, metadata={"help": "ranked lists to draw", "group": "output"})
    verbose: int = dataclasses.field(default=1, metadata={
        "help": "no progress bar", "flag": "--quiet", "negate": True, "group": "output"})
    deterministic: bool = dataclasses.field(default=False, metadata={
        "help": "TensorFlow's deterministic kernels: bit-identical features on one machine", "action": "store_true",
        "group": "output"})

    def __post_init__(self):
        """``split_id`` and ``splits`` go to the reader (``dataset_kwargs``'s
        ``split_id`` and ``split_file``)."""
        given = {"split_id": self.split_id, "split_file": self.splits}
        self.dataset_kwargs = {**self.dataset_kwargs, **{k: v for k, v in given.items() if v is not None}}
        if self.sampling not in SAMPLING_MODES:
            raise ValueError(f"sampling must be one of {SAMPLING_MODES}; received {self.sampling!r}")
        if int(self.batch_size) != self.batch_size or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer; received {self.batch_size!r}")
        if self.batch_norm not in BATCH_NORM_STATISTICS:
            raise ValueError(f"batch_norm must be one of {BATCH_NORM_STATISTICS}; received {self.batch_norm!r}")


# ----------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------
def _model_clip(model):
    """``(seq_len, height, width)`` of a Keras model: its ``config`` (an
    ``NVANModel``), else its fully known 5-D input shape."""
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "seq_len"):
        return config.seq_len, config.height, config.width
    shape = getattr(model, "input_shape", None)
    if isinstance(shape, tuple) and len(shape) == 5 and None not in shape[1:4]:
        return tuple(int(v) for v in shape[1:4])
    raise ValueError(
        f"cannot tell the clip size of Keras model {getattr(model, 'name', model)!r}: it has no "
        f"NVANModel config and its input shape is {shape}; expected (batch, T, H, W, 3) with T, H, W fixed"
    )


def model_extractor(model, description=None):
    """A :class:`FeatureExtractor` over an in-memory Keras model in inference
    mode (``training=False``): one ``tf.function`` with the fixed input
    signature ``(None, T, H, W, 3)`` float32 of ``model.config`` (an
    ``NVANModel``; another Keras model: its input shape), so batches of any
    size reuse one graph.

    Args:
        model: the Keras model (float32 weights; the training loop passes
            its float32 inference copy).
        description: for logs and results.json; default: the variant and
            identities of ``model.config``, else the model's name.
    """
    import tensorflow as tf

    seq_len, height, width = _model_clip(model)
    if description is None:
        config = getattr(model, "config", None)
        description = (f"{config.variant} ({config.num_identities} identities)"
                       if hasattr(config, "variant") else f"Keras model {model.name}")
    signature = tf.TensorSpec((None, seq_len, height, width, 3), tf.float32)

    @tf.function(input_signature=[signature], reduce_retracing=True)
    def infer(clips):
        return model(clips, training=False)

    return FeatureExtractor(lambda clips: infer(clips).numpy(), seq_len, height, width, description, model=model)


def _clip_size(spec, fixed, what):
    """The clip size: what the model fixes, else the spec's, else 8 x 256 x 128;
    a LoadError where the spec asks for another size than the model fixes."""
    given = (spec.seq_len, spec.height, spec.width)
    for name, f, g in zip(("seq_len", "height", "width"), fixed, given):
        if f is not None and g is not None and f != g:
            from nvan_tf.io.loading import LoadError

            raise LoadError(f"{what} takes clips of {name}={f}, but {name}={g} was asked for; "
                            f"omit it or give {f}")
    return tuple(f or g or d for f, g, d in zip(fixed, given, DEFAULT_CLIP))


def _refuse_build_options(spec, what):
    """A SavedModel or ONNX graph is fixed: nothing of it can be rebuilt or checked."""
    from nvan_tf.io.loading import LoadError

    options = {"variant": spec.variant, "num_identities": spec.num_identities, **spec.overrides}
    given = sorted(name for name, value in options.items() if value is not None)
    if given:
        raise LoadError(f"{what} records no model config: cannot check or apply {given}; omit them")


def _onnx_extractor(spec):
    from nvan_tf.io.loading import LoadError

    what = f"ONNX model {spec.path}"
    _refuse_build_options(spec, what)
    try:
        from nvan_tf.io.onnx_runtime import onnx_session

        session = onnx_session(spec.path)
    except ImportError as err:
        raise LoadError(f"cannot load {what}: {err}") from err
    except Exception as err:  # onnxruntime's own errors (InvalidProtobuf, Fail, ...)
        raise LoadError(f"{spec.path} cannot be read as an ONNX model: {err}") from err
    inputs = session.get_inputs()
    shape = list(inputs[0].shape) if len(inputs) == 1 else []
    if len(shape) != 5 or shape[4] != 3:
        raise LoadError(f"{what} takes {[(i.name, i.shape) for i in inputs]}; expected one input "
                        "of clips (batch, T, H, W, 3), as nvan-export writes")
    fixed = [d if isinstance(d, int) else None for d in shape[1:4]]
    seq_len, height, width = _clip_size(spec, fixed, what)
    name = inputs[0].name
    return FeatureExtractor(lambda clips: session.run(None, {name: np.asarray(clips, np.float32)})[0],
                            seq_len, height, width, what)


def load_feature_extractor(spec):
    """Loads ``spec.path`` as a :class:`FeatureExtractor`.

    Formats: a SavedModel folder (its ``serving_default`` signature, or the
    ``embed_clips`` one of an ``nvan-export`` SavedModel), an ``.onnx`` file
    (fp32 or int8 from ``nvan-export``, run by ONNX Runtime), or anything
    ``loading.load_model`` reads (``.keras``, ``.weights.h5``, an authors'
    PyTorch checkpoint), run by :func:`model_extractor`; the spec's variant,
    identities and sizes are checked against the file there. SavedModel and
    ONNX graphs fix their clip size (a spec size that disagrees is refused)
    and record no variant (refused too).
    """
    from nvan_tf.io import loading

    path = spec.path
    if os.path.isdir(path):
        served = loading.load_saved_model(path)
        what = f"SavedModel {path}"
        _refuse_build_options(spec, what)
        seq_len, height, width = _clip_size(spec, served.clip_shape, what)
        return FeatureExtractor(served, seq_len, height, width, what)
    if path.lower().endswith(ONNX_SUFFIX):
        if not os.path.exists(path):
            raise FileNotFoundError(f"model not found: {path}")
        return _onnx_extractor(spec)
    model = loading.load_model(
        path, variant=spec.variant, num_identities=spec.num_identities,
        seq_len=spec.seq_len, height=spec.height, width=spec.width, **spec.overrides,
    )
    config = getattr(model, "config", None)
    if config is None:
        description = f"Keras model {path}"
    else:
        description = f"{config.variant} ({config.num_identities} identities) from {path}"
    return model_extractor(model, description)


# ----------------------------------------------------------------------------
# Cache keys
# ----------------------------------------------------------------------------
def dataset_key(dataset, root, split_id, tracklets, query_index, gallery_index):
    """What a test set is, for the feature cache: the reader's name, the
    dataset root, the split (iLIDS-VID / PRID-2011; None for the others)
    and a digest of the tracklets (every frame path, pid, camid) with the
    query and gallery indices. The reader's other arguments (a split file,
    a seed) act only through the test set they give, which the digest
    covers."""
    return {
        "dataset": dataset,
        "root": os.path.abspath(root),
        "split_id": None if split_id is None else int(split_id),
        "tracklets": tracklets_digest(tracklets, query_index, gallery_index),
        "num_tracklets": len(tracklets),
    }


def feature_cache_key(spec, extractor, sampling, flip, data, batch_norm="model", batch_size=None):
    """Everything that changes the features: the model file's content
    (sha256; every file of a SavedModel folder), how it is loaded (variant,
    identities, clip size, overrides) and the clip size it runs at, the
    sampling, the flip, the BatchNorm statistics (absent for the model's
    own, so caches written before the option still match; estimated ones
    with ``batch_size``, as the estimate averages per-batch moments), and
    ``data`` (``dataset_key``). The batch size is otherwise left out:
    features do not depend on it."""
    options = dataclasses.asdict(spec)
    options.pop("path")
    key = {
        "model": {"sha256": file_digest(spec.path), "options": options,
                  "clip": [extractor.seq_len, extractor.height, extractor.width]},
        "sampling": sampling,
        "flip": bool(flip),
        "data": data,
    }
    if batch_norm != "model":
        key["batch_norm"] = {"statistics": batch_norm, "batch_size": batch_size}
    return key


def _describe_data(key):
    split = "" if key.get("split_id") is None else f" split {key['split_id']}"
    return (f"{key.get('dataset')}{split} at {key.get('root')} ({key.get('num_tracklets')} test "
            f"tracklets, digest {str(key.get('tracklets'))[:12]})")


def check_cache_matches(path, cache, data):
    """Refuses (ValueError) a cache whose features were not computed on the
    dataset, split and tracklets ``data`` (``dataset_key``) describes."""
    stored = cache["key"].get("data")
    if stored != data:
        raise ValueError(
            f"feature cache {path} holds features of "
            + (_describe_data(stored) if stored else "an unrecorded test set")
            + f", but this evaluation scores {_describe_data(data)}; evaluate with --model "
            "to compute features for it"
        )


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
    if m.get("cross_camera_top5") is not None:
        lines.append(f"top-5 matches from another camera: {100 * m['cross_camera_top5']:.1f}% "
                     "(low: the model matches backgrounds, not people)")
    return "\n".join(lines)


def _visualize(output_dir, result, distmat, tracklets, query_index, gallery_index,
               ranking_config, num_visualize):
    from nvan_tf.evaluation import report

    folder = os.path.join(output_dir, "visualize")
    pids = np.asarray([t.pid for t in tracklets])
    camids = np.asarray([t.camid for t in tracklets])
    protocol = ranking_config.protocol
    paths = [report.plot_cmc({ranking_config.metric: result["cmc"]}, os.path.join(folder, "cmc.png"))]
    paths.append(report.plot_distance_histograms(
        distmat, pids[query_index], pids[gallery_index], camids[query_index],
        camids[gallery_index], os.path.join(folder, "distances.png"),
        metric=ranking_config.metric, protocol=protocol,
    ))
    gallery_frames = [tracklets[g].frames for g in gallery_index]
    for q in report.select_queries(result["ap"], num_visualize, mode="mixed"):
        track = tracklets[query_index[q]]
        path = os.path.join(
            folder, "ranked_lists",
            f"query{int(q):05d}_id{track.pid}_ap{100 * result['ap'][q]:05.1f}.png",
        )
        report.plot_ranked_list(
            distmat[q], track.frames, gallery_frames, track.pid, track.camid,
            pids[gallery_index], camids[gallery_index], path, protocol=protocol,
        )
        paths.append(path)
    logger.info("wrote %d pictures under %s", len(paths), folder)
    return paths


def _cached_or_extracted(config, extractor, cache_path, test_set, data):
    """``(features, pids, camids, cache, seconds)``: the features of the
    cache at ``cache_path`` where it is usable, else extracted (and cached
    with their key); ``cache`` is the cache used, None when extracted."""
    if extractor is None:
        cache = read_feature_cache(cache_path)
        check_cache_matches(cache_path, cache, data)
        return cache["features"], cache["pids"], cache["camids"], cache, 0.0
    key = feature_cache_key(config.model, extractor, config.sampling, config.flip, data, config.batch_norm,
                            config.batch_size)
    cache = load_feature_cache(cache_path, key) if config.reuse_features else None
    if cache is not None:
        logger.info("using cached features from %s", cache_path)
        return cache["features"], cache["pids"], cache["camids"], cache, 0.0
    tracklets, query_index, gallery_index = test_set
    start = time.perf_counter()
    features, pids, camids = extract_features(
        extractor, tracklets, sampling=config.sampling, batch_size=config.batch_size,
        flip=config.flip, verbose=config.verbose, batch_norm=config.batch_norm,
    )
    seconds = time.perf_counter() - start
    save_feature_cache(cache_path, features, pids, camids, query_index, gallery_index, key,
                       about={"model": extractor.description, "path": os.path.abspath(config.model.path)})
    return features, pids, camids, None, seconds


def _results(config, model, result, test_set, features, cache_path, from_cache, seconds):
    """The JSON-able results dict of one run."""
    return {
        "dataset": config.dataset,
        "root": os.path.abspath(config.root),
        "dataset_kwargs": dict(config.dataset_kwargs),
        "model": model,
        "sampling": config.sampling,
        "flip": bool(config.flip),
        "batch_norm": config.batch_norm,
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
            "gallery": int(len(test_set[2])),
        },
        "features": {"path": os.path.abspath(cache_path), "shape": list(features.shape),
                     "from_cache": from_cache},
        # frames replaced by a neighbour while extracting (none read when the features came from the cache)
        "bad_frames": _bad_frames(),
        "seconds": seconds,
    }


def _bad_frames():
    from nvan_tf.data import pipeline

    report = pipeline.bad_frame_report()
    return {key: report[key] for key in ("bad_frames", "frames_read", "substitutions", "examples")}


def run_evaluation(config):
    """Runs the evaluation described by ``config`` (an ``EvaluationConfig``).

    Returns:
        the JSON-able results dict also written to ``output_dir/results.json``.

    Raises:
        ValueError: without a model, when the feature cache is missing, of
            another version, or was computed on another dataset, split or
            set of tracklets (the message names both).
    """
    from nvan_tf.data.datasets import build_dataset

    if config.root is None:
        raise ValueError("root is required: the folder of the dataset to evaluate on")
    started = time.perf_counter()
    if config.deterministic:
        from nvan_tf.models.model import enable_determinism

        enable_determinism()
    # The model first: a missing file or a wrong variant is reported before
    # the (possibly large) dataset is read.
    extractor = load_feature_extractor(config.model) if config.model is not None else None
    if extractor is not None:
        check_batch_norm(extractor, config.batch_norm)
    dataset = build_dataset(config.dataset, config.root, verbose=False, **config.dataset_kwargs)
    test_set = dataset.test_set()
    tracklets, query_index, gallery_index = test_set
    logger.info("%s: %d test tracklets, %d queries, %d gallery", config.dataset,
                len(tracklets), len(query_index), len(gallery_index))
    data = dataset_key(dataset.name, config.root, getattr(dataset, "split_id", None), *test_set)
    cache_path = config.features or os.path.join(config.output_dir, "features.npz")
    features, pids, camids, cache, extract_seconds = _cached_or_extracted(
        config, extractor, cache_path, test_set, data)

    start = time.perf_counter()
    result = ranking.evaluate_indices(
        features, pids, camids, query_index, gallery_index, return_distmat=True,
        **dataclasses.asdict(config.ranking),
    )
    seconds = {"extract": extract_seconds, "rank": time.perf_counter() - start}
    model = extractor.description if extractor else cache["about"].get("model")
    results = _results(config, model, result, test_set, features, cache_path, cache is not None, seconds)
    results["metrics"]["cross_camera_top5"] = metrics.cross_camera_share(
        result["distmat"], camids[query_index], camids[gallery_index], k=5,
        exclude=np.asarray(query_index)[:, None] == np.asarray(gallery_index)[None, :])
    if config.visualize:
        results["pictures"] = _visualize(
            config.output_dir, result, result["distmat"], tracklets, query_index, gallery_index,
            config.ranking, config.num_visualize,
        )
    results["seconds"]["total"] = time.perf_counter() - started
    write_json(os.path.join(config.output_dir, "results.json"), results)
    return results

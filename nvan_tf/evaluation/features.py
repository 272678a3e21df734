"""Tracklet features: extraction, the dense-sampling average, the feature cache.

``extract_features(extractor, tracklets)`` gives one feature per tracklet,
through the ordered test pipeline (``nvan_tf.data.pipeline.eval_dataset``);
TensorFlow is imported inside it, so this module itself is plain NumPy
(the serving client uses :class:`TrackletAverage` without TensorFlow).

One tracklet, one feature, by sampling mode:

* ``rrs`` / ``evenly``: one clip per tracklet; the feature is the model's
  output for it as it is (the reference's raw BN-neck feature).
* ``dense``: every consecutive clip; the feature is the **mean of the
  L2-normalised clip features**, so that every clip weighs the same
  whatever its norm. The serving client (``ServingClient.embed_tracklets``)
  averages the same way (and normalises the mean), so both give the same
  tracklet embedding up to that final normalisation.
* ``flip``: a clip's feature is the mean of the raw features of the clip
  and of its horizontally flipped copy, taken before the normalisation of
  dense sampling.

:func:`estimated_batch_norm` re-estimates a Keras model's BatchNorm
statistics on the tracklets about to be embedded (AdaBN; camera by camera,
camera-based BN): inside it, the extractor normalises with them.

The cache (``save_feature_cache`` / ``read_feature_cache`` /
``load_feature_cache``) is an ``.npz`` with the features, the labels, the
query / gallery indices and a JSON ``key`` that says what produced them
(``nvan_tf.evaluation.evaluator.feature_cache_key``); it is written
atomically (``nvan_tf.core.atomic``), so two evaluations writing the same
file leave one complete cache, never a mixture.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import zipfile

import numpy as np

from nvan_tf.choices import BATCH_NORM_STATISTICS, SAMPLING_MODES
from nvan_tf.core import records
from nvan_tf.core.digests import content_digest, frames_digest
from nvan_tf.core.progress import progress_verbosity
from nvan_tf.evaluation import distance
from nvan_tf.core.atomic import atomic_path

logger = logging.getLogger(__name__)

__all__ = [
    "CACHE_VERSION",
    "FeatureExtractor",
    "TrackletAverage",
    "batch_norm_layers",
    "check_batch_norm",
    "estimated_batch_norm",
    "extract_features",
    "file_digest",
    "load_feature_cache",
    "read_feature_cache",
    "save_feature_cache",
    "tracklets_digest",
]

CACHE_VERSION = records.FEATURE_CACHE_VERSION  # kept with the run records' version (nvan_tf.core.records)
CACHE_ARRAYS = ("features", "pids", "camids", "query_index", "gallery_index")


class FeatureExtractor:
    """Maps clips ``(B, T, H, W, 3)`` float32 to features ``(B, D)`` (NumPy).

    Attributes:
        seq_len, height, width: the clip size the model takes.
        description: what was loaded, for logs and results.json.
        model: the Keras model ``fn`` runs, where it runs one (``None``: a
            SavedModel, an ONNX session, a baseline).
    """

    def __init__(self, fn, seq_len, height, width, description, model=None):
        self._fn = fn
        self.model = model
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


class TrackletAverage:
    """Averages clip features into one feature per tracklet (float64 sums).

    Args:
        num_tracklets: how many tracklets the clips belong to.
        normalize_clips: L2-normalise each clip's feature before it is
            added (dense sampling, see the module docstring).
    """

    def __init__(self, num_tracklets, *, normalize_clips):
        self.sums = None
        self.counts = np.zeros(int(num_tracklets), dtype=np.int64)
        self.normalize_clips = bool(normalize_clips)

    def add(self, features, owners):
        """Adds (n, D) clip ``features`` of the tracklets ``owners`` ((n,) indices)."""
        features = np.asarray(features)
        if self.normalize_clips:
            features = distance.l2_normalize(features)
        if self.sums is None:
            self.sums = np.zeros((self.counts.size, features.shape[1]), dtype=np.float64)
        np.add.at(self.sums, owners, features)
        np.add.at(self.counts, owners, 1)

    def mean(self):
        """(num_tracklets, D) float32 means; a RuntimeError if a tracklet got no clip."""
        missing = np.flatnonzero(self.counts == 0)
        if missing.size:
            raise RuntimeError(f"{missing.size} tracklets got no clip, first {missing[:5].tolist()}")
        return (self.sums / self.counts[:, None]).astype(np.float32)


def extract_features(extractor, tracklets, *, sampling="rrs", batch_size=16,
                     flip=False, verbose=1, batch_norm="model"):
    """One feature per tracklet, in the order of ``tracklets``.

    Args:
        extractor: a :class:`FeatureExtractor` (or any object with
            ``seq_len``, ``height``, ``width`` and ``__call__(clips)``).
        tracklets: sequence of ``Tracklet``.
        sampling: "rrs" (the reference's test clip: the raw feature),
            "evenly" (one clip: the raw feature) or "dense" (every clip: the
            mean of the L2-normalised clip features).
        batch_size: clips per batch (the features do not depend on it).
        flip: also run the horizontally flipped clips; a clip's feature is
            the mean of both raw features (before dense normalisation).
        verbose: 1 shows a progress bar (a one-line summary when stdout is
            not a terminal, so logs hold no control codes), 0 nothing.
        batch_norm: the BatchNorm statistics the features are taken with
            (``choices.BATCH_NORM_STATISTICS``): ``model``, the model's own;
            ``all``, estimated on all of ``tracklets``; ``camera``, each
            camera's tracklets with statistics estimated on that camera's
            alone (camera-based BatchNorm). See :func:`estimated_batch_norm`.

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
    if batch_norm not in BATCH_NORM_STATISTICS:
        raise ValueError(f"batch_norm must be one of {BATCH_NORM_STATISTICS}; received {batch_norm!r}")
    if batch_norm != "model":
        return _with_estimated_batch_norm(extractor, tracklets, batch_norm, sampling=sampling,
                                          batch_size=batch_size, flip=flip, verbose=verbose)
    dataset = pipeline.eval_dataset(
        tracklets, seq_len=extractor.seq_len, sampling=sampling,
        batch_size=batch_size, height=extractor.height, width=extractor.width,
    )
    steps = int(dataset.cardinality())
    progbar = keras.utils.Progbar(steps if steps > 0 else None, unit_name="batch",
                                  verbose=progress_verbosity(verbose))
    average = TrackletAverage(len(tracklets), normalize_clips=sampling == "dense")
    for clips, _, _, track_index in dataset:
        features = extractor(clips)
        if flip:
            features = 0.5 * (features + extractor(tf.reverse(clips, axis=[3])))
        average.add(features, track_index.numpy())
        progbar.add(1)
    features = average.mean()
    if not np.isfinite(features).all():
        raise ValueError("the model produced NaN or inf features")
    pids = np.asarray([t.pid for t in tracklets], dtype=np.int64)
    camids = np.asarray([t.camid for t in tracklets], dtype=np.int64)
    return features, pids, camids


def check_batch_norm(extractor, batch_norm):
    """Refuses (ValueError naming ``--batch-norm``) statistics ``batch_norm``
    that ``extractor`` cannot estimate: a command checks this before it
    reads or runs anything long."""
    if batch_norm not in BATCH_NORM_STATISTICS:
        raise ValueError(f"--batch-norm must be one of {BATCH_NORM_STATISTICS}; received {batch_norm!r}")
    if batch_norm != "model":
        try:
            batch_norm_layers(extractor)
        except ValueError as error:
            raise ValueError(f"--batch-norm {batch_norm}: {error} (or give --batch-norm model)") from None


def _with_estimated_batch_norm(extractor, tracklets, batch_norm, **options):
    """extract_features with ``batch_norm`` ``all`` or ``camera``."""
    camids = np.asarray([t.camid for t in tracklets])
    groups = np.unique(camids) if batch_norm == "camera" else [None]
    features = None
    with estimated_batch_norm(extractor, batch_size=options["batch_size"]) as estimate:
        for camid in groups:
            members = np.arange(len(tracklets)) if camid is None else np.flatnonzero(camids == camid)
            group = [tracklets[i] for i in members]
            estimate(group)
            part = extract_features(extractor, group, **options)[0]
            if features is None:
                features = np.zeros((len(tracklets), part.shape[1]), np.float32)
            features[members] = part
    pids = np.asarray([t.pid for t in tracklets], dtype=np.int64)
    return features, pids, camids.astype(np.int64)


def batch_norm_layers(extractor):
    """The BatchNormalization layers of the Keras model ``extractor`` runs.

    Raises:
        ValueError: ``extractor`` runs no Keras model (a SavedModel, ONNX, a
            baseline), or the model has no BatchNormalization layer.
    """
    import keras

    model = getattr(extractor, "model", None)
    if model is None:
        raise ValueError(f"{extractor.description} is not a Keras model: its BatchNorm statistics cannot be "
                         f"estimated again (load a .keras or .weights.h5 file)")
    # private: Keras 3 has no public listing of a model's nested layers (checked on 3.15.1)
    layers = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    if not layers:
        raise ValueError(f"{extractor.description} has no BatchNormalization layer to estimate statistics for")
    return layers


@contextlib.contextmanager
def estimated_batch_norm(extractor, *, batch_size=16):
    """A context in which the BatchNorm layers of ``extractor.model``
    normalise with statistics estimated on given tracklets; on leaving it,
    the model's own statistics are back.

    Yields ``estimate(tracklets)``, which estimates them (AdaBN): every
    dense clip of ``tracklets`` runs through the model in training mode, each
    BatchNorm layer's batch mean and variance (as the layer updates its
    moving variance: the unbiased one for ``nvan_tf.models.layers.BatchNorm``,
    Keras's biased one for its own) are taken per batch, and the layer's moving mean and
    variance become their averages over the batches, weighted by the
    batches' clips. Nothing trainable changes. Features taken after it are
    normalised as those tracklets' own lighting and colours are, not as the
    training data's were; calling it again for other tracklets (camera by
    camera, say) replaces the estimate, with one trace of the model.

    Raises:
        ValueError: as :func:`batch_norm_layers`.
    """
    import tensorflow as tf

    from nvan_tf.data import pipeline

    layers, model = batch_norm_layers(extractor), extractor.model
    saved = [(layer.momentum, layer.trainable, layer.moving_mean.numpy(), layer.moving_variance.numpy())
             for layer in layers]
    signature = tf.TensorSpec((None, extractor.seq_len, extractor.height, extractor.width, 3), tf.float32)
    batch_moments = tf.function(lambda clips: model(clips, training=True), input_signature=[signature])

    def estimate(tracklets):
        tracklets = list(tracklets)
        if not tracklets:
            raise ValueError("tracklets is empty: no statistics to estimate")
        sums = [[np.zeros(v.shape, np.float64) for v in (layer.moving_mean, layer.moving_variance)]
                for layer in layers]
        clips_seen = 0
        for clips, _, _, _ in pipeline.eval_dataset(tracklets, seq_len=extractor.seq_len, sampling="dense",
                                                     batch_size=batch_size, height=extractor.height,
                                                     width=extractor.width):
            batch_moments(clips)
            count = int(clips.shape[0])
            for (mean, variance), layer in zip(sums, layers):
                mean += count * layer.moving_mean.numpy()
                variance += count * layer.moving_variance.numpy()
            clips_seen += count
        for (mean, variance), layer in zip(sums, layers):
            layer.moving_mean.assign((mean / clips_seen).astype(layer.moving_mean.dtype))
            layer.moving_variance.assign((variance / clips_seen).astype(layer.moving_variance.dtype))

    try:
        for layer in layers:
            layer.momentum = 0.0  # a training-mode call leaves the batch's own statistics in the moving ones
            layer.trainable = True  # a frozen BatchNormalization normalises with its moving statistics
        yield estimate
    finally:
        for layer, (momentum, trainable, mean, variance) in zip(layers, saved):
            layer.momentum, layer.trainable = momentum, trainable
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(variance)


# ----------------------------------------------------------------------------
# Fingerprints
# ----------------------------------------------------------------------------
file_digest = content_digest  # the model's fingerprint: nvan_tf.core.digests


def tracklets_digest(tracklets, query_index, gallery_index):
    """sha256 (hex) of what a test set is: every tracklet's frames (their
    paths, and their size and ``st_mtime_ns``: frames rewritten under the same
    names are another test set), pid and camid in order, and the query and
    gallery indices."""
    digest = hashlib.sha256()
    for t in tracklets:
        digest.update(json.dumps([list(t.frames), int(t.pid), int(t.camid), frames_digest(t.frames)]).encode()
                      + b"\n")
    for index in (query_index, gallery_index):
        digest.update(np.asarray(index, dtype=np.int64).tobytes() + b"|")
    return digest.hexdigest()


# ----------------------------------------------------------------------------
# Cache
# ----------------------------------------------------------------------------

def save_feature_cache(path, features, pids, camids, query_index, gallery_index, key=None,
                       about=None):
    """Writes features and labels to an ``.npz``, atomically.

    Args:
        key: a JSON-able dict of everything that produced the features,
            compared by ``load_feature_cache``.
        about: a JSON-able dict recorded and not compared (the model's path
            and description).
    """
    with atomic_path(path) as staged, open(staged, "wb") as f:
        np.savez(
            f, features=features, pids=pids, camids=camids,
            query_index=query_index, gallery_index=gallery_index,
            key=np.asarray(json.dumps(key or {}, sort_keys=True)),
            about=np.asarray(json.dumps(about or {}, sort_keys=True)),
            version=np.asarray(CACHE_VERSION),
        )
    logger.info("cached %s features to %s", np.shape(features), path)
    return path


def read_feature_cache(path):
    """Reads an ``.npz`` written by ``save_feature_cache``.

    Returns:
        dict of the arrays plus ``key`` and ``about`` (dicts).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a feature cache, or one of another
            cache version; the message names the file.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"no feature cache at {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path} cannot be read as a feature cache (.npz): {err}") from err
    missing = sorted({*CACHE_ARRAYS, "key", "version"} - set(arrays))
    if missing:
        raise ValueError(f"{path} is not a feature cache: it has no {missing}")
    if int(arrays["version"]) != CACHE_VERSION:
        raise ValueError(
            f"feature cache {path} was written by another nvan-tf (cache version "
            f"{int(arrays['version'])}; this one reads version {CACHE_VERSION}); "
            "recompute it with --model"
        )
    cache = {name: arrays[name] for name in CACHE_ARRAYS}
    cache["key"] = json.loads(str(arrays["key"]))
    cache["about"] = json.loads(str(arrays["about"])) if "about" in arrays else {}
    return cache


def load_feature_cache(path, key=None):
    """``read_feature_cache(path)``, or ``None`` when there is no usable
    cache: no file, an unreadable one, another cache version, or (if
    ``key`` is given) one made by other settings (each logged)."""
    try:
        cache = read_feature_cache(path)
    except FileNotFoundError:
        return None
    except ValueError as err:
        logger.warning("%s; recomputing", err)
        return None
    if key is not None:
        changed = records.differences(cache["key"], key)  # the one "reuse only if it matches" rule
        if changed:
            logger.info("feature cache %s was made with other settings; recomputing:\n%s", path,
                        records.format_differences(changed, "in the cache"))
            return None
    return cache

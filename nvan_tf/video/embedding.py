"""Tracklet embeddings: any model the project loads, or a colour-histogram baseline.

:func:`load_embedder` loads a model with the evaluation's own loader
(``nvan_tf.evaluation.evaluator.load_feature_extractor``: ``.keras``,
``.weights.h5``, an authors' checkpoint, a SavedModel folder, an ONNX /
ONNX int8 file from ``nvan-export``), and :func:`embed_tracklets`
runs the evaluation's own feature extraction over the crops
(``extract_features``: the input pipeline, the test-time sampling, optional
flip averaging). Nothing here re-implements either.

The test-time sampling defaults to the one the model was evaluated with:
the ``sampling`` of a ``results.json`` that ``nvan-evaluate`` wrote beside
the model, else ``rrs`` (the reference's test clip, which ``nvan-train``
evaluates with).

``colour-histogram`` (:class:`ColourHistogramExtractor`) stands in for a
model: the joint RGB histogram of the clip's frames, a baseline that shows
what the re-ID model adds.
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np

from nvan_tf import choices
from nvan_tf.choices import SAMPLING_MODES
from nvan_tf.data.imagenet import IMAGENET_MEAN, IMAGENET_STD

logger = logging.getLogger(__name__)

__all__ = ["BASELINES", "ColourHistogramExtractor", "evaluated_sampling", "load_embedder", "embed_tracklets"]

# --model names that are not files.
BASELINES = choices.EMBEDDING_BASELINES


class ColourHistogramExtractor:
    """The baseline embedding: a joint RGB histogram of every frame of a clip.

    ``bins`` per channel (``bins ** 3`` features), averaged over the clip's
    frames, square-rooted (the Hellinger map, so cosine distance compares
    distributions). Takes the normalised clips the input pipeline makes,
    as a model would.
    """

    description = "colour-histogram baseline"

    def __init__(self, bins=8, seq_len=8, height=128, width=64):
        self.bins, self.seq_len, self.height, self.width = int(bins), int(seq_len), int(height), int(width)

    def __call__(self, clips):
        clips = np.asarray(clips, np.float32)
        rgb = clips * np.asarray(IMAGENET_STD, np.float32) + np.asarray(IMAGENET_MEAN, np.float32)
        levels = np.clip((rgb * self.bins).astype(np.int64), 0, self.bins - 1)
        codes = (levels[..., 0] * self.bins + levels[..., 1]) * self.bins + levels[..., 2]
        codes = codes.reshape(len(clips), -1) + np.arange(len(clips))[:, None] * self.bins ** 3
        counts = np.bincount(codes.ravel(), minlength=len(clips) * self.bins ** 3)
        histograms = counts.reshape(len(clips), -1).astype(np.float32) / codes.shape[1]
        return np.sqrt(histograms)


def evaluated_sampling(model_path):
    """The test-time sampling ``model_path`` was evaluated with (see the module docstring)."""
    folder = model_path if os.path.isdir(model_path) else os.path.dirname(os.path.abspath(model_path))
    results = os.path.join(folder, "results.json")
    if os.path.isfile(results):
        try:
            with open(results, encoding="utf-8") as f:
                sampling = json.load(f).get("sampling")
        except (OSError, ValueError):
            sampling = None
        if sampling in SAMPLING_MODES:
            return sampling
    return "rrs"


def load_embedder(model):
    """A feature extractor for ``--model``: a model file or folder, or ``colour-histogram``."""
    if model in BASELINES:
        return ColourHistogramExtractor()
    if not os.path.exists(model):
        raise FileNotFoundError(f"--model {model}: no such file or folder (or one of {', '.join(BASELINES)})")
    from nvan_tf.evaluation.evaluator import ModelSpec, load_feature_extractor

    return load_feature_extractor(ModelSpec(model))


def embed_tracklets(extractor, tracklets, *, sampling="rrs", batch_size=16, flip=False, verbose=1,
                    batch_norm="model"):
    """(N, D) float32 embeddings of ``tracklets`` (``nvan_tf.data.datasets.Tracklet``
    records whose frames are the crops), by the evaluation's feature extraction
    (``batch_norm``: the BatchNorm statistics, as ``extract_features`` takes them;
    ``camera``: each camera's tracklets with statistics estimated on that camera's)."""
    from nvan_tf.evaluation.features import extract_features

    return extract_features(extractor, tracklets, sampling=sampling, batch_size=batch_size, flip=flip,
                            verbose=verbose, batch_norm=batch_norm)[0]

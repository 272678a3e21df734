"""Evaluation: distances, re-ranking, CMC / mAP / mINP, features and their cache, reports.

- ``distance``: cosine / Euclidean distances in memory-bounded blocks;
- ``reranking``: k-reciprocal re-ranking, average query expansion;
- ``metrics``: ranking metrics of a distance matrix (MARS and market
  protocols) and the one good / junk rule (``match_masks``);
- ``ranking``: ``evaluate_indices``, the one function that ranks and scores
  features (features -> distances -> metrics);
- ``features``: ``extract_features`` (one feature per tracklet, the dense
  average), ``FeatureExtractor`` and the feature cache;
- ``evaluator``: ``model_extractor`` / ``load_feature_extractor`` (every
  model format), the cache keys and whole evaluation runs (what
  ``nvan-evaluate`` runs);
- ``report``: the results table and pictures (CMC, ranked lists, distances,
  training curves).

All but feature extraction are plain Python + NumPy: importing this package
does not import TensorFlow (``extract_features`` and ``model_extractor``
import it when called). The names below are imported on first use, so
``import nvan_tf.evaluation.metrics`` loads the metrics alone.
"""

from nvan_tf import lazy_exports

_EXPORTS = {
    "evaluator": ("EvaluationConfig", "ModelSpec", "RankingConfig", "dataset_key", "feature_cache_key",
                  "format_table", "load_feature_extractor", "model_extractor", "run_evaluation"),
    "features": ("FeatureExtractor", "TrackletAverage", "extract_features", "load_feature_cache",
                 "read_feature_cache", "save_feature_cache"),
    "metrics": ("evaluate_rank", "match_masks"),
    "ranking": ("evaluate_indices", "query_gallery_distance"),
}
__all__ = sorted(name for names in _EXPORTS.values() for name in names)
__getattr__ = lazy_exports(__name__, {name: module for module, names in _EXPORTS.items() for name in names})

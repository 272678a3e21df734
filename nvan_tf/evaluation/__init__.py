"""Evaluation: distances, re-ranking, CMC / mAP / mINP, features and their cache, reports.

- ``distance``: cosine / Euclidean distances in memory-bounded blocks;
- ``reranking``: k-reciprocal re-ranking, average query expansion;
- ``metrics``: ranking metrics of a distance matrix (MARS and market protocols);
- ``evaluator``: feature extraction with its cache and whole evaluation runs
  (what ``nvan-evaluate`` runs);
- ``report``: the results table and pictures (CMC, ranked lists, distances,
  training curves).

All but feature extraction are plain Python + NumPy: importing this package
does not import TensorFlow.
"""

from nvan_tf.evaluation.evaluator import (
    EvaluationConfig,
    FeatureExtractor,
    ModelSpec,
    RankingConfig,
    evaluate_features,
    extract_features,
    format_table,
    load_feature_cache,
    load_feature_extractor,
    run_evaluation,
    save_feature_cache,
)
from nvan_tf.evaluation.metrics import evaluate_indices, evaluate_rank

__all__ = ["EvaluationConfig", "FeatureExtractor", "ModelSpec", "RankingConfig", "evaluate_features",
           "evaluate_indices", "evaluate_rank", "extract_features", "format_table", "load_feature_cache",
           "load_feature_extractor", "run_evaluation", "save_feature_cache"]

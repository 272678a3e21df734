"""``nvan_tf.metrics``: kept for code written before the sub-packages. The
ranking metrics are ``nvan_tf.evaluation.metrics``; ``evaluate_indices``
(features -> distances -> metrics) is ``nvan_tf.evaluation.ranking``."""

from nvan_tf.evaluation.metrics import *  # noqa: F401,F403
from nvan_tf.evaluation.metrics import __all__ as _metrics_names
from nvan_tf.evaluation.ranking import evaluate_indices, query_gallery_distance  # noqa: F401

__all__ = [*_metrics_names, "evaluate_indices", "query_gallery_distance"]

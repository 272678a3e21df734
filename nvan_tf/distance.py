"""``nvan_tf.distance``: deprecated (removed in nvan-tf 0.3), the old path of ``nvan_tf.evaluation.distance``."""

import nvan_tf

nvan_tf._alias(__name__, "nvan_tf.distance")

"""``nvan_tf.visualize``: deprecated (removed in nvan-tf 0.3), the old path of ``nvan_tf.evaluation.report``."""

import nvan_tf

nvan_tf._alias(__name__, "nvan_tf.visualize")

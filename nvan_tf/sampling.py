"""``nvan_tf.sampling``: deprecated (removed in nvan-tf 0.3), the old path of ``nvan_tf.data.sampling``."""

import nvan_tf

nvan_tf._alias(__name__, "nvan_tf.sampling")

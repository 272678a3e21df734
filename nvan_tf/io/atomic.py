"""``nvan_tf.io.atomic``: deprecated (removed in nvan-tf 0.3), the old path of ``nvan_tf.core.atomic``."""

import nvan_tf

nvan_tf._alias(__name__, "nvan_tf.io.atomic")

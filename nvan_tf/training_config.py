"""``nvan_tf.training_config``: deprecated (removed in nvan-tf 0.3), the old path of ``nvan_tf.training.config``."""

import nvan_tf

nvan_tf._alias(__name__, "nvan_tf.training_config")

"""``nvan_tf.video.pipeline``: deprecated (removed in nvan-tf 0.3), the old path of ``nvan_tf.video.stages``."""

import nvan_tf

nvan_tf._alias(__name__, "nvan_tf.video.pipeline")

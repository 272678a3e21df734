"""``nvan_tf.video.metrics``: deprecated (removed in nvan-tf 0.3), the old path of ``nvan_tf.video.track_metrics``."""

import nvan_tf

nvan_tf._alias(__name__, "nvan_tf.video.metrics")

"""``nvan_tf.metrics``: kept for code written before the sub-packages; the module is ``nvan_tf.evaluation.metrics``."""

import sys

from nvan_tf.evaluation import metrics as _module

sys.modules[__name__] = _module  # the same module object under both names

"""``nvan_tf.distance``: kept for code written before the sub-packages; the module is ``nvan_tf.evaluation.distance``."""

import sys

from nvan_tf.evaluation import distance as _module

sys.modules[__name__] = _module  # the same module object under both names

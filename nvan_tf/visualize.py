"""``nvan_tf.visualize``: kept for code written before the sub-packages; the module is ``nvan_tf.evaluation.report``."""

import sys

from nvan_tf.evaluation import report as _module

sys.modules[__name__] = _module  # the same module object under both names

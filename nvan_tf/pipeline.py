"""``nvan_tf.pipeline``: kept for code written before the sub-packages; the module is ``nvan_tf.data.pipeline``."""

import sys

from nvan_tf.data import pipeline as _module

sys.modules[__name__] = _module  # the same module object under both names

"""``nvan_tf.sampling``: kept for code written before the sub-packages; the module is ``nvan_tf.data.sampling``."""

import sys

from nvan_tf.data import sampling as _module

sys.modules[__name__] = _module  # the same module object under both names

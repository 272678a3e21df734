"""``nvan_tf.loading``: kept for code written before the sub-packages; the module is ``nvan_tf.io.loading``."""

import sys

from nvan_tf.io import loading as _module

sys.modules[__name__] = _module  # the same module object under both names

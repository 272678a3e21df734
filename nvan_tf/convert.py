"""``nvan_tf.convert``: kept for code written before the sub-packages; the module is ``nvan_tf.io.convert``."""

import sys

from nvan_tf.io import convert as _module

sys.modules[__name__] = _module  # the same module object under both names

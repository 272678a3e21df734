"""``nvan_tf.layers``: kept for code written before the sub-packages; the module is ``nvan_tf.models.layers``."""

import sys

from nvan_tf.models import layers as _module

sys.modules[__name__] = _module  # the same module object under both names

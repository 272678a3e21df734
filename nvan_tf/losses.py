"""``nvan_tf.losses``: kept for code written before the sub-packages; the module is ``nvan_tf.training.losses``."""

import sys

from nvan_tf.training import losses as _module

sys.modules[__name__] = _module  # the same module object under both names

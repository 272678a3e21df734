"""``nvan_tf.optimizers``: kept for code written before the sub-packages; the module is ``nvan_tf.training.optimizers``."""

import sys

from nvan_tf.training import optimizers as _module

sys.modules[__name__] = _module  # the same module object under both names

"""``nvan_tf.checkpoints``: kept for code written before the sub-packages; the module is ``nvan_tf.training.checkpoints``."""

import sys

from nvan_tf.training import checkpoints as _module

sys.modules[__name__] = _module  # the same module object under both names

"""``nvan_tf.training_config``: kept for code written before the sub-packages; the module is ``nvan_tf.training.config``."""

import sys

from nvan_tf.training import config as _module

sys.modules[__name__] = _module  # the same module object under both names

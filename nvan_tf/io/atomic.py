"""``nvan_tf.io.atomic``: kept for code written before the core layer; the module is ``nvan_tf.core.atomic``."""

import sys

from nvan_tf.core import atomic as _module

sys.modules[__name__] = _module  # the same module object under both names

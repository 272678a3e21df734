"""``nvan_tf.serving``: kept for code written before the sub-packages; the module is ``nvan_tf.deploy.serving``."""

import sys

from nvan_tf.deploy import serving as _module

sys.modules[__name__] = _module  # the same module object under both names

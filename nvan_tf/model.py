"""``nvan_tf.model``: kept for code written before the sub-packages; the module is ``nvan_tf.models.model``."""

import sys

from nvan_tf.models import model as _module

sys.modules[__name__] = _module  # the same module object under both names

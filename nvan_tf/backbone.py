"""``nvan_tf.backbone``: kept for code written before the sub-packages; the module is ``nvan_tf.models.backbone``."""

import sys

from nvan_tf.models import backbone as _module

sys.modules[__name__] = _module  # the same module object under both names

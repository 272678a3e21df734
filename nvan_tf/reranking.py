"""``nvan_tf.reranking``: kept for code written before the sub-packages; the module is ``nvan_tf.evaluation.reranking``."""

import sys

from nvan_tf.evaluation import reranking as _module

sys.modules[__name__] = _module  # the same module object under both names

"""``nvan_tf.datasets``: kept for code written before the sub-packages; the package is
``nvan_tf.data.datasets`` (so ``python -m nvan_tf.datasets.synthetic`` runs its generator)."""

import sys

from nvan_tf.data import datasets as _module

sys.modules[__name__] = _module  # the same package under both names

"""``nvan_tf.tuning``: deprecated (removed in nvan-tf 0.3), the old path of ``nvan_tf.training.tuning``.
``python -m nvan_tf.tuning`` runs its command line."""

import nvan_tf

nvan_tf._alias(__name__, "nvan_tf.tuning")

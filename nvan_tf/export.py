"""``nvan_tf.export``: deprecated (removed in nvan-tf 0.3), the old path of ``nvan_tf.deploy``.
``python -m nvan_tf.export`` runs its command line."""

import nvan_tf

nvan_tf._alias(__name__, "nvan_tf.export")

"""``nvan_tf.profile``: deprecated (removed in nvan-tf 0.3), the old path of ``nvan_tf.models.profile``.
``python -m nvan_tf.profile`` runs its command line."""

import nvan_tf

nvan_tf._alias(__name__, "nvan_tf.profile")

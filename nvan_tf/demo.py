"""``nvan_tf.demo``: deprecated (removed in nvan-tf 0.3), the old path of the demo
command (``cli/demo.py``). ``python -m nvan_tf.demo`` runs its command line."""

import nvan_tf

nvan_tf._alias(__name__, "nvan_tf.demo")

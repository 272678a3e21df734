"""``nvan_tf.demo``: kept for code written before the sub-packages; the module is ``nvan_tf.cli.demo``.
``python -m nvan_tf.demo`` runs ``nvan_tf.cli.demo``."""

import sys

if __name__ == "__main__":
    from nvan_tf.cli.demo import main

    sys.exit(main())

from nvan_tf.cli import demo as _module  # noqa: E402

sys.modules[__name__] = _module  # the same module object under both names

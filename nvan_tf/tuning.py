"""``nvan_tf.tuning``: kept for code written before the sub-packages; the module is ``nvan_tf.training.tuning``.
``python -m nvan_tf.tuning`` runs ``nvan_tf.cli.tune``."""

import sys

if __name__ == "__main__":
    from nvan_tf.cli.tune import main

    sys.exit(main())

from nvan_tf.training import tuning as _module  # noqa: E402

sys.modules[__name__] = _module  # the same module object under both names

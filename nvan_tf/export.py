"""``nvan_tf.export``: kept for code written before the sub-packages; the module is ``nvan_tf.deploy``.
``python -m nvan_tf.export`` runs ``nvan_tf.cli.export``."""

import sys

if __name__ == "__main__":
    from nvan_tf.cli.export import main

    sys.exit(main())

from nvan_tf import deploy as _module  # noqa: E402

sys.modules[__name__] = _module  # the same module object under both names

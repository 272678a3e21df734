"""``nvan_tf.profile``: kept for code written before the sub-packages; the module is ``nvan_tf.models.profile``.
``python -m nvan_tf.profile`` runs ``nvan_tf.cli.profile``."""

import sys

if __name__ == "__main__":
    from nvan_tf.cli.profile import main

    sys.exit(main())

from nvan_tf.models import profile as _module  # noqa: E402

sys.modules[__name__] = _module  # the same module object under both names

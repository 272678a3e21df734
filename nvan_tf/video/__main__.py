"""``python -m nvan_tf.video ...`` is ``nvan-track ...``."""

import sys

from nvan_tf.cli.track import main

if __name__ == "__main__":
    sys.exit(main())

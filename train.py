"""Train NVAN / STE-NVAN: ``python train.py --help`` (the same as ``nvan-train``)."""
import sys

from nvan_tf.cli.train import main

if __name__ == "__main__":
    sys.exit(main())

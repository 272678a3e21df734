"""Evaluate a re-ID model: ``python evaluate.py --help`` (the same as ``nvan-evaluate``)."""
import sys

from nvan_tf.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())

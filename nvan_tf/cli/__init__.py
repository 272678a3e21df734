"""What the command lines share: a quiet TensorFlow start-up, one parser style, errors.

    parser = cli.make_parser("nvan-evaluate", __doc__)   # adds --verbose
    args = parser.parse_args(argv)
    cli.quiet_tensorflow(args.verbose)                    # before TensorFlow is imported
    ...
    except (ValueError, FileNotFoundError) as err:
        return cli.fail(parser, err)                      # "nvan-evaluate: error: ..."

The helpers live in :mod:`nvan_tf.core.console` (the benchmarks and the
demos start through them too). Plain Python: importing this module does not
import TensorFlow.
"""

from nvan_tf.core.console import HelpFormatter, fail, make_parser, quiet_tensorflow  # noqa: F401
from nvan_tf.core.progress import progress_verbosity  # noqa: F401  (the command lines' name for it)

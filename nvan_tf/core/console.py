"""What every command line shares: a quiet TensorFlow start-up, one parser style, errors.

    parser = make_parser("nvan-evaluate", __doc__)   # adds --verbose
    args = parser.parse_args(argv)
    quiet_tensorflow(args.verbose)                    # before TensorFlow is imported
    ...
    except (ValueError, FileNotFoundError) as err:
        return fail(parser, err)                      # "nvan-evaluate: error: ..."

The console scripts (the ``cli`` sub-package), the benchmarks and the demos start
through these. Plain Python: importing this module does not import TensorFlow.
"""

import argparse
import importlib.util
import logging
import os
import sys

__all__ = ["HelpFormatter", "make_parser", "quiet_tensorflow", "fail"]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows every option's default and keeps the description's line breaks.

    ``None`` defaults ("not given": the help text says what happens) and
    ``False`` flags are not shown.
    """

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def make_parser(prog, doc, **kwargs):
    """An ``ArgumentParser`` named after the console script, with ``--verbose``.

    ``doc`` (a module docstring): its first line is the description, the
    rest (examples) the epilog.
    """
    lines = (doc or "").strip().splitlines()
    parser = argparse.ArgumentParser(
        prog=prog, description=lines[0] if lines else None,
        epilog="\n".join(lines[1:]).strip() or None, formatter_class=HelpFormatter, **kwargs,
    )
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's C++ start-up logs and Python warnings")
    return parser


def quiet_tensorflow(verbose=False, start=None):
    """Silences TensorFlow's start-up noise, unless ``verbose``; calls ``start``.

    TensorFlow writes its C++ start-up lines (oneDNN, CUDA drivers, CPU
    instructions, ``failed call to cuInit`` on machines without a GPU)
    through absl before absl logging is initialised, where
    ``TF_CPP_MIN_LOG_LEVEL`` does not reach them. So TensorFlow is imported
    and its devices listed with the process's stderr (file descriptor 2)
    pointed at /dev/null; then stderr is restored, and later C++ logs are
    filtered by ``TF_CPP_MIN_LOG_LEVEL=2`` (errors still shown).
    Call it before anything imports TensorFlow; later calls do nothing.

    ``start``: called (also when ``verbose``) before anything else starts
    TensorFlow's runtime, e.g. making a ``MultiWorkerMirroredStrategy``,
    whose collectives must be configured at start-up.
    """
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if verbose or "tensorflow" in sys.modules or importlib.util.find_spec("tensorflow") is None:
        # shown, already started, or another Keras backend without TensorFlow
        if start is not None:
            start()
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf

        if start is not None:
            start()
        tf.config.list_logical_devices()  # device start-up logs here too
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    tf.get_logger().setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)


def fail(parser, error, code=2):
    """Reports ``error`` as ``prog: error: ...`` on stderr; returns ``code``."""
    print(f"{parser.prog}: error: {error}", file=sys.stderr)
    return code

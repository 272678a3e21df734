"""Progress bars that suit where they are shown (plain Python)."""

import sys

__all__ = ["progress_verbosity"]


def progress_verbosity(verbose, stream=None):
    """The ``keras.utils.Progbar`` verbosity for ``verbose`` (0 or 1).

    Keras' bar redraws itself with backspaces, carriage returns and ANSI
    bold codes even when stdout is a file (it treats any POSIX system as
    interactive). When ``stream`` (default: stdout) is not a terminal, the
    bar is replaced by Keras' one-line summary at the end (verbose 2).
    """
    if not verbose:
        return 0
    stream = sys.stdout if stream is None else stream
    return 1 if getattr(stream, "isatty", lambda: False)() else 2

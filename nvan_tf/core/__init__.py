"""The bottom layer every other layer uses; it imports nothing else of nvan_tf
(but the choice lists, ``nvan_tf.choices``).

- ``atomic``: the one atomic writer every file and folder goes through;
- ``console``: what every command line starts with (a quiet TensorFlow
  start-up, one parser style, one error line);
- ``flags``: command-line flags generated from the config dataclasses they
  fill (every command's, the benchmarks' and the demos');
- ``progress``: the verbosity of progress bars;
- ``digests``: what a file, a folder or a list of frames is, by content
  (size, modification time in nanoseconds, and a content hash where cheap);
- ``records``: the run record, the one rule for "resume (or reuse a cache)
  only if the settings and the inputs' contents match", with one message
  format that lists the differences.

Plain Python.
"""

from nvan_tf.core.digests import content_digest, frames_digest, stat_key
from nvan_tf.core.records import (FEATURE_CACHE_VERSION, RECORD_VERSION, RecordMismatch, differences,
                                  format_differences, require_match, stamped)

__all__ = ["content_digest", "frames_digest", "stat_key", "FEATURE_CACHE_VERSION", "RECORD_VERSION",
           "RecordMismatch", "differences", "format_differences", "require_match", "stamped"]

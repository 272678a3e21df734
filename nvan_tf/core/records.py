"""The run record: resume a run, reuse a cache or a finished stage only if
the settings and the inputs' contents match (plain Python).

A record is a JSON-able dict of settings and input digests
(:mod:`nvan_tf.core.digests`), stamped with :data:`RECORD_VERSION`. Training
(a checkpoint's record), the hyper-parameter search, the evaluation's
feature cache and nvan-track's stages compare the record they find with the
one they would write, through :func:`differences`, and say what differs in
one format (:func:`format_differences`)::

    train: lr: 0.0001 in the run, 0.001 now
    dataset.tracklets: 8 in the run, 10 now

Bump :data:`RECORD_VERSION` when what a record means changes: every older
record then differs, and nothing is reused across the change. The feature
cache's file version (:data:`FEATURE_CACHE_VERSION`) lives here too, so that
every "reuse only if it is still valid" rule has one home.
"""

from __future__ import annotations

import json

__all__ = ["RECORD_VERSION", "FEATURE_CACHE_VERSION", "RecordMismatch", "stamped", "differences", "format_differences", "require_match"]

RECORD_VERSION = 1
# the evaluation's feature cache (.npz); 3: the test set's digest covers the frames' content
FEATURE_CACHE_VERSION = 3


class RecordMismatch(ValueError):
    """A recorded run, cache or stage does not match the settings or inputs now."""


def stamped(record):
    """``record`` with :data:`RECORD_VERSION`: what a writer stores, so that a
    record written under another meaning never matches."""
    return {"record_version": RECORD_VERSION, **record}


def _plain(value):
    """``value`` as it reads back from JSON (tuples become lists, ...)."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _flatten(value, prefix=""):
    if isinstance(value, dict) and value:
        items = {}
        for key in sorted(value):
            items.update(_flatten(value[key], f"{prefix}{key}."))
        return items
    return {prefix[:-1] if prefix.endswith(".") else prefix: value}


def differences(recorded, current, ignore=()):
    """``[(dotted key, recorded value, current value)]`` where the two records
    differ (a key missing on one side shows as None), compared as JSON; keys
    in ``ignore`` (dotted, or a top-level name) are left out."""
    old, new = _flatten(_plain(recorded)), _flatten(_plain(current))
    found = []
    for key in sorted(set(old) | set(new)):
        if key in ignore or key.split(".")[0] in ignore:
            continue
        if old.get(key) != new.get(key):
            found.append((key, old.get(key), new.get(key)))
    return found


def format_differences(found, then="in the run"):
    """One line per difference: ``  key: OLD in the run, NEW now``."""
    return "\n".join(f"  {key}: {old!r} {then}, {new!r} now" for key, old, new in found)


def require_match(what, recorded, current, hint, ignore=(), error=RecordMismatch):
    """Raises ``error`` naming ``what`` and listing the differences, with
    ``hint`` (what to do), unless the records match."""
    found = differences(recorded, current, ignore)
    if found:
        raise error(f"{what} does not match:\n{format_differences(found)}\n{hint}")

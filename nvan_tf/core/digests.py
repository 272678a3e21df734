"""What an input is, by content: the digests run records compare (plain Python).

- :func:`content_digest`: sha256 of a file's bytes, or of a folder's (every
  file's relative path and bytes, in sorted order): for models and other
  files that decide a result, hashing is cheap next to using them;
- :func:`stat_key`: ``[size, st_mtime_ns]`` of a file, or for a folder the
  digest of every file's relative path, size and ``st_mtime_ns``: for inputs
  too large or too many to hash (videos, a dataset's frames), any rewrite
  shows up in the nanosecond modification time, even within the same second
  and at the same size;
- :func:`frames_digest`: sha256 over :func:`stat_key` of many frames, in order.
"""

from __future__ import annotations

import hashlib
import os

__all__ = ["content_digest", "stat_key", "frames_digest"]

_CHUNK = 1 << 20


def _update_with_file(digest, path):
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)


def _files(folder):
    """Every file under ``folder``, as (relative path, full path), sorted."""
    found = []
    for root, subfolders, files in os.walk(folder):
        subfolders.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            found.append((os.path.relpath(full, folder), full))
    return found


def content_digest(path) -> str:
    """sha256 (hex) of a file's content, or of a folder's (a SavedModel):
    every file's path relative to the folder and its content, in sorted
    order; read in 1 MiB chunks."""
    digest = hashlib.sha256()
    if not os.path.isdir(path):
        _update_with_file(digest, path)
        return digest.hexdigest()
    for relative, full in _files(path):
        digest.update(relative.encode() + b"\0")
        _update_with_file(digest, full)
    return digest.hexdigest()


def stat_key(path) -> list:
    """``[size, st_mtime_ns]`` of a file; for a folder, ``["tree", files,
    sha256 of every file's relative path, size and st_mtime_ns]``."""
    if not os.path.isdir(path):
        stat = os.stat(path)
        return [int(stat.st_size), int(stat.st_mtime_ns)]
    digest = hashlib.sha256()
    files = _files(path)
    for relative, full in files:
        stat = os.stat(full)
        digest.update(f"{relative}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return ["tree", len(files), digest.hexdigest()]


def frames_digest(paths) -> str:
    """sha256 (hex) of the size and ``st_mtime_ns`` of every frame, in order:
    frames rewritten under the same names give another digest."""
    digest = hashlib.sha256()
    for path in paths:
        stat = os.stat(path)
        digest.update(f"{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()

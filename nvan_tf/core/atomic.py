"""Atomic writes: a file or folder appears complete under its name, or not at all.

Every writer of the project goes through :func:`atomic_path`:

    with atomic_path("runs/x/model.keras") as tmp:   # .tmp-<pid>-<token>.model.keras
        model.save(tmp)

1. the content is written under a temporary name in the target's own folder
   (``.tmp-<pid>-<token>.<name>``: hidden, and ending in the target's name,
   so suffix checks such as Keras's ``.keras`` still pass);
2. the file (every file of a folder) is flushed to disk (``fsync``);
3. it is renamed onto the target: ``rename(2)`` for a file; for a folder
   that already exists, Linux's ``renameat2(RENAME_EXCHANGE)`` swaps the two
   in one step, so a reader (TF Serving) or a kill at any moment finds the
   old or the new folder, never none;
4. the parent folder is flushed, so the rename itself survives a power loss.

A kill leaves at most a ``.tmp-*`` sibling, which :func:`remove_stale`
deletes (a run calls it on its folders when it starts). Plain Python.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import logging
import os
import secrets
import shutil

logger = logging.getLogger(__name__)

__all__ = ["atomic_path", "write_text", "write_json", "write_bytes", "remove_stale", "fsync_tree", "TEMP_PREFIX"]

TEMP_PREFIX = ".tmp-"
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _fsync_path(path, directory=False):
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path):
    """Flushes ``path`` (a file, or every file and folder under a folder) to disk."""
    if not os.path.isdir(path):
        _fsync_path(path)
        return
    for root, _, files in os.walk(path):
        for name in files:
            _fsync_path(os.path.join(root, name))
        _fsync_path(root, directory=True)


def _exchange(a, b):
    """Swaps two existing paths in one step (Linux ``renameat2``); False where
    the system cannot."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    logger.debug("renameat2 failed (%s)", os.strerror(ctypes.get_errno()))
    return False


def _replace_folder(staged, target):
    if not os.path.lexists(target):
        os.rename(staged, target)
        return
    if _exchange(staged, target):  # staged now holds the old folder
        shutil.rmtree(staged, ignore_errors=True)
        return
    # No atomic exchange here (not Linux, or a file system without it): the
    # old folder is moved aside first; a kill in between leaves it beside.
    old = f"{staged}.old"
    os.rename(target, old)
    os.rename(staged, target)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_path(target, *, folder=False, overwrite=True):
    """Yields a temporary path beside ``target``; on success it is flushed and
    renamed onto ``target``. On an exception nothing is left behind.

    Args:
        target: the file or folder to write.
        folder: the content is a folder (the temporary path is created empty
            for the caller to fill), else a file.
        overwrite: replace an existing ``target``; otherwise refuse it with
            ``FileExistsError`` before anything is written.
    """
    target = os.path.abspath(os.fspath(target))
    parent, name = os.path.split(target)
    if not overwrite and os.path.lexists(target):
        raise FileExistsError(f"{target} already exists; pass overwrite=True (--overwrite) to replace it")
    os.makedirs(parent, exist_ok=True)
    staged = os.path.join(parent, f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}.{name}")
    if folder:
        os.mkdir(staged)
    try:
        yield staged
        if not os.path.lexists(staged):
            raise FileNotFoundError(f"nothing was written to the temporary path of {target}")
        fsync_tree(staged)
        if folder or os.path.isdir(staged):
            _replace_folder(staged, target)
        else:
            os.replace(staged, target)
        _fsync_path(parent, directory=True)
    finally:
        if os.path.isdir(staged):
            shutil.rmtree(staged, ignore_errors=True)
        elif os.path.lexists(staged):
            os.remove(staged)


def write_bytes(path, data):
    """Writes ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
    return path


def write_text(path, text):
    """Writes ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path, value, indent=2):
    """Writes ``value`` as JSON to ``path`` atomically; returns ``path``."""
    return write_text(path, json.dumps(value, indent=indent) + "\n")


def _writer_alive(name):
    """Whether the process that named this temporary file still runs here."""
    pid = name[len(TEMP_PREFIX):].split("-", 1)[0]
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(folder):
    """Deletes the temporary files and folders that killed writers left in
    ``folder`` (not recursively; a writer still running is left alone);
    returns their names."""
    if not os.path.isdir(folder):
        return []
    removed = []
    for name in os.listdir(folder):
        if not name.startswith(TEMP_PREFIX) or _writer_alive(name):
            continue
        path = os.path.join(folder, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.remove(path)
        removed.append(name)
    if removed:
        logger.info("removed %d temporary file(s) a killed run left in %s", len(removed), folder)
    return removed

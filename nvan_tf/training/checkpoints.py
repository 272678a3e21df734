"""Training checkpoints that survive being killed at any moment.

A checkpoint is one ``.npz`` holding every model weight (BN statistics
included) and every optimizer variable (moments, iteration counter, loss
scale), plus ``state.json`` naming it with the run's state (global step,
best score, per-epoch history). The data stream's position is the step: the
input pipeline replays its random draws up to it, so a resumed run sees the
batches an uninterrupted run would.

Writes are atomic: the ``.npz`` is written to a temporary name, flushed to
disk and renamed; only then is ``state.json`` replaced (the same way), and
only then are older checkpoints deleted. A kill at any point leaves the
previous ``state.json`` and the file it names intact.
"""

from __future__ import annotations

import json
import logging
import os
import re

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["save", "restore", "latest", "clear", "atomic_write_text", "CheckpointError"]

STATE = "state.json"
_NAME = re.compile(r"^ckpt-(\d+)\.npz$")
KEEP = 2


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model it is restored into."""


def _fsync_replace(tmp, path):
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path, text):
    """Writes ``text`` to ``path`` through a temporary file and a rename."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    _fsync_replace(tmp, path)


def _variables(model):
    optimizer = model.optimizer
    return list(model.weights), list(optimizer.variables) if optimizer is not None else []


def _numpy(variable):
    return np.asarray(variable.numpy())


def save(folder, model, state):
    """Writes a checkpoint of ``model`` (weights + optimizer) and ``state``
    (a JSON-able dict with ``"step"``); returns its path."""
    os.makedirs(folder, exist_ok=True)
    step = int(state["step"])
    weights, optimizer = _variables(model)
    arrays = {f"w{i}": _numpy(v) for i, v in enumerate(weights)}
    arrays.update({f"o{i}": _numpy(v) for i, v in enumerate(optimizer)})
    manifest = {"weights": [(v.path, list(v.shape)) for v in weights],
                "optimizer": [(v.path, list(v.shape)) for v in optimizer]}
    name = f"ckpt-{step}.npz"
    tmp = os.path.join(folder, f".{name}.tmp{os.getpid()}.npz")
    np.savez(tmp, manifest=np.asarray(json.dumps(manifest)), **arrays)
    _fsync_replace(tmp, os.path.join(folder, name))
    atomic_write_text(os.path.join(folder, STATE), json.dumps({**state, "file": name}, indent=1))
    for old in sorted(_steps(folder))[:-KEEP]:
        os.remove(os.path.join(folder, f"ckpt-{old}.npz"))
    logger.debug("checkpoint %s written", name)
    return os.path.join(folder, name)


def _steps(folder):
    if not os.path.isdir(folder):
        return []
    return [int(m.group(1)) for m in map(_NAME.match, os.listdir(folder)) if m]


def latest(folder):
    """The state dict of the newest complete checkpoint in ``folder``, or None."""
    path = os.path.join(folder, STATE)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path} is unreadable ({err}); remove the folder to start over") from None
    if not os.path.exists(os.path.join(folder, state.get("file", ""))):
        raise CheckpointError(f"{path} names {state.get('file')!r}, which is missing from {folder}")
    return state


def restore(folder, model):
    """Restores the newest checkpoint of ``folder`` into ``model`` (compiled,
    its optimizer built) and returns its state, or None if there is none."""
    state = latest(folder)
    if state is None:
        return None
    path = os.path.join(folder, state.pop("file"))
    weights, optimizer = _variables(model)
    with np.load(path, allow_pickle=False) as data:
        manifest = json.loads(str(data["manifest"]))
        for kind, variables, prefix in (("weights", weights, "w"), ("optimizer", optimizer, "o")):
            saved = manifest[kind]
            shapes = [list(v.shape) for v in variables]
            if len(saved) != len(variables) or [s for _, s in saved] != shapes:
                raise CheckpointError(
                    f"{path} holds {len(saved)} {kind} variables that do not match the model's "
                    f"{len(variables)} (another variant, size or optimizer?)"
                )
            for i, variable in enumerate(variables):
                variable.assign(data[f"{prefix}{i}"])
    return state


def clear(folder):
    """Removes the checkpoints of ``folder`` (a new run in an old folder)."""
    if not os.path.isdir(folder):
        return
    for name in os.listdir(folder):
        if _NAME.match(name) or name == STATE or ".tmp" in name:
            os.remove(os.path.join(folder, name))

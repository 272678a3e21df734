"""Training checkpoints that survive being killed at any moment, restored by name.

A checkpoint is TensorFlow's own (``tf.train.Checkpoint`` written by a
``tf.train.CheckpointManager``: ``ckpt-N.index`` + ``ckpt-N.data-*``, and
the ``checkpoint`` state file naming the newest). It holds:

- every model weight (BN statistics included) and every optimizer variable
  (Adam's moments, the iteration counters, a ``LossScaleOptimizer``'s scale
  and its counter), each under its Keras variable path
  (``ste_nvan/backbone/res4_block5_nonlocal/bn/gamma``,
  ``torch_adam/..._momentum``), so nothing is restored by position;
- ``batches``: the count of batches read, which is the position in the
  sampled data stream (``N`` in ``ckpt-N``), separate from the optimizer's
  count of applied updates (a mixed_float16 loss scaler skips some);
- the run's record (JSON): per-epoch history, best score, the variable
  manifest (path, shape of every saved variable).

A checkpoint whose variables do not match the model by name (another
variant, a renamed layer, another optimizer) is refused listing what is
missing and what is unexpected, before anything is assigned.

Writes are TensorFlow's: data and index are written, then the state file is
replaced atomically, so a kill at any point leaves the previous checkpoint
named and intact. What a killed write leaves behind (files of a checkpoint
the state file does not name, temporary files) is removed by
:meth:`Checkpointer.remove_leftovers` when a run starts. Under
``MultiWorkerMirroredStrategy`` every worker saves (TensorFlow's pattern):
the chief into the folder, the others into a temporary folder of their own
machine (not the shared folder, which only the chief writes), deleted again.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile

import numpy as np

from nvan_tf.core.atomic import remove_stale

logger = logging.getLogger(__name__)

__all__ = ["Checkpointer", "CheckpointError", "latest", "KEEP"]

KEEP = 2
_CHECKPOINT = re.compile(r"^ckpt-(\d+)(?:\.index|\.data-\d+-of-\d+|_temp.*)?$")
_STATE_FILE = "checkpoint"


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model it is restored into."""


def _tf():
    import tensorflow as tf

    return tf


def _manifest(variables):
    return [[v.path, [int(d) for d in v.shape]] for v in variables]


def _keyed(variables, kind):
    keyed = {}
    for v in variables:
        if v.path in keyed:
            raise CheckpointError(f"two {kind} variables share the path {v.path!r}: cannot save them by name")
        keyed[v.path] = v
    return keyed


def _compare(saved, current, kind, path):
    """Problems of restoring ``saved`` [[path, shape]] into ``current`` (same form)."""
    saved, current = {p: s for p, s in saved}, {p: s for p, s in current}
    missing = sorted(set(current) - set(saved))
    unexpected = sorted(set(saved) - set(current))
    shapes = sorted(f"{p}: {saved[p]} in the checkpoint, {current[p]} in the model"
                    for p in set(saved) & set(current) if list(saved[p]) != list(current[p]))
    problems = []
    for title, names in ((f"{kind} variables missing from the checkpoint", missing),
                         (f"unexpected {kind} variables in the checkpoint", unexpected),
                         (f"{kind} variables of another shape", shapes)):
        if names:
            shown = "\n    ".join(names[:20]) + (f"\n    ... and {len(names) - 20} more" if len(names) > 20 else "")
            problems.append(f"{title} ({len(names)}):\n    {shown}")
    return problems


class Checkpointer:
    """Saves and restores one run's model, optimizer, data position and record.

    Args:
        folder: the checkpoint folder (``OUTPUT_DIR/checkpoints``).
        model: the compiled model (its optimizer built).
        chief: whether this process writes into ``folder`` (the others write
            into a temporary folder they delete; see the module docstring).
        keep: how many checkpoints are kept.
    """

    def __init__(self, folder, model, *, chief=True, keep=KEEP):
        tf = _tf()
        self.folder = os.path.abspath(folder)
        self.chief = chief
        self.model = model
        optimizer = model.optimizer
        if optimizer is None:
            raise CheckpointError("the model must be compiled (its optimizer built) before it is checkpointed")
        self._weights = list(model.weights)
        self._optimizer_variables = list(optimizer.variables)
        with tf.init_scope():
            self.batches = tf.Variable(0, dtype=tf.int64, trainable=False, name="batches_read")
            self._record = tf.Variable("{}", dtype=tf.string, trainable=False, name="record")
        self.checkpoint = tf.train.Checkpoint(
            weights=_keyed(self._weights, "model"), optimizer=_keyed(self._optimizer_variables, "optimizer"),
            batches=self.batches, record=self._record)
        self._keep = keep
        self._manager = None

    # -- reading -------------------------------------------------------------------
    @property
    def manager(self):
        if self._manager is None:
            self._manager = _tf().train.CheckpointManager(self.checkpoint, self.folder, max_to_keep=self._keep)
        return self._manager

    def latest_number(self):
        """The data position (batches read) of the newest complete checkpoint, or -1."""
        return latest_number(self.folder)

    def restore(self, number):
        """Restores checkpoint ``ckpt-NUMBER`` of the folder; returns its record
        (``{"batches", "history", "best", ...}``). Refuses, naming them,
        variables that do not match the model by path or shape."""
        tf = _tf()
        path = os.path.join(self.folder, f"ckpt-{int(number)}")
        if not tf.io.gfile.exists(path + ".index"):
            raise CheckpointError(f"{path} does not exist (its index file {path}.index is missing)")
        record = read_record(path)
        problems = _compare(record.get("manifest", {}).get("weights", []), _manifest(self._weights), "model", path)
        problems += _compare(record.get("manifest", {}).get("optimizer", []),
                             _manifest(self._optimizer_variables), "optimizer", path)
        if problems:
            raise CheckpointError(f"{path} does not fit the model (another variant, size, optimizer or "
                                  "precision?):\n  " + "\n  ".join(problems))
        self.checkpoint.restore(path).assert_consumed()
        record["batches"] = int(self.batches.numpy())
        logger.debug("restored %s", path)
        return record

    # -- writing -------------------------------------------------------------------
    def save(self, batches, record, *, worker_index=0):
        """Writes checkpoint ``ckpt-BATCHES`` holding the model, the optimizer,
        ``batches`` and ``record`` (JSON-able: history, best). Refuses
        non-finite weights (nothing non-finite is ever checkpointed).
        Returns the path written (a temporary one on a non-chief worker,
        deleted again)."""
        tf = _tf()
        bad = [v.path for v in self._weights + self._optimizer_variables
               if np.issubdtype(np.dtype(v.dtype), np.floating) and not np.isfinite(v.numpy()).all()]
        if bad:
            raise FloatingPointError(f"{len(bad)} variables are not finite (first: {bad[0]}); not checkpointed")
        self.batches.assign(int(batches))
        manifest = {"weights": _manifest(self._weights), "optimizer": _manifest(self._optimizer_variables)}
        self._record.assign(json.dumps({**record, "batches": int(batches), "manifest": manifest}))
        if self.chief:
            path = self.manager.save(checkpoint_number=int(batches))
            logger.debug("checkpoint %s written", path)
            return path
        scratch = tempfile.mkdtemp(prefix=f"nvan-tf-checkpoint-worker{worker_index}-")
        try:
            manager = tf.train.CheckpointManager(self.checkpoint, scratch, max_to_keep=1)
            return manager.save(checkpoint_number=int(batches))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def remove_leftovers(self):
        """Deletes what killed writes left in the folder: files of checkpoints
        the state file does not name, and temporary files. Returns their names."""
        named = set(_named_numbers(self.folder))
        removed = remove_stale(self.folder)
        if os.path.isdir(self.folder):
            for name in sorted(os.listdir(self.folder)):
                match = _CHECKPOINT.match(name)
                orphan = (match and int(match.group(1)) not in named) or name.startswith(f"{_STATE_FILE}.tmp")
                if orphan:
                    path = os.path.join(self.folder, name)
                    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
                    removed.append(name)
        if removed:
            logger.info("removed %d file(s) a killed checkpoint write left in %s: %s", len(removed),
                        self.folder, ", ".join(removed[:5]))
        return removed


def _named_numbers(folder):
    """Checkpoint numbers the state file of ``folder`` names (newest last)."""
    tf = _tf()
    state = tf.train.get_checkpoint_state(folder) if os.path.isdir(folder) else None
    if state is None:
        return []
    numbers = []
    for path in state.all_model_checkpoint_paths:
        match = re.search(r"ckpt-(\d+)$", path)
        if match:
            numbers.append(int(match.group(1)))
    return numbers


def latest_number(folder):
    """The number (batches read) of the newest complete checkpoint of ``folder``, or -1."""
    numbers = [n for n in _named_numbers(folder)
               if os.path.exists(os.path.join(folder, f"ckpt-{n}.index"))]
    return max(numbers) if numbers else -1


def read_record(path):
    """The record (JSON) stored in checkpoint ``path`` (``.../ckpt-N``)."""
    tf = _tf()
    try:
        reader = tf.train.load_checkpoint(path)
        text = reader.get_tensor("record/.ATTRIBUTES/VARIABLE_VALUE")
    except (tf.errors.OpError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable nvan-tf training checkpoint ({err})") from None
    return json.loads(text.decode("utf-8") if isinstance(text, bytes) else text)


def latest(folder):
    """The record of the newest complete checkpoint of ``folder`` (with
    ``"batches"`` and ``"path"``), or None when there is none."""
    number = latest_number(folder)
    if number < 0:
        return None
    path = os.path.join(os.path.abspath(folder), f"ckpt-{number}")
    record = read_record(path)
    record.pop("manifest", None)
    return {**record, "path": path}

"""Training: the recipe, the task that builds a run, checkpoints, the loop, the search.

- ``config``: :class:`TrainConfig` and the variants' presets (plain Python);
- ``losses``, ``optimizers``: the soft-margin batch-hard triplet and identity
  losses; PyTorch's Adam / SGD updates and the step schedule;
- ``task``: :class:`ReIDTask`, which builds a run's model, recipe
  (:func:`compile_model`), inputs and evaluation from a ``TrainConfig``;
- ``loop``: :func:`train` (what ``nvan-train`` runs);
- ``checkpoints``: resumable training state;
- ``tuning``: the keras-tuner search.

Names load on first use, so ``from nvan_tf.training import TrainConfig``
does not import TensorFlow.
"""

import nvan_tf

_EXPORTS = {
    "TrainConfig": "config", "PRESETS": "config", "ConfigMismatch": "config",
    "ReIDTask": "task", "compile_model": "task", "evaluate_model": "task", "load_dataset": "task",
    "train": "loop", "make_strategy": "loop", "TrainingDiverged": "loop", "WorkerMismatch": "loop",
}
__all__ = sorted(_EXPORTS)
__getattr__ = nvan_tf.lazy_exports(__name__, _EXPORTS)

"""Training: the recipe, the task that builds a run, checkpoints, the loop, the search.

- ``config``: :class:`TrainConfig` and the variants' presets (plain Python);
- ``losses``, ``optimizers``: the soft-margin batch-hard triplet and identity
  losses; PyTorch's Adam / SGD updates and the step schedule;
- ``loop``: :func:`train` (what ``nvan-train`` runs) and :func:`compile_model`;
- ``checkpoints``: resumable training state;
- ``tuning``: the keras-tuner search.

Names load on first use, so ``from nvan_tf.training import TrainConfig``
does not import TensorFlow.
"""

import nvan_tf

_EXPORTS = {
    "TrainConfig": "config", "PRESETS": "config", "ConfigMismatch": "config",
    "compile_model": "loop", "train": "loop", "make_strategy": "loop", "evaluate_model": "loop",
    "load_dataset": "loop", "TrainingDiverged": "loop",
}
__all__ = sorted(_EXPORTS)
__getattr__ = nvan_tf.lazy_exports(__name__, _EXPORTS)

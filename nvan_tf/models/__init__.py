"""The model: custom layers, the ResNet-50 video backbone, the five variants.

``build_model(variant, num_identities, ...)`` builds one of
``nvan_tf.choices.VARIANTS`` as an :class:`NVANModel`. ``float32_copy``,
``dtype_policy``, ``enable_determinism`` and ``config_of`` are what
training, evaluation and export share; ``check_non_local(table)`` is the one
rule for non-local placement tables (``ModelConfig`` and the tuning search
space use it). ``nvan_tf.models.profile`` counts FLOPs. Keras (and so
TensorFlow or another backend) loads when a name is first used.
"""

import nvan_tf

__all__ = ["ModelConfig", "NVANModel", "build_model", "config_of", "dtype_policy", "enable_determinism",
           "float32_copy", "EMBEDDING_DIM", "VARIANTS", "check_non_local"]

__getattr__ = nvan_tf.lazy_exports(__name__, {**{name: "model" for name in __all__},
                                              "check_non_local": "backbone"})

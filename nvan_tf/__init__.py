"""nvan-tf: NVAN and STE-NVAN for video-based person re-identification.

The plain-Python parts (``datasets``, ``sampling``, ``metrics``) import
without TensorFlow; ``build_model`` and the layers load Keras on first use.
"""

__version__ = "0.1.0"

__all__ = ["build_model", "VARIANTS", "__version__"]


def __getattr__(name):
    if name in ("build_model", "VARIANTS"):
        from nvan_tf import model

        return getattr(model, name)
    raise AttributeError(f"module 'nvan_tf' has no attribute {name!r}")

"""Shared test settings.

- TensorFlow's C++ logging is quiet before TensorFlow is imported.
- Tests marked slow run first: under pytest-xdist (``make test``) the
  longest tests then start while every worker is free, not at the end.
- Tests that convert a model to ONNX share the xdist group ``onnx_export``
  (``--dist loadgroup`` runs a group in one worker): tf2onnx peaks near
  11 GB for a ResNet-50, and two at once overran a 24 GB machine.
- After each test Keras's global state is cleared, so a long pytest process
  (one xdist worker runs ~240 tests, many building ResNet-50s) does not grow
  without bound.
"""

import os
import sys

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: file order otherwise


@pytest.fixture(autouse=True)
def _release_keras_state():
    yield
    if "keras" in sys.modules:
        sys.modules["keras"].backend.clear_session(free_memory=False)  # Python frees the rest

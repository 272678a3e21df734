"""Shared test settings.

- TensorFlow's C++ logging is quiet before TensorFlow is imported.
- Order: the ONNX conversions first, then the tests marked slow, then the
  rest. Under pytest-xdist (``make test``) the longest tests start while
  every worker is free, not at the end.
- Tests that convert a model to ONNX share the xdist group ``onnx_export``
  (``--dist loadgroup`` runs a group in one worker, one test at a time):
  tf2onnx peaks at 5-11 GB for a small ResNet-50 video model, and two at
  once, or one in a worker grown large, overran a 24 GB machine.
- After each test Keras's global state is cleared, and after a test that
  took over a second (one that built models) garbage is collected, so a
  long pytest process does not grow without bound.
"""

import os
import sys
import time

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _order(item):
    onnx = any(mark.args == ("onnx_export",) for mark in item.iter_markers("xdist_group"))
    return (not onnx, item.get_closest_marker("slow") is None)


def pytest_collection_modifyitems(items):
    items.sort(key=_order)  # stable: file order within each class of tests


@pytest.fixture(autouse=True)
def _release_keras_state():
    started = time.perf_counter()
    yield
    if "keras" in sys.modules:
        sys.modules["keras"].backend.clear_session(free_memory=time.perf_counter() - started > 1.0)

"""Shared test settings.

- TensorFlow's C++ logging is quiet before TensorFlow is imported, and
  OpenMP's idle threads wait without spinning (``OMP_WAIT_POLICY``).
- Under pytest-xdist (``make test``, ``--dist loadgroup``) each test file
  is one work unit, run in one worker in file order, unless its tests name
  an xdist group: a file's module-scoped fixtures (trained models, worker
  pairs, exports) are built once, not once per worker and again after the
  file's slow tests were moved ahead of its others.
- Order (the Makefile passes ``--no-loadscope-reorder`` so xdist keeps it):
  the files holding tests marked slow first, then the rest, so the longest
  units start while every worker is free, not at the end.
- After each test Keras's global state is cleared, and after a test that
  took over a second (one that built models) garbage is collected, so a
  long pytest process does not grow without bound.
"""

import os
import sys
import time

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Two xdist workers share two cores, and OpenMP's idle threads (PyTorch's, in the reference tests) spin for
# a core the other worker holds. Passive waiting changes no result, only how an idle thread waits: with the
# other core busy, tests/test_torch_reference.py took 44.8 s spinning and 25.3 s waiting passively (23 s
# alone). libgomp reads it when it loads, so it is set before anything imports PyTorch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups into the test ids
def pytest_collection_modifyitems(items):
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}

    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            # the file's own group
            item.add_marker(pytest.mark.xdist_group(item.path.stem))
    items.sort(key=lambda item: item.path not in slow_files)  # stable: file order within each class of files


def pytest_collection_finish(session):
    """Under ``--dist loadgroup``, every test must carry its group in its id
    (xdist writes it there); pytest 9.2 dropped the field xdist 3.8 writes,
    and the groups were silently ignored (setup.py pins pytest below it)."""
    if getattr(session.config.option, "loadgroup", False):  # set by xdist under --dist loadgroup only
        ungrouped = [item.nodeid for item in session.items if "@" not in item.nodeid]
        if ungrouped:
            raise pytest.UsageError(f"--dist loadgroup: {len(ungrouped)} tests lost their xdist group "
                                    f"(e.g. {ungrouped[0]}): pytest and pytest-xdist do not work together here")


@pytest.fixture(autouse=True)
def _release_keras_state():
    started = time.perf_counter()
    yield
    if "keras" in sys.modules:
        sys.modules["keras"].backend.clear_session(free_memory=time.perf_counter() - started > 1.0)

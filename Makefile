# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo demo-video test test-fast install browser clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch is pinned: 2.13.0 is the CPU build here; unpinned pulls GBs of CUDA packages.
	# [export]: ONNX export and ONNX Runtime; [video]: nvan-track (PyAV, trackers, OpenCV).
	$(PY) -m pip install -q -e ".[dev,torch,export,video]"
	touch $(STAMP)

install: $(STAMP)

# Headless Chromium renders the nvan-track report once in the tests; installed from
# Debian's packages where this runs as root with apt (CI), else that one test is skipped.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && (apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium) >/dev/null 2>&1 \
	  || echo "chromium is not installed: the report rendering test will be skipped"; }

# The whole suite (slow tests included), as CI runs it, in $(TEST_WORKERS) pytest-xdist
# processes (README, Tests).
TEST_WORKERS ?= 2
test: $(STAMP) browser
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup tests

# The inner loop: unit tests only (no test marked slow).
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests

demo: $(STAMP)
	$(PY) -m nvan_tf.demo --out demo_output

# nvan-track on a synthetic multi-camera world, with the STE-NVAN `make demo` trained
# (it runs the demo first when its model is missing); report in demo_output/video/track/report/.
demo-video: $(STAMP)
	test -f demo_output/train/model.keras || $(PY) -m nvan_tf.demo --out demo_output
	$(PY) -m nvan_tf.video.demo --out demo_output/video --model demo_output/train/model.keras

clean:
	rm -rf $(VENV) demo_output *.egg-info

# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo demo-video test test-fast install browser footage clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch is pinned: 2.13.0 is the CPU build here; unpinned pulls GBs of CUDA packages.
	# [export]: ONNX export and ONNX Runtime; [video]: nvan-track (PyAV, trackers, OpenCV, SSDLite);
	# [tune-distributed]: grpcio and protobuf pinned for nvan-tune across machines.
	$(PY) -m pip install -q -e ".[dev,torch,export,video,tune-distributed]"
	touch $(STAMP)

install: $(STAMP)

# Headless Chromium renders the nvan-track report once in the tests; installed from
# Debian's packages where this runs as root with apt (CI), else that one test is skipped.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && (apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium) >/dev/null 2>&1 \
	  || echo "chromium is not installed: the report rendering test will be skipped"; }

# Real footage for the nvan-track test: OpenCV's pedestrian sample (vtest.avi, 768x576, 795 frames at
# 10 fps) from Debian's opencv-doc package, downloaded with apt and unpacked (not installed) into
# $(FOOTAGE_DIR); where apt cannot fetch it, the test that needs it is skipped. Never fails the build.
FOOTAGE_DIR ?= $${XDG_CACHE_HOME:-$$HOME/.cache}/nvan-tf
footage:
	@dir="$(FOOTAGE_DIR)"; [ -f "$$dir/vtest.avi" ] || { command -v apt-get >/dev/null 2>&1 && \
	  tmp=$$(mktemp -d) && ( cd "$$tmp" && { apt-get download -qq opencv-doc || { [ "$$(id -u)" = 0 ] && \
	  apt-get update -qq && apt-get download -qq opencv-doc; }; } && dpkg -x opencv-doc_*.deb x && \
	  mkdir -p "$$dir" && cp x/usr/share/doc/opencv-doc/examples/data/vtest.avi "$$dir/vtest.avi" ) \
	  >/dev/null 2>&1; rm -rf "$$tmp"; [ -f "$$dir/vtest.avi" ] || \
	  echo "vtest.avi (opencv-doc) could not be fetched: the real-footage nvan-track test will be skipped"; }

# The whole suite (slow tests included), as CI runs it, in $(TEST_WORKERS) pytest-xdist
# processes (README, Tests).
TEST_WORKERS ?= 2
test: $(STAMP) browser footage
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder --durations=25 tests

# The inner loop: unit tests only (no test marked slow), in the same $(TEST_WORKERS) processes.
test-fast: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder -m "not slow" tests

demo: $(STAMP)
	$(PY) -m nvan_tf.demo --output-dir demo_output

# nvan-track on a synthetic multi-camera world, with the STE-NVAN `make demo` trained
# (it runs the demo first when its model is missing); report in demo_output/video/track/report/.
demo-video: $(STAMP)
	test -f demo_output/train/model.keras || $(PY) -m nvan_tf.demo --output-dir demo_output
	$(PY) -m nvan_tf.video.demo --output-dir demo_output/video --model demo_output/train/model.keras

clean:
	rm -rf $(VENV) demo_output *.egg-info

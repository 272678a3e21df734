# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo demo-video test install clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch is pinned: 2.13.0 is the CPU build here; unpinned pulls GBs of CUDA packages.
	# [export]: ONNX export and ONNX Runtime, so the export tests run too.
	$(PY) -m pip install -q -e ".[dev,torch,export]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(PY) -m nvan_tf.cli.demo --out demo_output

# nvan-track on a synthetic 3-camera world, with the STE-NVAN `make demo` trained
# (it runs the demo first when its model is missing); report in demo_output/video/track/report/.
demo-video: $(STAMP)
	$(PY) -m pip install -q -e ".[video]"
	test -f demo_output/train/model.keras || $(PY) -m nvan_tf.cli.demo --out demo_output
	$(PY) -m nvan_tf.video.demo --out demo_output/video --model demo_output/train/model.keras

clean:
	rm -rf $(VENV) demo_output *.egg-info

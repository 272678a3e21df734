# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

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

clean:
	rm -rf $(VENV) demo_output *.egg-info

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Two CPU threads: the size of the machines CI and newcomers run on.
export OMP_NUM_THREADS ?= 2

.PHONY: venv test demo clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

test: venv
	$(PY) -m pytest -q tests

DEMO := runs/demo

# Train octnet_mini on scikit-learn's digits (no download), export it as a Hub-ready folder, load it back by
# local-dir: name, evaluate it, and classify three validation digits saved as image files.
demo: venv
	$(VENV)/bin/timm-groupoct info octnet_mini --input-size 1 16 16 --num-classes 10
	$(VENV)/bin/timm-groupoct train --model octnet_mini --data digits --img-size 16 --epochs 10 --lr 5e-3 \
		-b 32 --output $(DEMO) --no-progress
	$(VENV)/bin/timm-groupoct export octnet_mini --checkpoint $(DEMO)/best.pth --out $(DEMO)/octnet_mini-digits
	$(VENV)/bin/timm-groupoct eval --model local-dir:$(DEMO)/octnet_mini-digits --data digits
	$(PY) -m timm_groupoct.data $(DEMO)/samples 3
	$(VENV)/bin/timm-groupoct predict --model local-dir:$(DEMO)/octnet_mini-digits --top-k 3 $(DEMO)/samples/*.png

clean:
	rm -rf $(VENV) build *.egg-info

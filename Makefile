PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Two CPU threads: the size of the machines CI and newcomers run on.
export OMP_NUM_THREADS ?= 2

.PHONY: venv test test-heavy demo clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

test: venv
	$(PY) -m pytest -q tests

# every model through every export path at 224, 225, 160 and its default size (hours on 2 cores)
test-heavy: venv
	$(PY) -m pytest -q tests -m heavy

DEMO := runs/demo

# Train octnet_mini on scikit-learn's digits (no download) with the recipe configs/octnet_mini-digits.yaml, export
# it as a Hub-ready folder, load it back by local-dir: name, evaluate it, and classify three saved validation digits.
demo: venv
	@echo '== 1/5 the model: octnet_mini (an Octave-convolution network) for 16x16 grey digits'
	$(VENV)/bin/timm-groupoct info octnet_mini --input-size 1 16 16 --num-classes 10
	@echo '== 2/5 train it on scikit-learn digits (configs/octnet_mini-digits.yaml)'
	$(VENV)/bin/timm-groupoct train --config configs/octnet_mini-digits.yaml --output $(DEMO) --overwrite --no-progress
	@echo '== 3/5 export the best checkpoint as a Hub-ready folder'
	$(VENV)/bin/timm-groupoct export octnet_mini --checkpoint $(DEMO)/best.pth --out $(DEMO)/octnet_mini-digits --overwrite
	@echo '== 4/5 load the folder back by local-dir: name and evaluate it'
	$(VENV)/bin/timm-groupoct eval --model local-dir:$(DEMO)/octnet_mini-digits --data digits
	@echo '== 5/5 classify three validation digits saved as image files'
	$(PY) -m timm_groupoct.data $(DEMO)/samples 3
	$(VENV)/bin/timm-groupoct predict --model local-dir:$(DEMO)/octnet_mini-digits --top-k 3 $(DEMO)/samples/*.png

clean:
	rm -rf $(VENV) build *.egg-info

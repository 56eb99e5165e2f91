# genrec: set-up, build, tests and the demo. `make test` and `make demo` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.14.1

export CUDA_HOME ?= /usr/local/cuda
export MAX_JOBS ?= $(shell nproc)
# Models load from installed packages; never reach for a hub at run time.
export HF_HUB_OFFLINE = 1
export TRANSFORMERS_OFFLINE = 1

EXT_SOURCES := $(wildcard csrc/*.cpp csrc/*.h csrc/*/*.cpp csrc/*/*.h csrc/*/*.cu csrc/*/*.cuh) setup.py

.PHONY: install build test lint demo clean

# A virtual environment in the repo, with torch first (the extension builds against it).
$(VENV)/.deps: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel ninja
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q --no-build-isolation -e ".[test]"
	touch $@ $(VENV)/.build

# Rebuild genrec._C in place (incrementally, through ninja) when its sources change.
$(VENV)/.build: $(VENV)/.deps $(EXT_SOURCES)
	$(BIN)/python setup.py -q build_ext --inplace
	touch $@

install: $(VENV)/.build

build: install

lint: install
	$(BIN)/ruff check .

test: install lint
	$(BIN)/python -m pytest -q

demo: install
	$(BIN)/genrec train --config configs/tiger_beauty.toml --profile cpu --run-dir runs/demo

clean:
	rm -rf build genrec/_C*.so *.egg-info

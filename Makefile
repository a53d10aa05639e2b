# Everything runs from a virtual environment in .venv, made on first use from pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# MNIST: the copy beside the checkout when there is one, else torchvision downloads it here.
DATA_ROOT ?= $(if $(wildcard ../shared/data/mnist/MNIST),$(abspath ../shared/data/mnist),$(HOME)/.cache/inkq/mnist)
export INKQ_DATA_ROOT ?= $(DATA_ROOT)

.PHONY: install demo finetune-demo test lint train bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The main job end to end: Redis (started here unless INKQ_REDIS_URL is set), a model (trained
# if the registry has none), a worker, a few hundred scan-like digits submitted and recognised.
demo: $(STAMP)
	$(BIN)/producer demo

# A new handwriting style: label a few hundred samples, retrain, the running worker switches.
finetune-demo: $(STAMP)
	$(BIN)/producer finetune-demo

# The full base model (about 20 minutes on 2 CPU cores), published to INKQ_REDIS_URL.
train: $(STAMP)
	$(BIN)/trainer train --json

# Every performance figure in BENCHMARKS.md (about 15 minutes on 2 cores); needs a current model.
bench: $(STAMP)
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

# The test command: static checks, then the whole suite (unit and integration, real Redis).
test: lint
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# srsoup — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PIP_NO_CACHE_DIR ?= 1
export HF_HUB_DISABLE_TELEMETRY := 1
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help setup run test test-all lint format train-tiny eval-tiny pin-revisions demo report bench gpu-check clean-venv

help:  ## list the targets
	@grep -hE '^[a-zA-Z0-9_%-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[36m%-22s\033[0m %s\n", $$1, $$2}'

$(BIN)/srsoup: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev,cluster]"
	touch $(BIN)/srsoup

setup: $(BIN)/srsoup  ## create .venv and install srsoup with dev and cluster extras (idempotent; CPU torch 2.13.0 first)

run: setup  ## the default experiment: embedded model, colourfulness vs compressibility, SRSoup over 6 weights (ARGS=overrides)
	$(BIN)/srsoup run $(ARGS)

TEST_JOBS ?= 2
test: setup  ## the test suite without slow and GPU tests (what CI runs; TEST_JOBS=2 xdist workers, 0 for none)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -p no:cacheprovider --durations=8 -n $(TEST_JOBS) --dist loadfile $(ARGS)

test-all: setup  ## every test, slow ones included (GPU tests skip without CUDA)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "" -n $(TEST_JOBS) --dist loadfile $(ARGS)

lint: setup  ## ruff check and format check
	$(BIN)/ruff check srsoup tests scripts
	$(BIN)/ruff format --check srsoup tests scripts

format: setup  ## apply ruff's formatting and import order
	$(BIN)/ruff check --fix srsoup tests scripts
	$(BIN)/ruff format srsoup tests scripts

train-tiny: setup  ## retrain the embedded model from scratch (~36 min on 2 CPU cores) into srsoup/tiny/weights
	$(BIN)/python scripts/train_tiny_t2i.py --out srsoup/tiny/weights $(ARGS)

eval-tiny: setup  ## prompt adherence of the embedded model on held-out and seen combinations
	$(BIN)/python -m srsoup.testing.tiny_eval $(ARGS)

pin-revisions: setup  ## resolve unpinned hub revisions in srsoup/conf to commit ids (needs the hub; ARGS=--write to rewrite)
	$(BIN)/python -m srsoup.pin_revisions $(ARGS)

DEMO_DIR ?= outputs/demo
demo: setup  ## embedded model: srsoup, weighted_sum and none, then the report (CPU, a few minutes; reruns resume)
	$(BIN)/srsoup run -m guidance=srsoup,weighted_sum,none hydra.sweep.dir=$(DEMO_DIR) $(ARGS)
	$(BIN)/srsoup report $(DEMO_DIR)

report: setup  ## report on run or sweep dirs: make report DIRS="outputs/multirun/..."
	$(BIN)/srsoup report $(DIRS)

bench: setup  ## every method at equal query budgets on the embedded model (writes bench/t20; ARGS="--setting paper", flags, overrides)
	$(BIN)/srsoup bench $(ARGS)

gpu-check: setup  ## on a CUDA machine (no network): SD1.5 paper setting + FLUX.1-dev, full size, random weights (< 10 min; writes gpu-check/)
	$(BIN)/python -m srsoup.planning.gpu_check --out gpu-check $(ARGS)

EXPERIMENTS := $(basename $(notdir $(wildcard srsoup/conf/experiment/*.yaml)))
REPRODUCE := $(addprefix reproduce-,$(EXPERIMENTS))
.PHONY: $(REPRODUCE)
reproduce-%: setup  ## paper experiment % on a GPU: srsoup and weighted_sum sweeps, then the report (see srsoup/conf/experiment/)
	$(BIN)/srsoup run -m experiment=$* guidance=srsoup,weighted_sum device=cuda hydra.sweep.dir=outputs/reproduce/$* $(ARGS)
	$(BIN)/srsoup report outputs/reproduce/$*

list-experiments:  ## the paper experiments that reproduce-<name> runs
	@printf '  reproduce-%s\n' $(EXPERIMENTS)

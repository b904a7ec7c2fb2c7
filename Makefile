# The front door: every command in the README is a target here.
#
#   make endpoint   set up, package the example models and serve them as a local SageMaker
#                   multi-model endpoint on http://127.0.0.1:$(PORT)
#   make test       set up, run ruff, mypy and hadolint, then every test
#   make bench      stock vs pre-forked workers, side by side (bench/results/)
#   make soak       a bounded soak (3 min): mixed loads/invokes/unloads through the local
#                   endpoint, then a leak census (.soak/)
#
# Variables: PYTHON (the interpreter that makes the venv), VENV, PORT.

PYTHON ?= python3
VENV ?= .venv
PORT ?= 8080
MODELS_DIR ?= ./models
PYTEST_FLAGS ?= -q
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup package endpoint lint test test-python clean

setup: $(STAMP)

# pip (not uv or poetry): on these machines torch comes from wheels that only pip looks at.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=23"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

EXAMPLES := $(MODELS_DIR)/resnet_18.tar.gz $(MODELS_DIR)/resnet_152.tar.gz

package: $(EXAMPLES)

$(MODELS_DIR)/%.tar.gz: $(STAMP) $(wildcard code/image_classifier/*)
	$(BIN)/mme package $* --output-dir $(MODELS_DIR)

endpoint: $(EXAMPLES)
	$(BIN)/mme endpoint --model-data-url $(MODELS_DIR) --port $(PORT)

PY_TREES = container tests code docker scripts bench soak harness

lint: $(STAMP) hadolint
	$(BIN)/ruff check $(PY_TREES)
	$(BIN)/ruff format --check $(PY_TREES)
	$(BIN)/mypy
	$(BIN)/shellcheck scripts/*.sh .ci/run

# The container suite runs once more with MMS's own workers, so both worker modes stay correct.
test-python: $(STAMP)
	$(BIN)/pytest $(PYTEST_FLAGS)
	$(BIN)/pytest $(PYTEST_FLAGS) tests/container --worker-mode stock

test: lint test-python

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

include mk/image.mk
include mk/bench.mk
include mk/soak.mk

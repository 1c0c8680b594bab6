# Two commands do all the set-up on a fresh machine:
#   make demo   - the main job on the embedded synthetic world
#   make test   - the test suite (what .ci/run runs)
# The dev/CI install pins torch==2.13.0 (the CPU wheel) first, so nothing pulls a multi-GB CUDA
# build; constraints.txt pins everything else to the versions the tests ran with.

PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
RUN_DIR ?= runs/demo
PYTEST_ARGS ?=

.PHONY: install demo demo-quick demo-video base-models test test-slow clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/leaml demo --run-dir $(RUN_DIR)

demo-quick: $(STAMP)
	$(BIN)/leaml demo --run-dir runs/demo-quick --quick

# The video run: the same graph on the synthetic sport world (8-frame clips, easy / medium / hard).
demo-video: $(STAMP)
	$(BIN)/leaml demo --video

# Regenerate the shipped base models (assets/base_models) with demo.yaml's recipe: hours of CPU
# on 2 cores; the manifest records the recipe, sha256 and the quality measured on held-out media.
base-models: $(STAMP)
	$(BIN)/leaml model pretrain --config ray_jobs/configs/demo.yaml --release

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The slow end-to-end tests (minutes); .ci/run runs them after `make test`.
test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ]  # 5 = none selected

clean:
	rm -rf runs .pytest_cache

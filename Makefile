# Two entry points for a fresh machine: `make gate` (the LFW accuracy gate on the CPU reference)
# and `make test` (the whole test suite). Both create .venv and install everything first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SHARED ?= ../shared

# Default the dataset to ../shared when it exists; the environment or the command line wins.
ifneq ($(wildcard $(SHARED)/lfw),)
export LFW_DIR   ?= $(abspath $(SHARED)/lfw)
export LFW_PAIRS ?= $(abspath $(SHARED)/lfw_pairs.txt)
export LFW_BOXES ?= $(abspath $(SHARED)/lfw_mtcnn_boxes.tsv)
endif

PYTEST_ARGS ?=

.PHONY: install gate test accuracy clean
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[export,test]'
	touch $@

gate: install
	$(BIN)/facenet-harness prepare
	$(BIN)/facenet-harness accuracy --backend onnxruntime --precision fp32 --json reports/accuracy-onnxruntime-fp32.json

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

accuracy: install
	$(BIN)/python -m pytest -m accuracy $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) reports .pytest_cache .benchmarks .hypothesis

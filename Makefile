# `make demo`: every pipeline's demo config, end to end, then one results table.
# `make test`: the test suite. `make gpu-check`: the GPU path, on a GPU node. Both create .venv on first use and reuse it while it is up to date.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test gpu-check lint clean-venv

$(STAMP): requirements.txt pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --progress-bar off -r requirements.txt
	$(VENV)/bin/python -m pip install --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/python -m common.demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/python -m pytest

# Every pipeline's short demo on the GPU with mixed precision (a script, not a test; README "GPU check").
gpu-check: $(STAMP)
	$(VENV)/bin/python -m common.gpu_check

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean-venv:
	rm -rf $(VENV)

# `make demo`: every pipeline's demo config, end to end, then one results table.
# `make test`: the test suite. Both create .venv on first use and reuse it while it is up to date.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean-venv

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

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean-venv:
	rm -rf $(VENV)

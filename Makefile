# berth developer entry points. `make` alone prints this list.
.DEFAULT_GOAL := help
SHELL := /bin/bash

VENV := .venv
PYTHON := $(VENV)/bin/python
# Extra pytest arguments, e.g. make test PYTEST_ARGS='-m "not docker" -x'
PYTEST_ARGS ?=

.PHONY: help bootstrap run test lint bench

help:
	@echo "berth make targets:"
	@echo "  make bootstrap  install missing Debian packages and sync .venv with requirements.txt"
	@echo "  make run        start the platform in the foreground (Procfile, local Redis); Ctrl-C stops it"
	@echo "  make test       run the test suite (fixtures start their own redis, dockerd, pebble)"
	@echo "  make lint       ruff check"
	@echo "  make bench      run the benchmarks in bench/ (installs the peers if missing; the soak runs on demand)"

bootstrap:
	@bash scripts/bootstrap.sh

run: bootstrap
	@bash scripts/run.sh

test: bootstrap
	$(PYTHON) -m pytest $(PYTEST_ARGS)

lint:
	$(VENV)/bin/ruff check .

bench:
	@BOOTSTRAP_BENCH=1 bash scripts/bootstrap.sh
	@set -e; ran=0; \
	for f in bench/*.py; do \
		[ -e "$$f" ] || continue; \
		case "$$(basename "$$f")" in _*|conftest.py|soak.py|fixed_rate.py) continue ;; esac; \
		echo "== $$f"; \
		PYTHONPATH="$(CURDIR)" $(PYTHON) "$$f"; \
		ran=1; \
	done; \
	if [ "$$ran" = 0 ]; then echo "no benchmarks in bench/ yet"; fi

# W5XDE — the two set-up commands are `make run` and `make test` (see README.md).
# Each area keeps its own targets in mk/*.mk; this file holds the shared ones.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Heavy builds (Go control plane, base image) are cached outside the work tree so a
# fresh clone on the same machine reuses them.
W5XDE_CACHE ?= $(HOME)/.cache/w5xde
export W5XDE_CACHE

# The slowest tests are listed after every run: the test budget is watched where it is spent.
PYTEST_ARGS ?= --durations=25

.PHONY: help install run test lint format typecheck unit bench clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed ## create .venv and install w5xde with the dev tools

run: install ## run the embedded default: 4 local workers for 30 s
	$(BIN)/w5xde local --workers 4 --duration 30

lint: install ## ruff format check + ruff lint
	$(BIN)/ruff format --check src worker operator tests
	$(BIN)/ruff check src worker operator tests
	$(BIN)/python -P -m w5xde.plugin.krew check

format: install ## apply ruff formatting and safe fixes
	$(BIN)/ruff format src worker operator tests
	$(BIN)/ruff check --fix src worker operator tests

typecheck: install ## mypy strict: api, contract, worker, operator, plugin, local; and bench/
	$(BIN)/mypy
	$(BIN)/mypy bench

unit: install ## only the tests that need neither root, nor helm, nor the test bed
	$(BIN)/pytest -m "not netns and not testbed and not images and not helm" $(PYTEST_ARGS)

include $(wildcard mk/*.mk)

test: install lint typecheck $(TEST_PREREQUISITES) ## everything: lint, types, unit, netns, test bed, images
	$(BIN)/pytest $(PYTEST_ARGS)

clean: ## remove the venv and build output (caches under $(W5XDE_CACHE) stay)
	rm -rf $(VENV) build dist .mypy_cache .ruff_cache .pytest_cache

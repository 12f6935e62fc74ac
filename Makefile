# Gswarm. `make run` and `make test` each set up everything they need on a fresh machine
# (virtual environment, Python packages, Kafka jars); prerequisites are in README.md.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: help venv run test kafka-up kafka-down topics lint bench chaos clean

help:
	@echo "make run        local broker + topics + worker + synthetic feed + web view"
	@echo "make test       the test suite (starts and stops its own broker)"
	@echo "make kafka-up   start the local broker     make kafka-down  stop it"
	@echo "make topics     apply topics/topics.toml   make lint        ruff + mypy"
	@echo "make bench      the benchmark suite        make clean       remove local state"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev,bench]"
	touch $(STAMP)

venv: $(STAMP)

run: venv
	$(BIN)/gswarm kafka fetch
	$(BIN)/gswarm run

test: venv
	$(BIN)/gswarm kafka fetch
	$(BIN)/python -m pytest $(PYTEST_ARGS)

kafka-up: venv
	$(BIN)/gswarm kafka up

kafka-down: venv
	$(BIN)/gswarm kafka down

topics: venv
	$(BIN)/gswarm topics apply

lint: venv
	$(BIN)/ruff check gswarm tests bench
	$(BIN)/mypy

chaos: venv
	$(BIN)/gswarm bench chaos $(CHAOS_ARGS)

bench: venv
	$(BIN)/gswarm kafka fetch
	$(BIN)/gswarm bench $(BENCH_ARGS)

clean:
	-test -x $(BIN)/gswarm && $(BIN)/gswarm kafka down
	rm -rf .gswarm test-output .pytest_cache .mypy_cache .ruff_cache

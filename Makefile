# Two commands on a fresh machine: `make demo` and `make test`. Each creates the
# venv, installs, starts the embedded Kafka broker (idempotent), then runs; `make test`
# starts the embedded Schema Registry too (its tests run against a real one).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install broker registry demo lint test down clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "paystream needs Python >= 3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

broker: install
	$(BIN)/paystream kafka up

registry: install
	$(BIN)/paystream registry up

demo: broker
	$(BIN)/paystream demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint broker registry
	$(BIN)/pytest --junitxml=var/pytest-junit.xml

down:
	$(BIN)/paystream registry down
	$(BIN)/paystream kafka down

clean: down
	rm -rf var

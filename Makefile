# Two commands a newcomer needs: `make demo` (the main job) and `make test` (the suite);
# `make docs` builds the documentation site into docs/_build/html.
# Each creates its own virtual environment in .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test docs lint format bench mutants clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.examples: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[examples]"
	touch $@

$(VENV)/.dev: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[dev,examples]"
	touch $@

$(VENV)/.docs: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[docs]"
	touch $@

demo: $(VENV)/.examples
	$(BIN)/clrjax demo

test: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -n 2 -q

docs: $(VENV)/.docs
	$(BIN)/sphinx-build -W --keep-going -q -b html docs docs/_build/html
	@echo "docs/_build/html/index.html"

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(VENV)/.dev
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python benchmarks/bench_range_test.py

# Every guard clause (an `if` whose body is a single `raise`) must be raised and needed by a test.
mutants: $(VENV)/.dev
	$(BIN)/python scripts/mutants.py --jobs 2

clean:
	rm -rf $(VENV) build *.egg-info docs/_build docs/api

# The README's quick start: `make demo` and `make test`. Both start with `make setup` (idempotent).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint bench clean

setup: $(STAMP)
	@$(BIN)/python -m compileall -q mlops_nb  # PYTHONDONTWRITEBYTECODE=1 here: keep our own imports fast too

$(STAMP): pyproject.toml
	@set -e; \
	if $(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv; then \
		$(PYTHON) -m uv venv --quiet --allow-existing --python $(PYTHON) $(VENV); \
		$(PYTHON) -m uv pip install --quiet --python $(BIN)/python --compile-bytecode -e '.[dev]'; \
	else \
		echo "uv unavailable: falling back to venv + pip"; \
		$(PYTHON) -m venv $(VENV); \
		$(BIN)/python -m pip install --quiet -e '.[dev]'; \
		$(BIN)/python -m compileall -q $(VENV)/lib; \
	fi
	@touch $(STAMP)

demo: setup
	$(BIN)/mlops-nb demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache  # the layers of DESIGN.md: imports point down only, no cycles

test: lint
	$(BIN)/pytest

bench: setup
	$(BIN)/python benchmarks/bench_metadata.py --smoke

clean:
	rm -rf $(VENV) demo-project demo-project.* .pytest_cache

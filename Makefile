# The README's quick start: `make demo` and `make test`. Both start with `make setup` (idempotent).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The install builds the JupyterLab sidebar (labextension/, with jlpm and Node): a changed source reinstalls
LABEXT := labextension/package.json labextension/tsconfig.json $(wildcard labextension/src/*.ts labextension/style/*)

CHROMIUM ?= /usr/bin/chromium

.PHONY: setup demo test lint bench audit clean chromium

setup: $(STAMP)
	@$(BIN)/python -m compileall -q mlops_nb  # PYTHONDONTWRITEBYTECODE=1 here: keep our own imports fast too

$(STAMP): pyproject.toml $(LABEXT)
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

# Two pytest workers, one test file each at a time (module fixtures such as the Binder venv are built once), the
# longest files first (tests/conftest.py):
# most tests wait on kernels, servers and subprocesses, so two workers halve the wall time on two cores.
PYTEST_JOBS ?= 2

test: lint chromium
	$(BIN)/pytest -n $(PYTEST_JOBS) --dist loadfile --no-loadscope-reorder

# The browser test drives Debian's Chromium (never `playwright install`): apt installs it when it is absent and we
# are root or sudo needs no password; otherwise that test is skipped with the reason (it fails under CI=true).
chromium:
	@test -x $(CHROMIUM) || { \
		if [ "$$(id -u)" = 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; else \
			echo "no /usr/bin/chromium and no root: the browser test will be skipped"; exit 0; fi; \
		export DEBIAN_FRONTEND=noninteractive; \
		$$sudo apt-get install -y chromium || { $$sudo apt-get update && $$sudo apt-get install -y chromium; } \
			|| echo "apt could not install chromium: the browser test will be skipped"; }

# A vulnerability report over the installed dependencies (pip-audit against PyPI's data, then OSV): printed, never
# failing the build (.ci/audit.py)
audit: setup
	$(BIN)/python .ci/audit.py

# Every benchmark, one table (benchmarks/RESULTS.md): smoke sizes unless BENCH_SIZE=full (the issues' sizes: long)
bench: setup
	BENCH_SIZE=$${BENCH_SIZE:-smoke} $(BIN)/python benchmarks/run_all.py

clean:  # a demo's deployment keeps serving: stopped first, or its supervisor would outlive its folder
	@for d in demo-project demo-project.*; do \
		if [ -f "$$d/.mlops/deployments/churn.json" ] && [ -x $(BIN)/mlops-nb ]; then \
			$(BIN)/mlops-nb --home "$$d" deploy churn --stop || true; fi; done
	rm -rf $(VENV) demo-project demo-project.* .pytest_cache mlops_nb/labextension labextension/lib labextension/node_modules

# Two commands on a fresh machine (python3 + make): `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean venv

APP_STAMP := $(VENV)/.installed-app

venv: $(STAMP)

# Rebuilt only when pyproject.toml changes: a second `make test` starts at once. The demo
# needs only the agent (APP_STAMP); the tests add their tools and the example plugin.
$(APP_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $(APP_STAMP)

$(STAMP): $(APP_STAMP) tests/example_plugin/pyproject.toml
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/python -m pip install -q -e tests/example_plugin
	touch $(STAMP)

demo: $(APP_STAMP)
	$(BIN)/shopsync demo

# The suite starts a few hundred `shopsync` processes: `compileall` compiles the sources once
# so that none of them compiles them again (they would where PYTHONDONTWRITEBYTECODE is set).
# Unchanged files are only checked; the bytecode goes to the ignored __pycache__ directories.
# Two workers (one per core, at most two: the timing tests are sized for that), each test
# module on one worker so that its shared shops form once (tests/support/cluster.py). The 25
# slowest tests are listed at the end, to keep the suite under its 10 minutes.
PYTEST_WORKERS ?= --numprocesses auto --maxprocesses 2 --dist loadfile

# mypy runs beside the tests, on what of the two cores they leave idle (its 10-20 s were the
# suite's wall time before): its verdict is printed, and fails the run, once they end.
test: $(STAMP)
	$(BIN)/ruff check agent plugins tests bench
	$(BIN)/ruff format --check agent plugins tests bench
	$(BIN)/python -m compileall -q agent plugins tests
	$(BIN)/mypy > $(VENV)/mypy.out 2>&1 & typing=$$!; \
	$(BIN)/python -m pytest -q --durations=25 $(PYTEST_WORKERS); tests=$$?; \
	wait $$typing; typed=$$?; cat $(VENV)/mypy.out; \
	if [ $$typed -ne 0 ]; then echo "mypy: the types do not check (above)"; exit 1; fi; \
	exit $$tests

lint: $(STAMP)
	$(BIN)/ruff check --fix agent plugins tests bench
	$(BIN)/ruff format agent plugins tests bench

clean:
	rm -rf $(VENV) build *.egg-info

# The two commands: `make run` (set up and run the daemon on ~/.coven) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
# The daemon runs with its runtime dependencies only, as the package installs it; the tests,
# soak and benchmarks get their own environment with the test extras.
RUN_VENV ?= .venv/run
VENV ?= .venv/test
BIN := $(VENV)/bin
RUN_BIN := $(RUN_VENV)/bin
ARGS ?=
PYTEST_ARGS ?=

.PHONY: run install test soak bench deb clean

%/bin/python:
	$(PYTHON) -m venv $*
	$*/bin/pip install -q --upgrade pip

$(RUN_VENV)/.deps: pyproject.toml | $(RUN_BIN)/python
	$(RUN_BIN)/pip install -q .
	touch $@

$(VENV)/.deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q '.[test]'
	touch $@

install: $(RUN_VENV)/.deps
	$(RUN_BIN)/pip install -q --no-deps --force-reinstall .

run: install
	$(RUN_BIN)/twistd --nodaemon --pidfile= coven $(ARGS)

test: $(VENV)/.deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

soak: $(VENV)/.deps
	$(BIN)/python -m pytest -m soak $(PYTEST_ARGS)

bench: $(VENV)/.deps
	$(BIN)/python -m tests.bench $(ARGS)

clean:
	rm -rf .venv build dist *.egg-info

# coven_<version>_<arch>.deb in the repo root: Debian's python3 plus a venv under /opt/coven
# (needs python3-venv and network access to PyPI). DEB_PYTHON=/usr/bin/python3.X picks another.
deb:
	packaging/debian/build-deb

# The two commands: `make run` (set up and run the daemon on ~/.coven) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=
PYTEST_ARGS ?=

.PHONY: run install test soak bench deb clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q '.[test]'
	touch $@

install: $(VENV)/.deps
	$(BIN)/pip install -q --no-deps --force-reinstall .

run: install
	$(BIN)/twistd --nodaemon --pidfile= coven $(ARGS)

test: $(VENV)/.deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

soak: $(VENV)/.deps
	$(BIN)/python -m pytest -m soak $(PYTEST_ARGS)

bench: $(VENV)/.deps
	$(BIN)/python -m tests.bench $(ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info

# coven_<version>_<arch>.deb in the repo root: Debian's python3 plus a venv under /opt/coven
# (needs python3-venv and network access to PyPI). DEB_PYTHON=/usr/bin/python3.X picks another.
deb:
	packaging/debian/build-deb

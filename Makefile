# Two commands do all the set-up: `make demo` and `make test`.
# Each creates the virtual environment and installs the locked dependency tree when needed.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LOCK := requirements/lock.txt
# Real EEG: use the MOABB cache beside the checkout when MNE_DATA is not set.
ifeq ($(origin MNE_DATA), undefined)
  ifneq ($(wildcard ../shared/data/mne_data),)
    export MNE_DATA := $(abspath ../shared/data/mne_data)
  endif
endif
export MOABB_DOWNLOAD_PROVIDER ?= upstream

.PHONY: install demo test lint lock docs clean

# The lock pins the whole tree (torch and torchaudio as an exact pair), so a new release of
# any dependency cannot break these commands; the last step fails with one line if they clash.
$(BIN)/eegtransfer: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -r $(LOCK)
	$(BIN)/python -m pip install --no-deps -e .
	$(BIN)/python -m eegtransfer.sysinfo --check
	@touch $@

install: $(BIN)/eegtransfer

demo: install
	$(BIN)/eegtransfer demo $(ARGS)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check eegtransfer tests benchmarks

# Refresh the lock after changing pyproject.toml or requirements/pins.txt (needs uv, in the dev extra).
lock: install
	$(BIN)/uv pip compile pyproject.toml --extra dev --universal --python-version 3.11 \
	    -c requirements/pins.txt -o $(LOCK)

# The documentation site (numpydoc API reference, sphinx-gallery examples shown but not run).
docs: install
	$(BIN)/sphinx-build -W -b html docs docs/_build/html

clean:
	rm -rf $(VENV) eegtransfer-demo .pytest_cache docs/_build docs/generated docs/auto_examples

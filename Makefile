# Two commands do all the set-up: `make demo` and `make test`.
# Each creates the virtual environment and installs the package when needed.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Real EEG: use the MOABB cache beside the checkout when MNE_DATA is not set.
ifeq ($(origin MNE_DATA), undefined)
  ifneq ($(wildcard ../shared/data/mne_data),)
    export MNE_DATA := $(abspath ../shared/data/mne_data)
  endif
endif
export MOABB_DOWNLOAD_PROVIDER ?= upstream

.PHONY: install demo test lint clean

$(BIN)/eegtransfer: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[dev]"
	@touch $@

install: $(BIN)/eegtransfer

demo: install
	$(BIN)/eegtransfer demo $(ARGS)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check eegtransfer tests benchmarks

clean:
	rm -rf $(VENV) eegtransfer-demo .pytest_cache

# `make demo`: set up .venv and run the whole pipeline on synthetic data.
# `make test`: set up .venv if needed and run the test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO ?= demo_out
STAMP := $(VENV)/.installed

.PHONY: demo test setup bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test,pretrained,dicom]'
	touch $(STAMP)

# One pytest-xdist worker per core (at most 4: each builds every session fixture), each pinned to its core
# (tests/conftest.py); worksteal evens out the long tests.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --maxprocesses 4 --dist worksteal

demo: $(STAMP)
	bash scripts/demo.sh $(DEMO)

bench: $(STAMP)
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/inference_throughput.py

clean:
	rm -rf $(DEMO) .pytest_cache

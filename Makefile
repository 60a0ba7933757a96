# Two commands for newcomers: `make demo` and `make test`. Both create .venv when needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PB := $(VENV)/bin/poisonbench
STAMP := $(VENV)/.installed

.PHONY: install demo test lint clean

$(STAMP): pyproject.toml examples/poisonbench-example-poison/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q 'torch==2.14.1' 'torchvision==0.29.1' || $(PY) -m pip install -q torch torchvision
	$(PY) -m pip install -q -e '.[dev,ray]' -e examples/poisonbench-example-poison
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PB) run suites/demo.yaml --out runs/demo
	$(PB) report runs/demo

# One torch thread per process: several tests run subprocesses (Ray workers, kill/resume checks)
# beside pytest itself, and oversubscribed OpenMP threads on 2 cores were measured 10× slower.
test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -p no:cacheprovider tests examples/poisonbench-example-poison/tests

lint: $(STAMP)
	$(VENV)/bin/ruff check benchmark plugins tests

clean:
	rm -rf runs .pytest_cache

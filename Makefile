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

# The demo run resumes if interrupted; its entries and page go to runs/demo/leaderboard, not the repo's.
demo: $(STAMP)
	$(PB) run suites/demo.yaml --out runs/demo
	$(PB) report runs/demo
	$(PB) leaderboard add runs/demo --dir runs/demo/leaderboard --replace --json > /dev/null
	$(PB) leaderboard render --dir runs/demo/leaderboard > /dev/null
	@echo "figures:   runs/demo/figures/ (fig1_speed_vs_peak, fig2_final_vs_peak, fig5_curves; PNG and SVG)"
	@echo "HTML page: runs/demo/leaderboard/index.html"

# One torch thread per process: several tests run subprocesses (Ray workers, kill/resume checks)
# beside pytest itself, and oversubscribed OpenMP threads on 2 cores were measured 10× slower.
test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -p no:cacheprovider tests examples/poisonbench-example-poison/tests

lint: $(STAMP)
	$(VENV)/bin/ruff check benchmark plugins tests

clean:
	rm -rf runs .pytest_cache

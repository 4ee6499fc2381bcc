# Two commands do all the set-up on a fresh machine:
#   make run   - install into .venv (first time) and run the daemon on embedded defaults
#   make test  - install into .venv (first time) and run lint + the whole test suite

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# What the daemon needs (make run), and the test tools on top (make test).
STAMP  := $(VENV)/.installed-stamp
TESTS  := $(VENV)/.installed-test-stamp
TREE   := .typecheck
# The browser of the web console's tests (Debian's package).
CHROMIUM := /usr/bin/chromium

.PHONY: run test lint tree typecheck imports pytest bench bench-engine conformance clean screenshots

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(STAMP)

$(TESTS): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(TESTS)

run: $(STAMP)
	$(BIN)/marmot serve --config configs/marmot.yaml

test: $(TESTS) lint pytest

pytest: $(TESTS) $(CHROMIUM)
	$(BIN)/python -m pytest -q

# The web console's browser tests and screenshots drive Debian's chromium
# (Playwright's own browser download is not used); installed when missing.
$(CHROMIUM):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

# PNGs of every console page from a seeded demo daemon (README "Console").
screenshots: $(TESTS) $(CHROMIUM)
	$(BIN)/python -m tests.integration.console_screenshots docs/screenshots

# mypy and import-linter see the installed layout (marmot.engine, ...) through
# a symlink tree, since the folders are mapped into the package at install time.
# .ci/typecheck_tree.py builds it (tests/test_architecture.py uses it too);
# it is rebuilt on every run, so files moved since the last one are seen.
tree: $(TESTS)
	$(BIN)/python .ci/typecheck_tree.py $(TREE)

lint: $(TESTS)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(MAKE) --no-print-directory typecheck imports

typecheck: tree
	cd $(TREE) && ../$(BIN)/mypy --config-file ../pyproject.toml -p marmot

imports: tree
	cd $(TREE) && ../$(BIN)/lint-imports ../pyproject.toml

conformance: $(STAMP)
	$(BIN)/python ../shared/conformance/compare.py --ours "$(BIN)/marmot replay {scenario}" ../shared/conformance ../shared/conformance/added

# Every row of issue 22's table, measured now (bench/speed.py; minutes).
# make bench BENCH_ARGS="--quick" (smoke run), or "--prefect --fleet" (all).
bench: $(STAMP)
	$(BIN)/python bench/speed.py $(BENCH_ARGS)

bench-engine: $(STAMP)
	$(BIN)/python bench/engine.py

clean:
	rm -rf $(VENV) $(TREE) .pytest_cache .mypy_cache .ruff_cache .hypothesis

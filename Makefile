# EXTRACT platform. `make up` runs the local stack, `make test` runs the suite.
# Both create .venv and install what they need on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Test tools whose pins clash with the platform's, each in its own venv (sslyze: cryptography<47).
TOOLS  := .venv-tools
SSLYZE := $(TOOLS)/sslyze/bin/sslyze

.PHONY: setup up down status test bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,dev]'
	@touch $(STAMP)

up: $(STAMP)
	$(BIN)/extract up

down: $(STAMP)
	$(BIN)/extract down

status: $(STAMP)
	$(BIN)/extract status

$(SSLYZE):
	$(PYTHON) -m venv $(TOOLS)/sslyze
	$(TOOLS)/sslyze/bin/python -m pip install --quiet 'sslyze>=6.1,<7'

# Three pytest-xdist workers, each taking whole files (their module fixtures start stacks): the
# suite mostly waits on servers, so three keep two cores busy. TEST_WORKERS=0 runs it serially.
TEST_WORKERS ?= 3

test: $(STAMP) $(SSLYZE)
	EXTRACT_SSLYZE=$(abspath $(SSLYZE)) $(BIN)/python -m pytest -p no:cacheprovider \
		-n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# Each prints its baseline beside it; bench.gateway also wants Debian's nginx-light (it says
# "NGINX ABSENT" in every table without it). Results go to bench/RESULTS.md by hand.
BENCHES := outbox catalog skystore gateway

bench: $(STAMP)
	@for name in $(BENCHES); do echo "== bench.$$name"; $(BIN)/python -m bench.$$name || exit 1; done

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) $(TOOLS) .extract

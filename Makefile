# keyledger: `make demo` for a tour, `make test` for the whole suite. Needs only python3 (3.11+).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test lint typecheck pytest bench bench-reads bench-backends bench-handover bench-compare crash-soak clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("keyledger needs Python 3.11+") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,postgres]"
	$(BIN)/python -m compileall -q ledger projections cli >/dev/null
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash docs/demo.sh

lint: $(STAMP)
	$(BIN)/ruff check ledger projections cli tests

typecheck: $(STAMP)
	$(BIN)/mypy

# Two workers (pytest-xdist), each with its own PostgreSQL cluster: much of the suite waits
# on child processes and the server, so the two cores are kept busy (8 min serial, about
# 4.5 on two workers).
pytest: $(STAMP)
	$(BIN)/pytest -n 2

test: lint typecheck pytest

clean:
	rm -rf $(VENV) demo .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info

# SIGKILL soak beyond the suite's 20 rounds: ROUNDS=200 by default; a failing round prints
# its seed and a replay command.
ROUNDS ?= 200
crash-soak: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python tests/crash_support.py --rounds $(ROUNDS)

# The write path beside the script a user would write instead (issue 16): keyledger's
# import, two migrations, audit verify and rebuild-projections beside the audited and the
# plain script on the same values, on both backends (tests/benchmarks/writepath.py).
# BENCH_SIZES (default 1000000; 10000 for a quick run), BENCH_BACKENDS (default
# sqlite,postgresql), BENCH_BASELINE=older checkout for the same steps in the same run.
bench: $(STAMP)
	$(BIN)/python -m compileall -q ledger projections cli >/dev/null  # as an installed package would be
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python tests/benchmarks/writepath.py

# Every step at BENCH_SIZES (default 10000,100000,1000000) against issue 4's targets, the
# cold reads among them (tests/benchmarks/bench.py); BENCH_JSON=path also writes JSON.
bench-reads: $(STAMP)
	$(BIN)/python -m compileall -q ledger projections cli >/dev/null
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python tests/benchmarks/bench.py

# SQLite beside PostgreSQL, the concurrent writers among the steps (issue 14;
# tests/benchmarks/backends.py; BENCH_SIZES default 10000,100000).
bench-backends: $(STAMP)
	$(BIN)/python -m compileall -q ledger projections cli >/dev/null
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python tests/benchmarks/backends.py

# What `run`, `secrets export` and `audit log --follow` cost (tests/benchmarks/handover.py).
bench-handover: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python tests/benchmarks/handover.py

# This checkout against an older one, in the same minutes (the machine's speed drifts):
#   git worktree add /tmp/old COMMIT && make bench-compare OLD=/tmp/old [SIZE=1000000] [READS=--reads]
# READS=--reads times only the cold starts; without it, every step of bench.py's job.
SIZE ?= 100000
READS ?=
bench-compare: $(STAMP)
	@test -n "$(OLD)" || { echo "make bench-compare: OLD=path to an older checkout" >&2; exit 2; }
	cd tests/benchmarks && ../../$(BIN)/python compare.py $(READS) "$(abspath $(OLD))" "$(CURDIR)" $(SIZE)

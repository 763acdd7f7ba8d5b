# Every test of seuil: `make test`. Lints first (they are part of the build),
# then the Rust tests (unit, sqllogictest files, properties against the raw
# data, end-to-end with real clients), then the Python clients' tests.

CARGO ?= cargo
PYTHON ?= python3
VENV := .venv

.PHONY: test lint seuil-binary rust-tests python-tests demo

test: lint seuil-binary rust-tests python-tests

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

rust-tests:
	$(CARGO) test --workspace

# The debug `seuil` binary, which the end-to-end tests start as a process.
seuil-binary:
	$(CARGO) build -p seuil-flight-server

# The clients statisticians and BI tools use (ADBC, pyarrow.flight, SQLAlchemy
# through flightsql-dbapi), pinned, in a virtual environment of their own.
$(VENV)/.installed: tests/python/requirements.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
	touch $@

python-tests: $(VENV)/.installed seuil-binary
	$(VENV)/bin/python -m pytest tests/python

demo:
	$(CARGO) run --release -- serve

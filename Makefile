# Every test of seuil: `make test`. Lints first (they are part of the build),
# then the Rust tests (unit, sqllogictest files, properties against the raw
# data, end-to-end with real clients), then the Python clients' tests.

CARGO ?= cargo
PYTHON ?= python3
VENV := .venv

.PHONY: test system-deps lint seuil-binary rust-tests python-tests demo

test: system-deps lint seuil-binary rust-tests python-tests

# opendp (dp mode's noise) links the system OpenSSL for its secure random
# source (OPENSSL_NO_VENDOR, .cargo/config.toml): its headers and pkg-config
# come from Debian's packages, installed when missing.
system-deps:
	@if ! pkg-config --exists openssl 2>/dev/null; then \
		echo "installing libssl-dev and pkg-config (for opendp's OpenSSL)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq libssl-dev pkg-config; \
	fi

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

demo: system-deps
	$(CARGO) run --release -- serve

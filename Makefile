# MOBY — `make demo` runs the whole pipeline, `make test` runs the test suite.
# Both bootstrap what they need: Debian packages (mosquitto, influxdb) and .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast bench lint schema clean

install: $(STAMP)

$(STAMP): pyproject.toml scripts/install-system-deps.sh
	./scripts/install-system-deps.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/moby up

test: install
	$(BIN)/pytest -q

test-fast: install
	$(BIN)/pytest -q tests/unit

bench: install
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/edge.py
	$(BIN)/python bench/devices.py
	$(BIN)/python bench/query.py --json bench/results/query.json

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

schema: install
	$(BIN)/moby schema export docs/schema

clean:
	rm -rf $(VENV) var build *.egg-info

# MOBY — `make demo` runs the whole pipeline, `make test` runs the test suite.
# Both bootstrap what they need: Debian packages (mosquitto, influxdb) and .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast bench lint lock schema clean

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
	$(BIN)/ruff check src tests bench deploy
	$(BIN)/ruff format --check src tests bench deploy
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile

# The container image installs from these locks (exact versions and their hashes): the package's
# dependencies from pyproject.toml with every optional group but dev (the image holds the whole
# package), and what builds its wheel (its [build-system]). Run after changing pyproject.toml;
# pins already in the lock are kept unless LOCK_ARGS=--upgrade.
LOCK := $(BIN)/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes \
	--custom-compile-command "make lock" $(LOCK_ARGS)
IMAGE_EXTRAS = $(shell $(BIN)/python -c 'import tomllib; \
	groups = tomllib.load(open("pyproject.toml", "rb"))["project"].get("optional-dependencies", {}); \
	print(*(f"--extra {g}" for g in groups if g not in ("dev", "all")))')

lock: install
	$(LOCK) $(IMAGE_EXTRAS) pyproject.toml -o requirements/moby.txt
	$(LOCK) --extra edge pyproject.toml -o requirements/edge.txt
	$(BIN)/python -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")' \
		> requirements/build.in
	$(LOCK) requirements/build.in -o requirements/build.txt

schema: install
	$(BIN)/moby schema export docs/schema

clean:
	rm -rf $(VENV) var build *.egg-info

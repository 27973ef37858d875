# The targets people and CI both call. `make run` and `make test` work on a fresh machine
# with Python 3.11+ and make: they build .venv first.
# Another Python gets a venv of its own: `make test PYTHON=python3.13` builds and uses .venv-python3.13
# (or name it: `make test PYTHON=python3.12 VENV=.venv312`).
PYTHON ?= python3
VENV ?= $(if $(filter python3,$(PYTHON)),.venv,.venv-$(notdir $(PYTHON)))
BIN := $(VENV)/bin
CONFIG ?= config.example.yaml

.PHONY: run test check lint typecheck pytest bench redis screenshots clean

$(BIN)/gateway: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,speed]'
	touch $@

# The example config listens on $GATEWAY_HOST: loopback here, since its placeholder secret is refused on any
# other address until MISSIVE_SECRET is set (`make run GATEWAY_HOST=0.0.0.0 MISSIVE_SECRET=...`).
GATEWAY_HOST ?= 127.0.0.1
run: $(BIN)/gateway
	GATEWAY_HOST=$(GATEWAY_HOST) $(BIN)/gateway serve -c $(CONFIG)

test: $(BIN)/gateway
	scripts/ensure-redis
	scripts/ensure-chromium
	$(BIN)/ruff check gateway tests bench
	$(BIN)/mypy
	$(BIN)/pytest -q

check: $(BIN)/gateway
	$(BIN)/gateway check -c $(CONFIG)

bench: $(BIN)/gateway
	$(BIN)/python bench/ingest.py

# The README's pictures of the console: the browser tests, saving their screenshots in docs/console/.
screenshots: $(BIN)/gateway
	CONSOLE_SCREENSHOTS=docs/console $(BIN)/pytest -q tests/web/console/test_browser.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache data

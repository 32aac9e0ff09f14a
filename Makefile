# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run demo serve test lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[perf]'
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test,perf]'
	touch $@ $(VENV)/.installed

# With a configuration ($$SMTPGUARD_CONFIG or /etc/smtpguard/smtpguard.toml) run
# the relay; without one, the self-contained demo on 127.0.0.1:2525.
run: $(VENV)/.installed
	@if [ -n "$$SMTPGUARD_CONFIG" ] || [ -f /etc/smtpguard/smtpguard.toml ]; then \
		exec $(BIN)/smtpguard serve; \
	else \
		exec $(BIN)/smtpguard demo; \
	fi

demo: $(VENV)/.installed
	$(BIN)/smtpguard demo

# The relay with the configuration ($$SMTPGUARD_CONFIG or /etc/smtpguard/smtpguard.toml).
serve: $(VENV)/.installed
	$(BIN)/smtpguard serve

# What `make test` enforces before the tests: lint, formatting, strict types (package, tests, bench).
lint: $(VENV)/.installed-test
	$(BIN)/ruff check smtpguard tests bench
	$(BIN)/ruff format --check smtpguard tests bench
	$(BIN)/mypy

format: $(VENV)/.installed-test
	$(BIN)/ruff check --fix smtpguard tests bench
	$(BIN)/ruff format smtpguard tests bench

test: lint
	$(BIN)/pytest -q

# Issue 15's figures: the Postfix comparison (its peers installed by the
# interop script; root for the private Postfix) and big messages, each
# figure printed beside its target; then the list import and lookup.
bench: $(VENV)/.installed
	bash scripts/install-interop.sh
	@# Issue 15's throughput targets are for the recommended [server] workers (one per core; 2 here).
	$(BIN)/python bench/relay_bench.py --repeat 3 --workers $${BENCH_WORKERS:-2}
	$(BIN)/python bench/gateway_bench.py --repeat 3 --workers $${BENCH_WORKERS:-2}
	$(BIN)/python bench/big_bench.py
	$(BIN)/python bench/import_bench.py
	$(BIN)/python bench/lookup_bench.py
	$(BIN)/python bench/idle_bench.py --sessions $${IDLE_SESSIONS:-10000}
	@# The 10,000,000-entry list (~10 min, 2.5 GB in a temporary folder): `make bench SCALE=1`.
	if [ -n "$(SCALE)" ]; then $(BIN)/python bench/import_bench.py --rows 10000000; fi
	if [ -n "$(SCALE)" ]; then $(BIN)/python bench/lookup_bench.py --sizes 1000,10000000; fi

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache .hypothesis

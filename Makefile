# genofed: `make demo` and `make test` are all a newcomer needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export FLWR_TELEMETRY_ENABLED := 0
export FLWR_DISABLE_UPDATE_CHECK := 1
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION := 1
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: venv demo flwr-run test test-fast bench lint clean system-tools

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,sim]'
	touch $(STAMP)

demo: venv
	$(BIN)/genofed deploy demo --out demo-out

# Plain `flwr run .` on the demo cohort (run `make demo` first), with a project-private
# FLWR_HOME; the local SuperLink that flwr leaves behind is stopped afterwards.
# `flwr run` exits 0 even when the run fails: `make demo` is the checked path.
FLWR_HOME_DIR := $(abspath .flwr-home)
flwr-run: venv
	PATH=$(abspath $(BIN)):$$PATH FLWR_HOME=$(FLWR_HOME_DIR) $(BIN)/flwr run . local \
	  --federation-config "num-supernodes=3 client-resources-num-cpus=1" --stream; \
	status=$$?; pkill -f "$(FLWR_HOME_DIR)/local-superlink" || true; exit $$status

# System programs the tests start: headless Chromium renders the audit report
# (tests/test_report.py); nginx is the coordinator's proxy in the loopback federation
# (tests/test_deploy_local.py).
system-tools:
	command -v chromium >/dev/null || (apt-get update && apt-get install -y --no-install-recommends chromium)
	command -v nginx >/dev/null || test -x /usr/sbin/nginx \
	  || (apt-get update && apt-get install -y --no-install-recommends nginx)

test: venv system-tools
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

test-fast: venv
	$(BIN)/python -m pytest -q -m "not integration"

# Benchmarks -> bench-out/bench.json + a table; the JSON is kept as deploy/bench/bench.json, and the
# README's goals table and deploy/bench/BENCH.md (every table) are regenerated from it. bcftools (Debian's) is the data-path
# baseline; without it (no root for apt-get) its row is recorded as null with the reason.
bench: venv
	command -v bcftools >/dev/null || (apt-get update && apt-get install -y --no-install-recommends bcftools) \
	  || echo "bench: could not install bcftools; its measurement will be null"
	$(BIN)/python -m deploy.bench --out bench-out
	cp bench-out/bench.json deploy/bench/bench.json
	$(BIN)/python -m deploy.bench.readme deploy/bench/bench.json README.md

lint: venv
	$(BIN)/ruff check .

clean:
	rm -rf demo-out bench-out .flwr-home

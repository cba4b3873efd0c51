# eventrouter: every target bootstraps what it needs; a fresh clone needs only
# Python 3.11+ and make.  `make run` starts the server, `make test` runs the suite.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
# Re-install when the project's dependencies change.
STAMP  := $(VENV)/.installed

PROTO_DIR := protos
PROTOS    := $(wildcard $(PROTO_DIR)/eventrouter/v1/*.proto)
GEN_DIR   := client

.DEFAULT_GOAL := help
.PHONY: help venv run test pytest lint typecheck gen proto-lint node-deps clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "eventrouter needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

venv: $(STAMP)  ## create .venv and install the project with its dev tools

run: $(STAMP)  ## start a single-node server on 127.0.0.1:50051
	$(BIN)/eventrouter serve $(ARGS)

gen: $(STAMP)  ## regenerate Python code and .pyi stubs from protos/
	$(PY) scripts/gen_protos.py

node-deps: node_modules/.installed  ## install the npm packages (buf, grpc-js) the suite uses

# Node.js runs buf and the polyglot conformance client.  Without npm (and
# not root to install Debian's nodejs/npm) the stamp is not written and the
# tests that need them skip on a user's machine and fail under CI=true.
node_modules/.installed: package.json package-lock.json
	@if ! command -v npm >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm; \
	fi
	@if command -v npm >/dev/null 2>&1; then \
	  npm ci --no-audit --no-fund --loglevel=error && touch $@; \
	else \
	  echo "node-deps: npm is missing; install Node.js or the buf and polyglot tests are skipped"; \
	fi

proto-lint: node-deps  ## buf lint (STANDARD rules) over protos/
	cd $(PROTO_DIR) && ../node_modules/.bin/buf lint

lint: $(STAMP)  ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: $(STAMP) node-deps browser-deps redis-deps lint  ## the whole suite: lint, types, tests
	$(PY) -m pytest $(PYTEST_ARGS)

clean:  ## remove the virtual environment and caches
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info

# --- long runs and system packages ---
.PHONY: fuzz redis-deps

fuzz: $(STAMP)  ## long Hypothesis fuzzing run against a live server (HYPOTHESIS_FUZZ_EXAMPLES, default 50000)
	HYPOTHESIS_FUZZ_EXAMPLES=$${HYPOTHESIS_FUZZ_EXAMPLES:-50000} $(PY) -m pytest tests/security/test_fuzz.py -q --timeout=0

# The broker and cluster tests start their own redis-server processes.  As root
# it is installed from Debian's package here; otherwise the tests are skipped on
# a user's machine (and fail under CI=true).
redis-deps:  ## install Debian's redis-server for the broker and cluster tests
	@if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then \
	  :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server; \
	else \
	  echo "redis-deps: redis-server is missing; run 'sudo apt-get install redis-server'" \
	    "or the Redis tests are skipped"; \
	fi

# --- contract tooling ---
.PHONY: proto-check docs

proto-check: node-deps  ## buf lint + buf breaking against the released contract (contract/released)
	cd $(PROTO_DIR) && ../node_modules/.bin/buf lint
	cd $(PROTO_DIR) && ../node_modules/.bin/buf breaking --against ../contract/released

docs: $(STAMP)  ## render docs/reference.md from the comments in protos/
	$(PY) scripts/gen_proto_docs.py

# --- operability ---
.PHONY: browser-deps

# The status-page test drives Debian's chromium with playwright-core (never a
# downloaded browser build).  As root (CI, dev containers) it is installed here;
# otherwise the test is skipped on a user's machine and fails under CI=true.
browser-deps:  ## install Debian's chromium for the status-page browser test
	@if [ -x /usr/bin/chromium ]; then \
	  :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	else \
	  echo "browser-deps: /usr/bin/chromium is missing; run 'sudo apt-get install chromium'" \
	    "(Debian/Ubuntu) or the status-page test is skipped"; \
	fi

# --- benchmarks ---
.PHONY: bench bench-quick bench-deps

BENCH_PEER := bench/peers/socketio
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	@touch $@

$(BENCH_PEER)/node_modules/.installed: $(BENCH_PEER)/package.json $(BENCH_PEER)/package-lock.json
	cd $(BENCH_PEER) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

bench-deps: $(BENCH_STAMP) $(BENCH_PEER)/node_modules/.installed node-deps  ## matplotlib, the Socket.IO peer's npm packages, grpc-js (Node subscribers)

bench: bench-deps  ## full benchmark vs Socket.IO and bare grpc.aio (~8-10 min); results in bench/results/
	$(PY) bench/run.py $(BENCH_ARGS)
	@echo "bench: results in bench/results/ (latest.md, latest.json, latest.png)"

bench-quick: bench-deps  ## the benchmark at tiny sizes (what tests/bench runs)
	$(PY) bench/run.py --quick $(BENCH_ARGS)
	@echo "bench-quick: results in bench/results/ (latest.md, latest.json, latest.png)"

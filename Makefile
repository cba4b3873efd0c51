# eventrouter: every target bootstraps what it needs; a fresh clone needs only
# Python 3.11+ and make.  `make run` starts the server, `make test` runs the suite.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
# Re-install when the project's dependencies or their locks change.
STAMP  := $(VENV)/.installed
# Every install comes from the committed locks (requirements/*.txt, pinned and
# hashed; `make lock` regenerates them from pyproject.toml), then the project
# itself with --no-deps: a new release of a dependency never changes a clone.
LOCK   := requirements
PIP_LOCKED := $(PY) -m pip install --quiet --require-hashes --no-deps

# System packages some tests need (redis-server, chromium, nginx, nodejs) come from
# Debian's apt-get when run as root; each install is announced with its size
# first.  `make test APT=no` never installs anything: the tests that need a
# missing package then skip, naming it (under CI=true they fail instead).
APT ?= yes
APT_INSTALL := scripts/apt_install.sh "$(APT)"
# A literal comma, for use inside $(if ...).
comma := ,

PROTO_DIR := protos
PROTOS    := $(wildcard $(PROTO_DIR)/eventrouter/v1/*.proto)
GEN_DIR   := client

.DEFAULT_GOAL := help
.PHONY: help venv run test pytest lint typecheck gen proto-lint node-deps ts-deps ts-gen ts-build ts-check clean lock test-latest

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml $(LOCK)/build.txt $(LOCK)/dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "eventrouter needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(PIP_LOCKED) -r $(LOCK)/build.txt
	$(PIP_LOCKED) -r $(LOCK)/dev.txt
	@# (setuptools warns that every editable install could be shadowed by a folder of the same name.)
	PYTHONWARNINGS=ignore $(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
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
	@if ! command -v npm >/dev/null 2>&1; then \
	  $(APT_INSTALL) node-deps "Node.js and npm (buf, the polyglot tests)" nodejs npm; \
	fi
	@if command -v npm >/dev/null 2>&1; then \
	  npm ci --no-audit --no-fund --loglevel=error && touch $@; \
	else \
	  echo "node-deps: npm is missing; install Node.js or the buf and polyglot tests are skipped"; \
	fi

# The TypeScript client (client/typescript, @eventrouter/client) has its own
# package.json and lock; the suite builds it, lints it and runs its tests
# (tests/polyglot/test_typescript_client.py). Without npm the same skip / CI
# failure rule as node-deps applies.
TS_DIR := client/typescript

ts-deps: $(TS_DIR)/node_modules/.installed  ## install the TypeScript client's npm packages from its lock (npm ci)

$(TS_DIR)/node_modules/.installed: $(TS_DIR)/package.json $(TS_DIR)/package-lock.json
	@if ! command -v npm >/dev/null 2>&1; then \
	  $(APT_INSTALL) ts-deps "Node.js and npm (the TypeScript client)" nodejs npm; \
	fi
	@if command -v npm >/dev/null 2>&1; then \
	  cd $(TS_DIR) && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	else \
	  echo "ts-deps: npm is missing; install Node.js or the TypeScript client tests are skipped"; \
	fi

ts-gen: node-deps ts-deps  ## regenerate the TypeScript code (client/typescript/src/gen) from protos/
	cd $(TS_DIR) && npm run --silent gen

ts-build: ts-deps  ## build the TypeScript client: dist/esm and dist/cjs (strict tsc)
	cd $(TS_DIR) && npm run --silent build

ts-check: ts-deps  ## the TypeScript client's lint and offline tests (make test runs these and its server tests)
	cd $(TS_DIR) && npm run --silent lint && npm test --silent

proto-lint: node-deps  ## buf lint (STANDARD rules) over protos/
	cd $(PROTO_DIR) && ../node_modules/.bin/buf lint

lint: $(STAMP) typecheck  ## ruff (check and format) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)  ## mypy --strict over the code, tests and benchmarks
	$(BIN)/mypy

pytest: $(STAMP)  ## the tests alone (no lint, no system packages); PYTEST_ARGS passes flags
	$(PY) -m pytest $(PYTEST_ARGS)

test: $(STAMP) node-deps ts-deps browser-deps redis-deps nginx-deps lint  ## the whole suite: lint, types, tests (TypeScript client included)
	$(PY) -m pytest $(PYTEST_ARGS)

# The suite against the newest releases pyproject.toml allows, ignoring the
# locks, in its own venv: shows drift before a `make lock --upgrade` (or a
# user installing the library) meets it.  Not part of `make test`.
# (Not an EVENTROUTER_* variable: `serve` refuses settings it does not know.)
LATEST_VENV := .venv-latest
test-latest: node-deps ts-deps browser-deps redis-deps nginx-deps  ## the suite against the newest allowed releases (no locks), in .venv-latest
	rm -rf $(LATEST_VENV)
	$(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/python -m pip install --quiet --upgrade pip setuptools
	$(LATEST_VENV)/bin/python -m pip install --quiet --upgrade -e '.[dev]'
	$(LATEST_VENV)/bin/python -m pip list --format=freeze > $(LATEST_VENV)/resolved.txt
	@echo "test-latest: resolved versions in $(LATEST_VENV)/resolved.txt"
	UNLOCKED_DEPENDENCIES=1 $(LATEST_VENV)/bin/python -m pytest -p no:cacheprovider $(PYTEST_ARGS)

lock: $(STAMP)  ## regenerate requirements/*.txt from pyproject.toml (LOCK_ARGS=--upgrade for the newest pins)
	$(PY) scripts/lock.py $(LOCK_ARGS)

clean:  ## remove the virtual environment and caches
	rm -rf $(VENV) $(LATEST_VENV) node_modules .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info
	rm -rf $(TS_DIR)/node_modules $(TS_DIR)/dist $(TS_DIR)/build

# --- long runs and system packages ---
.PHONY: fuzz redis-deps

fuzz: $(STAMP)  ## long Hypothesis fuzzing run against a live server (HYPOTHESIS_FUZZ_EXAMPLES, default 50000)
	HYPOTHESIS_FUZZ_EXAMPLES=$${HYPOTHESIS_FUZZ_EXAMPLES:-50000} $(PY) -m pytest tests/security/test_fuzz.py -q --timeout=0

# The broker and cluster tests start their own redis-server processes.  As root
# it is installed from Debian's package here; otherwise the tests are skipped on
# a user's machine (and fail under CI=true).
redis-deps:  ## install Debian's redis-server for the broker and cluster tests (APT=no: never)
	@if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then \
	  $(APT_INSTALL) redis-deps "redis-server (about 10 MB; the broker and cluster tests)" redis-server; \
	fi

# --- contract tooling ---
.PHONY: proto-check docs

proto-check: node-deps  ## buf lint + buf breaking against the released contract (contract/released)
	cd $(PROTO_DIR) && ../node_modules/.bin/buf lint
	cd $(PROTO_DIR) && ../node_modules/.bin/buf breaking --against ../contract/released

docs: $(STAMP)  ## render docs/reference.md from the comments in protos/
	$(PY) scripts/gen_proto_docs.py

# --- operability ---
.PHONY: browser-deps nginx-deps

# The status-page test drives Debian's chromium with playwright-core (never a
# downloaded browser build).  As root (CI, dev containers) it is installed here;
# otherwise the test is skipped on a user's machine and fails under CI=true.
browser-deps:  ## install Debian's chromium for the browser tests (APT=no: never)
	@if [ ! -x /usr/bin/chromium ]; then \
	  $(APT_INSTALL) browser-deps "chromium (about 480 MB with its dependencies; the browser tests)" chromium; \
	fi

# The proxy tests (tests/browser/test_proxy.py) put Debian's nginx in front of
# the web listener, with the README's config, for HTTP/2 to browsers.  They run
# their own nginx processes (never the system's service).  As root it is
# installed here; otherwise they are skipped on a user's machine and fail
# under CI=true.
nginx-deps:  ## install Debian's nginx for the HTTP/2 proxy tests (APT=no: never)
	@if [ ! -x /usr/sbin/nginx ]; then \
	  $(APT_INSTALL) nginx-deps "nginx (about 2 MB; the HTTP/2 proxy tests)" nginx; \
	fi

# --- benchmarks ---
.PHONY: bench bench-quick bench-deps

BENCH_PEER := bench/peers/socketio
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP) $(LOCK)/bench.txt
	$(PIP_LOCKED) -r $(LOCK)/bench.txt
	@touch $@

$(BENCH_PEER)/node_modules/.installed: $(BENCH_PEER)/package.json $(BENCH_PEER)/package-lock.json
	cd $(BENCH_PEER) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

bench-deps: $(BENCH_STAMP) $(BENCH_PEER)/node_modules/.installed node-deps  ## matplotlib, the Socket.IO peer's npm packages, grpc-js (Node subscribers)

bench: bench-deps  ## full benchmark vs Socket.IO and bare grpc.aio (~25 min on 2 cores); results in bench/results/
	$(PY) bench/run.py $(BENCH_ARGS)
	@echo "bench: results in bench/results/ (latest.md, latest.json, latest.png)"

bench-quick: bench-deps  ## the benchmark at tiny sizes (what tests/bench runs)
	$(PY) bench/run.py --quick $(BENCH_ARGS)
	@echo "bench-quick: results in bench/results/ (latest.md, latest.json, latest.png)"

# --- packaging and deployment ---
.PHONY: dist image image-test image-deps

dist: $(STAMP)  ## build the sdist and the wheel into dist/ (what tests/packaging/test_dist.py installs)
	rm -rf dist
	$(PY) -m build --no-isolation --outdir dist .
	@ls dist

# The image is built with buildah and run with podman (no Docker engine runs
# on the build machines here; `docker build .` takes the same Dockerfile).
# What works on those machines (Debian 12 VM, root, cgroup v1 with a v2
# mount beside it): runc, since crun refuses that hybrid cgroup layout;
# rlimits no higher than the VM's hard limits, since podman's default nofile
# of 1048576 is refused without CAP_SYS_RESOURCE; the kernel's overlay
# storage driver.  Docker Hub is not reachable there either, so the base is
# built from Debian's packages (scripts/build_base_image.sh, debootstrap);
# elsewhere: make image BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm
IMAGE      ?= localhost/eventrouter:dev
BASE_IMAGE ?= localhost/eventrouter-base:bookworm
CONTAINER_RUNTIME ?= runc
CONTAINER_ULIMITS ?= --ulimit nofile=16384:16384 --ulimit nproc=16384:16384
# A TLS-intercepting proxy's CA reaches pip in the build as a secret (not a layer).
CA_BUNDLE  ?= $(firstword $(wildcard $(PIP_CERT) /etc/ssl/certs/ca-certificates.crt))

image-deps:  ## install Debian's buildah, podman, runc and debootstrap (APT=no: never)
	@if ! command -v buildah >/dev/null 2>&1 || ! command -v podman >/dev/null 2>&1 \
	    || ! command -v runc >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then \
	  $(APT_INSTALL) image-deps "buildah, podman, runc and debootstrap (about 90 MB; make image)" \
	    buildah podman runc debootstrap; \
	fi

image: image-deps  ## build the container image (IMAGE=localhost/eventrouter:dev) with buildah, docker format
	@if [ "$(BASE_IMAGE)" = localhost/eventrouter-base:bookworm ] && ! podman image exists $(BASE_IMAGE); then \
	  scripts/build_base_image.sh $(BASE_IMAGE); \
	fi
	buildah build --layers --format docker --runtime $(CONTAINER_RUNTIME) $(CONTAINER_ULIMITS) \
	  $(if $(CA_BUNDLE),--secret id=ca-bundle$(comma)src=$(CA_BUNDLE)) \
	  --build-arg BASE_IMAGE=$(BASE_IMAGE) --tag $(IMAGE) .

image-test: image $(STAMP)  ## run the image: gRPC health, token -> subscribe -> emit, drain on stop
	PYTHONPATH=. $(PY) scripts/image_test.py $(IMAGE) \
	  --podman "podman --runtime $(CONTAINER_RUNTIME)" --run-flags "$(CONTAINER_ULIMITS)"

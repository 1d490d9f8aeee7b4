# One command to run the system, one to test it. Both set up .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
# What running needs, and what testing needs beside it.
RUN_EXTRAS := --extra api --extra worker
TEST_EXTRAS := $(RUN_EXTRAS) --extra dev
# The serving frameworks bench/peers.py measures the service against (and tests/bench starts).
BENCH_EXTRAS := $(TEST_EXTRAS) --extra bench

.PHONY: setup setup-run run api worker test check lint bench-serve bench-monitoring bench-soak \
	bench-replicas bench-peers lock clean

$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)

# Exactly the versions in uv.lock (uv installs from its cache in seconds where pip takes a
# minute for TensorFlow). --locked: a lock that pyproject.toml has outgrown is an error, not
# a silent re-resolve. --inexact: the two targets share the environment without undoing
# each other.
SYNC := UV_PROJECT_ENVIRONMENT=$(VENV) $(BIN)/uv sync --locked --inexact --compile-bytecode \
	--quiet
# The bench extra's thousands of modules (Kubernetes' client among them) are compiled as they
# are imported, not all up front: the tests import a few of them.
SYNC_AS_IMPORTED := UV_PROJECT_ENVIRONMENT=$(VENV) $(BIN)/uv sync --locked --inexact --quiet

$(VENV)/.run-stamp: pyproject.toml uv.lock | $(BIN)/uv
	$(SYNC) $(RUN_EXTRAS)
	touch $@

$(VENV)/.test-stamp: pyproject.toml uv.lock | $(BIN)/uv
	$(SYNC) $(TEST_EXTRAS)
	$(SYNC_AS_IMPORTED) $(BENCH_EXTRAS)
	touch $@

setup-run: $(VENV)/.run-stamp
setup: $(VENV)/.test-stamp

## uv.lock anew from pyproject.toml, after a change of dependencies.
lock: | $(BIN)/uv
	$(BIN)/uv lock

## The API on http://$${CXR_HOST:-127.0.0.1}:$${CXR_PORT:-8000} and one training worker.
## It holds the terminal (Ctrl-C stops both); TensorFlow's start-up lines stay off it (the CLI
## sets TF_CPP_MIN_LOG_LEVEL=3 unless you set it).
run: $(VENV)/.run-stamp
	CXR_LOG_FORMAT=$${CXR_LOG_FORMAT:-text} $(BIN)/cxr up

api: $(VENV)/.run-stamp
	$(BIN)/cxr serve

worker: $(VENV)/.run-stamp
	$(BIN)/cxr worker

lint: $(VENV)/.test-stamp
	$(BIN)/ruff check .
	$(BIN)/mypy

## Lint, type-check and the whole test suite (needs Redis on 127.0.0.1:6379 for part of it),
## on TEST_WORKERS processes (pytest-xdist; TEST_WORKERS=0 runs it in this one). Three on two
## cores: the service tests spend much of their time waiting on the processes they start.
## One thread per pool: with several processes to a core, pools that spin waste it.
## loadgroup: a module marked xdist_group runs on one worker, which starts its service once;
## the rest go one test at a time in the order tests/conftest.py gives (not reordered).
TEST_WORKERS ?= 3
TEST_THREADS := TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 OMP_NUM_THREADS=1 \
	OPENBLAS_NUM_THREADS=1
PYTEST := TF_CPP_MIN_LOG_LEVEL=2 $(TEST_THREADS) $(BIN)/python -m pytest -n $(TEST_WORKERS) \
	--dist loadgroup --no-loadscope-reorder
test: lint
	$(PYTEST)

## The fast loop while editing: lint, type-check and the tests that run in process, without
## those that start services (integration), train in the test (trains) or need the version the
## suite trains once (trained_version). Not a substitute for `make test`, which CI runs.
check: lint
	$(PYTEST) -m "not integration and not trains and not trained_version"

## /predict against the model's ceiling and a naive server (bench/serve_benchmark.py), then
## INT8 against float32 on a version trained at 224 px (bench/precision_benchmark.py); minutes.
bench-serve: $(VENV)/.test-stamp
	$(BIN)/python bench/serve_benchmark.py
	$(BIN)/python bench/precision_benchmark.py

## The cost of the prediction log and of a shadow version on /predict at 224 px, against the
## same server without them (bench/monitoring_benchmark.py; --redis URL for the log on Redis).
bench-monitoring: $(VENV)/.test-stamp
	$(BIN)/python bench/monitoring_benchmark.py

## The service beside the serving frameworks a team would pick instead (KServe, LitServe,
## BentoML, Triton through PyTriton) on one INT8 copy, one client, the same cores, with the
## runtimes' ceilings measured in the same run (bench/peers.py; PEERS_ARGS="--models DIR
## --version V" for a version at hand, else it trains one); about 25 minutes.
bench-peers: $(VENV)/.test-stamp
	$(BIN)/python bench/peers.py $(PEERS_ARGS)

## Minutes of mixed valid and invalid requests with hot swaps: no 5xx, stable memory (bench/soak.py).
bench-soak: $(VENV)/.test-stamp
	$(BIN)/python bench/soak.py

## Two API replicas on one object-storage registry (moto S3): publish, first serve, hot swaps
## under load at 224 px (bench/replicas.py; needs Redis on 127.0.0.1:6379, uses db 14).
bench-replicas: $(VENV)/.test-stamp
	$(BIN)/python bench/replicas.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

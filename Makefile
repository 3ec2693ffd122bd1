# transferkit: `make demo` shows transfer working offline; `make test` runs the tests.
VENV  ?= .venv
PY    := $(VENV)/bin/python
# PyTorch is installed first, for your platform (a CPU build by default here).
TORCH ?= torch==2.13.0

.PHONY: install demo test lint clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev,onnx]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/transferkit demo --out runs/demo --overwrite

test: install
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache

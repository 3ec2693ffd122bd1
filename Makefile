# transferkit: `make demo` shows transfer working offline; `make test` runs the tests.
VENV  ?= .venv
PY    := $(VENV)/bin/python
# PyTorch and torchvision are installed first, as a pair built for each other (a torchvision
# from PyPI beside another torch build fails to import). This pair runs on the CPU here; for the
# core package alone, `make install TORCH="torch==2.13.0" EXTRAS=dev,onnx` is 5 GB smaller.
TORCH  ?= torch==2.14.1 torchvision==0.29.1
EXTRAS ?= dev,onnx,vision,text,bench

.PHONY: install browser demo test test-slow typecheck lint clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/transferkit demo --out runs/demo --overwrite

# the report test renders in headless Chromium: install it first when it is missing (apt-get;
# as root or with sudo), so `make test` passes on a fresh machine by itself
browser:
	@[ -x /usr/bin/chromium ] || .ci/install-browser.sh

# the default suite skips tests marked slow; `make test-slow` runs only those (CI runs both)
test: install browser
	$(PY) -m pytest -m "not slow"

test-slow: install browser
	$(PY) -m pytest -m slow

# static type check of the package (mypy from the dev extra; settings in pyproject.toml [tool.mypy]; CI runs it)
typecheck: install
	$(VENV)/bin/mypy src

lint: install
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache

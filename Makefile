# Two commands do everything: `make demo` and `make test`. Each creates .venv first if it is missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_OUT ?= runs/demo

.PHONY: demo test lint clean venv

venv: $(VENV)/.installed

# torch==2.13.0 goes in first, and is named again with the extras, so that no other package pulls a multi-GB CUDA
# build. timm (needed by dynamic-network-architectures for its ViTs only) pulls torchvision, whose PyPI wheel is
# built for CUDA torch: with the CPU torch it fails to load and breaks every transformers import, so it is removed.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test,nnunet]' torch==2.13.0
	$(BIN)/python -m pip uninstall --quiet --yes torchvision
	touch $@

demo: $(VENV)/.installed
	$(BIN)/gtgm demo --out $(DEMO_OUT)

# The layering contracts (pyproject.toml, [tool.importlinter]) are checked first: a broken layout fails the tests.
# Two pytest-xdist workers, one torch thread each (tests/conftest.py); the tests that read the shared demo run go to
# one worker (--dist loadgroup), the others are shared out.
test: $(VENV)/.installed
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q --durations=15 -n 2 --dist loadgroup

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) runs .pytest_cache

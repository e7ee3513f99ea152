# Two commands a newcomer needs: `make demo` (the main job) and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench clean arm-check firmware-check
setup: $(STAMP)

# The pinned CPU torch wheel first: plain `torch` would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[train,robot,sim,franka,franka-sim,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m runtime.demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

# aarch64 under QEMU (Pi 4/5 CPU models): offline bundle install, imle-flash, imle-verify's golden vectors,
# x86 vs aarch64 output differences -> benchmarks/results/arm_check.json. Needs root; prints SKIPPED where it cannot run.
arm-check: $(STAMP)
	PYTHON=$(abspath $(BIN))/python benchmarks/arm_check.sh

# The C reference firmware (firmware_bridge/firmware, docs/firmware.md): C codec/core tests, the HIL protocol and
# safety tests against its host build and against the ATmega2560 image in simavr, then the benchmark rows and the
# AVR image's size and cycles. Installs gcc-avr/avr-libc/simavr with apt-get where it can (root); else SKIPPED.
firmware-check: $(STAMP)
	PYTHON=$(abspath $(BIN))/python firmware_bridge/firmware/check.sh

clean:
	rm -rf $(VENV) runs .pytest_cache

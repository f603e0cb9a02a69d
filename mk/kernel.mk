# Vitis RTL kernel for the Alveo U280 and its Yosys resource report (issue 5).
# Included by the main Makefile (-include mk/*.mk); uses its $(PY) and $(VENV_STAMP).

.PHONY: kernel synth

kernel: $(VENV_STAMP)
	$(PY) scripts/make_kernel.py

synth: $(VENV_STAMP)
	$(PY) scripts/synth.py

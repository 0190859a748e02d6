# `make demo` and `make test` work on a fresh machine: each creates .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

$(STAMP): setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: this machine type's pip configuration serves the CPU wheel of 2.13.0,
	# and an unpinned request from another package would pull gigabytes of CUDA packages.
	# Elsewhere, install a CPU build of torch 2.13.0 into .venv before `make`.
	$(BIN)/pip install -q torch==2.13.0
	# The tpu extra (libtpu) lets tests compile for TPU slices; without it those tests are skipped.
	$(BIN)/pip install -q -e '.[test,tpu]' || { $(BIN)/pip install -q -e '.[test]' && \
	  echo "WARNING: the tpu extra (libtpu) could not be installed: the TPU-compile tests in tests/test_compile.py will be SKIPPED" >&2; }
	# timm's declared dependencies include torchvision, which has no CPU build here; ViT needs none of it.
	$(BIN)/pip install -q --no-deps timm
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	# Two workers, a test file each at a time: the suite waits on trainer subprocesses about half
	# the time, so two files in parallel fill both cores (README, Tests: the times measured).
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=25 tests

DEMO := workdirs/mae_demo
# The demo is a CPU run: without this, libtpu (the tpu extra) probes for TPU hosts and says so.
export JAX_PLATFORMS ?= cpu

# Pre-trains MAE on the bundled offline photos, then exports it for timm and Hugging Face.
# Running it again resumes from (or reuses) the finished checkpoint.
demo: $(STAMP)
	$(BIN)/mimjax-train --config configs/mae.py:demo --workdir $(DEMO)
	$(BIN)/mimjax-export --workdir $(DEMO) --format hf --out $(DEMO)/export_hf
	$(BIN)/mimjax-export --workdir $(DEMO) --format timm --out $(DEMO)/export_timm
	@echo
	@echo "Checkpoints:      $(DEMO)/checkpoints"
	@echo "TensorBoard logs: $(DEMO)/tensorboard   ($(BIN)/tensorboard --logdir $(DEMO)/tensorboard)"
	@echo "Metrics:          $(DEMO)/metrics.jsonl"
	@echo "Hugging Face:     $(DEMO)/export_hf   (ViTMAEForPreTraining.from_pretrained, mimjax.load_pretrained)"
	@echo "timm:             $(DEMO)/export_timm (model.safetensors + config.json)"

clean:
	rm -rf $(VENV)

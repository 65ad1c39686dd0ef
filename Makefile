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

# The demo (README): the config's synthetic shapes written to disk as COCO -> train the
# R-FCN-DCN demo config on them with 2 CPU processes (torchrun, DDP over gloo; no evaluation
# of its own) -> export an inference file -> evaluate that file with tools/test.py -> draw the detections of a few val
# images, their deformable sampling points and pooling bins -> print the effective-dilation
# table of the model. Everything goes to DEMO_DIR (deleted first, so a rerun starts over); the
# last step prints where it all is and fails if AP50 < DEMO_MIN_AP50.
DEMO_DIR       ?= out/demo
DEMO_CONFIG    ?= configs/demo/rfcn_dcn_synthetic.yaml
DEMO_MIN_AP50  ?= 40
# Two training processes with one intra-op thread each: on this 2-core machine that trains
# ~1.6x more images per second than one process with 2 threads (most of an iteration is
# small ops and custom kernels that a 2-thread pool barely speeds up), and a thread pool that
# loses a core to another process stalls at every barrier.
DEMO_PROCS     ?= 2
DEMO_THREADS   ?= 1
DEMO_DATA       = $(DEMO_DIR)/data
# Train and evaluate on the files written to disk (the same images as the config's in-memory
# synthetic splits, which `tools/train.py` alone would use).
DEMO_SET = data.train.type=coco data.train.root=$(DEMO_DATA)/train \
           data.train.ann_file=$(DEMO_DATA)/annotations/instances_train.json \
           data.test.type=coco data.test.root=$(DEMO_DATA)/val \
           data.test.ann_file=$(DEMO_DATA)/annotations/instances_val.json
DEMO_RUN = OMP_NUM_THREADS=$(DEMO_THREADS) $(PYTHON)

demo: install
	rm -rf $(DEMO_DIR)
	mkdir -p $(DEMO_DIR)
	date +%s > $(DEMO_DIR)/started_at
	$(PYTHON) tools/make_synthetic.py --format coco --output $(DEMO_DATA) --config $(DEMO_CONFIG)
	$(DEMO_RUN) -m torch.distributed.run --standalone --nproc_per_node $(DEMO_PROCS) \
	    tools/train.py --config $(DEMO_CONFIG) --output-dir $(DEMO_DIR)/train --resume none \
	    --no-eval --set $(DEMO_SET)
	$(DEMO_RUN) tools/export.py --checkpoint $(DEMO_DIR)/train/checkpoints/model_final.pth \
	    --output $(DEMO_DIR)/model.pth
	$(DEMO_RUN) tools/test.py --config $(DEMO_CONFIG) --checkpoint $(DEMO_DIR)/model.pth \
	    --output-dir $(DEMO_DIR)/test --set $(DEMO_SET)
	mkdir -p $(DEMO_DIR)/samples
	cp $$(ls $(DEMO_DATA)/val/*.png | head -n 4) $(DEMO_DIR)/samples/
	$(DEMO_RUN) tools/infer.py --model $(DEMO_DIR)/model.pth --input $(DEMO_DIR)/samples \
	    --output-dir $(DEMO_DIR)/vis --score-thresh 0.5
	$(DEMO_RUN) tools/visualize_offsets.py --model $(DEMO_DIR)/model.pth \
	    --input $(DEMO_DIR)/samples --output-dir $(DEMO_DIR)/offsets
	$(DEMO_RUN) tools/analyze_offsets.py --config $(DEMO_CONFIG) --checkpoint $(DEMO_DIR)/model.pth \
	    --output-dir $(DEMO_DIR)/offsets --max-images 100 --set $(DEMO_SET)
	$(PYTHON) tools/demo_summary.py --demo-dir $(DEMO_DIR) --min-ap50 $(DEMO_MIN_AP50) \
	    --started-at $$(cat $(DEMO_DIR)/started_at)

bench: install
	$(PYTHON) benchmarks/ops.py --output out/bench_ops.json
	$(PYTHON) benchmarks/model.py --device cpu --repeats 1 --output out/bench_model.json

clean:
	rm -rf build dcn_det/*.so *.egg-info

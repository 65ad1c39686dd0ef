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

# The demo (README, issue 5): synthetic shapes written to disk as COCO -> train the R-FCN-DCN
# demo config on them -> export an inference file -> evaluate that file with tools/test.py ->
# draw the detections of a few val images. Everything goes to DEMO_DIR (deleted first, so a
# rerun starts over); the last step prints where it all is and fails if AP50 < DEMO_MIN_AP50.
DEMO_DIR       ?= out/demo
DEMO_CONFIG    ?= configs/demo/rfcn_dcn_synthetic.yaml
DEMO_NUM_TRAIN ?= 2000
DEMO_NUM_VAL   ?= 200
DEMO_MIN_AP50  ?= 60
# One intra-op thread: on a 2-core machine the data-loader worker (and anything else running)
# takes the other core, and a 2-thread OpenMP pool that loses a core to another process
# stalls at every barrier. Measured on the shared dev machine with one other busy process:
# 0.16 s/iteration with 1 thread, 0.26-0.44 s with 2 (and up to 20x slower under heavier
# load). On an otherwise idle machine `make demo DEMO_THREADS=2` may be faster (not measured).
DEMO_THREADS   ?= 1
DEMO_DATA       = $(DEMO_DIR)/data
# Train and evaluate on the files written to disk (same images as the in-memory synthetic
# splits of the config, which `tools/train.py` alone would use).
DEMO_SET = data.train.type=coco data.train.root=$(DEMO_DATA)/train \
           data.train.ann_file=$(DEMO_DATA)/annotations/instances_train.json \
           data.test.type=coco data.test.root=$(DEMO_DATA)/val \
           data.test.ann_file=$(DEMO_DATA)/annotations/instances_val.json
DEMO_RUN = OMP_NUM_THREADS=$(DEMO_THREADS) $(PYTHON)

demo: install
	rm -rf $(DEMO_DIR)
	mkdir -p $(DEMO_DIR)
	date +%s > $(DEMO_DIR)/started_at
	$(PYTHON) tools/make_synthetic.py --format coco --output $(DEMO_DATA) \
	    --num-train $(DEMO_NUM_TRAIN) --num-val $(DEMO_NUM_VAL) --seed 0
	$(DEMO_RUN) tools/train.py --config $(DEMO_CONFIG) --output-dir $(DEMO_DIR)/train \
	    --resume none --set $(DEMO_SET)
	$(DEMO_RUN) tools/export.py --checkpoint $(DEMO_DIR)/train/checkpoints/model_final.pth \
	    --output $(DEMO_DIR)/model.pth
	$(DEMO_RUN) tools/test.py --config $(DEMO_CONFIG) --checkpoint $(DEMO_DIR)/model.pth \
	    --output-dir $(DEMO_DIR)/test --set $(DEMO_SET)
	mkdir -p $(DEMO_DIR)/samples
	cp $$(ls $(DEMO_DATA)/val/*.png | head -n 4) $(DEMO_DIR)/samples/
	$(DEMO_RUN) tools/infer.py --model $(DEMO_DIR)/model.pth --input $(DEMO_DIR)/samples \
	    --output-dir $(DEMO_DIR)/vis --score-thresh 0.5
	$(PYTHON) tools/demo_summary.py --demo-dir $(DEMO_DIR) --min-ap50 $(DEMO_MIN_AP50) \
	    --started-at $$(cat $(DEMO_DIR)/started_at)

bench: install
	$(PYTHON) benchmarks/ops.py --output out/bench_ops.json
	$(PYTHON) benchmarks/model.py --device cpu --repeats 1 --output out/bench_model.json

clean:
	rm -rf build dcn_det/*.so *.egg-info

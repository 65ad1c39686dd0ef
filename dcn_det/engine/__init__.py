"""Training: the loop (``trainer.train``), one step (``train_loop``), resuming, optimisers and
logging. A regular package (not a namespace one), so ``pip install .`` ships it."""

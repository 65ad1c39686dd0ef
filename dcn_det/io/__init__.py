"""Files a model lives in: training checkpoints (``checkpoint``) and inference files
(``model_file``), both sealed with a SHA-256 (``checksum``) and loaded with
``torch.load(weights_only=True)`` only; every file dcn_det writes goes through ``atomic``."""
from dcn_det.io.atomic import WriteError
from dcn_det.io.checkpoint import CheckpointError, Checkpointer, atomic_save, load_file
from dcn_det.io.model_file import (build_inference_model, export_inference_file,
                                   load_inference_file, read_model_file)

__all__ = ["CheckpointError", "Checkpointer", "WriteError", "atomic_save",
           "build_inference_model", "export_inference_file", "load_inference_file", "load_file",
           "read_model_file"]

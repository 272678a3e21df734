"""What ``nvan-export`` does: :class:`ExportConfig` (plain Python, no TensorFlow).

Its fields' metadata holds the help of ``nvan-export``'s flags
(``nvan_tf.core.flags`` generates them); the model fields' flags are the
shared ``ModelShape``'s.
"""

from __future__ import annotations

import dataclasses

from nvan_tf.choices import DATASETS, EXPORT_FORMATS, EXPORT_PRECISIONS

__all__ = ["ExportConfig"]

CALIBRATION, TENSORRT = "int8 calibration", "tensorrt"


@dataclasses.dataclass
class ExportConfig:
    """One export: the model file, the output folder, the format and precision."""

    model: str | None = dataclasses.field(default=None, metadata={
        "help": ".keras file, .weights.h5 or an authors' PyTorch checkpoint (with --variant)", "required": True})
    output_dir: str | None = dataclasses.field(default=None, metadata={
        "help": "output folder: the SavedModel itself (TF Serving: MODEL_BASE/VERSION), or the folder for "
                "model*.onnx and model.PRECISION.plan", "required": True})
    format: str = dataclasses.field(default="savedmodel", metadata={
        "help": "SavedModel for TF Serving, ONNX (+ ONNX Runtime int8), TensorRT engine", "choices": EXPORT_FORMATS})
    precision: str = dataclasses.field(default="fp32", metadata={
        "help": "onnx and tensorrt; a SavedModel is fp32", "choices": EXPORT_PRECISIONS})
    overwrite: bool = dataclasses.field(default=False, metadata={"help": "replace existing outputs"})
    # the model (checked against what the file records; flags: ModelShape's)
    variant: str | None = None
    num_identities: int | None = None
    seq_len: int | None = None
    height: int | None = None
    width: int | None = None
    stripes: int | None = None
    stage_blocks: tuple | None = None
    calibration_data: str | None = dataclasses.field(default=None, metadata={
        "help": "dataset root; clips of its train split", "group": CALIBRATION})
    calibration_dataset: str = dataclasses.field(default="mars", metadata={
        "help": "reader for --calibration-data", "choices": DATASETS, "group": CALIBRATION})
    calibration_batches: int = dataclasses.field(default=8, metadata={
        "help": "batches of clips calibrated on", "group": CALIBRATION})
    calibration_batch_size: int = dataclasses.field(default=4, metadata={
        "help": "clips per calibration batch", "group": CALIBRATION})
    check_clips: int = dataclasses.field(default=8, metadata={
        "help": "clips of other tracklets, never calibrated on, that int8 is checked on", "group": CALIBRATION})
    opt_batch: int = dataclasses.field(default=4, metadata={
        "help": "batch the engine is tuned for", "group": TENSORRT})
    max_batch: int = dataclasses.field(default=16, metadata={
        "help": "largest batch the engine takes", "group": TENSORRT})

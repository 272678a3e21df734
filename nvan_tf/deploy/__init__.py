"""Deployment: SavedModel signatures, ONNX (fp32 / fp16 / int8), TensorRT engines,
and the TF Serving client with its gallery of embeddings.

Every exported form maps a clip to the same thing: ``"embedding"``, float32
``(batch, 2048)``, the **L2-normalised** BN-neck feature. Importing this
package does not import TensorFlow (the exporters import it when called).
"""

from nvan_tf.choices import EXPORT_FORMATS as FORMATS
from nvan_tf.choices import EXPORT_PRECISIONS as PRECISIONS
from nvan_tf.deploy.onnx import (
    ONNX_OPSET,
    QUANTIZATION_TARGETS,
    calibration_clips,
    compare_onnx,
    convert_onnx_fp16,
    export_onnx,
    onnx_session,
    quantize_onnx,
)
from nvan_tf.deploy.saved_model import EMBEDDING, SIGNATURES, export_saved_model
from nvan_tf.deploy.serving import Gallery, Match, ServingClient, ServingError
from nvan_tf.deploy.tensorrt import TensorRTUnavailableError, build_tensorrt_engine, tensorrt_unavailable_reason

__all__ = [
    "EMBEDDING", "FORMATS", "PRECISIONS", "SIGNATURES", "ONNX_OPSET", "QUANTIZATION_TARGETS",
    "export_saved_model", "export_onnx", "onnx_session", "compare_onnx", "calibration_clips",
    "quantize_onnx", "convert_onnx_fp16", "TensorRTUnavailableError", "tensorrt_unavailable_reason",
    "build_tensorrt_engine", "Gallery", "Match", "ServingClient", "ServingError",
]

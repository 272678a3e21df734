"""TensorRT engines from the exported ONNX graphs (TensorRT >= 11: strongly
typed networks, so an engine computes in the precision its ONNX graph states).

TF-TRT is gone from TensorFlow >= 2.18, so ONNX is the route. Where there is
no NVIDIA GPU or no TensorRT, :func:`tensorrt_unavailable_reason` says why.
"""

from __future__ import annotations

import ctypes
import logging
import os

from nvan_tf.core.atomic import atomic_path

logger = logging.getLogger(__name__)

__all__ = ["TensorRTUnavailableError", "tensorrt_unavailable_reason", "build_tensorrt_engine"]


class TensorRTUnavailableError(RuntimeError):
    """No NVIDIA GPU or no TensorRT here."""


def _cuda_gpu_problem() -> str | None:
    """``None`` if the CUDA driver sees a GPU, else what is missing."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return "no NVIDIA GPU driver (libcuda.so.1 cannot be loaded)"
    status = cuda.cuInit(0)
    if status != 0:
        return f"the CUDA driver found no usable GPU (cuInit error {status})"
    count = ctypes.c_int(0)
    if cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value < 1:
        return "the CUDA driver reports no GPU"
    return None


def tensorrt_unavailable_reason() -> str | None:
    """``None`` where an engine can be built, else why not (GPU and package)."""
    problems = []
    gpu = _cuda_gpu_problem()
    if gpu:
        problems.append(gpu)
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        problems.append("the tensorrt Python package is not installed (pip install 'nvan-tf[tensorrt]')")
    return "; ".join(problems) or None


def build_tensorrt_engine(onnx_path, engine_path, *, min_batch: int = 1, opt_batch: int = 4,
                          max_batch: int = 16, workspace_gib: float = 4.0,
                          overwrite: bool = False) -> str:
    """Builds a serialized TensorRT engine (``.plan``) from an ONNX model.

    TensorRT >= 11 networks are strongly typed: the engine's precision is
    the ONNX graph's (fp32 from :func:`export_onnx`, fp16 from
    :func:`convert_onnx_fp16`, int8 from ``quantize_onnx(...,
    target="tensorrt")``). One optimisation profile covers batches
    ``min_batch .. max_batch``, tuned for ``opt_batch``.

    Raises:
        TensorRTUnavailableError: no NVIDIA GPU or no ``tensorrt`` here.
    """
    reason = tensorrt_unavailable_reason()
    if reason:
        raise TensorRTUnavailableError(f"Cannot build a TensorRT engine from {onnx_path} here: {reason}.")
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise ValueError(f"Need 1 <= min_batch <= opt_batch <= max_batch. Received: {min_batch}, "
                         f"{opt_batch}, {max_batch}")
    import tensorrt as trt

    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, trt_logger)
    with open(onnx_path, "rb") as f:
        if not parser.parse(f.read()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ValueError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * 2**30))
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        rest = tuple(tensor.shape)[1:]
        profile.set_shape(tensor.name, (min_batch, *rest), (opt_batch, *rest), (max_batch, *rest))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see its log above)")
    with atomic_path(engine_path, overwrite=overwrite, folder=False) as staged:
        with open(staged, "wb") as f:
            f.write(serialized)
    logger.info("TensorRT engine written to %s", engine_path)
    return os.path.abspath(engine_path)

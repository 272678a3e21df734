"""Deployment: SavedModel serving signatures, ONNX, ONNX Runtime int8, TensorRT.

    nvan-export --model ste_nvan.keras --out models/nvan/1                   # SavedModel
    nvan-export --model ste_nvan.keras --out onnx --format onnx               # onnx/model.onnx
    nvan-export --model ste_nvan.keras --out onnx --format onnx --precision int8 \\
        --calibration-data data/MARS                                         # + onnx/model.int8.onnx
    nvan-export --model ckpt_best.pth --variant ste-nvan --out trt --format tensorrt --precision fp16

Every exported form maps a clip to the same thing: the **L2-normalised**
BN-neck embedding, ``"embedding"`` float32 ``(batch, 2048)``, compared by
cosine distance (a dot product once normalised). The batch is variable;
the frame count ``T`` and the frame size are the model's, as trained.

**SavedModel** (:func:`export_saved_model`), written with
``keras.export.ExportArchive``, for TF Serving or ``tf.saved_model.load``:

=================== ====================================================
signature           input
=================== ====================================================
``serving_default`` ``frames``: uint8 ``(batch, T, H, W, 3)`` RGB, any
                    ``H`` and ``W`` (all frames of a request share them);
                    resized and normalised inside the graph exactly as the
                    input pipeline does (``nvan_tf.pipeline``).
``embed_jpeg``      ``frames``: string ``(batch, T)``, encoded JPEG or PNG
                    frames, decoded inside the graph as the pipeline does.
``embed_clips``     ``clips``: float32 ``(batch, T, height, width, 3)``,
                    already normalised (what the pipeline yields).
=================== ====================================================

The signature inputs are declared without a static shape, and every
signature checks its input in the graph, so a malformed request (wrong rank,
``T``, channels, an undecodable frame) fails with a message that says what
was expected: TF Serving does not check shapes against a signature and
would otherwise fail deep inside the network.

**ONNX** (:func:`export_onnx`): ``model.export(path, format="onnx")`` of a
float32 copy of the model (mixed-precision models included), input
``clips`` float32 ``(batch, T, height, width, 3)``, output ``embedding``.
:func:`quantize_onnx` makes the int8 model for ONNX Runtime on CPU (static
quantization, calibrated on clips of a dataset) or the Q/DQ model TensorRT
takes; :func:`convert_onnx_fp16` the float16 graph TensorRT builds an fp16
engine from; :func:`build_tensorrt_engine` the engine (TensorRT >= 11:
strongly typed networks, so the precision is the ONNX graph's).

Every file and folder is written atomically: into a temporary sibling first,
renamed into place when complete, so a killed export never leaves a
half-written model under the target name.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import logging
import os
import shutil
import sys
import tempfile
import warnings

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "EMBEDDING",
    "FORMATS",
    "PRECISIONS",
    "SIGNATURES",
    "TensorRTUnavailableError",
    "build_tensorrt_engine",
    "calibration_clips",
    "compare_onnx",
    "convert_onnx_fp16",
    "export_onnx",
    "export_saved_model",
    "float32_copy",
    "onnx_session",
    "quantize_onnx",
    "tensorrt_unavailable_reason",
    "main",
]

EMBEDDING = "embedding"
SIGNATURES = ("serving_default", "embed_jpeg", "embed_clips")
FORMATS = ("savedmodel", "onnx", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")
QUANTIZATION_TARGETS = ("cpu", "tensorrt")
ONNX_OPSET = 17
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# -- atomic writing -----------------------------------------------------------------


@contextlib.contextmanager
def _atomic_output(target: str, *, overwrite: bool, folder: bool):
    """Yields a temporary path beside ``target``; renamed onto it on success.

    ``folder``: the temporary path is an (empty, existing) folder, else a
    file path. On an exception nothing is left behind; if the process is
    killed, only a hidden ``.NAME.tmp-*`` sibling remains, never ``target``."""
    target = os.path.abspath(os.fspath(target))
    parent, name = os.path.split(target)
    if os.path.lexists(target) and not overwrite:
        raise FileExistsError(f"{target} already exists; pass overwrite=True (--overwrite) to replace it")
    os.makedirs(parent, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
    staged = scratch if folder else os.path.join(scratch, name)
    try:
        yield staged
        if os.path.lexists(target):
            old = tempfile.mkdtemp(prefix=f".{name}.old-", dir=parent)
            os.replace(target, os.path.join(old, name))
            os.replace(staged, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staged, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# -- models -------------------------------------------------------------------------


def _config(model):
    config = getattr(model, "config", None)
    if config is None or not all(hasattr(config, f) for f in ("seq_len", "height", "width")):
        raise TypeError(
            "Export needs an nvan_tf NVANModel (nvan_tf.model.build_model or "
            f"nvan_tf.loading.load_model). Received: {type(model).__name__}"
        )
    return config


def float32_copy(model):
    """A float32 copy of ``model`` (same weights) whose output is L2-normalised.

    ONNX export needs a float32 dtype policy; a model built under
    ``mixed_float16`` is rebuilt here under ``float32``."""
    import keras

    from nvan_tf.model import NVANModel

    config = dataclasses.replace(_config(model), normalize_embedding=True)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        copy = NVANModel(config, name=model.name)
        copy.build(copy.input_spec_shape)
    finally:
        keras.config.set_dtype_policy(previous)
    copy.set_weights(model.get_weights())
    return copy


# -- SavedModel ---------------------------------------------------------------------


def _checked(x, ok, message, *details):
    """``x`` once ``ok`` holds, else an InvalidArgumentError with ``message``.

    The data goes through a ``tf.cond`` so the check runs before anything
    that uses ``x`` (grappler may run an op that merely has a control
    dependency on an ``Assert`` before the assert)."""
    import tensorflow as tf

    def fail():
        with tf.control_dependencies([tf.debugging.Assert(False, [message, *details], summarize=16)]):
            return tf.identity(x)

    return tf.cond(ok, lambda: tf.identity(x), fail)


def _check_shape(x, signature, name, expected, rank, dims):
    """Checks the ``rank`` and the fixed dimensions ``dims`` ({axis: size})
    of ``x``, and that no dimension is 0; ``expected`` describes them."""
    import tensorflow as tf

    shape = tf.shape(x)
    padded = tf.concat([shape, tf.zeros([rank], tf.int32)], 0)[:rank]  # indexable at any rank
    ok = tf.logical_and(tf.equal(tf.size(shape), rank), tf.reduce_all(padded > 0))
    for axis, size in dims.items():
        ok = tf.logical_and(ok, tf.equal(padded[axis], size))
    return _checked(x, ok, f"{signature}: input {name} must have shape {expected}. Received shape:", shape)


def export_saved_model(model, out_dir, *, overwrite: bool = False) -> str:
    """Writes ``model`` as a SavedModel with the three serving signatures.

    Args:
        model: an ``NVANModel`` (any dtype policy).
        out_dir: the SavedModel folder (for TF Serving: ``MODEL_BASE/VERSION``).
        overwrite: replace an existing ``out_dir``.

    Returns:
        The absolute path written.
    """
    import keras
    import tensorflow as tf

    from nvan_tf import pipeline

    config = _config(model)
    t, h, w = config.seq_len, config.height, config.width

    def embed(clips):
        features = tf.cast(model(clips, training=False), tf.float32)
        norm = tf.norm(features, axis=-1, keepdims=True)
        return {EMBEDDING: features / tf.maximum(norm, 1e-12)}

    def from_frames(frames):
        frames = _check_shape(frames, "serving_default", "frames",
                              f"(batch, {t}, height, width, 3) uint8 RGB", 5, {1: t, 4: 3})
        shape = tf.shape(frames)
        flat = tf.reshape(frames, tf.stack([-1, shape[2], shape[3], 3]))
        clips = pipeline.normalize(pipeline.resize_frames(flat, h, w))
        return embed(tf.reshape(clips, [-1, t, h, w, 3]))

    def decode(args):
        index, data = args
        is_png = tf.equal(tf.strings.substr(data, 0, len(PNG_MAGIC)), PNG_MAGIC)
        data = _checked(
            data, tf.logical_or(tf.io.is_jpeg(data), is_png),
            "embed_jpeg: a frame is not a JPEG or PNG image (send the encoded file bytes, "
            "base64 in REST requests). Clip, frame:", index // t, index % t,
        )
        return tf.reshape(pipeline.resize_frames(pipeline.decode_frame(data), h, w), [h, w, 3])

    def from_jpeg(frames):
        frames = _check_shape(frames, "embed_jpeg", "frames",
                              f"(batch, {t}) encoded JPEG/PNG frames", 2, {1: t})
        flat = tf.reshape(frames, [-1])
        images = tf.map_fn(decode, (tf.range(tf.size(flat)), flat),
                           fn_output_signature=tf.TensorSpec([h, w, 3], tf.uint8))
        return embed(tf.reshape(pipeline.normalize(images), [-1, t, h, w, 3]))

    def from_clips(clips):
        clips = _check_shape(clips, "embed_clips", "clips",
                             f"(batch, {t}, {h}, {w}, 3) float32, ImageNet-normalised",
                             5, {1: t, 2: h, 3: w, 4: 3})
        return embed(tf.reshape(clips, [-1, t, h, w, 3]))

    with _atomic_output(out_dir, overwrite=overwrite, folder=True) as staged:
        archive = keras.export.ExportArchive()
        # No archive.track(model): it would save every variable a second time
        # (as Keras variables beside the endpoints' own); the endpoints' are all
        # that serving needs.
        archive.add_endpoint("serving_default", from_frames,
                             input_signature=[tf.TensorSpec(None, tf.uint8, name="frames")])
        archive.add_endpoint("embed_jpeg", from_jpeg,
                             input_signature=[tf.TensorSpec(None, tf.string, name="frames")])
        archive.add_endpoint("embed_clips", from_clips,
                             input_signature=[tf.TensorSpec(None, tf.float32, name="clips")])
        # The clip size, for readers (the signatures' inputs have no static shape).
        archive.add_variable_collection(
            "clip_shape", [keras.Variable(np.array([t, h, w], np.int32), dtype="int32",
                                          trainable=False, name="clip_shape")])
        archive.write_out(staged, verbose=False)
    logger.info("SavedModel written to %s (signatures %s)", out_dir, ", ".join(SIGNATURES))
    return os.path.abspath(out_dir)


# -- ONNX ---------------------------------------------------------------------------


def _require(module, extra="export"):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"{module} is needed for this; install the optional dependencies with "
            f"pip install 'nvan-tf[{extra}]' ({err})"
        ) from err


def _fuse_stem_pool(graph):
    """Pad(-inf) -> MaxPool becomes one MaxPool with ``pads``.

    The stem pads with -inf before its max-pool (PyTorch's padding); ONNX's
    MaxPool pads with -inf itself. Removing the only non-finite tensor of
    the graph is what lets a quantiser calibrate it."""
    from onnx import helper, numpy_helper

    constants = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for pad in list(graph.node):
        if pad.op_type != "Pad" or len(pad.input) < 3 or pad.input[2] not in constants:
            continue
        value = constants[pad.input[2]]
        users = consumers.get(pad.output[0], [])
        mode = next((a.s for a in pad.attribute if a.name == "mode"), b"constant")
        if not (value.size == 1 and np.isneginf(value).all() and mode == b"constant"
                and len(users) == 1 and users[0].op_type == "MaxPool"
                and pad.input[1] in constants):
            continue
        pool = users[0]
        pads = constants[pad.input[1]].astype(int).tolist()
        rank = len(pads) // 2
        attributes = {a.name: helper.get_attribute_value(a) for a in pool.attribute}
        if (any(pads[i] or pads[rank + i] for i in (0, 1)) or attributes.get("pads")
                or attributes.get("ceil_mode") or attributes.get("auto_pad", b"NOTSET") != b"NOTSET"):
            continue  # batch / channel padding, or a pool that pads itself: leave it
        del pool.attribute[:]
        attributes["pads"] = pads[2:rank] + pads[rank + 2:]
        pool.attribute.extend(helper.make_attribute(k, v) for k, v in attributes.items())
        pool.input[0] = pad.input[0]
        graph.node.remove(pad)
    used = {name for node in graph.node for name in node.input}
    for initializer in list(graph.initializer):
        if initializer.name not in used:
            graph.initializer.remove(initializer)


def export_onnx(model, path, *, opset: int = ONNX_OPSET, overwrite: bool = False) -> str:
    """Writes the float32 embedding graph of ``model`` as ONNX.

    Input ``clips`` float32 ``(batch, T, height, width, 3)`` (dynamic batch),
    output ``embedding`` float32 ``(batch, 2048)``, L2-normalised.
    """
    import tensorflow as tf

    onnx = _require("onnx")
    _require("tf2onnx")
    config = _config(model)
    copy = float32_copy(model)
    spec = tf.TensorSpec((None, config.seq_len, config.height, config.width, 3), tf.float32, name="clips")
    with _atomic_output(path, overwrite=overwrite, folder=False) as staged:
        raw = staged + ".raw.onnx"
        with warnings.catch_warnings():  # Keras' tf2onnx patch for NumPy 2 touches np.object
            warnings.filterwarnings("ignore", message=".*np.object", category=FutureWarning)
            copy.export(raw, format="onnx", verbose=False, input_signature=[spec], opset_version=opset)
        proto = onnx.load(raw)
        os.remove(raw)
        graph = proto.graph
        old = graph.output[0].name
        for node in graph.node:
            node.output[:] = [EMBEDDING if o == old else o for o in node.output]
            node.input[:] = [EMBEDDING if i == old else i for i in node.input]
        graph.output[0].name = EMBEDDING
        for value in (graph.input[0], graph.output[0]):
            dim = value.type.tensor_type.shape.dim[0]
            dim.ClearField("dim_value")
            dim.dim_param = "batch"
        _fuse_stem_pool(graph)
        onnx.checker.check_model(proto)
        onnx.save(proto, staged)
    logger.info("ONNX model written to %s", path)
    return os.path.abspath(path)


def _embedding_tail(graph) -> list:
    """Names of the nodes after the last ReduceMean (the feature pooling):
    the BN neck's scale and the L2 normalisation, kept float32 by the
    fp16 and int8 conversions."""
    pools = [i for i, node in enumerate(graph.node) if node.op_type == "ReduceMean"]
    if not pools:
        raise ValueError("The ONNX graph has no ReduceMean (feature pooling); "
                         "is it a model from export_onnx?")
    return [node.name for node in graph.node[pools[-1] + 1:]]


def onnx_session(path, *, threads: int | None = None, providers=("CPUExecutionProvider",)):
    """An ``onnxruntime.InferenceSession`` for ``path`` (``threads``: intra-op)."""
    ort = _require("onnxruntime")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
    return ort.InferenceSession(os.fspath(path), options, providers=list(providers))


def _run_onnx(session, clips, batch_size=4):
    name = session.get_inputs()[0].name
    clips = np.asarray(clips, np.float32)
    return np.concatenate([session.run(None, {name: clips[i:i + batch_size]})[0]
                           for i in range(0, len(clips), batch_size)])


def compare_onnx(model, path, clips, *, batch_size: int = 4) -> dict:
    """Runs ``path`` in ONNX Runtime (CPU) and ``model`` in Keras on ``clips``.

    Returns ``{"cosine_min", "cosine_mean", "max_abs_error"}`` between the
    L2-normalised embeddings.
    """
    import tensorflow as tf

    reference = np.concatenate([
        tf.cast(model(clips[i:i + batch_size], training=False), tf.float32).numpy()
        for i in range(0, len(clips), batch_size)
    ])
    reference /= np.maximum(np.linalg.norm(reference, axis=1, keepdims=True), 1e-12)
    output = _run_onnx(onnx_session(path), clips, batch_size)
    cosine = np.sum(output * reference, axis=1) / np.maximum(np.linalg.norm(output, axis=1), 1e-12)
    return {
        "cosine_min": float(cosine.min()),
        "cosine_mean": float(cosine.mean()),
        "max_abs_error": float(np.abs(output - reference).max()),
    }


class _CalibrationReader:
    """ONNX Runtime ``CalibrationDataReader`` over batches of clips."""

    def __init__(self, name, batches):
        self._name = name
        self._batches = iter(batches)

    def get_next(self):
        batch = next(self._batches, None)
        return None if batch is None else {self._name: np.asarray(batch, np.float32)}

    def __iter__(self):
        return self

    def __next__(self):
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


def calibration_clips(tracklets, *, seq_len: int, height: int, width: int, batches: int = 8,
                      batch_size: int = 4, seed: int = 0) -> list:
    """``batches`` batches of normalised test-time clips (float32 ``(batch_size,
    seq_len, height, width, 3)``) from a seeded random choice of ``tracklets``,
    read through the evaluation pipeline."""
    from nvan_tf import pipeline

    tracklets = list(tracklets)
    if not tracklets:
        raise ValueError("Calibration needs tracklets. Received an empty list.")
    if batches < 1 or batch_size < 1:
        raise ValueError(f"batches and batch_size must be positive. Received: batches={batches}, "
                         f"batch_size={batch_size}")
    rng = np.random.default_rng(seed)
    count = min(len(tracklets), batches * batch_size)
    chosen = [tracklets[i] for i in sorted(rng.choice(len(tracklets), count, replace=False))]
    stream = pipeline.eval_dataset(chosen, seq_len=seq_len, batch_size=batch_size,
                                   height=height, width=width)
    return [clips.numpy() for clips, *_ in stream]


def quantize_onnx(onnx_path, out_path, calibration, *, target: str = "cpu",
                  per_channel: bool = True, overwrite: bool = False) -> str:
    """Static int8 quantization of an fp32 ONNX model (Q/DQ format).

    Args:
        onnx_path: the fp32 model (:func:`export_onnx`).
        out_path: where to write the int8 model.
        calibration: batches of clips, float32 ``(b, T, H, W, 3)`` as the
            model takes them (:func:`calibration_clips`); MinMax ranges.
        target: ``"cpu"``: uint8 activations, int8 per-channel weights, the
            fast path of ONNX Runtime's x86 kernels; ``"tensorrt"``:
            symmetric int8 activations and weights, the explicit
            quantization a TensorRT >= 11 engine is built from.
    """
    onnx = _require("onnx")
    quantization = _require("onnxruntime.quantization")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if target not in QUANTIZATION_TARGETS:
        raise ValueError(f"target must be one of {QUANTIZATION_TARGETS}. Received: target={target!r}")
    batches = list(calibration)
    if not batches:
        raise ValueError("quantize_onnx needs at least one calibration batch. Received none.")
    input_name = onnx.load(os.fspath(onnx_path), load_external_data=False).graph.input[0].name
    symmetric = target == "tensorrt"
    with _atomic_output(out_path, overwrite=overwrite, folder=False) as staged:
        prepared = staged + ".pre.onnx"
        quant_pre_process(os.fspath(onnx_path), prepared, skip_symbolic_shape=True)
        tail = _embedding_tail(onnx.load(prepared).graph)
        quantization.quantize_static(
            prepared, staged, _CalibrationReader(input_name, batches),
            quant_format=quantization.QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=quantization.QuantType.QInt8 if symmetric else quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            calibrate_method=quantization.CalibrationMethod.MinMax,
            nodes_to_exclude=tail,
            extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True},
        )
        os.remove(prepared)
    logger.info("int8 (%s) ONNX model written to %s", target, out_path)
    return os.path.abspath(out_path)


def convert_onnx_fp16(onnx_path, out_path, *, overwrite: bool = False) -> str:
    """The float16 graph of an fp32 ONNX model (:func:`export_onnx`).

    The network runs in float16 up to and including the feature pooling;
    the input stays float32 (cast inside), and the embedding tail (BN-neck
    scale, L2 normalisation: a sum of 2048 squares can overflow float16)
    stays float32. A TensorRT >= 11 engine built from it is an fp16 engine.
    """
    onnx = _require("onnx")
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(os.fspath(onnx_path))
    graph = model.graph
    tail_names = set(_embedding_tail(graph))
    body = [node for node in graph.node if node.name not in tail_names]
    tail = [node for node in graph.node if node.name in tail_names]
    body_inputs = {name for node in body for name in node.input}
    tail_inputs = {name for node in tail for name in node.input}
    for initializer in graph.initializer:
        if initializer.data_type != TensorProto.FLOAT or initializer.name not in body_inputs:
            continue
        if initializer.name in tail_inputs:
            raise ValueError(f"{onnx_path}: initializer {initializer.name} feeds both the network "
                             "and the embedding tail; not a graph from export_onnx")
        half = numpy_helper.to_array(initializer).astype(np.float16)
        initializer.CopyFrom(numpy_helper.from_array(half, initializer.name))
    for node in body:
        for attribute in node.attribute:
            if node.op_type == "Cast" and attribute.name == "to" and attribute.i == TensorProto.FLOAT:
                attribute.i = TensorProto.FLOAT16

    def rename(nodes, old, new):
        for node in nodes:
            node.input[:] = [new if name == old else name for name in node.input]

    clips = graph.input[0].name
    pooled = body[-1].output[0]
    rename(body, clips, clips + "_fp16")
    rename(tail, pooled, pooled + "_fp32")
    nodes = [
        helper.make_node("Cast", [clips], [clips + "_fp16"], name="clips_to_fp16", to=TensorProto.FLOAT16),
        *body,
        helper.make_node("Cast", [pooled], [pooled + "_fp32"], name="pooled_to_fp32", to=TensorProto.FLOAT),
        *tail,
    ]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model)
    with _atomic_output(out_path, overwrite=overwrite, folder=False) as staged:
        onnx.save(model, staged)
    logger.info("fp16 ONNX model written to %s", out_path)
    return os.path.abspath(out_path)


# -- TensorRT -----------------------------------------------------------------------


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
    with _atomic_output(engine_path, overwrite=overwrite, folder=False) as staged:
        with open(staged, "wb") as f:
            f.write(serialized)
    logger.info("TensorRT engine written to %s", engine_path)
    return os.path.abspath(engine_path)


# -- command line -------------------------------------------------------------------


def _parser():
    from nvan_tf import cli

    parser = cli.make_parser("nvan-export", __doc__.split("\n\nEvery exported form")[0])
    parser.add_argument("--model", required=True,
                        help=".keras file, .weights.h5 or an authors' PyTorch checkpoint "
                             "(with --variant)")
    parser.add_argument("--out", required=True,
                        help="output folder: the SavedModel itself (TF Serving: MODEL_BASE/VERSION), "
                             "or the folder for model*.onnx and model.PRECISION.plan")
    parser.add_argument("--format", choices=FORMATS, default="savedmodel",
                        help="SavedModel for TF Serving, ONNX (+ ONNX Runtime int8), TensorRT engine")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="onnx and tensorrt; a SavedModel is fp32")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    model = parser.add_argument_group("model (checked against what the file records)")
    model.add_argument("--variant", help="baseline, nvan, nvan-stripe, nvan-temporal, ste-nvan")
    model.add_argument("--num-identities", type=int, help="classifier size (default: from the file)")
    model.add_argument("--seq-len", type=int, help="frames per clip (default: recorded, else 8)")
    model.add_argument("--height", type=int, help="frame height (default: recorded, else 256)")
    model.add_argument("--width", type=int, help="frame width (default: recorded, else 128)")
    calibration = parser.add_argument_group("int8 calibration")
    calibration.add_argument("--calibration-data", help="dataset root; clips of its train split")
    calibration.add_argument("--calibration-dataset", default="mars", help="reader for --calibration-data")
    calibration.add_argument("--calibration-batches", type=int, default=8)
    calibration.add_argument("--calibration-batch-size", type=int, default=4)
    engine = parser.add_argument_group("tensorrt")
    engine.add_argument("--opt-batch", type=int, default=4, help="batch the engine is tuned for")
    engine.add_argument("--max-batch", type=int, default=16, help="largest batch the engine takes")
    return parser


def _calibration(args, config):
    from nvan_tf.datasets import build_dataset

    dataset = build_dataset(args.calibration_dataset, args.calibration_data, verbose=False)
    return calibration_clips(dataset.train, seq_len=config.seq_len, height=config.height,
                             width=config.width, batches=args.calibration_batches,
                             batch_size=args.calibration_batch_size)


def _export(args) -> list[str]:
    if args.format == "savedmodel" and args.precision != "fp32":
        raise ValueError("a SavedModel is exported in fp32; --precision fp16/int8 needs "
                         "--format onnx or tensorrt")
    if args.precision == "int8" and not args.calibration_data:
        raise ValueError("--precision int8 needs calibration clips: pass --calibration-data ROOT "
                         "(a dataset root; clips of its train split are used)")
    if args.format == "tensorrt":
        reason = tensorrt_unavailable_reason()
        if reason:  # say so before the (slow) ONNX export
            raise TensorRTUnavailableError(f"--format tensorrt needs an NVIDIA GPU and TensorRT: {reason}")
    from nvan_tf.loading import load_model

    sizes = {k: getattr(args, k) for k in ("seq_len", "height", "width") if getattr(args, k)}
    model = load_model(args.model, variant=args.variant, num_identities=args.num_identities, **sizes)
    if args.format == "savedmodel":
        return [export_saved_model(model, args.out, overwrite=args.overwrite)]
    config = _config(model)
    calibration = _calibration(args, config) if args.precision == "int8" else None

    def out(name):
        return os.path.join(args.out, name)

    written = [export_onnx(model, out("model.onnx"), overwrite=args.overwrite)]
    fp32 = written[0]
    if args.precision == "fp16":
        written.append(convert_onnx_fp16(fp32, out("model.fp16.onnx"), overwrite=args.overwrite))
    elif args.precision == "int8":
        target = "tensorrt" if args.format == "tensorrt" else "cpu"
        name = "model.int8.onnx" if target == "cpu" else "model.int8-qdq.onnx"
        written.append(quantize_onnx(fp32, out(name), calibration, target=target,
                                     overwrite=args.overwrite))
        if target == "cpu":
            stats = compare_onnx(model, written[-1], np.concatenate(calibration[:2]))
            print(f"int8 vs Keras fp32 on {2 * args.calibration_batch_size} calibration clips: "
                  f"cosine min {stats['cosine_min']:.5f}, max abs error {stats['max_abs_error']:.2e}")
    if args.precision == "fp32" and args.format == "onnx":
        clips = np.random.default_rng(0).normal(
            size=(2, config.seq_len, config.height, config.width, 3)).astype(np.float32)
        stats = compare_onnx(model, fp32, clips)
        print(f"ONNX Runtime vs Keras on 2 random clips: cosine min {stats['cosine_min']:.6f}, "
              f"max abs error {stats['max_abs_error']:.2e}")
    if args.format == "tensorrt":
        written.append(build_tensorrt_engine(written[-1], out(f"model.{args.precision}.plan"),
                                             opt_batch=args.opt_batch, max_batch=args.max_batch,
                                             overwrite=args.overwrite))
    return written


def main(argv=None) -> int:
    from nvan_tf import cli

    parser = _parser()
    args = parser.parse_args(argv)
    cli.quiet_tensorflow(args.verbose)
    try:
        written = _export(args)
    except (ValueError, TypeError, FileExistsError, FileNotFoundError) as err:
        return cli.fail(parser, err)
    except (ImportError, RuntimeError, OSError) as err:
        return cli.fail(parser, err, code=1)
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""ONNX export, ONNX Runtime int8 / fp16 graphs, and their parity checks.

:func:`export_onnx` writes ``model.export(path, format="onnx")`` of a float32
copy of the model (mixed-precision models included): input ``clips``
float32 ``(batch, T, height, width, 3)``, output ``embedding`` (the
L2-normalised BN-neck feature). :func:`quantize_onnx` makes the int8 model
for ONNX Runtime on CPU (static quantization, calibrated on clips of a
dataset) or the Q/DQ model TensorRT takes; :func:`convert_onnx_fp16` the
float16 graph TensorRT builds an fp16 engine from. Files are written
atomically (``nvan_tf.core.atomic``).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import threading
import warnings

import numpy as np

from nvan_tf.core.atomic import atomic_path
from nvan_tf.deploy.saved_model import EMBEDDING
from nvan_tf.io.onnx_runtime import onnx_session, require, run_onnx

logger = logging.getLogger(__name__)

__all__ = ["ONNX_OPSET", "QUANTIZATION_TARGETS", "export_onnx", "onnx_session", "compare_onnx",
           "calibration_clips", "quantize_onnx", "convert_onnx_fp16"]

QUANTIZATION_TARGETS = ("cpu", "tensorrt")
ONNX_OPSET = 17
# seconds between the garbage collections an ONNX conversion runs (see collecting_garbage)
COLLECT_EVERY = 0.5


@contextlib.contextmanager
def collecting_garbage(every: float = COLLECT_EVERY):
    """Runs Python's full garbage collection every ``every`` seconds while the block runs.

    tf2onnx's ONNX optimizers (``tf2onnx.optimizer.optimize_graph``, 1.17) deep-copy the whole graph,
    weights included, before each optimizer of each pass. The copies hold reference cycles, which
    Python's generational collector frees only at its rare full collections, so they pile up: the
    export of a 71 MB STE-NVAN (the tests' toy depth) peaked at 8.0 GB of memory, and at 2.6 GB
    with these collections (most of it TensorFlow's own graph optimization before tf2onnx's).
    """
    stop = threading.Event()

    def collect():
        while not stop.wait(every):
            gc.collect()

    thread = threading.Thread(target=collect, name="nvan-onnx-gc", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        gc.collect()


@contextlib.contextmanager
def _environment(**values):
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_tf2onnx(convert):
    """Returns ``convert()``, a tf2onnx conversion, run with :func:`collecting_garbage` and without
    tf2onnx's safety copies.

    Before each optimizer of each pass, tf2onnx (1.17) deep-copies the whole graph so that it can skip
    an optimizer that raises (``catch_errors``). None raises on nvan-tf's models or on the SSDLite
    detector, so the copies only cost time and memory: the SSDLite graph converted in 14.4 s with them
    and in 12.0 s without on a 2-core Xeon, to a graph of the same operators whose outputs on
    vtest.avi frames are bit-identical. ``TF2ONNX_CATCH_ERRORS``, tf2onnx's own switch, turns them
    off for the conversion (tf2onnx reads whether the variable is set, not its value). Where a
    conversion fails so, it is run again with the copies, as tf2onnx runs by default.
    """
    with collecting_garbage():
        try:
            with _environment(TF2ONNX_CATCH_ERRORS="FALSE"):
                return convert()
        except Exception as err:  # noqa: BLE001 - any failure: tf2onnx's default way, which skips the optimizer
            logger.warning("tf2onnx failed without its optimizers' safety copies (%s: %s); converting again "
                           "with them", type(err).__name__, err)
            return convert()


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

    onnx = require("onnx")
    require("tf2onnx")
    from nvan_tf.models.model import config_of, float32_copy

    config = config_of(model)
    copy = float32_copy(model, normalize_embedding=True)
    spec = tf.TensorSpec((None, config.seq_len, config.height, config.width, 3), tf.float32, name="clips")
    with atomic_path(path, overwrite=overwrite, folder=False) as staged:
        raw = staged + ".raw.onnx"
        with warnings.catch_warnings():
            # Keras' tf2onnx patch for NumPy 2 touches np.object
            warnings.filterwarnings("ignore", message=".*np.object", category=FutureWarning)
            run_tf2onnx(lambda: copy.export(raw, format="onnx", verbose=False, input_signature=[spec],
                                            opset_version=opset))
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
    output = run_onnx(onnx_session(path), clips, batch_size)
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
                      batch_size: int = 4, seed: int = 0, held_out: int = 0):
    """``batches`` batches of normalised test-time clips (float32 ``(batch_size,
    seq_len, height, width, 3)``) from a seeded random choice of ``tracklets``,
    read through the evaluation pipeline.

    ``held_out``: also return, as ``(calibration, check)``, that many clips
    of other tracklets (float32 ``(held_out, ...)``), never calibrated on,
    to measure the quantized model on data it did not see."""
    from nvan_tf.data import pipeline

    tracklets = list(tracklets)
    if not tracklets:
        raise ValueError("Calibration needs tracklets. Received an empty list.")
    if batches < 1 or batch_size < 1 or held_out < 0:
        raise ValueError(f"batches and batch_size must be positive, held_out >= 0. Received: batches={batches}, "
                         f"batch_size={batch_size}, held_out={held_out}")
    if held_out and len(tracklets) < held_out + 1:
        raise ValueError(f"{len(tracklets)} tracklets cannot give calibration clips and {held_out} others to "
                         "check on; give a dataset with more tracklets or fewer check clips")
    rng = np.random.default_rng(seed)
    count = min(len(tracklets) - held_out, batches * batch_size)
    drawn = rng.choice(len(tracklets), count + held_out, replace=False)  # the first count calibrate
    chosen = [tracklets[i] for i in sorted(drawn[:count])]
    stream = pipeline.eval_dataset(chosen, seq_len=seq_len, batch_size=batch_size,
                                   height=height, width=width)
    calibration = [clips.numpy() for clips, *_ in stream]
    if not held_out:
        return calibration
    others = [tracklets[i] for i in sorted(drawn[count:])]
    check = pipeline.eval_dataset(others, seq_len=seq_len, batch_size=held_out, height=height, width=width)
    return calibration, np.concatenate([clips.numpy() for clips, *_ in check])


def quantize_onnx(onnx_path, out_path, calibration, *, target: str = "cpu",
                  per_channel: bool = True, overwrite: bool = False) -> str:
    """Static int8 quantization of an fp32 ONNX model (Q/DQ format).

    Args:
        onnx_path: the fp32 model (:func:`export_onnx`).
        out_path: where to write the int8 model.
        calibration: batches of clips, float32 ``(b, T, H, W, 3)`` as the
            model takes them (:func:`calibration_clips`); MinMax ranges.
        target: ``"cpu"``: uint8 activations, int8 per-channel weights of 7
            bits (ONNX Runtime's ``reduce_range``), the fast path of its x86
            kernels: on AVX2 / AVX-512 CPUs without VNNI their u8 x s8
            multiply-add (``vpmaddubsw``) saturates at full 8-bit weights,
            which cost this model's embeddings a cosine of 0.986 to the fp32
            ones (0.9985 with 7 bits) on such a machine; ``"tensorrt"``:
            symmetric int8 activations and weights, the explicit
            quantization a TensorRT >= 11 engine is built from.
    """
    onnx = require("onnx")
    quantization = require("onnxruntime.quantization")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if target not in QUANTIZATION_TARGETS:
        raise ValueError(f"target must be one of {QUANTIZATION_TARGETS}. Received: target={target!r}")
    batches = list(calibration)
    if not batches:
        raise ValueError("quantize_onnx needs at least one calibration batch. Received none.")
    input_name = onnx.load(os.fspath(onnx_path), load_external_data=False).graph.input[0].name
    symmetric = target == "tensorrt"
    with atomic_path(out_path, overwrite=overwrite, folder=False) as staged:
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
            reduce_range=not symmetric,  # the cpu target: 7-bit weights, no u8 x s8 saturation (docstring)
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
    onnx = require("onnx")
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
    with atomic_path(out_path, overwrite=overwrite, folder=False) as staged:
        onnx.save(model, staged)
    logger.info("fp16 ONNX model written to %s", out_path)
    return os.path.abspath(out_path)

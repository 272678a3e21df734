"""SavedModel export with three validated serving signatures (TF Serving, ``tf.saved_model.load``).

=================== ====================================================
signature           input
=================== ====================================================
``serving_default`` ``frames``: uint8 ``(batch, T, H, W, 3)`` RGB, any
                    ``H`` and ``W`` (all frames of a request share them);
                    resized and normalised inside the graph exactly as the
                    input pipeline does (``nvan_tf.data.pipeline``).
``embed_jpeg``      ``frames``: string ``(batch, T)``, encoded JPEG or PNG
                    frames, decoded inside the graph as the pipeline does.
``embed_clips``     ``clips``: float32 ``(batch, T, height, width, 3)``,
                    already normalised (what the pipeline yields).
=================== ====================================================

Every signature returns ``"embedding"``: float32 ``(batch, 2048)``, the
L2-normalised BN-neck feature. The inputs are declared without a static
shape, and every signature checks its input in the graph, so a malformed
request (wrong rank, ``T``, channels, an undecodable frame) fails with a
message that says what was expected: TF Serving does not check shapes
against a signature and would otherwise fail deep inside the network.
The folder is written atomically (``nvan_tf.core.atomic``).
"""

from __future__ import annotations

import logging
import os

import numpy as np

from nvan_tf.core.atomic import atomic_path

logger = logging.getLogger(__name__)

__all__ = ["EMBEDDING", "SIGNATURES", "export_saved_model"]

EMBEDDING = "embedding"
SIGNATURES = ("serving_default", "embed_jpeg", "embed_clips")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


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

    from nvan_tf.data import pipeline
    from nvan_tf.models.model import config_of

    config = config_of(model)
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

    with atomic_path(out_dir, overwrite=overwrite, folder=True) as staged:
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

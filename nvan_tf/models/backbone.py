"""ResNet-50 video backbone in the torchvision layout, with non-local blocks.

The layout follows torchvision's ResNet-50 ("v1.5"), which the reference
builds on, including its three quirks (docs/architecture.md):

- the stride of a bottleneck sits on its 3x3 convolution, and every padding
  is symmetric (PyTorch ``padding=1`` / ``padding=3``), not Keras ``"same"``;
- the stem max-pool (3x3, stride 2) pads with ``-inf``;
- the stem has no ReLU (``conv1 -> bn1 -> maxpool``) unless ``stem_relu``.

Frames are folded into the batch for every 2D op; the non-local blocks and
the temporal reductions see the video ``(B, T, H, W, C)``.
"""

import numbers

import keras
from keras import layers, ops

from nvan_tf.data.imagenet import CAFFE_MEAN_BGR, IMAGENET_MEAN, IMAGENET_STD
from nvan_tf.models.layers import (
    FrameGrouping,
    NonLocalBlock,
    StripeNonLocalBlock,
    TemporalMaxReduction,
    batch_norm,
    freeze_if_not_trainable,
    whole_number,
)

_PACKAGE = "nvan_tf"

# (name, bottleneck width, blocks in ResNet-50): res2..res5 = torchvision layer1..layer4.
STAGES = (("res2", 64, 3), ("res3", 128, 4), ("res4", 256, 6), ("res5", 512, 3))
EXPANSION = 4
# Residual blocks per stage (``stage_blocks``): ResNet-50, the reference's, and
# the other depths of torchvision's bottleneck ResNets.
RESNET_BLOCKS = {50: tuple(blocks for _, _, blocks in STAGES), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}

# nvan-tf feeds torch-style normalised RGB; Keras-applications weights want caffe input.
INPUT_CONVENTIONS = ("torch", "caffe")


def _conv(filters, kernel, strides, name, dtype):
    return layers.Conv2D(
        filters, kernel, strides=strides, padding="valid", use_bias=False, name=name, dtype=dtype
    )


def _conv_out(size, kernel, stride, pad):
    return (size + 2 * pad - kernel) // stride + 1


def _pad(x, pad, value=0.0):
    return ops.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=value)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Bottleneck(layers.Layer):
    """ResNet bottleneck on ``(N, H, W, C)``: 1x1, 3x3, 1x1 (x4) + shortcut.

    Args:
        filters: bottleneck width (the output has ``4 * filters`` channels).
        strides: stride of the block, on the 3x3 conv (torchvision v1.5) or
            on the first 1x1 conv when ``stride_in_1x1`` (Keras-applications
            v1 layout, for its ImageNet weights).
        downsample: project the shortcut with a strided 1x1 conv + BN.
        sync_batch_norm: batch statistics over the global batch of all
            replicas (``BatchNormalization(synchronized=True)``).
    """

    def __init__(self, filters, strides=1, downsample=False, stride_in_1x1=False, sync_batch_norm=False,
                 **kwargs):
        super().__init__(**kwargs)
        self.sync_batch_norm = bool(sync_batch_norm)
        self.filters = whole_number(filters, "filters")
        self.strides = whole_number(strides, "strides")
        self.downsample = bool(downsample)
        self.stride_in_1x1 = bool(stride_in_1x1)
        s1, s3 = (self.strides, 1) if self.stride_in_1x1 else (1, self.strides)
        dtype = self.dtype_policy
        self.conv1 = _conv(self.filters, 1, s1, "conv1", dtype)
        self.bn1 = batch_norm("bn1", dtype=dtype, synchronized=self.sync_batch_norm)
        self.conv2 = _conv(self.filters, 3, s3, "conv2", dtype)
        self.bn2 = batch_norm("bn2", dtype=dtype, synchronized=self.sync_batch_norm)
        self.conv3 = _conv(self.filters * EXPANSION, 1, 1, "conv3", dtype)
        self.bn3 = batch_norm("bn3", dtype=dtype, synchronized=self.sync_batch_norm)
        if self.downsample:
            self.downsample_conv = _conv(self.filters * EXPANSION, 1, self.strides, "downsample_conv", dtype)
            self.downsample_bn = batch_norm("downsample_bn", dtype=dtype, synchronized=self.sync_batch_norm)

    def build(self, input_shape):
        n, h, w, c = input_shape
        s1, s3 = self.conv1.strides[0], self.conv2.strides[0]
        h1, w1 = _conv_out(h, 1, s1, 0), _conv_out(w, 1, s1, 0)
        h2, w2 = _conv_out(h1, 3, s3, 1), _conv_out(w1, 3, s3, 1)
        self.conv1.build(input_shape)
        self.bn1.build((n, h1, w1, self.filters))
        self.conv2.build((n, h1 + 2, w1 + 2, self.filters))
        self.bn2.build((n, h2, w2, self.filters))
        self.conv3.build((n, h2, w2, self.filters))
        self.bn3.build((n, h2, w2, self.filters * EXPANSION))
        if self.downsample:
            self.downsample_conv.build(input_shape)
            self.downsample_bn.build((n, h2, w2, self.filters * EXPANSION))
        elif c != self.filters * EXPANSION or self.strides != 1:
            raise ValueError(
                f"Bottleneck '{self.name}' without downsample needs {self.filters * EXPANSION} "
                f"input channels and stride 1. Received: input_shape={tuple(input_shape)}, "
                f"strides={self.strides}"
            )
        freeze_if_not_trainable(self)

    def call(self, x, training=None):
        out = ops.relu(self.bn1(self.conv1(x), training=training))
        out = ops.relu(self.bn2(self.conv2(_pad(out, 1)), training=training))
        out = self.bn3(self.conv3(out), training=training)
        shortcut = x
        if self.downsample:
            shortcut = self.downsample_bn(self.downsample_conv(x), training=training)
        return ops.relu(out + shortcut)

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        return (n, _conv_out(h, 1, self.strides, 0), _conv_out(w, 1, self.strides, 0),
                self.filters * EXPANSION)

    def get_config(self):
        config = super().get_config()
        config.update({
            "filters": self.filters,
            "strides": self.strides,
            "downsample": self.downsample,
            "stride_in_1x1": self.stride_in_1x1,
            "sync_batch_norm": self.sync_batch_norm,
        })
        return config


def _four_integers(table, name, example):
    values = table.tolist() if hasattr(table, "tolist") else table  # NumPy arrays
    values = tuple(values) if isinstance(values, (tuple, list)) else None
    if values is None or len(values) != len(STAGES) or not all(
            isinstance(n, numbers.Integral) and not isinstance(n, bool) for n in values):
        raise ValueError(
            f"{name} needs one integer per stage res2..res5 ({len(STAGES)} block counts, "
            f"e.g. {example}). Received: {name}={table!r}"
        )
    return tuple(int(n) for n in values)


def check_stage_blocks(table):
    """The residual blocks per stage res2..res5 as a tuple of plain ints:
    ``(3, 4, 6, 3)`` is ResNet-50 (the reference), ``(3, 4, 23, 3)``
    ResNet-101 (``RESNET_BLOCKS``); any four counts of at least 1 build a
    bottleneck ResNet of that depth. A ``ValueError`` otherwise."""
    values = _four_integers(table, "stage_blocks", RESNET_BLOCKS[50])
    if min(values) < 1:
        raise ValueError(f"stage_blocks needs at least one residual block per stage. Received: "
                         f"stage_blocks={values}")
    return values


def resnet_depth(stage_blocks):
    """The layer count a bottleneck ResNet's name gives: 50 for ``(3, 4, 6, 3)``."""
    return 3 * sum(stage_blocks) + 2


def check_non_local(table, stage_blocks=RESNET_BLOCKS[50]):
    """The non-local placement table as a tuple of plain ints; a ``ValueError``
    saying what is wrong otherwise.

    ``table`` holds the number of non-local blocks per stage res2..res5
    (``(0, 2, 3, 0)`` for NVAN): a tuple, list or NumPy array, NumPy
    integers accepted. Refused: anything
    but four integers (``2.5`` or ``True`` included), more blocks than a
    stage has residual blocks (``stage_blocks``, ResNet-50's by default), and
    any block in res2 (stage 1): the
    reference's stage-1 blocks max-pool g and phi by (1, 2, 2), which nvan-tf
    does not implement.
    """
    values = _four_integers(table, "non_local", (0, 2, 3, 0))
    for (stage, _, _), blocks, n in zip(STAGES, check_stage_blocks(stage_blocks), values):
        if not 0 <= n <= blocks:
            raise ValueError(
                f"non_local asks for {n} blocks in {stage}, which has {blocks} residual "
                f"blocks. Received: non_local={values}"
            )
    if values[0]:
        raise ValueError(
            f"non_local asks for {values[0]} blocks in res2 (stage 1), which is not supported: "
            "the reference's stage-1 non-local blocks max-pool g and phi by (1, 2, 2), which "
            f"nvan-tf does not implement (NVAN uses res3 and res4). Received: non_local={values}"
        )
    return values


def _stage_table(value, name, check):
    """``check(value)`` for one value, or a tuple of ``check(entry)`` for a
    table of one entry per stage res2..res5."""
    if not isinstance(value, (tuple, list)):
        return check(value)
    if len(value) != len(STAGES):
        raise ValueError(
            f"{name} needs one entry per stage res2..res5 ({len(STAGES)} entries) or one "
            f"value for all. Received: {name}={tuple(value)}"
        )
    return tuple(check(v) for v in value)


def check_stripes(stripes):
    """``None`` (full non-local blocks), a number of stripes for every stage,
    or a tuple of one per stage (``None`` entries: full blocks there); NumPy
    integers become plain ints, anything else is a ``ValueError``."""
    return _stage_table(stripes, "stripes", lambda v: whole_number(v, "stripes", allow_none=True))


def _expand(value):
    """One value -> the same for each stage; a table stays as it is."""
    return value if isinstance(value, tuple) else (value,) * len(STAGES)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class VideoResNet50(layers.Layer):
    """ResNet-50 over video clips, with non-local blocks and temporal reduction.

    (Any depth of bottleneck ResNet with ``stage_blocks``; ResNet-50 by default.)
    Input ``(B, T, H, W, 3)``, output ``(B, T', H / 16, W / 16, 2048)`` with
    ``last_stride=1`` (16 x 8 at 256 x 128); ``T' = T`` unless reduced.

    Args:
        non_local: blocks per stage res2..res5, placed after the *last* n
            residual blocks of the stage, e.g. ``(0, 2, 3, 0)`` for NVAN.
        stripes: None for full non-local blocks, or the number of horizontal
            stripes (an int, or one per stage) for stripe non-local blocks.
        attention_group: frames each non-local block attends over; None for
            the whole (current) clip, 2 for STE-NVAN.
        temporal_reduction: per stage, whether consecutive frame pairs are
            max-reduced after the stage (and its non-local blocks); STE-NVAN
            uses ``(False, True, True, False)``.
        last_stride: stride of res5 (1 in the reference).
        stem_relu: apply a ReLU after the stem BN. The reference omits it.
        stride_in_1x1: put the stride on the first 1x1 conv (Keras-applications
            v1 layout); the reference puts it on the 3x3 conv.
        input_convention: "torch" (the reference) or "caffe": the clips are
            still ImageNet-normalised RGB, converted inside to the BGR 0..255
            mean-subtracted input that Keras-applications weights expect.
        sync_batch_norm: every BN computes its training statistics over the
            global batch of all replicas (several devices or workers), so a
            step is the same whatever the replica count.
        stage_blocks: residual blocks per stage res2..res5, ``(3, 4, 6, 3)``
            (ResNet-50) by default; ``RESNET_BLOCKS`` holds the other depths.
    """

    def __init__(
        self,
        non_local=(0, 0, 0, 0),
        stripes=None,
        attention_group=None,
        temporal_reduction=(False, False, False, False),
        last_stride=1,
        stem_relu=False,
        stride_in_1x1=False,
        input_convention="torch",
        sync_batch_norm=False,
        stage_blocks=RESNET_BLOCKS[50],
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.sync_batch_norm = bool(sync_batch_norm)
        self.stage_blocks = check_stage_blocks(stage_blocks)
        self.non_local = check_non_local(non_local, self.stage_blocks)
        self.stripes = _expand(check_stripes(stripes))
        self.temporal_reduction = _expand(_stage_table(temporal_reduction, "temporal_reduction", bool))
        self.attention_group = whole_number(attention_group, "attention_group", allow_none=True)
        if whole_number(last_stride, "last_stride") not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2. Received: last_stride={last_stride}")
        self.last_stride = int(last_stride)
        self.stem_relu = bool(stem_relu)
        self.stride_in_1x1 = bool(stride_in_1x1)
        if input_convention not in INPUT_CONVENTIONS:
            raise ValueError(
                f"input_convention must be one of {INPUT_CONVENTIONS}. "
                f"Received: input_convention={input_convention!r}"
            )
        self.input_convention = input_convention

        dtype = self.dtype_policy
        self.stem_conv = _conv(64, 7, 2, "stem_conv", dtype)
        self.stem_bn = batch_norm("stem_bn", dtype=dtype, synchronized=self.sync_batch_norm)
        self.stem_pool = layers.MaxPooling2D(3, 2, name="stem_pool", dtype=dtype)
        self.blocks, self.nonlocal_blocks, self.reductions = [], [], []
        in_channels = 64
        for index, ((stage, width, _), count) in enumerate(zip(STAGES, self.stage_blocks)):
            stride = 1 if index == 0 else (self.last_stride if index == 3 else 2)
            blocks = []
            for i in range(count):
                blocks.append(Bottleneck(
                    width,
                    strides=stride if i == 0 else 1,
                    downsample=i == 0 and (stride != 1 or in_channels != width * EXPANSION),
                    stride_in_1x1=self.stride_in_1x1,
                    sync_batch_norm=self.sync_batch_norm,
                    name=f"{stage}_block{i}",
                    dtype=dtype,
                ))
                in_channels = width * EXPANSION
            self.blocks.append(blocks)
            self.nonlocal_blocks.append([
                FrameGrouping(self._nonlocal(index), group_size=self.attention_group,
                              name=f"{stage}_nonlocal_{j}", dtype=dtype)
                for j in range(self.non_local[index])
            ])
            self.reductions.append(
                [TemporalMaxReduction(2, name=f"{stage}_temporal_max", dtype=dtype)]
                if self.temporal_reduction[index] else []
            )

    def _nonlocal(self, stage_index):
        if self.stripes[stage_index] is None:
            return NonLocalBlock(name="nonlocal", dtype=self.dtype_policy, sync_batch_norm=self.sync_batch_norm)
        return StripeNonLocalBlock(self.stripes[stage_index], name="nonlocal", dtype=self.dtype_policy,
                                   sync_batch_norm=self.sync_batch_norm)

    def _stages(self):
        """Yields (stage index, block, non-local block or None, reduction or None)."""
        for index, blocks in enumerate(self.blocks):
            first_nl = len(blocks) - len(self.nonlocal_blocks[index])
            for i, block in enumerate(blocks):
                nl = self.nonlocal_blocks[index][i - first_nl] if i >= first_nl else None
                last = i == len(blocks) - 1
                reduction = self.reductions[index][0] if last and self.reductions[index] else None
                yield index, block, nl, reduction

    def build(self, input_shape):
        if len(input_shape) != 5 or input_shape[-1] != 3 or None in input_shape[1:4]:
            raise ValueError(
                "VideoResNet50 expects clips (batch, frames, height, width, 3) with "
                f"static frames, height and width. Received: input_shape={tuple(input_shape)}"
            )
        _, t, h, w, _ = input_shape
        self.stem_conv.build((None, h + 6, w + 6, 3))
        h, w = _conv_out(h, 7, 2, 3), _conv_out(w, 7, 2, 3)
        self.stem_bn.build((None, h, w, 64))
        shape = (None, _conv_out(h, 3, 2, 1), _conv_out(w, 3, 2, 1), 64)
        for _, block, nl, reduction in self._stages():
            block.build(shape)
            shape = block.compute_output_shape(shape)
            if nl is not None:
                nl.build((None, t) + shape[1:])
            if reduction is not None:
                t = reduction.compute_output_shape((None, t) + shape[1:])[1]
        freeze_if_not_trainable(self)

    def call(self, clips, training=None):
        t = clips.shape[1]
        x = ops.reshape(clips, (-1,) + tuple(clips.shape[2:]))
        if self.input_convention == "caffe":
            rgb = (x * ops.array(IMAGENET_STD, x.dtype) + ops.array(IMAGENET_MEAN, x.dtype)) * 255.0
            x = ops.flip(rgb, axis=-1) - ops.array(CAFFE_MEAN_BGR, x.dtype)
        x = self.stem_bn(self.stem_conv(_pad(x, 3)), training=training)
        if self.stem_relu:
            x = ops.relu(x)
        x = self.stem_pool(_pad(x, 1, float("-inf")))
        for _, block, nl, reduction in self._stages():
            x = block(x, training=training)
            if nl is not None:
                x = _fold(nl(_unfold(x, t), training=training))
            if reduction is not None:
                x = reduction(_unfold(x, t))
                t = x.shape[1]
                x = _fold(x)
        return _unfold(x, t)

    def compute_output_shape(self, input_shape):
        b, t, h, w, _ = input_shape
        h, w = _conv_out(h, 7, 2, 3), _conv_out(w, 7, 2, 3)
        shape = (None, _conv_out(h, 3, 2, 1), _conv_out(w, 3, 2, 1), 64)
        for _, block, _, reduction in self._stages():
            shape = block.compute_output_shape(shape)
            if reduction is not None:
                t //= reduction.factor
        return (b, t) + tuple(shape[1:])

    def get_config(self):
        config = super().get_config()
        config.update({
            "non_local": list(self.non_local),
            "stripes": list(self.stripes),
            "attention_group": self.attention_group,
            "temporal_reduction": list(self.temporal_reduction),
            "last_stride": self.last_stride,
            "stem_relu": self.stem_relu,
            "stride_in_1x1": self.stride_in_1x1,
            "input_convention": self.input_convention,
            "sync_batch_norm": self.sync_batch_norm,
            "stage_blocks": list(self.stage_blocks),
        })
        return config


def _fold(x):
    """(B, T, H, W, C) -> (B*T, H, W, C)."""
    return ops.reshape(x, (-1,) + tuple(x.shape[2:]))


def _unfold(x, frames):
    """(B*T, H, W, C) -> (B, T, H, W, C)."""
    return ops.reshape(x, (-1, frames) + tuple(x.shape[1:]))

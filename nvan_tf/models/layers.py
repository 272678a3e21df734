"""Custom Keras layers of NVAN / STE-NVAN.

Every layer here works on channels-last video tensors ``(B, T, H, W, C)``
unless its docstring says otherwise, validates its arguments in ``__init__``
(or in ``build`` where the input shape is needed) and serialises with
``get_config``.

The non-local 1x1x1 convolutions of the reference are ``Dense`` layers on the
channel axis here: a 1x1x1 convolution with bias *is* a per-position affine
map, so the two have the same weights (up to a transpose) and the same output.
"""

import numbers

import keras
from keras import layers, ops

BN_EPSILON = 1e-5  # PyTorch's BatchNorm default, used by the reference.
BN_MOMENTUM = 0.9  # PyTorch momentum 0.1 expressed the Keras way.

_PACKAGE = "nvan_tf"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class BatchNorm(layers.BatchNormalization):
    """``BatchNormalization`` that trains as torch's ``BatchNorm``.

    - The running variance is updated with the *unbiased* batch variance
      (``var * n / (n - 1)``, ``n`` values per channel), as torch does; the
      batch is still normalised with the biased one. Keras uses the biased
      variance for both, which drifts the evaluation statistics (most for
      the BN neck, where ``n`` is the batch size).
    - ``synchronized`` statistics (several replicas) are computed over the
      global batch in two passes, the global mean first and then the mean
      squared deviation from it. Keras's own synchronised path uses
      ``E[x^2] - E[x]^2``, which cancels badly in float32.
    """

    def _batch_moments(self, x):
        """(mean, biased variance, values per channel) over the batch."""
        axes = self._reduction_axes
        context = None
        if self.synchronized and keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            context = tf.distribute.get_replica_context()
            if context is not None and context.num_replicas_in_sync <= 1:
                context = None
        shape = ops.shape(x)
        count = 1
        for axis in axes:
            count = count * shape[axis]
        count = ops.cast(count, x.dtype)
        if context is None:
            mean, variance = ops.moments(x, axes=axes)
            return mean, variance, count
        total = context.all_reduce("sum", ops.sum(x, axis=axes, keepdims=True))
        count = context.all_reduce("sum", count)
        mean = total / count
        squared = context.all_reduce("sum", ops.sum(ops.square(x - mean), axis=axes, keepdims=True))
        return ops.squeeze(mean, axes), ops.squeeze(squared / count, axes), count

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable) or self.renorm or mask is not None:
            return super().call(inputs, training=training, mask=mask)
        x = ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
        mean, variance, count = self._batch_moments(x)
        momentum = self.momentum
        unbiased = variance * (count / ops.maximum(count - 1.0, 1.0))
        self.moving_mean.assign(
            ops.cast(self.moving_mean, x.dtype) * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(
            ops.cast(self.moving_variance, x.dtype) * momentum + unbiased * (1.0 - momentum))
        outputs = ops.batch_normalization(
            x, mean=mean, variance=variance, axis=self.axis,
            offset=ops.cast(self.beta, x.dtype) if self.center else None,
            scale=ops.cast(self.gamma, x.dtype) if self.scale else None,
            epsilon=self.epsilon,
        )
        return ops.cast(outputs, self.compute_dtype)


def whole_number(value, name, minimum=1, allow_none=False):
    """``value`` as a plain ``int`` (NumPy integers accepted); a ``ValueError``
    repeating it when it is not an integer (a float, a bool, a string) or is
    below ``minimum``. ``None`` passes through when ``allow_none``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        wanted = f"an integer >= {minimum}" + (" or None" if allow_none else "")
        raise ValueError(f"{name} must be {wanted}. Received: {name}={value!r}")
    return int(value)


def freeze_if_not_trainable(layer):
    """Passes ``trainable=False``, given to ``layer``'s constructor (as
    ``from_config`` of a frozen layer does), on to its sublayers and weights,
    as the ``trainable`` setter does; Keras keeps it on the layer alone, so
    the BNs inside would still update their statistics. Called at the end
    of ``build`` of every layer with sublayers."""
    if not layer.trainable:
        # Not `layer.trainable = False`: TensorFlow's attribute tracking skips
        # assigning a value an attribute already holds, setter included.
        type(layer).trainable.fset(layer, False)


def batch_norm(name, zero_init=False, **kwargs):
    """BatchNormalization with the reference's epsilon and momentum."""
    init = "zeros" if zero_init else "ones"
    return BatchNorm(
        epsilon=BN_EPSILON,
        momentum=BN_MOMENTUM,
        gamma_initializer=init,
        name=name,
        **kwargs,
    )


def _check_rank5(layer, input_shape):
    if len(input_shape) != 5:
        raise ValueError(
            f"{layer.__class__.__name__} '{layer.name}' expects a video tensor "
            f"(batch, frames, height, width, channels). Received: input_shape="
            f"{tuple(input_shape)}"
        )


def _check_static(layer, input_shape, axes=(1, 2, 3, 4)):
    for axis in axes:
        if input_shape[axis] is None:
            raise ValueError(
                f"{layer.__class__.__name__} '{layer.name}' needs static frames, "
                f"height, width and channels. Received: input_shape="
                f"{tuple(input_shape)}"
            )


@keras.saving.register_keras_serializable(package=_PACKAGE)
class NonLocalBlock(layers.Layer):
    """Embedded-Gaussian non-local block (Wang et al., CVPR 2018).

    For ``x`` of shape ``(B, T, H, W, C)`` and the ``N = T*H*W`` positions::

        f = theta(x) . phi(x)^T          # (B, N, N), no 1/sqrt(d) scaling
        y = softmax(f, axis=-1) . g(x)    # (B, N, C/2)
        z = BN(W(y)) + x                  # BN gamma, beta start at 0

    ``theta``, ``phi``, ``g`` and ``W`` are 1x1x1 convolutions with bias. The
    output BN starts at zero, so the block is the identity at initialisation.

    Args:
        inter_channels: width of theta / phi / g; default ``C // 2``.
        sync_batch_norm: the output BN's training statistics over the global
            batch of all replicas.
    """

    def __init__(self, inter_channels=None, sync_batch_norm=False, **kwargs):
        super().__init__(**kwargs)
        self.inter_channels = whole_number(inter_channels, "inter_channels", allow_none=True)
        self.sync_batch_norm = bool(sync_batch_norm)

    def _make_projections(self, channels):
        inter = self.inter_channels or max(channels // 2, 1)
        dtype = self.dtype_policy
        self.theta = layers.Dense(inter, name="theta", dtype=dtype)
        self.phi = layers.Dense(inter, name="phi", dtype=dtype)
        self.g = layers.Dense(inter, name="g", dtype=dtype)
        self.w = layers.Dense(channels, name="w", dtype=dtype)
        self.w_bn = batch_norm("w_bn", zero_init=True, dtype=dtype, synchronized=self.sync_batch_norm)
        return inter

    def _build_projections(self, channels, inter):
        token_shape = (None, None, channels)
        for sub in (self.theta, self.phi, self.g):
            sub.build(token_shape)
        self.w.build((None, None, inter))
        self.w_bn.build(token_shape)

    def build(self, input_shape):
        _check_rank5(self, input_shape)
        _check_static(self, input_shape)
        channels = input_shape[-1]
        inter = self._make_projections(channels)
        self._build_projections(channels, inter)
        freeze_if_not_trainable(self)

    def _attend(self, tokens, training):
        """Non-local attention over ``tokens`` of shape ``(B, N, C)``."""
        theta = self.theta(tokens)
        phi = self.phi(tokens)
        g = self.g(tokens)
        f = ops.matmul(theta, ops.transpose(phi, (0, 2, 1)))
        # Softmax in float32 keeps mixed-precision training stable.
        attention = ops.cast(ops.softmax(ops.cast(f, "float32"), axis=-1), g.dtype)
        y = ops.matmul(attention, g)
        return self.w_bn(self.w(y), training=training)

    def call(self, x, training=None):
        _, t, h, w, c = x.shape
        tokens = ops.reshape(x, (-1, t * h * w, c))
        z = self._attend(tokens, training)
        return x + ops.reshape(z, (-1, t, h, w, c))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"inter_channels": self.inter_channels, "sync_batch_norm": self.sync_batch_norm})
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class StripeNonLocalBlock(NonLocalBlock):
    """Stripe non-local block: the spatial reduction of STE-NVAN.

    Each frame is cut into ``stripes`` equal horizontal stripes; each stripe is
    average-pooled to one vector, giving ``T * stripes`` tokens. Attention runs
    over the tokens exactly as in :class:`NonLocalBlock`, and each stripe's
    output vector is broadcast to every pixel of its stripe and added to ``x``.

    Args:
        stripes: number of horizontal stripes; must divide the input height.
        inter_channels: width of theta / phi / g; default ``C // 2``.
    """

    def __init__(self, stripes=16, inter_channels=None, sync_batch_norm=False, **kwargs):
        super().__init__(inter_channels=inter_channels, sync_batch_norm=sync_batch_norm, **kwargs)
        self.stripes = whole_number(stripes, "stripes")

    def build(self, input_shape):
        _check_rank5(self, input_shape)
        _check_static(self, input_shape)
        height = input_shape[2]
        if height % self.stripes:
            raise ValueError(
                f"StripeNonLocalBlock '{self.name}' needs a height divisible by "
                f"the number of stripes. Received: stripes={self.stripes} for "
                f"height {height}"
            )
        super().build(input_shape)

    def call(self, x, training=None):
        _, t, h, w, c = x.shape
        s = self.stripes
        parts = ops.reshape(x, (-1, t, s, h // s, w, c))
        tokens = ops.reshape(ops.mean(parts, axis=(3, 4)), (-1, t * s, c))
        z = self._attend(tokens, training)
        z = ops.reshape(z, (-1, t, s, 1, 1, c))
        return ops.reshape(parts + z, (-1, t, h, w, c))

    def get_config(self):
        config = super().get_config()
        config.update({"stripes": self.stripes})
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class FrameGrouping(layers.Wrapper):
    """Applies a video layer to groups of consecutive frames.

    ``(B, T, H, W, C)`` is viewed as ``(B * T / group_size, group_size, H, W,
    C)``, the wrapped layer runs on that, and the result is viewed back. With
    ``group_size=None`` the whole clip is one group (NVAN); STE-NVAN uses
    groups of 2 frames.

    Args:
        layer: a layer mapping ``(B', T', H, W, C)`` to the same shape.
        group_size: frames per group, or None for the whole clip.
    """

    def __init__(self, layer, group_size=None, **kwargs):
        super().__init__(layer, **kwargs)
        self.group_size = whole_number(group_size, "group_size", allow_none=True)

    def _group_shape(self, input_shape):
        _check_rank5(self, input_shape)
        _check_static(self, input_shape)
        frames = input_shape[1]
        size = self.group_size or frames
        if frames % size:
            raise ValueError(
                f"FrameGrouping '{self.name}' cannot split {frames} frames into "
                f"groups of {size}. Received: group_size={self.group_size} for "
                f"{frames} frames"
            )
        return (None, size) + tuple(input_shape[2:])

    def build(self, input_shape):
        group_shape = self._group_shape(input_shape)
        if not self.layer.built:  # from_config gives the wrapped layer built
            self.layer.build(group_shape)
        self.built = True
        freeze_if_not_trainable(self)

    def call(self, x, training=None):
        shape = tuple(x.shape[1:])
        group_shape = self._group_shape((None,) + shape)
        grouped = ops.reshape(x, (-1,) + group_shape[1:])
        return ops.reshape(self.layer(grouped, training=training), (-1,) + shape)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"group_size": self.group_size})
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class TemporalMaxReduction(layers.Layer):
    """Element-wise max over consecutive groups of ``factor`` frames.

    ``(B, T, H, W, C) -> (B, T / factor, H, W, C)``; frames ``(0, 1)``,
    ``(2, 3)``, ... of each clip are reduced together, as in the reference's
    hierarchical temporal reduction.
    """

    def __init__(self, factor=2, **kwargs):
        super().__init__(**kwargs)
        self.factor = whole_number(factor, "factor")

    def build(self, input_shape):
        self.compute_output_shape(input_shape)
        self.built = True

    def call(self, x):
        _, t, h, w, c = x.shape
        pairs = ops.reshape(x, (-1, t // self.factor, self.factor, h, w, c))
        return ops.max(pairs, axis=2)

    def compute_output_shape(self, input_shape):
        _check_rank5(self, input_shape)
        _check_static(self, input_shape, axes=(1,))
        frames = input_shape[1]
        if frames % self.factor:
            raise ValueError(
                f"TemporalMaxReduction '{self.name}' needs a frame count divisible "
                f"by {self.factor}. Received: {frames} frames (input_shape="
                f"{tuple(input_shape)})"
            )
        return (input_shape[0], frames // self.factor) + tuple(input_shape[2:])

    def get_config(self):
        config = super().get_config()
        config.update({"factor": self.factor})
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class FeaturePooling(layers.Layer):
    """Feature pooling layer with a BN neck (BNNeck), in float32.

    Input ``(B, T, H, W, C)``; returns ``(f, f_bn)``, both ``(B, C)``:

    - ``per_frame=False`` (NVAN variants): ``f`` = 3D global average pool over
      ``(T, H, W)``, ``f_bn = BN(f)``.
    - ``per_frame=True`` (the ResNet-50 baseline): every frame is pooled over
      ``(H, W)`` and batch-normalised on its own, then ``f`` and ``f_bn`` are
      the means over frames (the reference's frame averaging).

    The BN shift ``beta`` is frozen (the reference fixes it at 0), also after
    ``trainable`` is switched off and on again; it is still a weight, so
    converted checkpoints load exactly. ``sync_batch_norm``: its training
    statistics over the global batch of all replicas.
    """

    def __init__(self, per_frame=False, sync_batch_norm=False, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.per_frame = bool(per_frame)
        self.sync_batch_norm = bool(sync_batch_norm)

    def build(self, input_shape):
        _check_rank5(self, input_shape)
        self.bn = batch_norm("bnneck", dtype=self.dtype_policy, synchronized=self.sync_batch_norm)
        self.bn.build((None, input_shape[-1]))
        self.bn.beta.trainable = False
        freeze_if_not_trainable(self)

    @property
    def trainable(self):
        return layers.Layer.trainable.fget(self)

    @trainable.setter
    def trainable(self, value):
        layers.Layer.trainable.fset(self, value)  # also sets every weight's flag, beta's too
        if self.built:
            self.bn.beta.trainable = False

    def call(self, x, training=None):
        x = ops.cast(x, "float32")
        if self.per_frame:
            _, t, _, _, c = x.shape
            frames = ops.mean(x, axis=(2, 3))  # (B, T, C)
            flat = ops.reshape(frames, (-1, c))
            f_bn = ops.reshape(self.bn(flat, training=training), (-1, t, c))
            return ops.mean(frames, axis=1), ops.mean(f_bn, axis=1)
        f = ops.mean(x, axis=(1, 2, 3))
        return f, self.bn(f, training=training)

    def compute_output_shape(self, input_shape):
        out = (input_shape[0], input_shape[-1])
        return out, out

    def get_config(self):
        config = super().get_config()
        config.update({"per_frame": self.per_frame, "sync_batch_norm": self.sync_batch_norm})
        return config

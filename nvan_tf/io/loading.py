"""Loading models from every format: one home for evaluation, ``--init`` and export.

>>> model = nvan_tf.load_model("ste_nvan.keras")
>>> model = nvan_tf.load_model("ste_nvan.weights.h5")             # config recorded inside
>>> model = nvan_tf.load_model("ckpt_best.pth", variant="ste-nvan")  # authors' checkpoint
>>> nvan_tf.io.loading.save_weights(model, "m.weights.h5")             # records the config
>>> nvan_tf.io.loading.initialize_from(model, "resnet50-0676ba61.pth")  # ImageNet start

Formats of ``load_model``:

- ``.keras``: the whole model; its own config is authoritative.
- ``.weights.h5``: weights. ``save_weights`` (and ``nvan-convert``) record the
  model config (every ``ModelConfig`` field) in the file's root HDF5
  attribute ``nvan_tf_model_config`` (JSON), so no flags are needed. For a
  file without it (``model.save_weights`` called directly) the variant must
  be given and is logged as ASSUMED: NVAN and STE-NVAN weights have
  identical shapes and cannot be told apart. The number of identities is
  read from the classifier in the file.
- The authors' PyTorch checkpoints (``.pth``, ``.pt``, ``.tar``,
  ``.pth.tar``, ``.ckpt``): the variant must be given (logged as assumed);
  the number of identities is read from ``classifier.weight``.

What the caller gives is checked against what the file holds: an unknown
variant is refused before anything is read; a variant, identity count or
model option that disagrees with the file is refused naming both. The clip
size (``seq_len``, ``height``, ``width``) does not change any weight: for
weights and checkpoints it may be chosen freely (default: the recorded one,
else 8 x 256 x 128); a ``.keras`` model is already built for its own.

SavedModel folders hold a serving function, not a Keras model:
``load_saved_model`` returns it as a callable.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import zipfile

from nvan_tf.io import convert
from nvan_tf.core.atomic import atomic_path

logger = logging.getLogger(__name__)

__all__ = [
    "LoadError",
    "TORCH_SUFFIXES",
    "CONFIG_ATTRIBUTE",
    "load_model",
    "save_model",
    "save_weights",
    "recorded_config",
    "load_saved_model",
    "SavedModelFunction",
    "initialize_from",
    "load_torch_checkpoint",
    "load_torchvision_resnet50",
    "load_keras_applications_resnet50",
]

TORCH_SUFFIXES = (".pth", ".pt", ".pth.tar", ".tar", ".ckpt")
WEIGHTS_SUFFIX = ".weights.h5"
CONFIG_ATTRIBUTE = "nvan_tf_model_config"
CLIP_FIELDS = ("seq_len", "height", "width")
_H5_MAGIC = b"\x89HDF\r\n\x1a\n"
_INIT_KINDS = (
    "a torchvision ResNet-50 state_dict (conv1.weight, layer1.0...), an authors' "
    "checkpoint (module.features.backbone...), a Keras-applications ResNet-50 weight "
    "file, an nvan-tf .weights.h5 or a .keras model"
)


class LoadError(ValueError):
    """A model file that cannot be loaded as asked (wrong format, variant, size)."""


def _variants():
    from nvan_tf.models.model import VARIANTS

    return VARIANTS


def _check_variant(variant):
    if variant is not None and variant not in _variants():
        raise LoadError(f"unknown variant {variant!r}; expected one of {sorted(_variants())}")


def _check_exists(path):
    if not os.path.exists(path):
        raise FileNotFoundError(f"model not found: {path}")


# ----------------------------------------------------------------------------
# .weights.h5 with the model config recorded
# ----------------------------------------------------------------------------
def save_weights(model, path):
    """``model.save_weights(path)`` plus the model config, recorded in the file.

    The config (``dataclasses.asdict(model.config)``: variant, number of
    identities, clip size and every other ``ModelConfig`` field) is written
    as JSON to the root attribute ``nvan_tf_model_config``, so
    ``load_model(path)`` needs no flags. Returns ``path``.
    """
    import h5py

    path = os.fspath(path)
    if not path.endswith(WEIGHTS_SUFFIX):
        raise LoadError(f"weights files must end with {WEIGHTS_SUFFIX}. Received: {path}")
    config = getattr(model, "config", None)
    if config is None or not dataclasses.is_dataclass(config):
        raise LoadError(f"{type(model).__name__} has no ModelConfig to record; build it with build_model")
    with atomic_path(path) as tmp:
        model.save_weights(tmp)
        with h5py.File(tmp, "a") as f:
            f.attrs[CONFIG_ATTRIBUTE] = json.dumps(dataclasses.asdict(config), sort_keys=True)
    return path


def save_model(model, path):
    """``model.save(path)`` (a ``.keras`` archive), written atomically; returns ``path``."""
    path = os.fspath(path)
    with atomic_path(path) as tmp:
        model.save(tmp)
    return path


def _is_h5(path):
    with open(path, "rb") as f:
        return f.read(8) == _H5_MAGIC


def recorded_config(path):
    """The model config recorded in a ``.weights.h5`` file (dict), or ``None``."""
    import h5py

    if not _is_h5(path):
        raise LoadError(f"{path} is not an HDF5 file (a .weights.h5 was expected)")
    with h5py.File(path, "r") as f:
        text = f.attrs.get(CONFIG_ATTRIBUTE)
    if text is None:
        return None
    return json.loads(text.decode() if isinstance(text, bytes) else text)


def _classifier_size_in_h5(path):
    import h5py

    with h5py.File(path, "r") as f:
        kernel = f.get("classifier/vars/0")
        return None if kernel is None else int(kernel.shape[-1])


# ----------------------------------------------------------------------------
# load_model
# ----------------------------------------------------------------------------
def _disagreements(recorded, wanted):
    """``wanted`` fields (not None) that differ from ``recorded`` (a config dict)."""
    out = []
    for name, value in wanted.items():
        if value is None or name not in recorded:
            continue
        have = recorded[name]
        if isinstance(have, list):
            have = tuple(have)
        if isinstance(value, list):
            value = tuple(value)
        if have != value:
            out.append((name, have, value))
    return out


def _refuse(path, what, problems):
    shown = "; ".join(f"{what} has {name}={have!r} but {name}={value!r} was given"
                      for name, have, value in problems)
    raise LoadError(f"{path}: {shown}")


def _identity_error(path, have, given):
    return LoadError(
        f"{path}: checkpoint has {have} identities, --num-identities {given}; "
        "omit --num-identities to take the size from the file"
    )


def _check_option_names(overrides):
    from nvan_tf.models.model import ModelConfig

    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise LoadError(f"unknown model option(s) {unknown}; valid options: {sorted(fields)}")


def load_model(path, *, variant=None, num_identities=None, seq_len=None, height=None,
               width=None, **overrides):
    """Loads a model from a ``.keras`` file, ``.weights.h5`` or a PyTorch checkpoint.

    Args:
        path: the file (see the module docstring for the formats).
        variant: one of ``VARIANTS``. Checked against a ``.keras`` file's or
            a ``.weights.h5``'s recorded config; needed where nothing is
            recorded (an authors' checkpoint, plain ``model.save_weights``).
        num_identities: classifier size; read from the file when omitted,
            refused when it disagrees with the file.
        seq_len, height, width: clip size to build for (weights and
            checkpoints; default: recorded, else 8 x 256 x 128).
        **overrides: other ``ModelConfig`` fields (``stripes=4``, ...).

    Returns:
        the built Keras model with its weights (an ``NVANModel``; a ``.keras``
        file may hold another Keras model, returned as it is).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        LoadError (a ValueError): unknown format or variant, a disagreement
            with the file, or a file that is not what its name says.
    """
    path = os.fspath(path)
    _check_variant(variant)
    _check_exists(path)
    if os.path.isdir(path):
        raise LoadError(
            f"{path} is a folder: a SavedModel holds a serving function, not a Keras "
            "model (use loading.load_saved_model); load_model takes a .keras file, "
            f".weights.h5 or a PyTorch checkpoint ({', '.join(TORCH_SUFFIXES)})"
        )
    _check_option_names(overrides)
    clip = {"seq_len": seq_len, "height": height, "width": width}
    lower = path.lower()
    if lower.endswith(".keras"):
        return _load_keras(path, variant, num_identities, clip, overrides)
    if lower.endswith(".h5"):
        return _load_weights(path, variant, num_identities, clip, overrides)
    if lower.endswith(TORCH_SUFFIXES):
        return _load_torch(path, variant, num_identities, clip, overrides)
    raise LoadError(
        f"unknown model format: {path}. Expected a .keras file, {WEIGHTS_SUFFIX}, or a "
        f"PyTorch checkpoint ({', '.join(TORCH_SUFFIXES)})"
    )


def _read_keras(path):
    import keras

    import nvan_tf.models.model  # noqa: F401  (registers the custom objects)

    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError) as err:
        raise LoadError(
            f"{path} exists but is not a valid Keras archive (a .keras file is a zip "
            f"archive; this one cannot be opened: {err})"
        ) from err
    if "config.json" not in names:
        raise LoadError(f"{path} exists but is not a valid Keras archive: no config.json inside")
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as err:  # Keras raises TypeError, ValueError, KeyError, ...
        raise LoadError(f"{path}: a Keras archive that could not be loaded: "
                        f"{type(err).__name__}: {err}") from err


def _load_keras(path, variant, num_identities, clip, overrides):
    model = _read_keras(path)
    config = getattr(model, "config", None)
    if not dataclasses.is_dataclass(config):
        if variant or num_identities or overrides:
            raise LoadError(f"{path} holds a {type(model).__name__}, not an NVAN model: "
                            "it has no variant or identities to check against")
        return model
    recorded = dataclasses.asdict(config)
    problems = _disagreements(recorded, {"variant": variant, **clip, **overrides})
    if problems:
        _refuse(path, "the .keras model", problems)
    if num_identities is not None and num_identities != config.num_identities:
        raise _identity_error(path, config.num_identities, num_identities)
    logger.info("loaded %s (%s, %d identities) from %s", config.variant,
                "x".join(str(recorded[k]) for k in CLIP_FIELDS), config.num_identities, path)
    return model


def _build(variant, num_identities, clip, overrides):
    from nvan_tf.models.model import build_model

    return build_model(variant, num_identities,
                       **{k: v for k, v in clip.items() if v is not None}, **overrides)


def _load_weights(path, variant, num_identities, clip, overrides):
    if not path.endswith(WEIGHTS_SUFFIX):
        raise LoadError(f"{path}: Keras 3 weights files end with {WEIGHTS_SUFFIX}")
    recorded = recorded_config(path)
    if recorded is not None:
        build_fields = {k: v for k, v in recorded.items()
                        if k not in ("variant", "num_identities", *CLIP_FIELDS)}
        problems = _disagreements(recorded, {"variant": variant, **overrides})
        if problems:
            _refuse(path, "the recorded config", problems)
        if num_identities is not None and num_identities != recorded["num_identities"]:
            raise _identity_error(path, recorded["num_identities"], num_identities)
        chosen = {k: clip[k] if clip[k] is not None else recorded[k] for k in CLIP_FIELDS}
        model = _build(recorded["variant"], recorded["num_identities"], chosen, build_fields)
        how = "recorded in the file"
    else:
        if variant is None:
            raise LoadError(
                f"{path} holds weights without a recorded config (written by "
                "model.save_weights, not nvan_tf.io.loading.save_weights): pass the variant "
                f"(--variant, one of {', '.join(sorted(_variants()))})"
            )
        have = _classifier_size_in_h5(path)
        if have is None:
            raise LoadError(f"{path} has no classifier weights: not the weights of an NVAN model")
        if num_identities is not None and num_identities != have:
            raise _identity_error(path, have, num_identities)
        model = _build(variant, have, clip, overrides)
        how = "ASSUMED: nothing is recorded in the file"
        logger.warning("%s records no model config: variant %s ASSUMED", path, variant)
    try:
        model.load_weights(path)
    except Exception as err:  # Keras: ValueError on mismatched layers, OSError, ...
        raise LoadError(f"{path} does not fit variant {model.config.variant}: "
                        f"{type(err).__name__}: {err}") from err
    logger.info("loaded %s weights (variant %s; %d identities) from %s",
                model.config.variant, how, model.config.num_identities, path)
    return model


def _load_torch(path, variant, num_identities, clip, overrides):
    if variant is None:
        raise LoadError(
            f"{path} is a PyTorch checkpoint, which records no variant: pass it "
            f"(--variant, one of {', '.join(sorted(_variants()))})"
        )
    state_dict = convert.read_state_dict(path)
    have = convert.infer_num_identities(state_dict)
    if num_identities is not None and num_identities != have:
        raise _identity_error(path, have, num_identities)
    model = _build(variant, have, clip, overrides)
    convert.assign_state_dict(convert.reference_entries(model), state_dict,
                              source=f"{path} (for variant {variant})")
    logger.warning("%s is a PyTorch checkpoint, which records no variant: %s ASSUMED", path, variant)
    return model


# ----------------------------------------------------------------------------
# SavedModel
# ----------------------------------------------------------------------------
class SavedModelFunction:
    """The ``serving_default`` signature of a SavedModel as a NumPy callable.

    Attributes:
        path: the folder.
        input_name: the signature's single input.
        clip_shape: ``(seq_len, height, width)``, ``None`` where not fixed.
        output_name: the output used (the first in sorted order).
    """

    def __init__(self, path, loaded, fn, input_name, clip_shape, output_name):
        self.path = path
        self._loaded = loaded  # keeps the variables alive while serving
        self._fn = fn
        self.input_name = input_name
        self.clip_shape = clip_shape
        self.output_name = output_name

    def __call__(self, clips):
        import tensorflow as tf

        outputs = self._fn(**{self.input_name: tf.convert_to_tensor(clips, tf.float32)})
        return outputs[self.output_name].numpy()


def load_saved_model(path):
    """Loads a SavedModel folder (``model.export`` or ``tf.saved_model.save``).

    Returns:
        a :class:`SavedModelFunction` for its ``serving_default`` signature,
        which must take one input of clips ``(batch, T, H, W, 3)``; for an
        ``nvan-export`` SavedModel, its ``embed_clips`` signature (float
        clips; ``serving_default`` there takes uint8 frames).
    """
    import tensorflow as tf

    path = os.fspath(path)
    _check_exists(path)
    if not os.path.isdir(path) or not os.path.exists(os.path.join(path, "saved_model.pb")):
        raise LoadError(f"{path} is not a SavedModel folder (no saved_model.pb)")
    loaded = tf.saved_model.load(path)
    signatures = getattr(loaded, "signatures", {})
    if "serving_default" not in signatures:
        raise LoadError(
            f"SavedModel {path} has no 'serving_default' signature; found "
            f"{sorted(signatures)}. Export it with model.export(...) or "
            "tf.saved_model.save(..., signatures=...)"
        )
    # nvan-export's serving_default takes uint8 frames; its embed_clips the float clips.
    fn = signatures["embed_clips" if "embed_clips" in signatures else "serving_default"]
    args, kwargs = fn.structured_input_signature
    if args or len(kwargs) != 1:
        raise LoadError(
            f"SavedModel {path}: expected a serving signature with one input; "
            f"found {len(args)} positional and {sorted(kwargs)} named inputs"
        )
    (name, tensor_spec), = kwargs.items()
    if tensor_spec.shape.rank is None and hasattr(loaded, "clip_shape"):  # nvan-export
        shape = (None, *(int(v) for v in loaded.clip_shape[0].numpy()), 3)
    else:
        shape = tuple(tensor_spec.shape) if tensor_spec.shape.rank is not None else ()
    if len(shape) != 5:
        raise LoadError(f"SavedModel {path}: its input {name!r} has shape {shape}; "
                        "expected clips (batch, T, H, W, 3)")
    output_names = sorted(fn.structured_outputs)
    if len(output_names) > 1:
        logger.warning("SavedModel %s has outputs %s; using %r", path, output_names, output_names[0])
    return SavedModelFunction(path, loaded, fn, name, shape[1:4], output_names[0])


# ----------------------------------------------------------------------------
# Initialisation (nvan-train --init)
# ----------------------------------------------------------------------------
def load_torch_checkpoint(model, path, include_classifier=True):
    """Loads an authors' checkpoint (``state_dict`` file) into ``model``.

    ``model`` must be the matching variant (a baseline checkpoint does not fit
    ``nvan``). With ``include_classifier=False`` the classifier is left alone,
    so a model with another number of identities can take the embedding.
    """
    state_dict = convert.read_state_dict(path)
    _assign_reference(model, state_dict, path, include_classifier)
    return model


def _assign_reference(model, state_dict, path, include_classifier):
    entries = convert.reference_entries(model, include_classifier)
    variant = getattr(getattr(model, "config", None), "variant", "the model")
    ignore = () if include_classifier else ("classifier.",)
    convert.assign_state_dict(entries, state_dict, source=f"{path} (for variant {variant})",
                              ignore=ignore)


def load_torchvision_resnet50(model, path):
    """Initialises the backbone from a torchvision ResNet-50 ``state_dict``.

    This is the reference's ImageNet starting point; ``fc.*`` is ignored and
    the non-local blocks keep their identity initialisation.
    """
    _assign_torchvision(model, convert.read_state_dict(path), path)
    return model


def _resnet(model):
    """``ResNet-50`` (the reference's), ``ResNet-101``, ...: the model's depth by name."""
    from nvan_tf.models.backbone import resnet_depth

    return f"ResNet-{resnet_depth(model.backbone.stage_blocks)}"


def _assign_torchvision(model, state_dict, path):
    entries = [e for e in convert.backbone_entries(model.backbone, "") if not e[0].startswith("NL_")]
    convert.assign_state_dict(entries, state_dict, source=f"{path} (torchvision {_resnet(model)})",
                              ignore=("fc.",))


def load_keras_applications_resnet50(model, weights="imagenet"):
    """Initialises the backbone from ``keras.applications.ResNet50`` weights.

    ``weights`` is ``"imagenet"`` (downloaded by Keras where there is
    internet) or a local file of those weights. Keras-applications is the
    v1 layout: the model must be built with
    ``convert.KERAS_APPLICATIONS_LAYOUT``, otherwise this refuses rather than
    load weights into a network that computes something else. Conv biases
    are folded exactly into the BN moving means, and its BN epsilon
    (1.001e-5) into the moving variances. All or nothing: weights that do
    not fit (``LoadError``, ``convert.CheckpointError``) leave the model as it was.
    """
    import keras

    config = model.config
    wrong = {k: getattr(config, k) for k, v in convert.KERAS_APPLICATIONS_LAYOUT.items()
             if getattr(config, k) != v}
    if wrong:
        raise LoadError(
            "Keras-applications ResNet-50 weights are the v1 layout (stride on the first "
            "1x1 conv, a ReLU in the stem, caffe-style BGR input); they do not fit a model "
            f"built with {wrong}. Build it with **nvan_tf.io.convert.KERAS_APPLICATIONS_LAYOUT, "
            "or use a torchvision state_dict (load_torchvision_resnet50) for the reference layout."
        )
    try:
        source = keras.applications.ResNet50(include_top=False, weights=weights, input_shape=(None, None, 3))
    except Exception as err:  # Keras: OSError (unreadable file), ValueError (weights that do not fit)
        raise LoadError(f"{weights}: not Keras-applications ResNet-50 weights: "
                        f"{type(err).__name__}: {err}") from err
    backbone = model.backbone
    entries, values = [], {}

    def conv_bn(conv_name, bn_name, conv, bn):
        """The conv kernel, and its bias folded into the BN that follows."""
        kernel, bias = source.get_layer(conv_name).get_weights()
        source_bn = source.get_layer(bn_name)
        gamma, beta, mean, var = source_bn.get_weights()
        for key, variable, value in (
                (f"{conv_name}/kernel", conv.kernel, kernel),
                (f"{bn_name}/gamma", bn.gamma, gamma),
                (f"{bn_name}/beta", bn.beta, beta),
                (f"{bn_name}/moving_mean", bn.moving_mean, mean - bias),
                (f"{bn_name}/moving_variance", bn.moving_variance, var + source_bn.epsilon - bn.epsilon)):
            entries.append((key, variable, None))
            values[key] = value

    conv_bn("conv1_conv", "conv1_bn", backbone.stem_conv, backbone.stem_bn)
    for k, blocks in enumerate(backbone.blocks, start=2):
        for i, block in enumerate(blocks, start=1):
            base = f"conv{k}_block{i}"
            for j in (1, 2, 3):
                conv_bn(f"{base}_{j}_conv", f"{base}_{j}_bn",
                        getattr(block, f"conv{j}"), getattr(block, f"bn{j}"))
            if block.downsample:
                conv_bn(f"{base}_0_conv", f"{base}_0_bn", block.downsample_conv, block.downsample_bn)
    # every weight checked before any is assigned: a mismatch leaves the model as it was
    convert.assign_state_dict(entries, values, source=f"{weights} (Keras-applications ResNet-50)")
    return model


def _h5_kind(path):
    """'nvan' (our weights), 'keras-applications' (a ResNet-50) or None."""
    import h5py

    with h5py.File(path, "r") as f:
        if "backbone" in f and "classifier" in f:
            return "nvan"
        layer_names = [n.decode() if isinstance(n, bytes) else str(n)
                       for n in f.attrs.get("layer_names", [])]
        if "conv1_conv" in layer_names:  # Keras 2 / legacy h5 (the ImageNet download)
            return "keras-applications"
        layers = f.get("layers")
        if layers is not None:  # Keras 3 .weights.h5 of a functional ResNet-50
            convs = [n for n in layers if n == "conv2d" or n.startswith("conv2d_")]
            bns = [n for n in layers if n.startswith("batch_normalization")]
            if len(convs) == 53 and len(bns) == 53 and "dense" not in layers:
                return "keras-applications"
    return None


def _is_keras_archive(path):
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return "config.json" in archive.namelist()


def _copy_from(model, source, path):
    """Copies the embedding network, and the classifier when its size matches."""
    if not dataclasses.is_dataclass(getattr(source, "config", None)):
        raise LoadError(f"{path} holds a {type(source).__name__}, not an NVAN model; "
                        f"--init takes {_INIT_KINDS}")
    parts = [("backbone", model.backbone, source.backbone),
             ("feature pooling", model.pooling, source.pooling)]
    for name, dst, src in parts:
        have = [tuple(w.shape) for w in src.weights]
        want = [tuple(w.shape) for w in dst.weights]
        if have != want:
            raise LoadError(
                f"{path}: its {source.config.variant} {name} ({len(have)} weights) does not "
                f"fit this {model.config.variant} model's ({len(want)} weights)"
            )
    for _, dst, src in parts:
        dst.set_weights(src.get_weights())
    return _copy_classifier(model, source.config.num_identities,
                            lambda: model.classifier.set_weights(source.classifier.get_weights()),
                            f"{source.config.variant} model {path}")


def _copy_classifier(model, have, assign, description):
    if have == model.config.num_identities:
        assign()
        return f"{description}: embedding network and classifier ({have} identities)"
    logger.info("%s: classifier has %d identities, the model %d: embedding network only",
                description, have, model.config.num_identities)
    return (f"{description}: embedding network only (its classifier has {have} identities, "
            f"the model {model.config.num_identities})")


def initialize_from(model, path):
    """Initialises ``model`` from the file at ``path`` (``nvan-train --init``).

    The kind of file is detected from its content:

    - a torchvision ResNet-50 ``state_dict`` (``conv1.weight``,
      ``layer1.0...``): the backbone, non-local blocks left at identity;
    - an authors' checkpoint (``[module.]features.backbone...``): the
      embedding network (must be the same variant);
    - a Keras-applications ResNet-50 weight file: the backbone, only into a
      model built with ``convert.KERAS_APPLICATIONS_LAYOUT``;
    - an nvan-tf ``.weights.h5`` or ``.keras`` model: the embedding network.

    The classifier is copied only when its size matches the model's;
    otherwise the embedding network only (logged).

    Returns:
        a description of what was loaded.
    """
    path = os.fspath(path)
    _check_exists(path)
    if os.path.isdir(path):
        raise LoadError(f"{path} is a folder; --init takes {_INIT_KINDS}")
    if _is_h5(path):
        kind = _h5_kind(path)
        if kind == "keras-applications":
            load_keras_applications_resnet50(model, path)
            description = f"Keras-applications ResNet-50 {path}: backbone"
        elif kind == "nvan":
            recorded = recorded_config(path)
            if recorded is None:  # the model's own build, with the file's classifier size
                recorded = dict(dataclasses.asdict(model.config),
                                num_identities=_classifier_size_in_h5(path))
            source = _build(recorded["variant"], recorded["num_identities"],
                            {k: recorded[k] for k in CLIP_FIELDS},
                            {k: v for k, v in recorded.items()
                             if k not in ("variant", "num_identities", *CLIP_FIELDS)})
            try:
                source.load_weights(path)
            except Exception as err:
                raise LoadError(f"{path} does not fit variant {recorded['variant']}: "
                                f"{type(err).__name__}: {err}") from err
            description = _copy_from(model, source, path)
        else:
            raise LoadError(f"{path}: an HDF5 file of unknown content; --init takes {_INIT_KINDS}")
    elif _is_keras_archive(path):
        description = _copy_from(model, _read_keras(path), path)
    elif path.lower().endswith(TORCH_SUFFIXES) or zipfile.is_zipfile(path):
        state_dict = convert.read_state_dict(path)
        if "conv1.weight" in state_dict and "layer1.0.conv1.weight" in state_dict:
            _assign_torchvision(model, state_dict, path)
            description = f"torchvision {_resnet(model)} {path}: backbone (non-local blocks at identity)"
        elif any(k.startswith("features.backbone.") for k in state_dict):
            have = convert.infer_num_identities(state_dict)
            include = have == model.config.num_identities
            _assign_reference(model, state_dict, path, include_classifier=include)
            description = _copy_classifier(model, have, lambda: None, f"authors' checkpoint {path}")
        else:
            raise LoadError(f"{path}: a PyTorch state_dict with unrecognised keys "
                            f"({', '.join(sorted(state_dict)[:3])}, ...); --init takes {_INIT_KINDS}")
    else:
        raise LoadError(f"{path}: unrecognised file; --init takes {_INIT_KINDS}")
    logger.info("initialised %s from %s", model.config.variant, description)
    return description

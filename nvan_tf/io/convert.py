"""The mapping from PyTorch ``state_dict`` keys to the Keras weights.

Command line::

    nvan-convert --torch ckpt_best.pth --variant ste-nvan --out ste_nvan.weights.h5

Python (loading lives in ``nvan_tf.io.loading``, which uses this mapping)::

    model = nvan_tf.load_model("ckpt_best.pth", variant="ste-nvan")
    nvan_tf.io.loading.load_torch_checkpoint(model, "ckpt_best.pth")

Three sources are understood:

- the authors' checkpoints (``module.features.backbone.*``, ``NL_K.I.*``,
  ``bottleneck.*``, ``classifier.weight``; the ``module.`` prefix optional);
- a torchvision ResNet-50 ``state_dict`` file (``conv1.weight``, ...,
  ``fc.*`` ignored): the authors' ImageNet starting point;
- Keras-applications ImageNet weights (``weights="imagenet"`` or a local
  ``.h5``), which are a *different* layout (v1: stride on the first 1x1
  conv, a ReLU in the stem, conv biases, caffe-style BGR input). They load
  only into a model built in that layout (see ``KERAS_APPLICATIONS_LAYOUT``
  and ``loading.load_keras_applications_resnet50``).

Mismatched checkpoints are refused with the list of missing, unexpected and
mis-shaped keys; nothing is loaded partially.
"""

import os
import pickle
import sys

import numpy as np

TORCH_INSTALL_HINT = "pip install 'nvan-tf[torch]' (torch==2.13.0, the CPU build)"

# Build options a model needs to take Keras-applications ImageNet weights.
KERAS_APPLICATIONS_LAYOUT = {"stride_in_1x1": True, "stem_relu": True, "input_convention": "caffe",
                             "stage_blocks": (3, 4, 6, 3)}  # keras.applications.ResNet50: 50 layers only


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not fit the model."""


# --------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------

def read_state_dict(path):
    """Reads a PyTorch ``state_dict`` file into ``{key: np.ndarray}``.

    Uses ``torch.load(..., weights_only=True)``: pickles holding anything but
    tensors and plain containers are refused. A ``{"state_dict": ...}``
    wrapper is unwrapped; a leading ``module.`` (``nn.DataParallel``) is
    stripped from every key.
    """
    try:
        import torch
    except ImportError as err:
        raise ImportError(f"Reading PyTorch checkpoints needs torch: {TORCH_INSTALL_HINT}") from err
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path}: refused to unpickle: it holds objects other than tensors "
            f"(weights_only=True). Save a plain state_dict. Details: {err}"
        ) from err
    except Exception as err:  # torch raises RuntimeError, EOFError, zipfile errors, ...
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): "
            f"{type(err).__name__}: {err}"
        ) from err
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(
            f"{path}: expected a state_dict (a dict of tensor names to tensors). "
            f"Received: {type(obj).__name__}"
        )
    not_tensors = sorted(str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise CheckpointError(f"{path}: entries that are not tensors: {_listing(not_tensors)}")
    return {
        (k[len("module."):] if k.startswith("module.") else k): v.detach().cpu().numpy()
        for k, v in obj.items()
    }


def infer_num_identities(state_dict):
    """Number of identities of a reference checkpoint (rows of its classifier)."""
    weight = state_dict.get("classifier.weight")
    if weight is None:
        raise CheckpointError("the checkpoint has no 'classifier.weight'")
    return int(weight.shape[0])


# --------------------------------------------------------------------------
# Key layout: which torch key feeds which Keras weight, and how
# --------------------------------------------------------------------------

def _conv2d(kernel):       # torch (out, in, kh, kw) -> keras (kh, kw, in, out)
    return np.transpose(kernel, (2, 3, 1, 0))


def _dense(kernel):        # torch (out, in[, 1, 1, 1]) -> keras (in, out)
    return kernel.reshape(kernel.shape[0], -1).T


def _bn_entries(prefix, bn):
    return [
        (f"{prefix}.weight", bn.gamma, None),
        (f"{prefix}.bias", bn.beta, None),
        (f"{prefix}.running_mean", bn.moving_mean, None),
        (f"{prefix}.running_var", bn.moving_variance, None),
    ]


def backbone_entries(backbone, prefix):
    """(torch key, Keras variable, transform) for every backbone weight."""
    entries = [(f"{prefix}conv1.weight", backbone.stem_conv.kernel, _conv2d)]
    entries += _bn_entries(f"{prefix}bn1", backbone.stem_bn)
    for k, blocks in enumerate(backbone.blocks, start=1):
        for i, block in enumerate(blocks):
            base = f"{prefix}layer{k}.{i}"
            for j in (1, 2, 3):
                entries.append((f"{base}.conv{j}.weight", getattr(block, f"conv{j}").kernel, _conv2d))
                entries += _bn_entries(f"{base}.bn{j}", getattr(block, f"bn{j}"))
            if block.downsample:
                entries.append((f"{base}.downsample.0.weight", block.downsample_conv.kernel, _conv2d))
                entries += _bn_entries(f"{base}.downsample.1", block.downsample_bn)
        for i, grouping in enumerate(backbone.nonlocal_blocks[k - 1]):
            block, base = grouping.layer, f"{prefix}NL_{k}.{i}"
            for name in ("theta", "phi", "g"):
                sub = getattr(block, name)
                entries += [(f"{base}.{name}.weight", sub.kernel, _dense),
                            (f"{base}.{name}.bias", sub.bias, None)]
            entries += [(f"{base}.W.0.weight", block.w.kernel, _dense),
                        (f"{base}.W.0.bias", block.w.bias, None)]
            entries += _bn_entries(f"{base}.W.1", block.w_bn)
    return entries


def reference_entries(model, include_classifier=True):
    """The authors' checkpoint layout for ``model`` (keys without ``module.``)."""
    entries = backbone_entries(model.backbone, "features.backbone.")
    entries += _bn_entries("bottleneck", model.pooling.bn)
    if include_classifier:
        entries.append(("classifier.weight", model.classifier.kernel, _dense))
    return entries


def _optional_keys(entries):
    """BN ``num_batches_tracked`` counters: accepted, not needed."""
    return {key.rsplit(".", 1)[0] + ".num_batches_tracked"
            for key, _, _ in entries if key.endswith(".running_var")}


def _listing(keys, limit=20):
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def assign_state_dict(entries, state_dict, source="checkpoint", ignore=()):
    """Checks ``state_dict`` against ``entries`` and assigns every weight.

    Refuses (``CheckpointError``) with the full list of missing, unexpected
    and mis-shaped keys before anything is assigned.
    """
    expected = {key for key, _, _ in entries}
    allowed = expected | _optional_keys(entries)
    given = {k for k in state_dict if not any(k.startswith(p) for p in ignore)}
    missing = expected - given
    unexpected = given - allowed
    converted, mismatched = [], []
    for key, variable, transform in entries:
        if key not in state_dict:
            continue
        value = np.asarray(state_dict[key], dtype="float32")
        value = transform(value) if transform else value
        if tuple(value.shape) != tuple(variable.shape):
            mismatched.append(
                f"{key}: checkpoint {tuple(state_dict[key].shape)} vs model "
                f"{tuple(variable.shape)} ({variable.path})"
            )
        converted.append((variable, value))
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches ({len(mismatched)}): " + "; ".join(mismatched[:20]))
    if problems:
        raise CheckpointError(f"{source} does not fit the model:\n  " + "\n  ".join(problems))
    for variable, value in converted:
        variable.assign(value)

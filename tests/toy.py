"""The toy model depth the suite trains, evaluates and exports at: 7
residual blocks per clip (res2..res5: 1, 2, 3, 1) instead of ResNet-50's
16, so a run traces, saves and checkpoints about half the graph and
weights. NVAN's non-local table (0, 2, 3, 0) still fits. Tests that compare
with the PyTorch reference or the published shapes keep ResNet-50."""

BLOCKS = (1, 2, 3, 1)
FLAG = ["--stage-blocks", ",".join(map(str, BLOCKS))]
OVERRIDES = {"stage_blocks": BLOCKS}

# The shallowest depth, one residual block a stage, for the baseline (no non-local blocks to fit) in the
# runs that test training's machinery rather than a variant: faults, resume, validation, Hyperband. A
# baseline nvan-train of 6 steps with a checkpoint each took 44 s at BLOCKS and 31 s at this depth.
SHALLOW_BLOCKS = (1, 1, 1, 1)
SHALLOW_FLAG = ["--stage-blocks", ",".join(map(str, SHALLOW_BLOCKS))]
SHALLOW_OVERRIDES = {"stage_blocks": SHALLOW_BLOCKS}


def smallest(variant):
    """The overrides that keep every kind of block ``variant`` has, once: one residual block a stage and,
    where it has non-local blocks, one in each stage that has them (its temporal reductions and stripes
    as they are). tf2onnx's time grows with the graph: NVAN's conversion took 30 s at BLOCKS and 15 s
    at this depth."""
    from nvan_tf.choices import VARIANTS

    non_local = VARIANTS[variant].get("non_local")
    return {**SHALLOW_OVERRIDES, **({"non_local": tuple(min(n, 1) for n in non_local)} if non_local else {})}


def smallest_flags(variant):
    """:func:`smallest` as command-line flags (``--stage-blocks``, ``--non-local``)."""
    return [word for name, value in smallest(variant).items()
            for word in ("--" + name.replace("_", "-"), ",".join(map(str, value)))]

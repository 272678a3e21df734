"""The toy model depth the suite trains, evaluates and exports at: 7
residual blocks per clip (res2..res5: 1, 2, 3, 1) instead of ResNet-50's
16, so a run traces, saves and checkpoints about half the graph and
weights. NVAN's non-local table (0, 2, 3, 0) still fits. Tests that compare
with the PyTorch reference or the published shapes keep ResNet-50."""

BLOCKS = (1, 2, 3, 1)
FLAG = ["--stage-blocks", ",".join(map(str, BLOCKS))]
OVERRIDES = {"stage_blocks": BLOCKS}

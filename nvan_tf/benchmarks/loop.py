"""The whole training loop, input pipeline and checkpoints included: clips/s.

    python -m nvan_tf.benchmarks.loop [--variant ste-nvan --epochs 3 --steps 10 --deterministic]

Runs ``nvan_tf.training.train`` on a synthetic MARS tree (48 identities at
128x64, written once under ``--data``) with clips of 4 frames at 128x64,
P=4 x K=4, one checkpoint per epoch and no evaluation, and prints the
clips/s of each epoch after the first (the first traces the step). It
imports the current paths and falls back to the old flat ones
(``nvan_tf.model``, ``nvan_tf.datasets``) where those are missing, so the
same file times an older checkout:
``PYTHONPATH=OLD_CHECKOUT python nvan_tf/benchmarks/loop.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        from nvan_tf.choices import VARIANTS
    except ImportError:  # a checkout before the sub-packages
        from nvan_tf.model import VARIANTS

    parser = argparse.ArgumentParser(prog="python -m nvan_tf.benchmarks.loop", description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="ste-nvan", choices=sorted(VARIANTS), help="model variant")
    parser.add_argument("--epochs", type=int, default=3, help="epochs (the first is not timed)")
    parser.add_argument("--steps", type=int, default=10, help="steps per epoch")
    parser.add_argument("--deterministic", action="store_true", help="TensorFlow's deterministic kernels")
    parser.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "nvan_tf_loop_benchmark"),
                        help="synthetic data folder (written when missing)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)

    try:
        from nvan_tf.data.datasets import synthetic
    except ImportError:  # a checkout before the sub-packages
        from nvan_tf.datasets import synthetic
    from nvan_tf.training import TrainConfig, train

    if not os.path.isdir(os.path.join(args.data, "info")):
        synthetic.generate(args.data, num_ids=48, cameras=4, seed=0, height=128, width=64)
    extra = {"deterministic": True} if args.deterministic else {}  # older releases lack the field
    config = TrainConfig(variant=args.variant, dataset="mars", root=args.data, seq_len=4, height=128, width=64,
                         # 8 stripes: the preset's 16 do not divide the 8-row res4 map at 128x64
                         p=4, k=4, model_overrides={"stripes": 8} if "stripes" in VARIANTS[args.variant] else {},
                         steps_per_epoch=args.steps, epochs=args.epochs, eval_every=0, checkpoint_every=0,
                         progress=0, **extra)
    clips = args.steps * config.p * config.k
    with tempfile.TemporaryDirectory(prefix="nvan_loop_") as out:
        history = train(config, out, resume=False)["history"]
    rates = [round(clips / row["seconds"], 2) for row in history[1:]]
    row = {"variant": args.variant, "deterministic": args.deterministic, "clips_per_s": rates,
           "mean_clips_per_s": round(sum(rates) / len(rates), 2)}
    if args.json:
        print(json.dumps(row))
    else:
        print(f"{args.variant}{' (deterministic)' if args.deterministic else ''}: "
              f"{row['mean_clips_per_s']} clips/s (epochs after the first: {rates})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training checkpoint write and restore: time and size.

    python -m nvan_tf.benchmarks.checkpoints [--variant ste-nvan --repeats 3 --folder /tmp/ckpt]

Builds the variant at the recipe's size (256x128, T=8, 625 identities),
compiles the recipe (Adam: two moments per weight) through
``nvan_tf.training.ReIDTask``, and times ``Checkpointer.save`` (the finite
check included) and ``Checkpointer.restore`` (the by-name check included),
each the median of ``--repeats``; prints the size on disk.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time


def run(variant="ste-nvan", repeats=3, folder=None, precision="fp32"):
    from nvan_tf.training.checkpoints import Checkpointer
    from nvan_tf.training.config import TrainConfig
    from nvan_tf.training.task import ReIDTask

    task = ReIDTask(TrainConfig.preset(variant, mixed_precision=precision, steps_per_epoch=78),
                    num_identities=625)
    model = task.build_model()
    task.compile(model)
    with tempfile.TemporaryDirectory(prefix="nvan_ckpt_", dir=folder) as tmp:
        checkpointer = Checkpointer(os.path.join(tmp, "checkpoints"), model, keep=1)
        record = {"history": [{"epoch": e, "loss": 1.0} for e in range(200)], "best": None}
        writes, reads = [], []
        for batch in range(1, repeats + 1):
            start = time.perf_counter()
            checkpointer.save(batch, record)
            writes.append(time.perf_counter() - start)
            start = time.perf_counter()
            checkpointer.restore(batch)
            reads.append(time.perf_counter() - start)
        files = [os.path.join(checkpointer.folder, n) for n in os.listdir(checkpointer.folder)
                 if n.startswith(f"ckpt-{repeats}.")]
        size = sum(os.path.getsize(f) for f in files)
    return {"variant": variant, "precision": precision, "weights": len(model.weights),
            "optimizer_variables": len(model.optimizer.variables), "bytes": size,
            "write_s": statistics.median(writes), "restore_s": statistics.median(reads)}


def main(argv=None):
    from nvan_tf import choices
    from nvan_tf.core import console

    parser = console.make_parser("python -m nvan_tf.benchmarks.checkpoints", __doc__)
    parser.add_argument("--variant", default="ste-nvan", choices=choices.VARIANT_NAMES, help="model variant")
    parser.add_argument("--precision", default="fp32", choices=choices.PRECISIONS, help="training precision")
    parser.add_argument("--repeats", type=int, default=3, help="writes and restores timed (the median is shown)")
    parser.add_argument("--folder", help="where to write (default: the system's temporary folder)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    console.quiet_tensorflow(args.verbose)
    row = run(args.variant, args.repeats, args.folder, args.precision)
    if args.json:
        print(json.dumps(row))
    else:
        print(f"{row['variant']} ({row['precision']}, Adam): {row['weights']} weights + "
              f"{row['optimizer_variables']} optimizer variables, {row['bytes'] / 2**20:.0f} MiB; "
              f"write {row['write_s']:.2f} s, restore {row['restore_s']:.2f} s (median of {args.repeats})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

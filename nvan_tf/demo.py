"""The demo behind ``make demo``: the whole data -> model -> evaluation path.

    python -m nvan_tf.demo --out demo_output [--variant ste-nvan --ids 24 --seed 0]

1. writes synthetic tracklets in the MARS layout (``.mat`` info files and
   all), read back by the real MARS reader;
2. builds the model (ImageNet weights cannot be downloaded here, so it starts
   from random initialisation unless ``--torch`` gives a checkpoint) and
   saves it as ``.keras``;
3. runs ``evaluate.py`` on it under the MARS protocol, with the pictures.

Without training the scores are near chance, which is the point of the
synthetic data being non-trivial; the training issue adds ``train.py``.
"""

import os
import sys


def main(argv=None):
    from nvan_tf import cli

    parser = cli.make_parser("python -m nvan_tf.demo", __doc__.split("\n\n")[0])
    parser.add_argument("--out", default="demo_output", help="output folder")
    parser.add_argument("--variant", default="ste-nvan", help="model variant")
    parser.add_argument("--ids", type=int, default=24, help="synthetic identities (half train, half test)")
    parser.add_argument("--seed", type=int, default=0, help="data and initialisation seed")
    parser.add_argument("--seq-len", type=int, default=8, help="frames per clip")
    parser.add_argument("--height", type=int, default=256, help="frame height")
    parser.add_argument("--width", type=int, default=128, help="frame width")
    parser.add_argument("--torch", help="optional checkpoint to initialise from (nvan_tf.loading.initialize_from)")
    args = parser.parse_args(argv)
    cli.quiet_tensorflow(args.verbose)

    import keras

    import evaluate
    from nvan_tf.datasets import build_dataset
    from nvan_tf.datasets.synthetic import generate
    from nvan_tf.model import build_model

    data_root = os.path.join(args.out, "synthetic_mars")
    print(f"[1/3] Writing {args.ids} synthetic identities (MARS layout) to {data_root}")
    generate(data_root, num_ids=args.ids, cameras=4, seed=args.seed)
    dataset = build_dataset("mars", data_root, verbose=False)
    print(dataset.format_statistics())

    keras.utils.set_random_seed(args.seed)  # the random initialisation too
    print(f"[2/3] Building {args.variant} for clips of {args.seq_len} x {args.height}x{args.width}")
    model = build_model(args.variant, dataset.num_train_ids, seq_len=args.seq_len,
                        height=args.height, width=args.width)
    if args.torch:
        from nvan_tf.loading import initialize_from

        print(f"      initialised from {initialize_from(model, args.torch)}")
    model_path = os.path.join(args.out, f"{args.variant.replace('-', '_')}.keras")
    model.save(model_path)

    print("[3/3] Evaluating under the MARS protocol (pictures in the output folder)")
    return evaluate.main([
        "--model", model_path, "--dataset", "mars", "--root", data_root,
        "--output-dir", os.path.join(args.out, "evaluation"), "--visualize", "--recompute",
    ])


if __name__ == "__main__":
    sys.exit(main())

"""Convert an authors' NVAN / STE-NVAN PyTorch checkpoint to Keras.

Writes NAME.weights.h5 (the weights, with the model config recorded inside)
or NAME.keras (the whole model).

Example:
    nvan-convert --torch ckpt_best.pth --variant ste-nvan --out ste_nvan.weights.h5
"""

import sys

from nvan_tf import choices, cli


def build_parser():
    parser = cli.make_parser("nvan-convert", __doc__)
    parser.add_argument("--torch", required=True, metavar="CKPT",
                        help="the authors' PyTorch state_dict (.pth, .pt, .tar, .ckpt)")
    parser.add_argument("--variant", required=True, choices=choices.VARIANT_NAMES, help="model variant")
    parser.add_argument("--num-identities", type=int, default=None,
                        help="classifier size; default: read from the checkpoint")
    parser.add_argument("--out", required=True,
                        help="output: NAME.weights.h5 (weights + config) or NAME.keras (whole model)")
    parser.add_argument("--seq-len", type=int, default=8, help="frames per clip")
    parser.add_argument("--height", type=int, default=256, help="frame height")
    parser.add_argument("--width", type=int, default=128, help="frame width")
    parser.add_argument("--stripes", type=int, default=None,
                        help="override the stripe count (small inputs need fewer than 16)")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not (args.out.endswith(".weights.h5") or args.out.endswith(".keras")):
        parser.error(f"--out must end with .weights.h5 or .keras. Received: {args.out}")
    cli.quiet_tensorflow(args.verbose)
    from nvan_tf.io import loading

    overrides = {"stripes": args.stripes} if args.stripes else {}
    try:
        model = loading.load_model(
            args.torch, variant=args.variant, num_identities=args.num_identities,
            seq_len=args.seq_len, height=args.height, width=args.width, **overrides,
        )
    except (ValueError, FileNotFoundError, ImportError) as err:
        return cli.fail(parser, err)
    if args.out.endswith(".keras"):
        loading.save_model(model, args.out)
    else:
        loading.save_weights(model, args.out)
    print(f"Converted {args.torch} ({args.variant}, {model.config.num_identities} identities) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Convert an authors' NVAN / STE-NVAN PyTorch checkpoint to Keras.

Writes NAME.weights.h5 (the weights, with the model config recorded inside)
or NAME.keras (the whole model).

Example:
    nvan-convert --torch ckpt_best.pth --variant ste-nvan --out ste_nvan.weights.h5
"""

import dataclasses
import logging
import sys

from nvan_tf import cli
from nvan_tf.core import flags

MODEL_FLAGS = ("variant", "num_identities", *flags.SHAPE_NAMES[1:])


@dataclasses.dataclass
class ConvertConfig:
    """One conversion (``nvan_tf.io.loading.load_model`` + ``save_model`` /
    ``save_weights``). The metadata's help: nvan-convert's flags; the model
    fields' flags are the shared ``ModelShape``'s. ``out`` is a file, not an
    output folder, so it keeps its name."""

    torch: str | None = dataclasses.field(default=None, metadata={
        "help": "the authors' PyTorch state_dict (.pth, .pt, .tar, .ckpt)", "metavar": "CKPT", "required": True})
    out: str | None = dataclasses.field(default=None, metadata={
        "help": "output: NAME.weights.h5 (weights + config) or NAME.keras (whole model)", "required": True})
    variant: str | None = None  # required: a PyTorch checkpoint does not record it
    num_identities: int | None = None
    seq_len: int | None = None
    height: int | None = None
    width: int | None = None
    stripes: int | None = None
    stage_blocks: tuple | None = None


def build_parser():
    """ConvertConfig's flags, the shared model and run groups."""
    parser = cli.make_parser("nvan-convert", __doc__)
    flags.add_fields(parser, ConvertConfig, ["torch", "out"])
    flags.add_model_group(parser, MODEL_FLAGS)
    flags.add_run_group(parser, output=False)
    return parser


def main(argv=None):
    parser = build_parser()
    args = flags.parse_args(parser, argv)
    if args.variant is None:
        parser.error("the following arguments are required: --variant")
    if flags.printed(args, parser):
        return 0
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    if not (args.out.endswith(".weights.h5") or args.out.endswith(".keras")):
        parser.error(f"--out must end with .weights.h5 or .keras. Received: {args.out}")
    cli.quiet_tensorflow(args.verbose)
    from nvan_tf.io import loading

    overrides = flags.model_overrides(args)
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

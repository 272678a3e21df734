"""Parameters and FLOPs of one clip, counted by TensorFlow's profiler.

Examples:
    nvan-profile --variant ste-nvan [--seq-len 8 --height 256 --width 128] [--json]
    nvan-profile --all          # the table of the five variants
"""

import dataclasses
import json
import logging
import sys

from nvan_tf import choices, cli
from nvan_tf.core import flags

SHAPE_DEFAULTS = {"seq_len": 8, "height": 256, "width": 128}  # a new model's: the presets'


@dataclasses.dataclass
class ProfileConfig:
    """What nvan-profile counts (``nvan_tf.models.profile.profile_variant``).
    The metadata's help: its flags; the model fields' flags are the shared
    ``ModelShape``'s (``None``: 8 frames of 256x128)."""

    all: bool = dataclasses.field(default=False, metadata={
        "help": "profile the five variants (instead of --variant)", "action": "store_true"})
    variant: str | None = None
    seq_len: int | None = None
    height: int | None = None
    width: int | None = None
    stripes: int | None = None
    stage_blocks: tuple | None = None
    json: bool = dataclasses.field(default=False, metadata={
        "help": "print JSON instead of a table", "action": "store_true"})


def build_parser():
    """ProfileConfig's flags, the shared model and run groups."""
    parser = cli.make_parser("nvan-profile", __doc__)
    flags.add_model_group(parser)
    flags.add_fields(parser, ProfileConfig, ["all", "json"])
    flags.add_run_group(parser, output=False)
    return parser


def main(argv=None):
    parser = build_parser()
    args = flags.parse_args(parser, argv)
    if (args.variant is None) == (not args.all):
        parser.error("give one of --variant and --all")
    if flags.printed(args, parser):
        return 0
    for name, default in SHAPE_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    cli.quiet_tensorflow(args.verbose)
    from nvan_tf.models.profile import format_table, profile_variant

    variants = list(choices.VARIANTS) if args.all else [args.variant]
    rows = []
    for variant in variants:
        overrides = flags.model_overrides(args)
        for name in ("stripes", "non_local"):  # --all: each applies to the variants that have those blocks
            if not choices.VARIANTS[variant].get(name):
                overrides.pop(name, None)
        try:
            rows.append(profile_variant(variant, args.seq_len, args.height, args.width, **overrides))
        except ValueError as err:
            return cli.fail(parser, f"{variant}: {err}")
    if args.json:
        print(json.dumps(rows[0] if len(rows) == 1 else rows, indent=None if len(rows) == 1 else 2))
    else:
        print(f"One clip of {args.seq_len} frames at {args.height}x{args.width}, "
              "2 FLOPs per multiply-add (convs and matmuls, attention included):")
        print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

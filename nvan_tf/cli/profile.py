"""Parameters and FLOPs of one clip, counted by TensorFlow's profiler.

Examples:
    nvan-profile --variant ste-nvan [--seq-len 8 --height 256 --width 128] [--json]
    nvan-profile --all          # the table of the five variants
"""

import json
import sys

from nvan_tf import choices, cli


def build_parser():
    parser = cli.make_parser("nvan-profile", __doc__)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--variant", choices=choices.VARIANT_NAMES, help="the variant to profile")
    which.add_argument("--all", action="store_true", help="profile the five variants")
    parser.add_argument("--seq-len", type=int, default=8, help="frames per clip")
    parser.add_argument("--height", type=int, default=256, help="frame height")
    parser.add_argument("--width", type=int, default=128, help="frame width")
    parser.add_argument("--stripes", type=int, default=None,
                        help="override the stripe count (small inputs need fewer than 16)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    cli.quiet_tensorflow(args.verbose)
    from nvan_tf.models.profile import format_table, profile_variant

    variants = list(choices.VARIANTS) if args.all else [args.variant]
    rows = []
    for variant in variants:
        overrides = {}
        if args.stripes and choices.VARIANTS[variant].get("stripes"):
            overrides["stripes"] = args.stripes
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

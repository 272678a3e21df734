"""nvan-track: from camera videos to identities (detect, track, cut, embed, associate, report).

examples:
  nvan-track --camera 1=cam1.mp4 --camera 2=cam2.mp4@35.0 --camera 3=frames/cam3 \\
      --model model.keras --calibrate labelled/ --out runs/track
  nvan-track --camera cam1.mp4 cam2.mp4 --detections cam1/det.txt cam2/det.txt \\
      --model onnx/model.int8.onnx --threshold 0.3 --out runs/track
  nvan-track --camera 1=lobby.mkv@2024-05-01T10:00:00 --detector onnx:yolo11n.onnx --model model.keras \\
      --threshold 0.3 --rerank --gallery runs/yesterday/gallery.npz --out runs/today

A camera is [ID=]PATH[@START]: a video file (anything FFmpeg reads) or a folder of frames, its id
(default: its position, from 1) and the time of its first frame (seconds or an ISO date-time) so
that times compare across cameras. Run the same command again to resume: finished stages are kept.
Writes OUT/identities.csv, OUT/gallery.npz, OUT/tracks/c<k>.txt (the tracker's), OUT/tracks/global_c<k>.txt
and OUT/tracks/mtmc.txt (global ids; MOTChallenge per camera, AI City multi-camera), OUT/dataset/ (folder
layout) and OUT/report/index.html.
"""

import dataclasses
import json
import logging
import sys

from nvan_tf import cli
from nvan_tf.core import flags


def build_parser():
    """TrackConfig's flags (their help is its fields'), the sampling-and-ranking
    group shared with nvan-evaluate and the run group."""
    from nvan_tf.evaluation.evaluator import EvaluationConfig, RankingConfig
    from nvan_tf.video.stages import TrackConfig

    parser = cli.make_parser("nvan-track", __doc__)
    flags.add_fields(parser, TrackConfig, ["cameras"])
    flags.add_run_group(parser, TrackConfig)
    flags.add_fields(parser, TrackConfig, ["model"])
    for name, field in ((f.name, f) for f in dataclasses.fields(TrackConfig)):
        if name == "sampling":
            flags.add_sampling_and_ranking(parser, EvaluationConfig, RankingConfig, defaults_from=TrackConfig)
        if name not in ("cameras", "output_dir", "model", *flags.SHARED_SAMPLING):
            flags.add_field(parser, field)
    return parser


def _per_camera(values, cameras, flag):
    """``{camid: path}`` from ``ID=PATH`` items or paths in camera order."""
    if all("=" in v and v.split("=", 1)[0].isdigit() for v in values):
        return {int(v.split("=", 1)[0]): v.split("=", 1)[1] for v in values}
    if any("=" in v and v.split("=", 1)[0].isdigit() for v in values):
        raise ValueError(f"{flag}: give every file as ID=PATH, or none")
    if len(values) != len(cameras):
        raise ValueError(f"{flag}: {len(values)} file(s) for {len(cameras)} camera(s); give one per camera "
                         f"in --camera order, or ID=PATH")
    return {spec.camid: value for spec, value in zip(cameras, values)}


def build_config(args):
    from nvan_tf.video.stages import TrackConfig
    from nvan_tf.video.sources import parse_camera

    values = flags.field_values(args, TrackConfig)
    cameras = [parse_camera(text, i, fps=values["fps"]) for i, text in enumerate(values.pop("cameras"), start=1)]
    detections = _per_camera(args.detections, cameras, "--detections") if args.detections else None
    return TrackConfig(**{**values, "cameras": cameras, "detections": detections,
                          "crop_size": tuple(values["crop_size"])})


def main(argv=None):
    parser = build_parser()
    args = flags.parse_args(parser, argv)
    if flags.printed(args, parser):
        return 0
    quiet = args.quiet and args.log_level == "INFO"  # --quiet: warnings only, unless a level is given
    logging.basicConfig(level=logging.WARNING if quiet else args.log_level, format="%(message)s")
    try:
        config = build_config(args)
        cli.quiet_tensorflow(args.verbose)
        from nvan_tf.video.stages import run_tracking

        result = run_tracking(config)  # builds the detector and loads the model before any stage
    except (ValueError, FileNotFoundError, ImportError) as err:
        return cli.fail(parser, err)
    association = result["stages"]["associate"]
    print(f"{association['global_ids']} global identities from {association['tracklets']} tracklets "
          f"(threshold {association['threshold']:.4f}, {association['threshold_chosen']})")
    print("stage       seconds   per second")
    for name, row in result["timings"].items():
        unit = [k for k in row if k not in ("seconds", "per_second")][0]
        rate = f"{row['per_second']:.1f} {unit}/s" if row["per_second"] else "-"
        print(f"{name:<10} {row['seconds']:8.2f}   {rate}")
    print(f"identities: {result['identities']}\nreport:     {result['report']}")
    if args.verbose:
        print(json.dumps(result["timings"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The video demo behind ``make demo-video``: nvan-track on a synthetic multi-camera world.

    python -m nvan_tf.video.demo --output-dir demo_output/video --model demo_output/train/model.keras

1. writes a calibration world (its own seed; 4 cameras, 16 identities) and runs the chain on it from its
   det.txt files; its tracklets, labelled by its ground truth, are written in
   the folder layout: the labelled set the threshold is chosen on;
2. writes the world to track (3 cameras, their own backgrounds, lighting and
   clocks; identities walking through at different times, occluding each
   other, some in one camera only);
3. runs ``nvan-track`` on it (its det.txt files, ``--calibrate`` the labelled set);
4. prints single-camera HOTA / IDF1 / MOTA and the cross-camera association
   scores against the world's truth; the report is ``OUT/track/report/index.html``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sys

import numpy as np

from nvan_tf.core import console, flags

__all__ = ["prepare_worlds", "track_world", "score_run", "main"]


def track_world(root, out, model, reuse=None, **options):
    """Runs nvan-track (``run_tracking``) on the world at ``root`` from its
    det.txt files; ``options``: further ``TrackConfig`` fields (``threshold``,
    ``calibrate``, ``crop_size``, ``videos``, ``verbose``, ...).

    ``reuse``: another run's folder on the same world whose detection,
    tracking and tracklet stages are copied first (so they are not run
    again), and its embedding stage too (run again unless its record, the
    model, sampling and BatchNorm statistics included, matches this run's).
    """
    from nvan_tf.video.stages import TrackConfig, run_tracking
    from nvan_tf.video.world import read_world

    world, cameras = read_world(root)
    if reuse is not None and not os.path.isdir(os.path.join(out, "stages")):
        for name in ("detections", "tracks", "crops"):
            shutil.copytree(os.path.join(reuse, name), os.path.join(out, name), dirs_exist_ok=True)
        os.makedirs(os.path.join(out, "stages"), exist_ok=True)
        for name in os.listdir(os.path.join(reuse, "stages")):
            if name.split("-")[0].removesuffix(".json") in ("detect", "track", "tracklets", "embed"):
                shutil.copy2(os.path.join(reuse, "stages", name), os.path.join(out, "stages", name))
        if os.path.isfile(os.path.join(reuse, "embeddings.npz")):
            shutil.copy2(os.path.join(reuse, "embeddings.npz"), os.path.join(out, "embeddings.npz"))
    detections = {c["camid"]: os.path.join(root, c["det"]) for c in world["cameras"]}
    run_tracking(TrackConfig(cameras=cameras, output_dir=out, model=model, detections=detections, **options))
    return out


def prepare_worlds(out, config, *, calibration=None, model="colour-histogram", write_labelled=True):
    """Writes the world to track (``out/world``) and (``write_labelled``) a labelled
    set from a second world (``out/labelled``, folder layout): ``calibration``
    (a ``WorldConfig``; default ``config``'s settings with seed 1). Returns
    their paths."""
    from nvan_tf.video.stages import write_folder_layout
    from nvan_tf.video.world import generate_world, label_run

    world_root, labelled = os.path.join(out, "world"), os.path.join(out, "labelled")
    calibration_root = os.path.join(out, "calibration_world")
    if not os.path.isfile(os.path.join(world_root, "world.json")):
        generate_world(world_root, config)
    if write_labelled and not os.path.isdir(labelled):
        if not os.path.isfile(os.path.join(calibration_root, "world.json")):
            generate_world(calibration_root, calibration or dataclasses.replace(config, seed=1))
        run = track_world(calibration_root, os.path.join(out, "calibration_run"), model, threshold=0.5,
                          videos=False, verbose=0, crop_size=(128, 64))
        rows, labels = label_run(calibration_root, run)
        keep = labels > 0
        write_folder_layout(labelled, [r for r, k in zip(rows, keep) if k], labels[keep])
    return world_root, labelled


def score_run(world_root, out):
    """Tracking metrics per camera and association scores of a run on a world."""
    from nvan_tf.video.track_metrics import association_scores, mot_metrics
    from nvan_tf.video.stages import read_identities
    from nvan_tf.video.world import label_run, read_world

    world, _ = read_world(world_root)
    tracking = {c["camid"]: mot_metrics(os.path.join(world_root, c["gt"]), os.path.join(out, "tracks",
                                                                                        f"c{c['camid']}.txt"))
                for c in world["cameras"]}
    rows, labels = label_run(world_root, out)
    ids = {(r["camera"], r["tracklet"]): r["global_id"] for r in read_identities(out)}
    predicted = np.array([ids[(r["camera"], r["tracklet"])] for r in rows])
    return {"tracking": tracking, "association": association_scores(predicted, labels)}


def format_scores(scores):
    lines = ["camera   HOTA   IDF1   MOTA  IDSW"]
    for camid, m in scores["tracking"].items():
        lines.append(f"{camid:>6} {100 * m['HOTA']:6.1f} {100 * m['IDF1']:6.1f} {100 * m['MOTA']:6.1f} {m['IDSW']:5d}")
    a = scores["association"]
    lines.append(f"association: pairwise precision {100 * a['pairwise_precision']:.1f}%, recall "
                 f"{100 * a['pairwise_recall']:.1f}%; identities under one id {100 * a['identities_whole']:.1f}% "
                 f"(of {a['identities_multi']} seen in 2+ tracklets); global ids holding one person "
                 f"{100 * a['ids_pure']:.1f}% (of {a['global_ids']})")
    return "\n".join(lines)


# The labelled world the threshold is chosen on: larger than the one tracked, so that the
# threshold does not hang on a handful of tracklets (about 40 labelled tracklets, 16 people).
CALIBRATION_WORLD = dict(cameras=4, identities=16, frames=200, seed=1)


@dataclasses.dataclass
class VideoDemoConfig:
    """What the video demo runs (its flags: the metadata's help)."""

    output_dir: str = dataclasses.field(default="demo_output/video", metadata={"help": "output folder"})
    model: str = dataclasses.field(default="demo_output/train/model.keras", metadata={
        "help": "re-ID model (make demo trains demo_output/train/model.keras)"})
    cameras: int = dataclasses.field(default=3, metadata={"help": "cameras of the world to track"})
    identities: int = dataclasses.field(default=8, metadata={"help": "people walking through it"})
    frames: int = dataclasses.field(default=150, metadata={"help": "frames per camera"})
    seed: int = dataclasses.field(default=0, metadata={"help": "seed of the world (the calibration world's is 1)"})


def build_parser():
    parser = console.make_parser("python -m nvan_tf.video.demo", __doc__.split("\n\n")[0])
    flags.add_fields(parser, VideoDemoConfig, exclude=("output_dir",))
    flags.add_run_group(parser, VideoDemoConfig)
    return parser


def main(argv=None):
    from nvan_tf.video.world import WorldConfig

    parser = build_parser()
    args = flags.parse_args(parser, argv)
    if flags.printed(args, parser):
        return 0
    args.out = args.output_dir
    console.quiet_tensorflow(args.verbose)
    logging.basicConfig(level=args.log_level, format="%(message)s")
    if not os.path.exists(args.model):
        return console.fail(parser, f"--model {args.model} does not exist; run make demo first (it trains it)")
    config = WorldConfig(cameras=args.cameras, identities=args.identities, frames=args.frames, seed=args.seed)
    print(f"[1/3] Worlds: {config.cameras} cameras, {config.identities} identities, {config.frames} frames "
          f"of {config.width}x{config.height} at {config.fps:g} fps; a labelled calibration world "
          f"({CALIBRATION_WORLD['cameras']} cameras, {CALIBRATION_WORLD['identities']} identities)")
    world_root, labelled = prepare_worlds(args.out, config, calibration=WorldConfig(**CALIBRATION_WORLD))
    print(f"[2/3] nvan-track on {world_root} with {args.model}")
    out = track_world(world_root, os.path.join(args.out, "track"), args.model, calibrate=labelled,
                      crop_size=(128, 64))
    print("[3/3] Against the world's ground truth")
    print(format_scores(score_run(world_root, out)))
    with open(os.path.join(out, "association.json"), encoding="utf-8") as f:
        summary = json.load(f)
    basis = summary["threshold_basis"]
    print(f"threshold {summary['threshold']:.3f}: best pairwise F1 {basis['pairwise_f1']:.3f} on "
          f"{basis['labelled_tracklets']} labelled tracklets, as good (within 0.02) from "
          f"{basis['within_0.02_f1'][0]:.3f} to {basis['within_0.02_f1'][1]:.3f}")
    print(f"report: {os.path.join(out, 'report', 'index.html')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

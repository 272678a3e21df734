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

import json
import logging
import sys

from nvan_tf import cli


def build_parser():
    from nvan_tf.choices import DETECTORS, DISTANCE_METRICS, EMBEDDING_BASELINES, SAMPLING_MODES, TRACKERS, listing

    parser = cli.make_parser("nvan-track", __doc__)
    parser.add_argument("--camera", nargs="+", action="extend", required=True, metavar="[ID=]PATH[@START]",
                        help="a camera's video file or frame folder (repeat or list several)")
    parser.add_argument("--out", required=True, help="output folder (a run there is resumed)")
    parser.add_argument("--model", required=True,
                        help=f"re-ID model: .keras, .weights.h5, SavedModel folder, ONNX; or {listing(EMBEDDING_BASELINES)}")
    group = parser.add_argument_group("detection")
    group.add_argument("--detections", nargs="+", action="extend", metavar="[ID=]DET.TXT",
                       help="MOTChallenge det.txt per camera (in --camera order, or ID=PATH); skips detection")
    group.add_argument("--detector", help=f"when no --detections: {listing(DETECTORS)} (default: ssdlite when "
                                          f"its package is installed, else hog)")
    group.add_argument("--detect-threshold", type=float,
                       help="ssdlite, onnx: person score below which boxes are dropped (default 0.3, onnx 0.25)")
    group.add_argument("--upscale", type=float, default=1.0, help="hog: scale frames by this first")
    group.add_argument("--detect-batch", type=int, default=8, help="frames per detector batch")
    group.add_argument("--fps", type=float, help="frame rate of frame folders (default 25)")
    group.add_argument("--max-frames", type=int, help="only the first N frames of every camera (default: all)")
    group = parser.add_argument_group("tracking")
    group.add_argument("--tracker", default="bytetrack", choices=TRACKERS,
                       help="multi-object tracker (Roboflow's trackers library)")
    group.add_argument("--lost-track-buffer", type=int, default=30, help="frames (at 30 fps) a lost track is kept")
    group.add_argument("--track-threshold", type=float, help="detection score that starts a track "
                                                             "(default: the tracker's)")
    group.add_argument("--match-iou", type=float, help="least IoU of a box with a track's predicted box to "
                                                       "continue it (default: the tracker's; ByteTrack 0.1)")
    group.add_argument("--min-length", type=int, default=8, help="tracklets with fewer boxes are dropped")
    group.add_argument("--max-gap", type=int, default=10, help="a track missing more frames is cut in two")
    group.add_argument("--crop-size", type=int, nargs=2, default=(256, 128), metavar=("HEIGHT", "WIDTH"),
                       help="size of the tracklet crops written (padded to the person aspect ratio)")
    group = parser.add_argument_group("embedding and association")
    group.add_argument("--sampling", choices=SAMPLING_MODES,
                       help="test-time clip sampling (default: what the model was evaluated with, else rrs)")
    group.add_argument("--batch-size", type=int, default=16, help="clips per batch")
    group.add_argument("--flip", action="store_true", help="average with horizontally flipped clips")
    group.add_argument("--metric", default="cosine", choices=DISTANCE_METRICS, help="distance between tracklet embeddings")
    group.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking before linking")
    group.add_argument("--threshold", type=float, help="distance under which tracklets are one person")
    group.add_argument("--calibrate", metavar="FOLDER_DATASET",
                       help="choose --threshold on this labelled folder dataset (best pairwise F1)")
    group.add_argument("--gallery", help="a gallery .npz to continue: its ids are kept for those it holds")
    group.add_argument("--no-video", action="store_true", help="no annotated videos in the report")
    group.add_argument("--quiet", action="store_true", help="no progress bars")
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
    from nvan_tf.video.pipeline import TrackConfig
    from nvan_tf.video.sources import parse_camera

    cameras = [parse_camera(text, i, fps=args.fps) for i, text in enumerate(args.camera, start=1)]
    detections = _per_camera(args.detections, cameras, "--detections") if args.detections else None
    return TrackConfig(
        cameras=cameras, output_dir=args.out, model=args.model, threshold=args.threshold,
        calibrate=args.calibrate, detections=detections, detector=args.detector,
        detect_threshold=args.detect_threshold, max_frames=args.max_frames, upscale=args.upscale,
        detect_batch=args.detect_batch, tracker=args.tracker, lost_track_buffer=args.lost_track_buffer,
        track_threshold=args.track_threshold, match_iou=args.match_iou, min_length=args.min_length, max_gap=args.max_gap,
        crop_size=tuple(args.crop_size), sampling=args.sampling, batch_size=args.batch_size, flip=args.flip,
        metric=args.metric, rerank=args.rerank, gallery=args.gallery, videos=not args.no_video,
        verbose=0 if args.quiet else 1)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    try:
        config = build_config(args)
        cli.quiet_tensorflow(args.verbose)
        from nvan_tf.video.pipeline import run_tracking

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

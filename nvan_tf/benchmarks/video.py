"""Quality and throughput of nvan-track: ``python -m nvan_tf.benchmarks.video``.

Quality, on a synthetic multi-camera world (``nvan_tf.video.world``; 4
cameras, 16 identities, 200 frames of 320x180 at 10 fps by default), from
its det.txt files (noisy boxes, misses, false positives):

* single-camera tracking (ByteTrack): HOTA, IDF1, MOTA per camera against
  gt.txt (``trackers.eval``, TrackEval's metrics), and their mean;
* cross-camera association, for the trained STE-NVAN (``make demo``), the
  same model untrained, and a colour-histogram baseline: pairwise
  precision / recall, the share of identities (seen in two or more
  tracklets) whose tracklets all end up under one global id, and the share
  of global ids that hold one person. Each embedding's threshold is chosen
  on a labelled second world (another seed), as ``nvan-track --calibrate``
  does;
* multi-camera IDF1 / HOTA / MOTA of each embedding's global ids over all
  cameras together (the AI City / MTMC convention), from the run's
  ``tracks/mtmc.txt`` against the world's gt.txt files, by
  ``trackers.eval`` (``nvan_tf.video.track_metrics.multi_camera_metrics``).

With ``--held-out``, the same association scores on the held-out world
(``nvan_tf.video.world.HELD_OUT_WORLD``: looks, frame size, frame rate,
occluders and detector noise the demo's training never used), thresholds
chosen on ``--calibrate`` (what ``make demo-video`` writes), for each
setting of :data:`HELD_OUT_SETTINGS` (each lever added to the one before:
the one-camera-at-a-time rule, dense sampling, centring per camera, the
threshold from known negatives, k-reciprocal re-ranking; then camera
BatchNorm in place of the re-ranking, and with it the threshold from the
valley of the nearest cross-camera distances instead, and with that the
identities of each pair of cameras matched one to one). ``--seed`` takes
several seeds (one held-out world each, ``OUT/held_out_seedN``; seed 0's is
``OUT/held_out``) and then prints each setting's pairwise F1 per world and
their mean; ``--settings`` runs some rows only (their numbers in
:data:`HELD_OUT_SETTINGS`, from 0).

Throughput on this machine, at 1280x720 (a one-camera world): frames/s of
decoding (PyAV), detection (SSDLite where installed, HOG; an ONNX detector with
``--detector-onnx PATH``), tracking, and embedding (the trained model over the tracklets'
crops: tracklets/s, and video frames/s at this world's density of people,
after a warm-up call).

Tracklet purity on real footage, with ``--vtest PATH`` (OpenCV's
``vtest.avi``; ``make footage`` fetches it): nvan-track's tracklets for each
detector and tracker that ``--labels`` (default
``tests/fixtures/vtest_tracklets.csv``) holds hand labels of, and the share
holding one person (``nvan_tf.video.track_metrics.labelled_purity``).

Prints a table and writes ``OUT/results.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time

import numpy as np

from nvan_tf.choices import EMBEDDING_BASELINES as BASELINES
from nvan_tf.core import console


def _mean_tracking(tracking):
    return {k: float(np.mean([m[k] for m in tracking.values()])) for k in ("HOTA", "IDF1", "MOTA")}


def quality(out, models, config, *, calibrate=None, name="quality", setting="", **options):
    """Tracking and association scores per embedding (see the module docstring).

    ``calibrate``: the labelled folder dataset each embedding's threshold is
    chosen on (default: a second world of ``config``'s settings, another
    seed; none with ``auto_threshold`` among the ``options``); ``options``:
    further ``TrackConfig`` fields for every run, whose folders are
    ``OUT/NAME/run_SETTING_EMBEDDING`` (the detection and tracking stages
    of the first run on the world are copied into the others, and an
    embedding's latest run before, for its embeddings where their settings
    match).
    """
    from nvan_tf.video.demo import prepare_worlds, score_run, track_world
    from nvan_tf.video.track_metrics import multi_camera_metrics
    from nvan_tf.video.world import read_world

    unlabelled = "auto_threshold" in options  # the threshold chosen on the footage itself
    world_root, labelled = prepare_worlds(os.path.join(out, name), config,
                                          write_labelled=calibrate is None and not unlabelled)
    labelled = None if unlabelled else calibrate or labelled
    world, _ = read_world(world_root)
    gt_paths = {c["camid"]: os.path.join(world_root, c["gt"]) for c in world["cameras"]}
    existing = sorted((d for d in os.listdir(os.path.join(out, name)) if d.startswith("run_")),
                      key=lambda d: (int(d.split("_")[1]) if d.split("_")[1].isdigit() else -1, d))
    first = os.path.join(out, name, existing[0]) if existing else None
    results = {}
    for embedding, model in models.items():
        own = {k: v for k, v in options.items() if k != "batch_norm" or model not in BASELINES}  # no BN there
        mine = [d for d in existing if d.split("_", 2)[-1] == embedding and d != f"run_{setting}{embedding}"]
        reuse = os.path.join(out, name, mine[-1]) if mine else first  # its embeddings, where still valid
        run = track_world(world_root, os.path.join(out, name, f"run_{setting}{embedding}"), model,
                          calibrate=labelled, crop_size=(128, 64), videos=False, verbose=0, reuse=reuse, **own)
        first = first or run
        scores = score_run(world_root, run)
        with open(os.path.join(run, "association.json"), encoding="utf-8") as f:
            summary = json.load(f)
        scores["threshold"], scores["threshold_basis"] = summary["threshold"], summary["threshold_basis"]
        scores["multi_camera"] = multi_camera_metrics(gt_paths, os.path.join(run, "tracks", "mtmc.txt"))
        results[embedding] = scores
    return results


# The held-out world's association settings, each a lever added to the one before:
# (name, TrackConfig fields; the threshold is chosen on --calibrate unless auto_threshold is given).
HELD_OUT_SETTINGS = (
    ("calibrated, no cross-camera time rule", {"overlapping": ["all"]}),
    ("+ one camera at a time", {}),
    ("+ dense sampling", {"sampling": "dense"}),
    ("+ centred per camera", {"sampling": "dense", "centre_cameras": True}),
    ("+ threshold from known negatives", {"sampling": "dense", "centre_cameras": True, "auto_threshold": 0.01}),
    ("+ re-ranked", {"sampling": "dense", "centre_cameras": True, "auto_threshold": 0.01, "rerank": True}),
    # not cumulative: camera BatchNorm in place of the re-ranking (the colour histogram, which has no
    # BatchNorm, runs as in the row before it without re-ranking)
    ("camera BatchNorm, not re-ranked", {"sampling": "dense", "centre_cameras": True, "auto_threshold": 0.01,
                                         "batch_norm": "camera"}),
    # the row before with the label-free threshold from the valley of the nearest cross-camera distances
    ("camera BatchNorm, threshold from the valley", {"sampling": "dense", "centre_cameras": True,
                                                     "auto_threshold": "valley", "batch_norm": "camera"}),
    # and a second pass matching each pair of cameras' identities one to one
    ("+ cameras matched one to one", {"sampling": "dense", "centre_cameras": True, "auto_threshold": "valley",
                                      "batch_norm": "camera", "match_cameras": 1.25}),
)


def throughput(out, model, *, frames=60, onnx=None, hog_frames=30):
    """Frames per second of each stage at 1280x720."""
    from nvan_tf.video.demo import track_world
    from nvan_tf.video.detection import HOGDetector, ONNXDetector, SSDLiteDetector, default_detector
    from nvan_tf.video.embedding import embed_tracklets, evaluated_sampling, load_embedder
    from nvan_tf.video.stages import read_tracklets
    from nvan_tf.video.mot import read_mot
    from nvan_tf.video.sources import CameraReader
    from nvan_tf.video.tracking import make_tracker, track_boxes
    from nvan_tf.video.world import WorldConfig, generate_world, read_world

    root = os.path.join(out, "throughput", "world")
    if not os.path.isfile(os.path.join(root, "world.json")):
        generate_world(root, WorldConfig(cameras=1, identities=4, frames=frames, height=720, width=1280, seed=5,
                                         walk_seconds=(2.0, 4.0)))
    _, [spec] = read_world(root)
    rates = {}
    started = time.perf_counter()
    images = [frame.image for frame in CameraReader(spec)]
    rates["decode"] = len(images) / (time.perf_counter() - started)
    detectors = {"detect (HOG)": HOGDetector()}
    if default_detector() == "ssdlite":
        detectors["detect (SSDLite)"] = SSDLiteDetector()
    if onnx:
        detectors["detect (ONNX)"] = ONNXDetector(onnx)
    for name, detector in detectors.items():
        batch = images[:hog_frames] if name.endswith("(HOG)") else images
        detector(batch[:1])  # warm-up
        started = time.perf_counter()
        detector(batch)
        rates[name] = len(batch) / (time.perf_counter() - started)
    detections = read_mot(os.path.join(root, "c1", "det", "det.txt"), "det")
    started = time.perf_counter()
    for _ in range(5):
        track_boxes(detections, frames, make_tracker("bytetrack", frame_rate=10))
    rates["track"] = 5 * frames / (time.perf_counter() - started)
    run = track_world(root, os.path.join(out, "throughput", "run"), model, threshold=0.3, videos=False, verbose=0)
    # embedding timed again after a warm-up call (the first one traces the model)
    tracklets = [row["record"] for row in read_tracklets(run)]
    extractor = load_embedder(model)
    embed_tracklets(extractor, tracklets[:1], sampling=evaluated_sampling(model), verbose=0)
    started = time.perf_counter()
    embed_tracklets(extractor, tracklets, sampling=evaluated_sampling(model), verbose=0)
    seconds = time.perf_counter() - started
    rates["embed (tracklets)"] = len(tracklets) / seconds
    rates["embed (video frames)"] = frames / seconds
    return rates


def purity(out, vtest, labels_path):
    """Tracklet purity on vtest.avi for each (detector, tracker, match IoU) labelled in ``labels_path``."""
    import csv

    from nvan_tf.video.track_metrics import labelled_purity
    from nvan_tf.video.stages import TrackConfig, run_tracking
    from nvan_tf.video.sources import CameraSpec

    with open(labels_path, newline="", encoding="utf-8") as f:
        labels = list(csv.DictReader(line for line in f if not line.startswith("#")))
    results = {}
    settings = lambda r: (r["detector"], r["tracker"], r["match_iou"])  # noqa: E731
    for detector, tracker, iou in dict.fromkeys(settings(r) for r in labels):
        run = os.path.join(out, "vtest", f"{detector}_{tracker}" + (f"_iou{iou}" if iou else ""))
        run_tracking(TrackConfig(cameras=[CameraSpec(1, vtest)], output_dir=run, model="colour-histogram",
                                 threshold=0.3, detector=detector, tracker=tracker,
                                 match_iou=float(iou) if iou else None, videos=False, verbose=0))
        with open(os.path.join(run, "crops", "c1", "tracklets.csv"), newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        mine = [r for r in labels if settings(r) == (detector, tracker, iou)]
        results[f"{detector}, {tracker}" + (f", IoU {iou}" if iou else "")] = labelled_purity(rows, mine)
    return results


def format_quality(quality):
    """The tables: tracking per camera, then association and multi-camera metrics per embedding."""
    tracking = quality["trained"]["tracking"]  # the embeddings share the detection, tracking and tracklets
    lines = ["tracking (ByteTrack from det.txt), per camera:", "camera   HOTA   IDF1   MOTA  IDSW"]
    for camid, m in tracking.items():
        lines.append(f"{camid:>6} {100 * m['HOTA']:6.1f} {100 * m['IDF1']:6.1f} {100 * m['MOTA']:6.1f} {m['IDSW']:5d}")
    mean = _mean_tracking(tracking)
    lines.append(f"{'mean':>6} {100 * mean['HOTA']:6.1f} {100 * mean['IDF1']:6.1f} {100 * mean['MOTA']:6.1f}")
    lines.append("association across cameras (pairwise over tracklets) and multi-camera metrics (all cameras):")
    return "\n".join(lines + [format_association(quality)])


def format_association(quality):
    """Association and multi-camera metrics, a row per embedding."""
    lines = []
    lines.append(f"{'embedding':<18} {'threshold':>9} {'precision':>9} {'recall':>7} {'F1':>6} {'whole ids':>9} "
                 f"{'pure ids':>8} {'global ids':>10} {'MC IDF1':>7} {'MC HOTA':>7} {'MC MOTA':>7}")
    for name, scores in quality.items():
        a, mc = scores["association"], scores["multi_camera"]
        lines.append(f"{name:<18} {scores['threshold']:9.4f} {100 * a['pairwise_precision']:8.1f}% "
                     f"{100 * a['pairwise_recall']:6.1f}% {100 * a['pairwise_f1']:5.1f}% "
                     f"{100 * a['identities_whole']:8.1f}% {100 * a['ids_pure']:7.1f}% "
                     f"{a['global_ids']:>5} / {a['identities']:<4} {100 * mc['IDF1']:7.1f} {100 * mc['HOTA']:7.1f} "
                     f"{100 * mc['MOTA']:7.1f}")
    return "\n".join(lines)


def format_seeds(by_seed):
    """Pairwise F1 per held-out world (a column per seed) and their mean, a row per setting and embedding."""
    seeds = list(by_seed)
    lines = ["pairwise F1 on each held-out world:",
             f"{'setting':<46} {'embedding':<18} " + " ".join(f"{'seed ' + str(s):>7}" for s in seeds) + "    mean"]
    for setting, scores in by_seed[seeds[0]].items():
        for name in scores:
            f1 = [100 * by_seed[s][setting][name]["association"]["pairwise_f1"] for s in seeds]
            lines.append(f"{setting:<46} {name:<18} " + " ".join(f"{v:7.1f}" for v in f1) + f" {np.mean(f1):7.1f}")
    return "\n".join(lines)


def main(argv=None):
    from nvan_tf.video.world import HELD_OUT_WORLD, WorldConfig

    parser = argparse.ArgumentParser(prog="python -m nvan_tf.benchmarks.video",
                                     description=__doc__.strip().splitlines()[0])
    parser.add_argument("--out", default="runs/benchmark_video", help="working and output folder")
    parser.add_argument("--model", default="demo_output/train/model.keras", help="the trained model (make demo)")
    parser.add_argument("--untrained", default="demo_output/untrained.keras",
                        help="the same model untrained (make demo writes it)")
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--identities", type=int, default=16)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--seed", type=int, nargs="+", default=[0],
                        help="seed of the world (the first, for the quality world); with --held-out, one "
                             "held-out world per seed, and their mean")
    parser.add_argument("--settings", type=int, nargs="+", metavar="N",
                        help=f"with --held-out, only these rows of HELD_OUT_SETTINGS (0-{len(HELD_OUT_SETTINGS) - 1}; "
                             "default all)")
    parser.add_argument("--throughput-frames", type=int, default=60)
    parser.add_argument("--detector-onnx", help="also time this YOLO ONNX detector")
    parser.add_argument("--vtest", help="vtest.avi (make footage): also measure tracklet purity on it")
    parser.add_argument("--labels", default="tests/fixtures/vtest_tracklets.csv",
                        help="hand labels of vtest.avi's tracklets (for --vtest)")
    parser.add_argument("--held-out", action="store_true",
                        help="also score association on the held-out world (nvan_tf.video.world.HELD_OUT_WORLD: "
                             "settings the demo's training never saw), calibrated on --calibrate")
    parser.add_argument("--calibrate", default="demo_output/video/labelled",
                        help="the labelled set the held-out world's thresholds are chosen on "
                             "(make demo-video writes it)")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args(argv)
    console.quiet_tensorflow()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    needed = args.held_out or not (args.skip_quality and args.skip_throughput)
    for path in (args.model, args.untrained) if needed else ():
        if not os.path.exists(path):
            print(f"{path} does not exist: run make demo first (it writes both models)", file=sys.stderr)
            return 2
    models = {"trained": args.model, "untrained": args.untrained, "colour-histogram": "colour-histogram"}
    path = os.path.join(args.out, "results.json")
    results = {}
    if os.path.isfile(path):  # a part skipped now keeps its last figures
        with open(path, encoding="utf-8") as f:
            results = json.load(f)
    if not args.skip_quality:
        config = WorldConfig(cameras=args.cameras, identities=args.identities, frames=args.frames,
                             seed=args.seed[0])
        results["world"] = {"cameras": config.cameras, "identities": config.identities, "frames": config.frames,
                            "size": f"{config.width}x{config.height}", "fps": config.fps}
        results["quality"] = quality(args.out, models, config)
        print(format_quality(results["quality"]))
    if args.held_out:
        rows = range(len(HELD_OUT_SETTINGS)) if args.settings is None else args.settings
        if not set(rows) <= set(range(len(HELD_OUT_SETTINGS))):
            print(f"--settings: rows of HELD_OUT_SETTINGS are 0-{len(HELD_OUT_SETTINGS) - 1}. Received: "
                  f"{args.settings}", file=sys.stderr)
            return 2
        calibrated = any("auto_threshold" not in HELD_OUT_SETTINGS[number][1] for number in rows)
        if calibrated and not os.path.isdir(args.calibrate):
            print(f"--calibrate {args.calibrate} does not exist: run make demo-video first (it writes it)",
                  file=sys.stderr)
            return 2
        by_seed = {}
        for seed in args.seed:
            config = WorldConfig(**{**HELD_OUT_WORLD, "cameras": args.cameras, "identities": args.identities,
                                    "frames": args.frames, "seed": seed})
            results["held_out_world"] = dataclasses.asdict(config)
            print(f"the held-out world, seed {seed} ({config.looks} looks, {config.width}x{config.height} at "
                  f"{config.fps:g} fps; thresholds chosen on {args.calibrate} unless chosen on the footage):")
            by_seed[seed] = {}
            for number in rows:
                setting, options = HELD_OUT_SETTINGS[number]
                by_seed[seed][setting] = quality(args.out, models, config, calibrate=args.calibrate,
                                                 name="held_out" + (f"_seed{seed}" if seed else ""),
                                                 setting=f"{number}_", **options)
                print(f"{setting}:")
                print((format_quality if number == 0 else format_association)(by_seed[seed][setting]))
        results["held_out"] = by_seed[args.seed[0]]
        if len(args.seed) > 1:
            results["held_out_by_seed"] = {str(seed): scores for seed, scores in by_seed.items()}
            print(format_seeds(by_seed))
    if args.vtest:
        results["purity_vtest"] = purity(args.out, args.vtest, args.labels)
        print("tracklets holding one person on vtest.avi (hand labels):")
        for name, p in results["purity_vtest"].items():
            print(f"  {name:<28} {100 * p['purity']:5.1f}% of {p['labelled']} tracklets "
                  f"({100 * p['span_purity']:.1f}% of their frames; switch {p['switch']}, drift {p['drift']}; "
                  f"{p['unlabelled']} unlabelled)")
    if not args.skip_throughput:
        results["throughput_1280x720"] = throughput(args.out, args.model, frames=args.throughput_frames,
                                                    onnx=args.detector_onnx)
        print("throughput at 1280x720 (frames/s):")
        for name, rate in results["throughput_1280x720"].items():
            print(f"  {name:<22} {rate:8.1f}")
    os.makedirs(args.out, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

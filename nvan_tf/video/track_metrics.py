"""How well the chain did, against ground truth (plain NumPy, plus the tracker library's evaluation).

* Single-camera tracking: HOTA, IDF1, MOTA and friends of a tracks file
  against a gt.txt, by ``trackers.eval`` (Roboflow's re-implementation of
  TrackEval's matching and metrics, made to give TrackEval's numbers).
* Multi-camera tracking (:func:`multi_camera_metrics`): IDF1, HOTA and
  MOTA over all cameras together, the AI City / MTMC convention (ids
  global across cameras, boxes per camera and frame), by the same
  ``trackers.eval``: the cameras are laid end to end as one sequence (each
  camera's frames shifted past the previous cameras' last frame, so no two
  cameras share a frame number and a box is only ever matched within its
  camera), and the evaluator scores that sequence. A person given one id
  in two cameras counts as one identity; given two, as a switch.
* Labels for tracklets: :func:`label_tracklets` gives each tracklet the
  ground-truth identity its boxes overlap most (IoU >= 0.5 in a majority of
  its frames), else -1 (a false track or a mix).
* Tracklet purity against hand labels (:func:`labelled_purity`): the share
  of a run's tracklets that hold one person, where each tracklet (track
  id and frame range) was labelled once by looking at its crops (footage
  without ground truth, such as ``tests/fixtures/vtest_tracklets.csv``).
* Cross-camera association: :func:`association_scores`: pairwise precision
  and recall over tracklet pairs, the share of ground-truth identities whose
  tracklets all end up under one global id, and the share of global ids that
  hold one person.
"""

from __future__ import annotations

import logging
import os
import tempfile

import numpy as np

from nvan_tf.video.mot import MOTBoxes, read_aicity, read_mot, write_mot
from nvan_tf.video.sources import require_video_extra

logger = logging.getLogger(__name__)

__all__ = ["MOT_METRICS", "PURITY_LABELS", "mot_metrics", "multi_camera_metrics", "labelled_purity", "box_iou", "label_tracklets", "association_scores"]

MOT_METRICS = ("HOTA", "IDF1", "MOTA", "DetA", "AssA", "IDSW")
# Hand labels of a tracklet: one person throughout, another person in part, background in part.
PURITY_LABELS = ("one", "switch", "drift")


def mot_metrics(gt_path, tracks_path, threshold=0.5):
    """CLEAR, HOTA and Identity metrics of one camera (``trackers.eval``).

    Returns:
        dict with ``HOTA``, ``DetA``, ``AssA``, ``IDF1``, ``MOTA`` (fractions)
        and ``IDSW``, ``gt_boxes``, ``tracked_boxes`` (counts).
    """
    evaluate = require_video_extra("trackers.eval").evaluate_mot_sequence
    result = evaluate(gt_path, tracks_path, metrics=["CLEAR", "HOTA", "Identity"], threshold=threshold)
    clear, hota, identity = result.CLEAR, result.HOTA, result.Identity
    return {"HOTA": float(hota.HOTA), "DetA": float(hota.DetA), "AssA": float(hota.AssA),
            "IDF1": float(identity.IDF1), "MOTA": float(clear.MOTA), "IDSW": int(clear.IDSW),
            "gt_boxes": int(clear.CLR_TP + clear.CLR_FN), "tracked_boxes": int(clear.CLR_TP + clear.CLR_FP)}


def _shifted(boxes, offset):
    return MOTBoxes(boxes.frames + offset, boxes.ids, boxes.boxes, boxes.scores, boxes.classes, boxes.visibility)


def multi_camera_metrics(gt_paths, predicted, threshold=0.5):
    """IDF1, HOTA and MOTA over all cameras together (see the module docstring).

    Args:
        gt_paths: ``{camera id: gt.txt}`` (MOTChallenge, ids global across cameras).
        predicted: an AI City multi-camera file (``nvan-track``'s
            ``tracks/mtmc.txt``), or ``{camera id: MOTBoxes}`` with global ids.
        threshold: IoU for the Identity and CLEAR matching.

    Returns:
        dict with ``IDF1``, ``IDP``, ``IDR``, ``HOTA``, ``DetA``, ``AssA``,
        ``MOTA`` (fractions), ``IDSW``, ``gt_ids`` and ``predicted_ids``.
    """
    evaluate = require_video_extra("trackers.eval").evaluate_mot_sequence
    predicted = read_aicity(predicted) if isinstance(predicted, (str, os.PathLike)) else dict(predicted)
    unknown = sorted(set(predicted) - set(gt_paths))
    if unknown:
        raise ValueError(f"predicted boxes for camera(s) {unknown} without ground truth "
                         f"(cameras with gt: {sorted(gt_paths)})")
    merged_gt, merged_predicted, offset = [], [], 0
    for camid in sorted(gt_paths):
        gt = read_mot(gt_paths[camid], "gt")
        mine = predicted.get(camid, MOTBoxes.empty())
        merged_gt.append(_shifted(gt, offset))
        merged_predicted.append(_shifted(mine, offset))
        offset += int(max(gt.frames.max(initial=0), mine.frames.max(initial=0)))
    gt, mine = MOTBoxes.concatenate(merged_gt), MOTBoxes.concatenate(merged_predicted)
    with tempfile.TemporaryDirectory(prefix="nvan-mtmc-") as folder:
        gt_path, predicted_path = os.path.join(folder, "gt.txt"), os.path.join(folder, "predicted.txt")
        write_mot(gt_path, gt, "gt")
        write_mot(predicted_path, mine, "tracks")
        result = evaluate(gt_path, predicted_path, metrics=["CLEAR", "HOTA", "Identity"], threshold=threshold)
    clear, hota, identity = result.CLEAR, result.HOTA, result.Identity
    return {"IDF1": float(identity.IDF1), "IDP": float(identity.IDP), "IDR": float(identity.IDR),
            "HOTA": float(hota.HOTA), "DetA": float(hota.DetA), "AssA": float(hota.AssA),
            "MOTA": float(clear.MOTA), "IDSW": int(clear.IDSW), "gt_ids": int(len(np.unique(gt.ids))),
            "predicted_ids": int(len(np.unique(mine.ids)))}


def labelled_purity(tracklets, labels):
    """The share of ``tracklets`` that hold one person, by hand labels.

    Args:
        tracklets: rows with ``track_id``, ``first_frame``, ``last_frame``
            (a run's ``crops/c<k>/tracklets.csv``).
        labels: rows with the same three fields and ``label`` (one of
            ``PURITY_LABELS``), of the same settings.

    Returns:
        dict: ``purity`` (tracklets labelled ``one`` over those labelled),
        ``span_purity`` (the same over their frame spans), the count of each
        label, ``labelled`` and ``unlabelled`` (tracklets with no label: the
        run no longer cuts the tracklets that were labelled).
    """
    key = lambda r: (int(r["track_id"]), int(r["first_frame"]), int(r["last_frame"]))  # noqa: E731
    by_key = {}
    for row in labels:
        if row["label"] not in PURITY_LABELS:
            raise ValueError(f"tracklet label {row['label']!r} (track {row['track_id']}) is not one of "
                             f"{', '.join(PURITY_LABELS)}")
        by_key[key(row)] = row["label"]
    found = [(by_key[key(r)], int(r["last_frame"]) - int(r["first_frame"]) + 1) for r in tracklets
             if key(r) in by_key]
    counts = {label: sum(1 for f, _ in found if f == label) for label in PURITY_LABELS}
    spans = sum(n for _, n in found)
    return {"purity": counts["one"] / len(found) if found else float("nan"),
            "span_purity": sum(n for f, n in found if f == "one") / spans if spans else float("nan"),
            **counts, "labelled": len(found), "unlabelled": len(tracklets) - len(found)}


def box_iou(a, b):
    """(N, M) IoU of boxes ``(left, top, width, height)``."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    a2, b2 = a[:, None, :2] + a[:, None, 2:], b[None, :, :2] + b[None, :, 2:]
    inter = np.clip(np.minimum(a2, b2) - np.maximum(a[:, None, :2], b[None, :, :2]), 0, None).prod(-1)
    union = a[:, None, 2:].prod(-1) + b[None, :, 2:].prod(-1) - inter
    return inter / np.maximum(union, 1e-9)


def label_tracklets(tracklets, gt, *, iou_threshold=0.5):
    """The ground-truth identity of each :class:`~nvan_tf.video.tracking.CameraTracklet` of one camera.

    A box takes the id of the gt box it overlaps most (IoU >= ``iou_threshold``);
    a tracklet takes the id that more than half of its boxes take, else -1.
    """
    gt_rows = gt.by_frame()
    labels = []
    for tracklet in tracklets:
        votes = []
        for frame, box in zip(tracklet.frames.tolist(), tracklet.boxes):
            rows = gt_rows.get(frame)
            if rows is None:
                continue
            iou = box_iou(box, gt.boxes[rows])[0]
            if iou.max() >= iou_threshold:
                votes.append(int(gt.ids[rows[np.argmax(iou)]]))
        ids, counts = np.unique(votes, return_counts=True) if votes else (np.zeros(0), np.zeros(0))
        labels.append(int(ids[np.argmax(counts)]) if len(ids) and counts.max() * 2 > len(tracklet) else -1)
    return np.asarray(labels, np.int64)


def _pairs(counts):
    counts = np.asarray(counts, np.int64)
    return int((counts * (counts - 1) // 2).sum())


def association_scores(predicted, truth):
    """Cross-camera association quality over the tracklets with a true identity (``truth > 0``).

    Args:
        predicted: (N,) global ids the association gave.
        truth: (N,) ground-truth identities (<= 0: unlabelled, left out).

    Returns:
        dict: ``pairwise_precision`` (pairs under one global id that are one
        person), ``pairwise_recall`` (pairs of one person under one global
        id), ``pairwise_f1``, ``identities_whole`` (share of the identities
        with two or more tracklets whose tracklets all have one global id),
        ``ids_pure`` (share of global ids whose tracklets are all one person),
        and the counts they come from.
    """
    predicted, truth = np.asarray(predicted), np.asarray(truth)
    if predicted.shape != truth.shape:
        raise ValueError(f"predicted and truth need one id per tracklet: shapes {predicted.shape}, {truth.shape}")
    keep = truth > 0
    predicted, truth = predicted[keep], truth[keep]
    _, p = np.unique(predicted, return_inverse=True)
    _, t = np.unique(truth, return_inverse=True)
    joint = np.unique(np.stack([p, t], axis=1), axis=0, return_counts=True)[1] if len(p) else np.zeros(0)
    same_both, same_pred, same_true = _pairs(joint), _pairs(np.bincount(p)), _pairs(np.bincount(t))
    precision = same_both / same_pred if same_pred else 1.0
    recall = same_both / same_true if same_true else 1.0
    ids_per_person = np.array([len(np.unique(p[t == i])) for i in range(t.max() + 1)]) if len(t) else np.zeros(0)
    sizes = np.bincount(t) if len(t) else np.zeros(0, np.int64)
    multi = sizes >= 2
    people_per_id = np.array([len(np.unique(t[p == i])) for i in range(p.max() + 1)]) if len(p) else np.zeros(0)
    return {
        "pairwise_precision": float(precision), "pairwise_recall": float(recall),
        "pairwise_f1": float(2 * precision * recall / (precision + recall)) if precision + recall else 0.0,
        "identities_whole": float(np.mean(ids_per_person[multi] == 1)) if multi.any() else 1.0,
        "ids_pure": float(np.mean(people_per_id == 1)) if len(people_per_id) else 1.0,
        "tracklets": int(len(t)), "identities": int(len(sizes)), "identities_multi": int(multi.sum()),
        "global_ids": int(len(people_per_id)),
    }

"""Pictures of an evaluation: CMC curve, ranked lists, distance histograms.

Matplotlib runs on the Agg backend (no display needed). Ranked lists are
composed with PIL so their pixel size is exact:

* a row of ``query_frames`` thumbnails (the query clip strip), a gap, then
  the ``top_k`` gallery tracklets in rank order, one thumbnail each (the
  tracklet's middle frame), framed green (same id as the query) or red
  (another id), with the rank, gallery id, camera and distance (enough
  decimals to tell neighbours apart) written below.
* Junk gallery items (the protocol's junk: the query itself, same id and
  same camera, and id -1 under "mars") are left out, as the metrics do:
  ranked lists and histograms take good / junk from
  ``nvan_tf.evaluation.metrics.match_masks``, the rule the metrics use.

Every picture is written atomically (``nvan_tf.core.atomic``): two runs into
one folder leave complete PNGs.
"""

from __future__ import annotations

import logging

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from nvan_tf.evaluation import distance as distance_lib  # noqa: E402
from nvan_tf.evaluation.metrics import match_masks  # noqa: E402
from nvan_tf.core.atomic import atomic_path  # noqa: E402

logger = logging.getLogger(__name__)

__all__ = [
    "cmc_figure",
    "distance_histogram_figure",
    "format_distances",
    "plot_cmc",
    "plot_distance_histograms",
    "plot_ranked_list",
    "ranked_list_size",
    "select_queries",
    "plot_training",
]

GREEN = (30, 170, 60)
RED = (220, 40, 40)
BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)
LABEL_LINE = 12          # pixels per caption line under a thumbnail
CAPTION_LINES = 3        # "1. id 12", "cam 3", the distance


def _save_figure(fig, path, dpi):
    """Writes ``fig`` as a PNG at ``path`` (atomically) and closes it."""
    try:
        with atomic_path(path) as staged:
            fig.savefig(staged, dpi=dpi, format="png")
    finally:
        plt.close(fig)
    return path


def cmc_figure(curves, *, title="CMC", size=(6.0, 4.0), dpi=100):
    """The CMC curve(s) as a Matplotlib figure (close it when done).

    Args:
        curves: a (max_rank,) array of fractions, or ``{label: array}``.

    The values at ranks 1, 5, 10 and 20 are written next to their points,
    inside the axes: above the point, or below it near the top, never on
    the tick labels.
    """
    if not isinstance(curves, dict):
        curves = {"": curves}
    if not curves:
        raise ValueError("curves is empty: nothing to plot")
    fig, ax = plt.subplots(figsize=size, dpi=dpi)
    for label, cmc in curves.items():
        cmc = np.asarray(cmc, dtype=np.float64)
        if cmc.ndim != 1 or cmc.size == 0:
            raise ValueError(f"a CMC curve must be a non-empty 1-D array; received shape {cmc.shape}")
        ranks = np.arange(1, cmc.size + 1)
        ax.plot(ranks, 100 * cmc, marker="o", markersize=3, label=label or None)
        for r in (1, 5, 10, 20):
            if r <= cmc.size:
                value = 100 * cmc[r - 1]
                above = value < 85
                ax.annotate(f"{value:.1f}", (r, value), textcoords="offset points",
                            xytext=(0, 5 if above else -5), ha="center",
                            va="bottom" if above else "top", fontsize=7)
    longest = max(np.asarray(c).size for c in curves.values())
    step = 5 if longest <= 50 else 10 ** int(np.log10(longest) - 1) * 5
    ax.set_xticks([1] + list(range(step, longest + 1, step)))
    ax.set_xlim(0, longest + 1)  # room for the labels at rank 1 and the last rank
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (%)")
    ax.set_title(title)
    ax.set_ylim(0, 102)
    ax.grid(True, alpha=0.3)
    if any(curves):
        ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def plot_cmc(curves, path, *, title="CMC", size=(6.0, 4.0), dpi=100):
    """Writes ``cmc_figure(curves)`` as a PNG of ``size * dpi`` pixels."""
    return _save_figure(cmc_figure(curves, title=title, size=size, dpi=dpi), path, dpi)


def distance_histogram_figure(distmat, q_pids, g_pids, q_camids, g_camids, *, metric,
                              protocol="mars", bins=100, size=(6.0, 4.0), dpi=100):
    """Histograms of positive (good) and negative distances, junk left out.

    Args:
        metric: the distance's name ("cosine", "euclidean"), on the x axis
            and in the title.

    Returns:
        a Matplotlib figure (close it when done).
    """
    distmat = np.asarray(distmat)
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)
    if distmat.shape != (q_pids.size, g_pids.size):
        raise ValueError(
            f"distmat has shape {distmat.shape} but there are {q_pids.size} "
            f"query and {g_pids.size} gallery labels"
        )
    good, junk = match_masks(q_pids[:, None], q_camids[:, None], g_pids, g_camids, protocol)
    positives = distmat[good]
    negatives = distmat[~good & ~junk]
    del good, junk
    finite = distmat[np.isfinite(distmat)]
    low, high = float(finite.min()), float(finite.max())
    if high <= low:
        high = low + 1.0
    edges = np.linspace(low, high, bins + 1)
    fig, ax = plt.subplots(figsize=size, dpi=dpi)
    for values, label, colour in ((negatives, "negative", "tab:red"),
                                  (positives, "positive", "tab:green")):
        if values.size:
            counts, _ = np.histogram(values, bins=edges)
            ax.stairs(counts / max(1, values.size), edges, fill=True, alpha=0.5,
                      color=colour, label=f"{label} (n={values.size})")
    name = "cosine distance (1 - cos)" if metric == "cosine" else f"{metric} distance"
    ax.set_xlabel(name)
    ax.set_ylabel("fraction of pairs")
    ax.set_title(f"{metric} distances of positive and negative pairs")
    ax.legend(loc="upper right")
    fig.tight_layout()
    return fig


def plot_distance_histograms(distmat, q_pids, g_pids, q_camids, g_camids, path, *,
                             metric, protocol="mars", bins=100, size=(6.0, 4.0), dpi=100):
    """Writes ``distance_histogram_figure(...)`` as a PNG; returns the path."""
    fig = distance_histogram_figure(distmat, q_pids, g_pids, q_camids, g_camids, metric=metric,
                                    protocol=protocol, bins=bins, size=size, dpi=dpi)
    return _save_figure(fig, path, dpi)


def select_queries(ap, num=8, mode="worst"):
    """Query indices to show: "worst" (lowest AP), "best", or "mixed" (half each).

    NaN AP (skipped queries) are never chosen.
    """
    ap = np.asarray(ap, dtype=np.float64)
    valid = np.flatnonzero(~np.isnan(ap))
    order = valid[np.argsort(ap[valid], kind="stable")]
    if mode == "worst":
        return order[:num]
    if mode == "best":
        return order[::-1][:num]
    if mode == "mixed":
        worst = order[: (num + 1) // 2]
        best = [i for i in order[::-1] if i not in set(worst)][: num // 2]
        return np.concatenate([worst, np.asarray(best, dtype=order.dtype)])
    raise ValueError(f"mode must be 'worst', 'best' or 'mixed'; received {mode!r}")


def ranked_list_size(top_k=10, query_frames=4, thumb_size=(128, 64), gap=12, border=4):
    """(width, height) in pixels of a ``plot_ranked_list`` picture."""
    thumb_h, thumb_w = thumb_size
    cell = thumb_w + 2 * border
    width = query_frames * thumb_w + 2 * border + gap + top_k * (cell + 2) + gap
    height = thumb_h + 2 * border + CAPTION_LINES * LABEL_LINE + 4
    return width, height


def format_distances(values, min_decimals=3, max_decimals=8):
    """Distances as text with enough decimals to tell them apart.

    The fewest decimals (``min_decimals`` .. ``max_decimals``) at which
    distinct values print distinctly and non-zero values do not print as
    zero: random-weight models give cosine distances of 1e-4 and less.
    """
    values = np.asarray(values, dtype=np.float64)
    distinct = len(np.unique(values))
    for decimals in range(min_decimals, max_decimals + 1):
        texts = [f"{v:.{decimals}f}" for v in values]
        zero = f"{0:.{decimals}f}"
        if (len(set(texts)) == distinct
                and not any(t.lstrip("-") == zero for t, v in zip(texts, values) if v != 0)):
            return texts
    return texts


def _thumbnail(path, thumb_size):
    thumb_h, thumb_w = thumb_size
    try:
        with Image.open(path) as image:
            return image.convert("RGB").resize((thumb_w, thumb_h), Image.BILINEAR)
    except (OSError, ValueError) as err:
        logger.warning("cannot read frame %s (%s); drawing grey", path, err)
        return Image.new("RGB", (thumb_w, thumb_h), (128, 128, 128))


def _evenly(frames, count):
    frames = list(frames)
    if not frames:
        raise ValueError("a tracklet has no frames to draw")
    picks = np.linspace(0, len(frames) - 1, count).round().astype(int)
    return [frames[i] for i in picks]


def plot_ranked_list(distances, query_frames, gallery_frames, q_pid, q_camid,
                     g_pids, g_camids, path, *, top_k=10, protocol="mars",
                     num_query_frames=4, thumb_size=(128, 64), gap=12, border=4):
    """Writes one query's ranked list as a PNG of ``ranked_list_size(...)``.

    Args:
        distances: (Ng,) distances of this query to the gallery.
        query_frames: frame paths of the query tracklet.
        gallery_frames: (Ng,) sequence of frame-path lists.
        q_pid, q_camid: the query's labels; g_pids, g_camids: (Ng,).
        path: output PNG path.
        top_k: gallery tracklets shown (fewer if the gallery is smaller;
            the picture keeps its size).
        protocol: which gallery items are junk and left out.
        num_query_frames: frames in the query strip.
        thumb_size: (height, width) of a thumbnail.

    Returns:
        list of (gallery index, is_same_id, caption) for the items drawn;
        the caption (rank, gallery id, camera, distance) is written under
        the thumbnail, one line each.
    """
    distances = np.asarray(distances)
    g_pids = np.asarray(g_pids)
    g_camids = np.asarray(g_camids)
    if distances.ndim != 1 or distances.size != g_pids.size or len(gallery_frames) != g_pids.size:
        raise ValueError(
            f"distances ({distances.shape}), g_pids ({g_pids.size}) and "
            f"gallery_frames ({len(gallery_frames)}) must describe the same gallery"
        )
    good, junk = match_masks(q_pid, q_camid, g_pids, g_camids, protocol)
    keep = ~junk
    order = distance_lib.stable_argsort(
        np.where(keep, distances, np.inf).astype(np.float64)[None, :]
    )[0]
    order = [int(i) for i in order if keep[i]][:top_k]

    width, height = ranked_list_size(top_k, num_query_frames, thumb_size, gap, border)
    thumb_h, thumb_w = thumb_size
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    # Query strip, framed black.
    draw.rectangle([0, 0, num_query_frames * thumb_w + 2 * border - 1,
                    thumb_h + 2 * border - 1], fill=(0, 0, 0))
    for n, frame in enumerate(_evenly(query_frames, num_query_frames)):
        canvas.paste(_thumbnail(frame, thumb_size), (border + n * thumb_w, border))
    draw.text((border, thumb_h + 2 * border + 2), f"query id {q_pid} cam {q_camid}", fill=TEXT)
    x = num_query_frames * thumb_w + 2 * border + gap
    drawn = []
    texts = format_distances(distances[order]) if order else []
    for rank, (index, text) in enumerate(zip(order, texts), 1):
        same = bool(good[index])
        draw.rectangle([x, 0, x + thumb_w + 2 * border - 1, thumb_h + 2 * border - 1],
                       fill=GREEN if same else RED)
        frames = list(gallery_frames[index])
        canvas.paste(_thumbnail(frames[len(frames) // 2], thumb_size), (x + border, border))
        caption = f"{rank}. id {g_pids[index]}\ncam {g_camids[index]}\n{text}"
        for line, words in enumerate(caption.split("\n")):
            draw.text((x, thumb_h + 2 * border + 2 + line * LABEL_LINE), words, fill=TEXT)
        drawn.append((index, same, caption))
        x += thumb_w + 2 * border + 2
    with atomic_path(path) as staged:
        canvas.save(staged, format="PNG")
    return drawn


def plot_training(history, path, *, size=(10.0, 4.0), dpi=100):
    """Writes the training curves: loss terms (left) and rank-1 / mAP (right,
    at the evaluated epochs) against the epoch.

    Args:
        history: per-epoch dicts with ``epoch`` and any of ``loss``,
            ``triplet``, ``identity``, ``rank1``, ``mAP`` (fractions).
        path: output PNG path (written through a temporary file).
    """
    if not history:
        raise ValueError("history is empty: nothing to plot")
    fig, (losses, scores) = plt.subplots(1, 2, figsize=size, dpi=dpi)
    epochs = np.asarray([row["epoch"] for row in history])
    for name in ("loss", "triplet", "identity"):
        values = [row.get(name) for row in history]
        if any(v is not None for v in values):
            losses.plot(epochs, [np.nan if v is None else v for v in values], marker=".",
                        label="total" if name == "loss" else name)
    losses.set_xlabel("epoch")
    losses.set_ylabel("loss (epoch mean)")
    losses.set_title("training loss")
    losses.grid(True, alpha=0.3)
    losses.legend(loc="best")
    losses.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    evaluated = [row for row in history if row.get("rank1") is not None]
    for name, label in (("rank1", "rank-1"), ("mAP", "mAP")):
        if evaluated:
            scores.plot([row["epoch"] for row in evaluated], [100 * row[name] for row in evaluated],
                        marker="o", label=label)
    scores.set_xlim(losses.get_xlim())
    scores.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    scores.set_ylim(0, 102)
    scores.set_xlabel("epoch")
    scores.set_ylabel("%")
    scores.set_title("query / gallery evaluation")
    scores.grid(True, alpha=0.3)
    if evaluated:
        scores.legend(loc="best")
    fig.tight_layout()
    return _save_figure(fig, path, dpi)

"""Tests for nvan_tf.evaluation.report: the PNGs exist, are images of the expected
size, and the ranked-list borders tell right from wrong ids."""

import numpy as np
import pytest
from PIL import Image

from nvan_tf.evaluation import report as visualize


def write_frames(folder, name, colour, count=3, size=(40, 20)):
    paths = []
    for i in range(count):
        path = folder / f"{name}_{i}.png"
        Image.new("RGB", (size[1], size[0]), colour).save(path)
        paths.append(str(path))
    return paths


def assert_png(path, size):
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == size
        pixels = np.asarray(image.convert("RGB"))
    # Not a blank canvas.
    assert pixels.std() > 1.0
    return pixels


def test_cmc_curve_png(tmp_path):
    cmc = np.linspace(0.6, 0.95, 20)
    path = visualize.plot_cmc({"cosine": cmc, "re-ranked": cmc ** 0.5},
                              str(tmp_path / "sub" / "cmc.png"))
    assert_png(path, (600, 400))
    with pytest.raises(ValueError, match="non-empty 1-D"):
        visualize.plot_cmc(np.zeros((2, 2)), str(tmp_path / "bad.png"))


def test_distance_histograms_png(tmp_path):
    rng = np.random.default_rng(0)
    g_pids = np.array([1, 1, 2, 2, -1, 0])
    g_cams = np.array([0, 1, 0, 1, 1, 1])
    distmat = rng.random((2, 6))
    path = visualize.plot_distance_histograms(
        distmat, np.array([1, 2]), g_pids, np.array([0, 0]), g_cams,
        str(tmp_path / "hist.png"), metric="cosine", size=(5, 3), dpi=80,
    )
    assert_png(path, (400, 240))
    with pytest.raises(ValueError, match="distmat has shape"):
        visualize.plot_distance_histograms(distmat[:, :5], [1, 2], g_pids, [0, 0], g_cams,
                                           str(tmp_path / "x.png"), metric="cosine")


def test_ranked_list_png_borders_and_junk(tmp_path):
    query = write_frames(tmp_path, "query", (200, 200, 0), count=5)
    # Gallery: the query itself (junk), a wrong id, a right id, an id -1 item.
    gallery_frames = [
        query,
        write_frames(tmp_path, "wrong", (0, 0, 200)),
        write_frames(tmp_path, "right", (0, 200, 200)),
        write_frames(tmp_path, "junk", (90, 90, 90)),
    ]
    g_pids = np.array([7, 3, 7, -1])
    g_cams = np.array([1, 2, 3, 2])
    distances = np.array([0.0, 0.1, 0.2, 0.05])
    thumb = (40, 20)
    path = str(tmp_path / "lists" / "q0.png")
    drawn = visualize.plot_ranked_list(
        distances, query, gallery_frames, 7, 1, g_pids, g_cams, path,
        top_k=10, num_query_frames=4, thumb_size=thumb,
    )
    # Junk (the query itself, the id -1 item) is left out, as in the metric.
    assert [(i, same) for i, same, _ in drawn] == [(1, False), (2, True)]
    # Captions: rank, gallery id, camera, distance.
    assert drawn[0][2] == "1. id 3\ncam 2\n0.100"
    assert drawn[1][2] == "2. id 7\ncam 3\n0.200"
    width, height = visualize.ranked_list_size(10, 4, thumb)
    pixels = assert_png(path, (width, height))
    # Border colours of the first two cells: red (wrong id), then green.
    border, gap = 4, 12
    x0 = 4 * thumb[1] + 2 * border + gap
    x1 = x0 + thumb[1] + 2 * border + 2
    assert tuple(pixels[1, x0 + 1]) == visualize.RED
    assert tuple(pixels[1, x1 + 1]) == visualize.GREEN
    # Inside the cells: the gallery frames' own colours.
    assert tuple(pixels[border + 5, x0 + border + 5]) == (0, 0, 200)
    assert tuple(pixels[border + 5, x1 + border + 5]) == (0, 200, 200)
    # The market rule keeps id -1 items: it becomes rank 1 (distance 0.05).
    drawn = visualize.plot_ranked_list(
        distances, query, gallery_frames, 7, 1, g_pids, g_cams, path,
        protocol="market", thumb_size=thumb,
    )
    assert [i for i, _, _ in drawn] == [3, 1, 2]


def test_ranked_list_rejects_mismatched_gallery(tmp_path):
    with pytest.raises(ValueError, match="same gallery"):
        visualize.plot_ranked_list(np.zeros(3), ["a"], [["b"]] * 2, 1, 0,
                                   np.zeros(3), np.zeros(3), str(tmp_path / "x.png"))


def test_select_queries():
    ap = np.array([0.5, np.nan, 0.1, 0.9, 0.3])
    assert visualize.select_queries(ap, 2, "worst").tolist() == [2, 4]
    assert visualize.select_queries(ap, 2, "best").tolist() == [3, 0]
    assert visualize.select_queries(ap, 3, "mixed").tolist() == [2, 4, 3]
    assert 1 not in visualize.select_queries(ap, 10, "mixed").tolist()
    with pytest.raises(ValueError, match="mode must be"):
        visualize.select_queries(ap, 2, "random")


def test_cmc_value_labels_stay_off_the_tick_labels():
    # An untrained model: 0% at rank 1, low values everywhere; and a perfect one.
    for cmc in (np.r_[0.0, 0.0, np.linspace(0.02, 0.3, 18)], np.ones(20)):
        fig = visualize.cmc_figure({"cosine": cmc})
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        ax = fig.axes[0]
        labels = [t.get_window_extent(renderer) for t in ax.texts]
        assert len(labels) == 4                      # ranks 1, 5, 10, 20
        ticks = [t.get_window_extent(renderer) for t in ax.get_xticklabels() + ax.get_yticklabels()
                 if t.get_text()]
        frame = ax.get_window_extent(renderer)
        for label in labels:
            assert not any(label.overlaps(tick) for tick in ticks)
            assert frame.x0 <= label.x0 and label.x1 <= frame.x1
            assert frame.y0 <= label.y0 and label.y1 <= frame.y1
        visualize.plt.close(fig)


def test_distance_histogram_names_the_distance():
    rng = np.random.default_rng(1)
    for metric in ("cosine", "euclidean"):
        fig = visualize.distance_histogram_figure(
            rng.random((2, 4)), [1, 2], [1, 2, 1, 2], [0, 0], [1, 1, 1, 1], metric=metric)
        ax = fig.axes[0]
        assert metric in ax.get_xlabel() and metric in ax.get_title()
        visualize.plt.close(fig)


def test_ranked_list_distances_get_enough_digits(tmp_path):
    assert visualize.format_distances([0.1, 0.25]) == ["0.100", "0.250"]
    # Random-weight models: cosine distances of 1e-4, which .3f shows as 0.000.
    assert visualize.format_distances([0.000121, 0.000134, 0.0]) == ["0.00012", "0.00013", "0.00000"]
    assert visualize.format_distances([0.5001, 0.5002]) == ["0.5001", "0.5002"]
    frames = [write_frames(tmp_path, f"g{i}", (40 * i, 0, 0)) for i in range(3)]
    drawn = visualize.plot_ranked_list(
        np.array([0.000134, 0.000121, 0.0005]), frames[0], frames, 1, 0,
        np.array([4, 5, 6]), np.array([1, 2, 3]), str(tmp_path / "r.png"), thumb_size=(40, 20))
    assert [caption for _, _, caption in drawn] == [
        "1. id 5\ncam 2\n0.00012", "2. id 4\ncam 1\n0.00013", "3. id 6\ncam 3\n0.00050"]

"""Tests for nvan_tf.visualize: the PNGs exist, are images of the expected
size, and the ranked-list borders tell right from wrong ids."""

import numpy as np
import pytest
from PIL import Image

from nvan_tf import visualize


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
        str(tmp_path / "hist.png"), size=(5, 3), dpi=80,
    )
    assert_png(path, (400, 240))
    with pytest.raises(ValueError, match="distmat has shape"):
        visualize.plot_distance_histograms(distmat[:, :5], [1, 2], g_pids, [0, 0], g_cams,
                                           str(tmp_path / "x.png"))


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
    assert drawn == [(1, False), (2, True)]
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
    assert [i for i, _ in drawn] == [3, 1, 2]


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

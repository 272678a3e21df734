"""Serving: a client for TF Serving's REST ``predict`` API, and a gallery of tracklets.

    client = ServingClient("http://localhost:8501", model="nvan")
    embeddings = client.embed_tracklets([frames_a, frames_b])   # paths or JPEG bytes -> (2, 2048)

    gallery = Gallery()
    gallery.add(embeddings, ids=["anna", "ben"], cameras=[1, 2])
    gallery.save("gallery.npz")
    matches = Gallery.load("gallery.npz").query(client.embed_tracklet(frames_c), k=5)
    matches[0].ids, matches[0].distances

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
import dataclasses
import json
import logging
import os
import socket
import time
import urllib.error
import urllib.request
import zipfile

import numpy as np

from nvan_tf.data.sampling import TEST_MODES, sample_test_indices
from nvan_tf.evaluation import distance
from nvan_tf.evaluation import reranking
from nvan_tf.evaluation.features import TrackletAverage
from nvan_tf.io.atomic import atomic_path

logger = logging.getLogger(__name__)

__all__ = ["Gallery", "Match", "ServingClient", "ServingError"]


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


@dataclasses.dataclass
class Match:
    """The top-k gallery entries for one query, best first."""

    indices: np.ndarray
    ids: np.ndarray
    cameras: np.ndarray
    distances: np.ndarray


class Gallery:
    """Embeddings of known tracklets with their ids and cameras.

    ``ids`` may be integers or strings; ``cameras`` are integers. Saved as
    ``.npz`` (``embeddings``, ``ids``, ``cameras``; no pickles).
    """

    def __init__(self, embeddings=None, ids=None, cameras=None):
        self.embeddings = np.zeros((0, 0), np.float32)
        self.ids = np.zeros((0,), np.int64)
        self.cameras = np.zeros((0,), np.int64)
        if embeddings is not None:
            self.add(embeddings, ids, cameras)

    def __len__(self):
        return len(self.ids)

    def add(self, embeddings, ids, cameras):
        """Appends ``(n, D)`` embeddings with their ``n`` ids and cameras."""
        embeddings = distance.check_features(embeddings, "embeddings").astype(np.float32)
        ids, cameras = np.asarray(ids), np.asarray(cameras)
        n = len(embeddings)
        if ids.shape != (n,) or cameras.shape != (n,):
            raise ValueError(f"Need one id and one camera per embedding: {n} embeddings, "
                             f"ids of shape {ids.shape}, cameras of shape {cameras.shape}")
        if not np.issubdtype(cameras.dtype, np.integer):
            raise ValueError(f"cameras must be integers. Received dtype {cameras.dtype}")
        if ids.dtype.kind not in "iuU":
            raise ValueError(f"ids must be integers or strings. Received dtype {ids.dtype}")
        if len(self) and embeddings.shape[1] != self.embeddings.shape[1]:
            raise ValueError(f"The gallery holds {self.embeddings.shape[1]}-d embeddings. "
                             f"Received {embeddings.shape[1]}-d ones")
        if len(self) and (ids.dtype.kind == "U") != (self.ids.dtype.kind == "U"):
            raise ValueError("ids must all be strings or all integers, as the gallery's are "
                             f"({self.ids.dtype}). Received dtype {ids.dtype}")
        if len(self):
            self.embeddings = np.concatenate([self.embeddings, embeddings])
            self.ids = np.concatenate([self.ids, ids])
            self.cameras = np.concatenate([self.cameras, cameras.astype(np.int64)])
        else:
            self.embeddings, self.ids, self.cameras = embeddings, ids, cameras.astype(np.int64)
        return self

    def save(self, path):
        """Writes the ``.npz`` atomically (``nvan_tf.io.atomic``)."""
        path = os.path.abspath(os.fspath(path))
        if not path.endswith(".npz"):
            raise ValueError(f"A gallery is saved as .npz. Received: {path}")
        with atomic_path(path) as staged, open(staged, "wb") as f:
            np.savez(f, embeddings=self.embeddings, ids=self.ids, cameras=self.cameras)
        return path

    @classmethod
    def load(cls, path):
        """Reads a gallery written by :meth:`save`."""
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except (OSError, EOFError, ValueError, zipfile.BadZipFile) as err:
            raise ValueError(f"{path} cannot be read as a gallery .npz: {err}") from err
        missing = {"embeddings", "ids", "cameras"} - set(arrays)
        if missing:
            raise ValueError(f"{path} is not a gallery: no {sorted(missing)} in it "
                             f"(found {sorted(arrays)})")
        arrays = arrays["embeddings"], arrays["ids"], arrays["cameras"]
        gallery = cls()
        if len(arrays[1]):
            gallery.add(*arrays)
        return gallery

    def query(self, embeddings, k=10, *, cameras=None, exclude_same_camera=False,
              metric="cosine", rerank=False, k1=20, k2=6, lambda_value=0.3):
        """The ``k`` nearest gallery entries of each query.

        Args:
            embeddings: ``(D,)`` or ``(n, D)`` query embeddings.
            k: matches per query (at most the gallery size).
            cameras: the queries' cameras, needed for ``exclude_same_camera``.
            exclude_same_camera: leave out entries of the query's own camera
                (cross-camera search, as the re-ID protocols rank).
            metric: ``"cosine"`` or ``"euclidean"`` (``nvan_tf.evaluation.distance``).
            rerank: k-reciprocal re-ranking (``nvan_tf.evaluation.reranking``) with
                ``k1``, ``k2``, ``lambda_value``.

        Returns:
            one :class:`Match` per query.
        """
        if not len(self):
            raise ValueError("The gallery is empty: add embeddings before querying")
        queries = np.asarray(embeddings)
        queries = queries[None] if queries.ndim == 1 else queries
        queries = distance.check_features(queries, "query embeddings")
        if queries.shape[1] != self.embeddings.shape[1]:
            raise ValueError(f"The gallery holds {self.embeddings.shape[1]}-d embeddings. "
                             f"Received {queries.shape[1]}-d queries")
        if int(k) != k or k < 1:
            raise ValueError(f"k must be a positive integer. Received: k={k!r}")
        dist = distance.pairwise_distance(queries, self.embeddings, metric=metric)
        if rerank:
            dist = reranking.re_ranking(
                dist, distance.pairwise_distance(queries, metric=metric),
                distance.pairwise_distance(self.embeddings, metric=metric),
                k1=k1, k2=k2, lambda_value=lambda_value,
            ).astype(np.float32)
        if exclude_same_camera:
            if cameras is None:
                raise ValueError("exclude_same_camera needs the queries' cameras")
            cameras = np.atleast_1d(np.asarray(cameras))
            if cameras.shape != (len(queries),):
                raise ValueError(f"Need one camera per query: {len(queries)} queries, cameras of "
                                 f"shape {cameras.shape}")
            dist = np.where(cameras[:, None] == self.cameras[None, :], np.inf, dist)
        order = distance.stable_argsort(dist, stop=min(int(k), len(self)))
        matches = []
        for row, columns in zip(dist, order):
            columns = columns[np.isfinite(row[columns])]
            matches.append(Match(columns, self.ids[columns], self.cameras[columns], row[columns]))
        return matches

"""The TF Serving REST client against a local stand-in server (the Gallery: tests/test_gallery.py)."""

import base64
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from nvan_tf import deploy as export  # noqa: E402
from nvan_tf.data import pipeline  # noqa: E402
from nvan_tf.data.datasets import Tracklet  # noqa: E402
from nvan_tf.data.sampling import sample_test_indices  # noqa: E402
from nvan_tf.deploy.client import ServingClient, ServingError  # noqa: E402

try:
    from tests import toy
    from tests.test_export import H, T, W, encode, keras_embedding, small_model
except ImportError:  # tests/ itself on sys.path
    import toy
    from test_export import H, T, W, encode, keras_embedding, small_model

PREDICT = re.compile(r"^/v1/models/(?P<name>[^/:]+)(/versions/(?P<version>\d+))?:predict$")


def _decode(value):
    """JSON values of a TF Serving request -> nested lists, {"b64": s} -> bytes."""
    if isinstance(value, dict):
        if set(value) != {"b64"}:
            raise ValueError(f"an object in a request must be {{'b64': ...}}; got keys {sorted(value)}")
        return base64.b64decode(value["b64"])
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


class StandIn(ThreadingHTTPServer):
    """TF Serving's REST predict API, answered by a SavedModel's signatures.

    Request ``{"signature_name", "instances" | "inputs"}`` (row or columnar
    format of a single-input signature); answers ``{"predictions": [...]}``
    or ``{"outputs": ...}``, and ``{"error": message}`` with 400 (bad input),
    404 (unknown model, signature) or 503 (the first ``unavailable``
    requests). ``delay`` seconds before every answer.
    """

    daemon_threads = True

    def __init__(self, saved_model, name="nvan"):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.model = tf.saved_model.load(saved_model)
        self.name = name
        self.delay = 0.0
        self.unavailable = 0
        self.requests = []

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"

    def answer(self, path, body):
        match = PREDICT.match(path)
        if not match or match["name"] != self.name:
            return 404, {"error": f"Servable not found for request: Latest({path})"}
        if self.unavailable > 0:
            self.unavailable -= 1
            return 503, {"error": "Model is loading; try again"}
        try:
            request = json.loads(body)
        except ValueError as err:
            return 400, {"error": f"JSON Parse error: {err}"}
        name = request.get("signature_name", "serving_default")
        if name not in self.model.signatures:
            return 404, {"error": f"Serving signature name: \"{name}\" not found in signature def"}
        signature = self.model.signatures[name]
        (input_name, spec), = signature.structured_input_signature[1].items()
        rows = "instances" in request
        try:
            values = _decode(request["instances"] if rows else request["inputs"])
            array = np.array(values, dtype=object if spec.dtype == tf.string else spec.dtype.as_numpy_dtype)
            if spec.dtype == tf.string:
                array = array.astype(bytes)
            outputs = signature(**{input_name: tf.constant(array)})
        except (KeyError, ValueError, TypeError, OverflowError) as err:
            return 400, {"error": f"{type(err).__name__}: {err}"}
        except tf.errors.InvalidArgumentError as err:
            return 400, {"error": err.message}
        if rows:
            (output,) = outputs.values()
            return 200, {"predictions": output.numpy().tolist()}
        return 200, {"outputs": {k: v.numpy().tolist() for k, v in outputs.items()}}


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.requests.append((self.path, body))
        time.sleep(self.server.delay)
        status, answer = self.server.answer(self.path, body)
        data = json.dumps(answer).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            pass

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def model():
    # the toy depth with NVAN's placement, not the smallest: there the contrast tracklet's two clips would
    # differ too little for the plain-mean check below to tell them apart
    return small_model("ste-nvan", seed=5, **toy.OVERRIDES, non_local=(0, 2, 3, 0))


@pytest.fixture(scope="module")
def server(model, tmp_path_factory):
    path = export.export_saved_model(model, str(tmp_path_factory.mktemp("serving") / "nvan" / "1"))
    standin = StandIn(path)
    thread = threading.Thread(target=standin.serve_forever, daemon=True)
    thread.start()
    yield standin
    standin.shutdown()
    standin.server_close()


@pytest.fixture(autouse=True)
def reset(server):
    server.delay, server.unavailable = 0.0, 0
    server.requests.clear()


@pytest.fixture(scope="module")
def tracklets(tmp_path_factory):
    """Three tracklets of JPEG frames of different lengths and sizes."""
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("frames")
    out = []
    for index, (count, h, w) in enumerate(((11, 80, 40), (3, 64, 32), (6, 50, 24))):
        paths = []
        for i in range(count):
            paths.append(str(folder / f"t{index}_{i:02d}.jpg"))
            with open(paths[-1], "wb") as f:
                f.write(encode(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)))
        out.append(paths)
    return out


def reference(model, paths, sampling="rrs"):
    """The evaluation pipeline's clips through the Keras model, averaged, normalised."""
    clips = [c for c, *_ in pipeline.eval_dataset([Tracklet(paths, 1, 1, 1)], seq_len=T,
                                                  sampling=sampling, height=H, width=W)]
    mean = keras_embedding(model, np.concatenate(clips)).mean(axis=0)
    return mean / np.linalg.norm(mean)


@pytest.mark.slow
def test_embeddings_match_the_keras_model(server, model, tracklets):
    client = ServingClient(server.url, seq_len=T)
    embeddings = client.embed_tracklets(tracklets, batch_size=2)
    assert embeddings.shape == (3, 2048) and embeddings.dtype == np.float32
    for row, paths in zip(embeddings, tracklets):
        np.testing.assert_allclose(row, reference(model, paths), atol=1e-5)
    assert len(server.requests) == 2  # 3 clips, 2 a request


def test_dense_sampling_averages_clips(server, model, tracklets):
    client = ServingClient(server.url, seq_len=T, sampling="dense")
    embedding = client.embed_tracklet(tracklets[0])  # 11 frames: 3 clips of 4
    np.testing.assert_allclose(embedding, reference(model, tracklets[0], "dense"), atol=1e-5)


def test_dense_tracklet_embeddings_equal_the_evaluation_ones(server, model, tracklets, tmp_path):
    """One averaging rule: the serving client and extract_features (dense
    sampling: the mean of L2-normalised clip features) give the same
    tracklet embeddings, up to the client's final normalisation."""
    from nvan_tf.evaluation.evaluator import extract_features, model_extractor

    # A tracklet whose two clips differ: dark frames, then bright ones.
    rng = np.random.default_rng(1)
    contrast = []
    for i, (low, high) in enumerate([(0, 40)] * 4 + [(150, 256)] * 4):
        contrast.append(str(tmp_path / f"c{i}.jpg"))
        with open(contrast[-1], "wb") as f:
            f.write(encode(rng.integers(low, high, size=(64, 32, 3), dtype=np.uint8)))
    paths = [contrast, *tracklets]
    records = [Tracklet(frames, i, 1, i) for i, frames in enumerate(paths)]
    evaluated, _, _ = extract_features(model_extractor(model), records, sampling="dense",
                                       batch_size=2, verbose=0)
    served = ServingClient(server.url, seq_len=T, sampling="dense").embed_tracklets(paths)
    np.testing.assert_allclose(served, evaluated / np.linalg.norm(evaluated, axis=1, keepdims=True),
                               atol=1e-5)
    # The contrast tracklet's clips differ in norm: a plain mean would not agree.
    clips = np.concatenate([c for c, *_ in pipeline.eval_dataset(records[:1], seq_len=T,
                                                                sampling="dense", height=H, width=W)])
    raw = model(clips, training=False).numpy()
    plain = raw.mean(axis=0)
    assert len(raw) == 2 and np.abs(plain / np.linalg.norm(plain) - served[0]).max() > 1e-4


def test_request_body_is_tf_serving_rest(server, tracklets):
    ServingClient(server.url, seq_len=T).embed_tracklet(tracklets[0])
    ((path, body),) = server.requests
    assert path == "/v1/models/nvan:predict"
    request = json.loads(body)
    assert request["signature_name"] == "embed_jpeg"
    (clip,) = request["instances"]
    chosen = sample_test_indices(len(tracklets[0]), T, "rrs")[0]
    assert [base64.b64decode(frame["b64"]) for frame in clip] == [
        open(tracklets[0][i], "rb").read() for i in chosen]


def test_columnar_inputs_and_versions(server, model, tracklets):
    frames = [[open(p, "rb").read() for p in tracklets[1][:3] + tracklets[1][:1]]]
    body = json.dumps({"signature_name": "embed_jpeg",
                       "inputs": [[{"b64": base64.b64encode(f).decode()} for f in frames[0]]]}).encode()
    status, answer = server.answer("/v1/models/nvan/versions/1:predict", body)
    assert status == 200
    via_client = ServingClient(server.url, seq_len=T, version=1).embed_clips(frames)
    np.testing.assert_allclose(answer["outputs"]["embedding"], via_client, atol=1e-6)
    assert server.requests[-1][0] == "/v1/models/nvan/versions/1:predict"


def test_server_error_is_quoted_and_not_retried(server, tracklets):
    client = ServingClient(server.url, seq_len=T, retries=3, backoff=0)
    good = open(tracklets[1][0], "rb").read()
    with pytest.raises(ServingError) as info:
        client.embed_clips([[good, good, b"this is not a JPEG", good]])
    message = str(info.value)
    assert message.startswith(f"{client.url} answered HTTP 400: ")
    assert "embed_jpeg: a frame is not a JPEG or PNG image" in message
    assert info.value.status == 400
    assert len(server.requests) == 1


def test_wrong_seq_len_is_refused_by_the_signature(server, tracklets):
    client = ServingClient(server.url, seq_len=T + 1)
    with pytest.raises(ServingError, match=f"input frames must have shape \\(batch, {T}\\)"):
        client.embed_tracklet(tracklets[0])


def test_unknown_model(server, tracklets):
    client = ServingClient(server.url, model="other", seq_len=T, retries=2, backoff=0)
    with pytest.raises(ServingError, match="HTTP 404: Servable not found"):
        client.embed_tracklet(tracklets[1])
    assert len(server.requests) == 1


def test_retries_while_unavailable(server, model, tracklets):
    server.unavailable = 2
    embedding = ServingClient(server.url, seq_len=T, retries=2, backoff=0.01).embed_tracklet(tracklets[1])
    np.testing.assert_allclose(embedding, reference(model, tracklets[1]), atol=1e-5)
    assert len(server.requests) == 3
    server.unavailable = 5
    with pytest.raises(ServingError, match=r"HTTP 503: Model is loading; try again \(after 2 attempts\)"):
        ServingClient(server.url, seq_len=T, retries=1, backoff=0.01).embed_tracklet(tracklets[1])


def test_timeout(server, tracklets):
    server.delay = 1.5
    client = ServingClient(server.url, seq_len=T, timeout=0.3, retries=1, backoff=0)
    with pytest.raises(ServingError, match=r"did not answer within 0.3 s \(after 2 attempts\)"):
        client.embed_tracklet(tracklets[1])
    assert len(server.requests) == 2


def test_nothing_listening():
    import socket

    with socket.socket() as s:  # a free port, closed again
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = ServingClient(f"http://127.0.0.1:{port}", retries=0)
    with pytest.raises(ServingError, match="cannot reach"):
        client.embed_clips([[b"x"] * 8])


def test_client_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="url must start with http"):
        ServingClient("localhost:8501")
    with pytest.raises(ValueError, match="sampling must be one of"):
        ServingClient("http://x", sampling="random")
    client = ServingClient("http://127.0.0.1:9", seq_len=4)
    with pytest.raises(ValueError, match="clip 0 has 3 frames; the model takes seq_len=4"):
        client.embed_clips([[b"a", b"b", b"c"]])
    with pytest.raises(ValueError, match="at least one frame"):
        client.embed_tracklet([])

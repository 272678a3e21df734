"""Serving: the TF Serving REST client and the gallery of tracklets, under one name.

    client = ServingClient("http://localhost:8501", model="nvan")
    embeddings = client.embed_tracklets([frames_a, frames_b])   # paths or JPEG bytes -> (2, 2048)

    gallery = Gallery()
    gallery.add(embeddings, ids=["anna", "ben"], cameras=[1, 2])
    gallery.save("gallery.npz")
    matches = Gallery.load("gallery.npz").query(client.embed_tracklet(frames_c), k=5)
    matches[0].ids, matches[0].distances

Each lives in its own module: the client in :mod:`nvan_tf.deploy.client`,
the gallery in :mod:`nvan_tf.deploy.gallery` (on the nearest-neighbour
index of :mod:`nvan_tf.deploy.index`); this one keeps the names importable
from here (and from ``nvan_tf.serving``). No TensorFlow import.
"""

from nvan_tf.deploy.client import ServingClient, ServingError
from nvan_tf.deploy.gallery import Gallery, Match

__all__ = ["Gallery", "Match", "ServingClient", "ServingError"]

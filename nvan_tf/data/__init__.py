"""Data: dataset readers, frame sampling, and the tf.data input pipeline.

- ``nvan_tf.data.datasets``: MARS, DukeMTMC-VideoReID, iLIDS-VID, PRID-2011,
  own folders / CSV, and the synthetic generator (plain Python + NumPy);
- ``nvan_tf.data.sampling``: restricted random sampling, evenly, dense; the
  P x K identity sampler (plain Python + NumPy);
- ``nvan_tf.data.pipeline``: the tf.data pipeline (TensorFlow; imported
  only when used).
"""

from nvan_tf.data.datasets import DATASETS, Tracklet, VideoDataset, build_dataset
from nvan_tf.data.sampling import PKSampler, rrs_chunks, sample_test_indices, sample_train_indices

__all__ = ["DATASETS", "Tracklet", "VideoDataset", "build_dataset", "PKSampler", "rrs_chunks",
           "sample_test_indices", "sample_train_indices"]

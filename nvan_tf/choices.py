"""Every choice list of the project, in one place (plain Python: no TensorFlow).

The library checks its arguments against these, and every command line
takes its ``choices`` and help texts from here, so a new variant, precision
or format is added once.
"""

_REDUCE = (False, True, True, False)

# The five variants: the ModelConfig fields that define each (the authors'
# model_type in the comment).
VARIANTS = {
    "baseline": {"per_frame_pooling": True},                          # resnet50_s1
    "nvan": {"non_local": (0, 2, 3, 0)},                              # resnet50_NL
    "nvan-stripe": {"non_local": (0, 2, 3, 0), "stripes": 16},       # resnet50_NL_stripe
    "nvan-temporal": {"non_local": (0, 2, 3, 0),                      # resnet50_NL_hr
                      "temporal_reduction": _REDUCE},
    "ste-nvan": {"non_local": (0, 2, 3, 0), "stripes": 16,            # resnet50_NL_stripe_hr
                 "attention_group": 2, "temporal_reduction": _REDUCE},
}
VARIANT_NAMES = tuple(VARIANTS)

# Dataset readers (nvan_tf.data.datasets.build_dataset); training also takes
# "synthetic" (generated on first use).
DATASETS = ("mars", "dukev", "ilidsvid", "prid", "folder")
TRAIN_DATASETS = (*DATASETS, "synthetic")

# Test-time clip sampling: the reference's RRS clip, evenly spaced frames, or
# every consecutive clip (their embeddings averaged).
SAMPLING_MODES = ("rrs", "evenly", "dense")
# How the P x K sampler draws an identity's K tracklets: "always" with
# replacement (the reference), or only where an identity has fewer than K.
PK_REPLACEMENT = ("always", "as_needed")
# The ranges synthetic identities and cameras are drawn from (nvan_tf.data.datasets.synthetic.LOOKS).
SYNTHETIC_LOOKS = ("standard", "varied", "held-out")

# Training.
PRECISIONS = ("fp32", "mixed_float16", "mixed_bfloat16")
OPTIMIZERS = ("adam", "adamw", "sgd")
STRATEGIES = ("default", "mirrored", "multiworker")
TUNING_ALGORITHMS = ("bayesian", "hyperband")
TUNING_OBJECTIVES = ("mAP", "rank1")

# Evaluation.
PROTOCOLS = ("mars", "market")
DISTANCE_METRICS = ("cosine", "euclidean")

# Export.
EXPORT_FORMATS = ("savedmodel", "onnx", "tensorrt")
EXPORT_PRECISIONS = ("fp32", "fp16", "int8")

# Video (nvan-track): trackers of the `trackers` library, detectors (besides
# MOTChallenge det.txt files), and the embedding that needs no model.
TRACKERS = ("bytetrack", "sort", "ocsort", "botsort")
DETECTORS = ("ssdlite", "hog", "onnx:PATH")
EMBEDDING_BASELINES = ("colour-histogram",)
# The BatchNorm statistics features are taken with: the model's own (from its training), or estimated
# again on the tracklets being embedded, all together or camera by camera.
BATCH_NORM_STATISTICS = ("model", "all", "camera")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def listing(values):
    """``"a, b or c"`` for help texts and messages."""
    values = [str(v) for v in values]
    return values[0] if len(values) == 1 else ", ".join(values[:-1]) + " or " + values[-1]

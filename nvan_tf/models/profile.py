"""Parameters and FLOPs of one clip, counted by TensorFlow's profiler.

    nvan-profile --variant ste-nvan [--seq-len 8 --height 256 --width 128] [--json]
    nvan-profile --all          # the table of the five variants

The inference function of the model is traced for a batch of one clip, and
``tf.compat.v1.profiler`` counts the FLOPs
of every convolution and matrix multiplication in that graph (2 FLOPs per
multiply-add; the non-local attention products included; BN, softmax, pooling
and element-wise ops not counted), as docs/architecture.md counts the reference. The
non-local share is the part under the ``*_nonlocal_*`` name scopes.
"""

import json
import sys

COUNTED_OPS = ["Conv2D", "MatMul", "BatchMatMul.*"]


def _profile_flops(graph, scope_regex=None):
    import tensorflow as tf

    builder = tf.compat.v1.profiler.ProfileOptionBuilder
    options = builder(builder.float_operation()).with_accounted_types(COUNTED_OPS)
    if scope_regex:
        options = options.with_node_names(start_name_regexes=[scope_regex])
    result = tf.compat.v1.profiler.profile(graph, options=options.with_empty_output().build())
    return int(result.total_float_ops)


def count_parameters(model):
    """Weights of the embedding network: no classifier, no BN moving statistics."""
    return sum(
        int(w.numpy().size) for w in model.weights
        if "moving_" not in w.path and "/classifier/" not in w.path
    )


def profile_model(model):
    """Returns ``{params, flops, nonlocal_flops, ...}`` for one clip through ``model``."""
    import tensorflow as tf

    c = model.config
    spec = tf.TensorSpec((1, c.seq_len, c.height, c.width, 3), tf.float32)
    # the traced graph as it is: freezing its variables into constants first (as earlier versions did) gave
    # the same counts for every variant at both depths and took 1.4-4.9 s a model
    graph = tf.function(lambda clips: model(clips, training=False)).get_concrete_function(spec).graph
    flops = _profile_flops(graph)
    nonlocal_flops = _profile_flops(graph, ".*_nonlocal_.*")
    return {
        "variant": c.variant,
        "seq_len": c.seq_len,
        "height": c.height,
        "width": c.width,
        "params": count_parameters(model),
        "flops": flops,
        "nonlocal_flops": nonlocal_flops,
        "nonlocal_share": nonlocal_flops / flops if flops else 0.0,
    }


def profile_variant(variant, seq_len=8, height=256, width=128, **overrides):
    from nvan_tf.models.model import build_model

    return profile_model(build_model(variant, 1, seq_len=seq_len, height=height, width=width, **overrides))


def format_table(rows):
    lines = [
        "| variant | params (M) | GFLOPs / clip | non-local GFLOPs (share) | vs. NVAN |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    nvan = next((r["flops"] for r in rows if r["variant"] == "nvan"), None)
    for r in rows:
        versus = f"{100 * (r['flops'] / nvan - 1):+.1f}%" if nvan else "-"
        lines.append(
            f"| {r['variant']} | {r['params'] / 1e6:.2f} | {r['flops'] / 1e9:.2f} | "
            f"{r['nonlocal_flops'] / 1e9:.2f} ({100 * r['nonlocal_share']:.0f}%) | {versus} |"
        )
    return "\n".join(lines)

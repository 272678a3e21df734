"""Subprocess side of the distribution tests (tests/test_training.py).

    python tests/training_worker.py mirrored OUT.npz
        one first step of NVAN (the toy depth) on a fixed global batch, with the default
        strategy and with MirroredStrategy over two logical CPU devices;
        writes the losses and the weight updates of both.
    python tests/training_worker.py float64 OUT.npz
        the same comparison in float64 on a small model made of the
        project's BatchNorm and losses, trained with a tf.distribute loop.
    python tests/training_worker.py run OUT.npz CONFIG.json OUTPUT_DIR [KILL]
        nvan_tf.training.train of the TrainConfig in CONFIG.json; writes the final weights and
        {"steps", "history"} (OUT.npz.json). KILL makes the process SIGKILL
        itself at a chosen point: "after-checkpoint:N" (checkpoint N complete),
        "in-checkpoint:N" (checkpoint N's files written, the state file not
        yet updated), "at-batch:N" (right after batch N, before anything of it
        is saved).
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tests import toy  # noqa: E402

SEQ_LEN, HEIGHT, WIDTH = 4, 64, 32


def two_cpus():
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def fixed_batch(dtype="float32", batch=8, shape=(SEQ_LEN, HEIGHT, WIDTH, 3)):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch,) + shape).astype(dtype)
    y = np.repeat(np.arange(batch // 2), 2).astype("int32")
    return x, y


def mirrored(out):
    from nvan_tf.training import ReIDTask
    from nvan_tf.training import loop as training

    strategies = {"default": tf.distribute.get_strategy(), "mirrored": two_cpus()}
    x, y = fixed_batch()
    results = {}
    for name, strategy in strategies.items():
        # SGD: the update is the gradient itself (Adam's first step is its sign)
        config = training.TrainConfig(variant="nvan", seq_len=SEQ_LEN, height=HEIGHT, width=WIDTH, optimizer="sgd",
                                      lr=0.01, momentum=0.0, seed=0, model_overrides=toy.smallest("nvan"))
        task = ReIDTask(config, num_identities=4)
        model = task.build_model(strategy)  # as nvan_tf.training.train builds it: BNs synchronised on 2 replicas
        assert model.config.sync_batch_norm == (strategy.num_replicas_in_sync > 1)
        if strategy.num_replicas_in_sync > 1:  # a model whose BNs are not synchronised is refused
            import nvan_tf

            with strategy.scope():
                plain = nvan_tf.build_model("baseline", 4, seq_len=SEQ_LEN, height=HEIGHT, width=WIDTH,
                                            **toy.SHALLOW_OVERRIDES)
                try:
                    training.compile_model(plain, config, steps_per_epoch=5)
                    raise AssertionError("compile_model accepted BNs that are not synchronised")
                except ValueError as err:
                    assert "sync_batch_norm=True" in str(err), err
        with strategy.scope():
            training.compile_model(model, config, steps_per_epoch=5)
            before = [v.numpy() for v in model.trainable_variables]
            logs = model.fit(tf.data.Dataset.from_tensors((x, y)), epochs=1, verbose=0, shuffle=False).history
        for key in ("loss", "triplet", "identity"):
            results[f"{name}_{key}"] = np.float64(logs[key][-1])
        for i, (v, b) in enumerate(zip(model.trainable_variables, before)):
            results[f"{name}_update{i}"] = v.numpy() - b
        results[f"{name}_replicas"] = strategy.num_replicas_in_sync
    np.savez(out, **results)


def float64(out):
    import keras

    from nvan_tf.models.layers import BatchNorm
    from nvan_tf.training.losses import BatchHardTripletLoss, IdentityLoss

    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    strategies = {"default": tf.distribute.get_strategy(), "mirrored": two_cpus()}
    x, y = fixed_batch("float64", batch=12, shape=(8, 4, 3))
    results = {}
    for name, strategy in strategies.items():
        with strategy.scope():
            keras.utils.set_random_seed(1)
            conv = keras.layers.Conv2D(16, 3, padding="same", use_bias=False)
            bn = BatchNorm(momentum=0.9, epsilon=1e-5, synchronized=True)
            head = keras.layers.Dense(6, use_bias=False)
            inputs = keras.Input((8, 4, 3))
            f = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(bn(conv(inputs))))
            model = keras.Model(inputs, [f, head(f)])
            triplet, identity = BatchHardTripletLoss(), IdentityLoss(label_smoothing=0.1)
            weights = [v.numpy() for v in model.trainable_variables]

        def step(clips, pids):
            with tf.GradientTape() as tape:
                f, logits = model(clips, training=True)
                loss = triplet(pids, f) + identity(pids, logits)
            grads = tape.gradient(loss, model.trainable_variables)
            return loss, grads

        replicas = strategy.num_replicas_in_sync
        per = len(x) // replicas
        data = strategy.experimental_distribute_values_from_function(
            lambda ctx: (x[ctx.replica_id_in_sync_group * per:(ctx.replica_id_in_sync_group + 1) * per],
                         y[ctx.replica_id_in_sync_group * per:(ctx.replica_id_in_sync_group + 1) * per]))
        loss, grads = tf.function(lambda d: strategy.run(step, args=d))(data)
        results[f"{name}_loss"] = strategy.reduce("SUM", loss, axis=None).numpy()
        for i, g in enumerate(grads):
            results[f"{name}_grad{i}"] = strategy.reduce("SUM", g, axis=None).numpy()
        results[f"{name}_moving_variance"] = bn.moving_variance.numpy()
        assert all(np.array_equal(a, b.numpy()) for a, b in zip(weights, model.trainable_variables))
    np.savez(out, **results)


def dump_weights(path):
    """A Keras callback writing the model's weights to ``path`` (.npz) at the end of training."""
    import keras

    class DumpWeights(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            np.savez(path, *[v.numpy() for v in self.model.weights])

    return DumpWeights()


def _install_kill(point):
    import signal

    import keras

    from nvan_tf.training import checkpoints, loop

    where, number = point.split(":")
    number = int(number)

    def die():
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    if where == "after-checkpoint":
        save = checkpoints.Checkpointer.save

        def save_then_die(self, batches, record, **kwargs):
            path = save(self, batches, record, **kwargs)
            if batches == number:
                die()
            return path

        checkpoints.Checkpointer.save = save_then_die
    elif where == "in-checkpoint":
        record_state = tf.train.CheckpointManager._record_state

        def die_before_recording(self):
            if self._latest_checkpoint and self._latest_checkpoint.endswith(f"ckpt-{number}"):
                die()
            return record_state(self)

        tf.train.CheckpointManager._record_state = die_before_recording
    elif where == "at-batch":
        class DieAtBatch(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                if run_state.run.batches == number:
                    die()

        run_state = None
        original = loop._RunState.__init__

        def remember(self, run):
            nonlocal run_state
            original(self, run)
            run_state = self

        loop._RunState.__init__ = remember
        return [DieAtBatch()]
    else:
        raise SystemExit(f"unknown kill point {point!r}")
    return []


def batch_line(clips, pids):
    """One batch as a line: its pids and the sum of its clips."""
    return f"{np.asarray(pids).tolist()} {float(np.sum(np.asarray(clips), dtype=np.float64)):.4f}"


def _log_batches(path):
    """Appends one line per batch the training stream yields (``batch_line``) to ``path``."""
    from nvan_tf.training import task

    build_inputs = task.ReIDTask.build_inputs

    def write(clips, pids):
        with open(path, "a") as f:
            f.write(batch_line(clips.numpy(), pids.numpy()) + "\n")
        return pids

    def logged(self, start_batch=0, shard=(0, 1)):
        def log(clips, pids, camids):
            pids = tf.py_function(write, [clips, pids], tf.int32)
            pids.set_shape([self.config.p * self.config.k])
            return clips, pids, camids

        return build_inputs(self, start_batch, shard).map(log)

    task.ReIDTask.build_inputs = logged


def run_config(out, config_path, output_dir, kill=None):
    import logging

    from nvan_tf.training import TrainConfig, train

    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    if os.environ.get("NVAN_TEST_BATCH_LOG"):
        _log_batches(os.environ["NVAN_TEST_BATCH_LOG"])
    with open(config_path) as f:
        config = TrainConfig.from_dict(json.load(f))
    callbacks = _install_kill(kill) if kill else []
    result = train(config, output_dir, callbacks=[*callbacks, dump_weights(out)])
    with open(out + ".json", "w") as f:
        json.dump({"steps": result["steps"], "history": result["history"]}, f)


def main(argv):
    mode, out = argv[0], argv[1]
    if mode == "mirrored":
        mirrored(out)
    elif mode == "float64":
        float64(out)
    elif mode == "run":
        run_config(out, argv[2], argv[3], argv[4] if len(argv) > 4 else None)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])

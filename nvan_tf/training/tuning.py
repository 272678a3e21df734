"""Hyper-parameter search: keras-tuner trials of the training recipe, scored by rank-1 or mAP.

Examples:
    nvan-tune --variant ste-nvan --dataset mars --root data/MARS --val-ids 60 \\
        --algorithm bayesian --objective mAP --max-trials 20 --epochs 20 --output-dir runs/search
    nvan-tune --dataset synthetic --val-ids 3 --algorithm hyperband --epochs 9 \\
        --seq-len 4 8 --height 128 --width 64 --lr 1e-5 1e-3 --margin soft 0.3
    nvan-train --tune --dataset synthetic --val-ids 3 --max-trials 4 --seq-len 4 --height 64 --width 32
    # across machines: one chief (the oracle), any number of workers, one shared --output-dir
    KERASTUNER_TUNER_ID=chief  KERASTUNER_ORACLE_IP=10.0.0.1 KERASTUNER_ORACLE_PORT=8000 nvan-tune ARGS
    KERASTUNER_TUNER_ID=tuner0 KERASTUNER_ORACLE_IP=10.0.0.1 KERASTUNER_ORACLE_PORT=8000 nvan-tune ARGS

Every trial trains the recipe of nvan-train with one draw of the search space
and is scored by the training evaluation on a validation split held out from
the training identities (--val-ids / --val-fraction, required; rank-1 / mAP
after every epoch; the best epoch counts). The test split scores the best
configuration once, at the end. A search-space flag with one
value fixes it, with several searches them (--lr and --weight-decay take a
LOW HIGH range, sampled on a log scale). Re-running the command resumes the
search in --output-dir: finished trials are kept and an interrupted one runs
again. --max-trials may grow between runs; any other change is refused
(--overwrite starts over). At the end, OUTPUT_DIR gets trials.csv, trials.png
and best_config.json (nvan-train --config best_config.json trains the best).
In a distributed search the chief serves keras-tuner's oracle and writes
them once every trial has ended; the workers run the trials, each under its
--strategy; a restarted worker (same KERASTUNER_TUNER_ID) runs its
interrupted trial again.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
import logging
import math
import os

from nvan_tf.choices import TUNING_ALGORITHMS, TUNING_OBJECTIVES
from nvan_tf.core import records
from nvan_tf.core import atomic
from nvan_tf.training.config import PRESETS, ConfigMismatch, TrainConfig

logger = logging.getLogger(__name__)

__all__ = ["SearchSpace", "SearchConfig", "ReIDHyperModel", "EvaluationCallback", "ALGORITHMS", "OBJECTIVES",
           "ClusterRole", "cluster_role", "wait_for_oracle", "search", "build_tuner", "trial_rows",
           "format_summary", "main"]

ALGORITHMS = TUNING_ALGORITHMS
OBJECTIVES = TUNING_OBJECTIVES
PROJECT = "trials"  # keras-tuner's project folder inside the output folder
SUMMARY_CSV, SUMMARY_PNG, BEST_CONFIG, SEARCH_JSON, WORKER_JSON = (
    "trials.csv", "trials.png", "best_config.json", "search.json", "worker.json")

_STAGE_NAMES = ("res2", "res3", "res4", "res5")


# -----------------------------------------------------------------------------
# The search space
# -----------------------------------------------------------------------------
@dataclasses.dataclass
class SearchSpace:
    """What a search varies. Ranges ``(low, high)`` are sampled on a log
    scale (``low == high`` fixes the value); tuples of values are choices
    (one value fixes it).

    ``non_local`` (placement tables: blocks per stage res2..res5) applies to
    the variants with non-local blocks; ``None`` keeps the variant's own for
    none and searches ``DEFAULT_NON_LOCAL`` otherwise. ``stripes`` applies to
    ``nvan-stripe`` and ``ste-nvan``; ``None`` searches the values of
    ``(2, 4, 8, 16)`` that divide the feature heights at the frame height.
    """

    # The metadata's help: nvan-tune's flags (nvan_tf.core.flags); one value fixes a field.
    lr: tuple = dataclasses.field(default=(3e-5, 3e-4), metadata={
        "help": "learning rate: LOW HIGH (log scale) or one value", "type": float, "nargs": "+", "metavar": "LR"})
    weight_decay: tuple = dataclasses.field(default=(1e-6, 1e-4), metadata={
        "help": "L2 decay: LOW HIGH (log scale) or one value", "type": float, "nargs": "+", "metavar": "WD"})
    margin: tuple = dataclasses.field(default=("soft", 0.3), metadata={
        "help": "triplet margins: 'soft' and/or numbers (hinge)", "nargs": "+"})
    identity_weight: tuple = dataclasses.field(default=(0.5, 1.0), metadata={
        "help": "weights of the identity loss", "type": float, "nargs": "+"})
    label_smoothing: tuple = dataclasses.field(default=(0.0, 0.1), metadata={
        "help": "label smoothing of the identity loss", "type": float, "nargs": "+"})
    non_local: tuple | None = dataclasses.field(default=None, metadata={
        "help": "non-local placement tables, blocks in res2,res3,res4,res5 (default: 0,2,3,0 0,1,1,0 0,0,2,0; "
                "not for the baseline)", "nargs": "+", "metavar": "TABLE"})
    stripes: tuple | None = dataclasses.field(default=None, metadata={
        "help": "stripe counts (nvan-stripe, ste-nvan; default: those of 2 4 8 16 dividing the feature heights)",
        "type": int, "nargs": "+"})
    seq_len: tuple = dataclasses.field(default=(4, 8), metadata={
        "help": "frames per clip (T); ste-nvan and nvan-temporal need multiples of 4", "type": int, "nargs": "+"})

    DEFAULT_NON_LOCAL = ((0, 2, 3, 0), (0, 1, 1, 0), (0, 0, 2, 0))
    DEFAULT_STRIPES = (2, 4, 8, 16)

    def __post_init__(self):
        def values(name, kind, minimum=None, below=None, choices=True):
            raw = getattr(self, name)
            raw = tuple(raw) if isinstance(raw, (list, tuple)) else (raw,)
            if not raw:
                raise ValueError(f"{name} needs at least one value. Received: {name}={raw!r}")
            try:
                out = tuple(kind(v) for v in raw)
            except (TypeError, ValueError):
                raise ValueError(f"{name} takes {kind.__name__} values. Received: {name}={raw!r}") from None
            for v in out:
                if (minimum is not None and v < minimum) or (below is not None and v >= below):
                    bounds = f">= {minimum}" if below is None else f"in [{minimum}, {below})"
                    raise ValueError(f"{name} values must be {bounds}. Received: {name}={raw!r}")
            if choices and len(set(out)) != len(out):
                raise ValueError(f"{name} lists a value twice. Received: {name}={raw!r}")
            return out

        for name in ("lr", "weight_decay"):
            bounds = values(name, float, choices=False)
            if len(bounds) == 1:
                bounds = bounds * 2
            if len(bounds) != 2 or not 0 < bounds[0] <= bounds[1]:
                raise ValueError(f"{name} must be a range (low, high) with 0 < low <= high, or one "
                                 f"value. Received: {name}={getattr(self, name)!r}")
            setattr(self, name, bounds)
        margins = []
        for v in values("margin", str):
            try:
                margins.append(v if v == "soft" else repr(float(v)))
            except ValueError:
                raise ValueError(f"margin values must be 'soft' or numbers. Received: margin="
                                 f"{self.margin!r}") from None
            if margins[-1] != "soft" and float(v) < 0:
                raise ValueError(f"margin values must be 'soft' or >= 0. Received: margin={self.margin!r}")
        self.margin = tuple(margins)
        self.identity_weight = values("identity_weight", float, minimum=0.0)
        self.label_smoothing = values("label_smoothing", float, minimum=0.0, below=1.0)
        self.seq_len = values("seq_len", int, minimum=1)
        if self.stripes is not None:
            self.stripes = values("stripes", int, minimum=1)
        if self.non_local is not None:
            tables = self.non_local
            if not isinstance(tables, (list, tuple)) or not tables or not all(
                    isinstance(t, (list, tuple, str)) for t in tables):
                raise ValueError("non_local must be a list of placement tables such as (0, 2, 3, 0). "
                                 f"Received: non_local={tables!r}")
            self.non_local = tuple(_parse_table(t) for t in tables)

    def to_dict(self):
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def resolve(self, variant, height):
        """The space for ``variant`` at frame ``height``: ``non_local`` and
        ``stripes`` filled in or emptied; every combination it allows is a
        model that builds. Raises ``ValueError`` naming what does not fit."""
        from nvan_tf.models.model import VARIANTS

        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {sorted(VARIANTS)}. Received: variant={variant!r}")
        non_local_variants = [v for v, preset in VARIANTS.items() if any(preset.get("non_local", ()))]
        stripe_variants = [v for v, preset in VARIANTS.items() if preset.get("stripes")]
        space = dataclasses.replace(self)
        if variant not in non_local_variants:
            if self.non_local is not None or self.stripes is not None:
                raise ValueError(f"variant {variant!r} has no non-local blocks: leave non_local and "
                                 "stripes unset")
            space.non_local, space.stripes = (), ()
        else:
            space.non_local = self.non_local or self.DEFAULT_NON_LOCAL
        if variant in non_local_variants and variant not in stripe_variants and self.stripes:
            raise ValueError(f"stripes apply to {stripe_variants}, not to variant {variant!r}")
        used = sorted({i for table in space.non_local for i, n in enumerate(table) if n})
        heights = _feature_heights(height)
        if variant in stripe_variants:
            def fits(s):
                return all(heights[i] % s == 0 for i in used)

            if self.stripes is None:
                space.stripes = tuple(s for s in self.DEFAULT_STRIPES if fits(s))
                if not space.stripes:
                    raise ValueError(f"none of the stripe counts {self.DEFAULT_STRIPES} divides the feature "
                                     f"heights {_describe_heights(heights, used)} of height {height}")
            bad = [s for s in space.stripes if not fits(s)]
            if bad:
                raise ValueError(
                    f"stripes must divide the feature heights {_describe_heights(heights, used)} of the "
                    f"stages with non-local blocks at height {height}. Received: stripes={bad}")
        bad = {t: why for t in space.seq_len for why in [_seq_len_problem(variant, t, space.non_local)] if why}
        if bad:
            raise ValueError("seq_len values that do not fit variant "
                             f"{variant!r}: " + "; ".join(f"{t}: {why}" for t, why in bad.items()))
        return space

    def declare(self, hp):
        """Declares the hyper-parameters on ``hp``; returns their values:
        ``{"lr", "weight_decay", "margin", "identity_weight", "label_smoothing",
        "seq_len"[, "non_local" ("0,2,3,0")][, "stripes"]}``."""
        chosen = {}
        for name in ("lr", "weight_decay"):
            low, high = getattr(self, name)
            chosen[name] = hp.Fixed(name, low) if low == high else hp.Float(name, low, high, sampling="log")
        for name in ("margin", "identity_weight", "label_smoothing", "seq_len", "non_local", "stripes"):
            options = getattr(self, name)
            if name == "non_local":
                options = tuple(",".join(map(str, t)) for t in options)
            if not options:
                continue
            chosen[name] = hp.Fixed(name, options[0]) if len(options) == 1 else hp.Choice(name, list(options))
        return chosen


def _parse_table(table):
    if isinstance(table, str):
        try:
            table = [int(v) for v in table.replace(" ", "").split(",")]
        except ValueError:
            raise ValueError(f"a non_local table is 4 comma-separated block counts (res2..res5) such as "
                             f"0,2,3,0. Received: {table!r}") from None
    return _backbone().check_non_local(table)  # the model's own rule (no res2 blocks, none too many)


def _backbone():
    from nvan_tf.models import model  # noqa: F401  (Keras and the registered classes first)
    from nvan_tf.models import backbone

    return backbone


def _feature_heights(height):
    """Feature-map heights of res2..res5 for frames ``height`` pixels high."""
    _conv_out = _backbone()._conv_out
    h = _conv_out(_conv_out(height, 7, 2, 3), 3, 2, 1)  # stem conv and max-pool
    heights = [h]
    for stride in (2, 2, 1):  # res3, res4; res5 keeps the resolution (last_stride 1)
        h = _conv_out(h, 3, stride, 1)
        heights.append(h)
    return heights


def _describe_heights(heights, used):
    return ", ".join(f"{_STAGE_NAMES[i]}: {heights[i]}" for i in used) or "(no non-local stage)"


def _seq_len_problem(variant, seq_len, tables):
    """Why ``seq_len`` frames cannot go through ``variant`` (any of ``tables``), or ''."""
    from nvan_tf.models.model import VARIANTS

    preset = VARIANTS[variant]
    reductions = preset.get("temporal_reduction", (False,) * 4)
    group = preset.get("attention_group")
    frames = seq_len
    for index in range(4):
        if group and any(t[index] for t in tables) and frames % group:
            return (f"the {_STAGE_NAMES[index]} non-local blocks group frames in {group}s and see "
                    f"{frames} frames")
        if reductions[index]:
            if frames % 2:
                return f"the temporal max after {_STAGE_NAMES[index]} halves the frames, and {frames} is odd"
            frames //= 2
    return ""


# -----------------------------------------------------------------------------
# The hypermodel
# -----------------------------------------------------------------------------
def _keras_tuner():
    try:
        import keras_tuner
    except ImportError as err:  # pragma: no cover - a dependency of the package
        raise ImportError("the hyper-parameter search needs keras-tuner: pip install keras-tuner") from err
    return keras_tuner


def trial_config(config, values):
    """``config`` with a trial's hyper-parameter ``values`` (``SearchSpace.declare``)."""
    fields = {name: values[name] for name in ("lr", "weight_decay", "margin", "identity_weight",
                                              "label_smoothing", "seq_len") if name in values}
    overrides = dict(config.model_overrides)
    if "non_local" in values:
        overrides["non_local"] = _parse_table(values["non_local"])
    if "stripes" in values:
        overrides["stripes"] = values["stripes"]
    return dataclasses.replace(config, **fields, model_overrides=overrides)


STATE = "state"  # each trial's final training state (a training checkpoint) in its trial folder


def _make_hypermodel_class():
    kt = _keras_tuner()
    import keras

    from nvan_tf.training.checkpoints import Checkpointer, latest_number
    from nvan_tf.training.task import ReIDTask

    class EvaluationCallback(keras.callbacks.Callback):
        """Counts the batches read (the schedule follows them) and adds the
        training evaluation (``rank1``, ``mAP``: fractions, of the float32
        copy, as ``train`` scores) to the logs of every epoch, where
        keras-tuner's objective reads it. Put it before the callbacks that
        read the logs. ``score=False`` only counts (the epochs a continuation
        trains again, which no one scores)."""

        def __init__(self, task, counter, start_batch=0, score=True):
            super().__init__()
            self.task = task
            self.counter = counter
            self.batches = int(start_batch)
            self.score = score

        def on_train_batch_begin(self, batch, logs=None):
            self.counter.assign(self.batches)

        def on_train_batch_end(self, batch, logs=None):
            self.batches += 1

        def on_epoch_end(self, epoch, logs=None):
            if not self.score:
                return
            scores = self.task.evaluate(self.model, "validation")  # a search never chooses on the test split
            logger.info("epoch %d: validation rank-1 %.2f%%, mAP %.2f%%", epoch + 1, 100 * scores["rank1"],
                        100 * scores["mAP"])
            if logs is not None:
                logs.update(scores)

    class ReIDHyperModel(kt.HyperModel):
        """The recipe of ``config`` (a ``TrainConfig``) with the hyper-parameters
        of ``space`` (a resolved :class:`SearchSpace`), through a
        :class:`~nvan_tf.training.task.ReIDTask` per trial: ``build`` makes,
        initialises (``config.init``) and compiles the model, ``fit`` trains it
        on the P x K stream and scores its float32 copy after every epoch, as
        ``nvan_tf.training.train`` does.

        A Hyperband continuation (``tuner/trial_id`` among the values) goes on
        from the final training state of the trial it continues: weights,
        optimizer state, the schedule's and the data stream's position. Every
        trial keeps that state in its folder (``trial_N/state``)."""

        def __init__(self, config, space, dataset):
            super().__init__(name="reid")
            self.config = config
            self.space = space
            self.dataset = dataset
            self._counters = {}

        def trial_config(self, hp):
            return trial_config(self.config, self.space.declare(hp))

        def task(self, hp):
            return ReIDTask(self.trial_config(hp), dataset=self.dataset)

        @property
        def steps_per_epoch(self):
            return ReIDTask(self.config, dataset=self.dataset).steps_per_epoch

        def build(self, hp):
            import tensorflow as tf

            task = self.task(hp)
            model = task.build_model()
            if "tuner/trial_id" not in hp.values:  # a continuation restores its trial's state instead
                task.initialize(model)
            with tf.init_scope():
                counter = tf.Variable(0, dtype=tf.int64, trainable=False, name="batch_index")
            task.compile(model, batch_counter=counter)
            self._counters[id(model)] = counter
            return model

        def fit(self, hp, model, *args, callbacks=(), epochs=None, initial_epoch=0, verbose=0,
                trial_dir=None, **kwargs):
            task = self.task(hp)
            steps = task.steps_per_epoch
            epochs = epochs or task.config.epochs
            inputs = functools.partial(task.distributed_inputs, model.distribute_strategy)
            counter = self._counters[id(model)]
            start = initial_epoch * steps
            previous = hp.values.get("tuner/trial_id")
            if previous is not None:
                folder = None if trial_dir is None else os.path.join(os.path.dirname(trial_dir),
                                                                      f"trial_{previous}", STATE)
                number = -1 if folder is None else latest_number(folder)
                if number >= 0:
                    start = Checkpointer(folder, model).restore(number)["batches"]
                    initial_epoch = start // steps
                    logger.info("trial continues trial %s from batch %d", previous, start)
                else:
                    # What keras-tuner loaded (the best epoch's weights and optimizer state) would go on
                    # at another schedule and data position: train the continued epochs again instead, from
                    # the start trial `previous` had (its config and seed: a fresh model and optimizer).
                    logger.warning("trial continues trial %s, whose training state %s is missing: training "
                                   "its %d epoch(s) again from the start before going on", previous, folder,
                                   initial_epoch)
                    fresh = task.build_model()
                    task.initialize(fresh)
                    task.compile(fresh)
                    model.set_weights(fresh.get_weights())
                    for variable, value in zip(model.optimizer.variables, fresh.optimizer.variables, strict=True):
                        variable.assign(value)
                    del fresh
                    again = EvaluationCallback(task, counter, 0, score=False)
                    model.fit(inputs(start_batch=0), epochs=initial_epoch, steps_per_epoch=steps, shuffle=False,
                              callbacks=[again], verbose=verbose)
                    start = again.batches
            evaluation = EvaluationCallback(task, counter, start)
            history = model.fit(inputs(start_batch=start), epochs=epochs, initial_epoch=initial_epoch,
                                steps_per_epoch=steps, shuffle=False, callbacks=[evaluation, *callbacks],
                                verbose=verbose)
            if trial_dir is not None:
                Checkpointer(os.path.join(trial_dir, STATE), model, keep=1).save(
                    evaluation.batches, {"history": [], "best": None})
            return history

    return EvaluationCallback, ReIDHyperModel


def _tuner_class(kt, algorithm):
    """keras-tuner's tuner for ``algorithm``, passing each trial's folder to
    the hypermodel's ``fit`` (where the trial keeps its training state) and
    recording there which worker runs it (``worker.json``)."""
    base = {"bayesian": kt.BayesianOptimization, "hyperband": kt.Hyperband}[algorithm]

    class Tuner(base):
        def __init__(self, *args, **kwargs):
            self.ran = []  # the trials this process ran (a worker's report)
            super().__init__(*args, **kwargs)

        def run_trial(self, trial, *args, **kwargs):
            trial_dir = self.get_trial_dir(trial.trial_id)
            _record_run(trial_dir, self.tuner_id)
            self.ran.append(trial.trial_id)
            logger.info("%s runs trial %s", self.tuner_id, trial.trial_id)
            return super().run_trial(trial, *args, trial_dir=trial_dir, **kwargs)

    return Tuner


def _record_run(trial_dir, tuner_id):
    """Adds a run by ``tuner_id`` to the trial's ``worker.json`` (one entry per start)."""
    import datetime
    import socket

    runs = _read_runs(trial_dir)
    runs.append({"worker": tuner_id, "host": socket.gethostname(),
                 "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
    atomic.write_json(os.path.join(trial_dir, WORKER_JSON), {"runs": runs})


def _read_runs(trial_dir):
    try:
        with open(os.path.join(trial_dir, WORKER_JSON), encoding="utf-8") as f:
            return list(json.load(f)["runs"])
    except (OSError, ValueError, KeyError, TypeError):  # none yet (or a search older than the record)
        return []


_CLASSES = {}


def _classes():
    if not _CLASSES:
        _CLASSES.update(zip(("EvaluationCallback", "ReIDHyperModel"), _make_hypermodel_class()))
    return _CLASSES


def __getattr__(name):  # keras and keras-tuner load when the classes are first used
    if name in ("EvaluationCallback", "ReIDHyperModel"):
        return _classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -----------------------------------------------------------------------------
# A search across machines: keras-tuner's chief oracle and its workers
# -----------------------------------------------------------------------------
ENV_TUNER_ID, ENV_ORACLE_IP, ENV_ORACLE_PORT = (
    "KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")
ORACLE_TIMEOUT = 600.0  # seconds a worker waits for the chief's oracle to answer
SEARCH_STRATEGIES = ("default", "mirrored")  # a trial's strategy; the search spreads trials over machines


@dataclasses.dataclass
class SearchConfig:
    """How a search runs (the options of :func:`search`; ``nvan-tune``'s flags,
    the metadata's help theirs)."""

    algorithm: str = dataclasses.field(default="bayesian", metadata={
        "help": "Bayesian optimisation or Hyperband", "choices": TUNING_ALGORITHMS, "group": "search"})
    objective: str = dataclasses.field(default="mAP", metadata={
        "help": "maximised evaluation score", "choices": TUNING_OBJECTIVES, "group": "search"})
    max_trials: int | None = dataclasses.field(default=None, metadata={
        "help": "trials in all, earlier runs' included (default: 10 for bayesian; hyperband's own budget)",
        "group": "search"})
    factor: int = dataclasses.field(default=3, metadata={"help": "hyperband's reduction factor", "group": "search"})
    output_dir: str = dataclasses.field(default="runs/search", metadata={
        "help": "the search folder (resumed when re-run)"})
    overwrite: bool = dataclasses.field(default=False, metadata={
        "help": "delete an earlier search in --output-dir", "group": "search"})
    quiet: bool = dataclasses.field(default=False, metadata={
        "help": "no per-trial progress display", "group": "search"})
    oracle_timeout: float = dataclasses.field(default=ORACLE_TIMEOUT, metadata={
        "help": "seconds a worker waits for the chief's oracle (KERASTUNER_ORACLE_IP:PORT) to answer",
        "group": "search"})


@dataclasses.dataclass(frozen=True)
class ClusterRole:
    """This process's part in a distributed search (keras-tuner's variables):
    ``tuner_id`` (``KERASTUNER_TUNER_ID``) and the oracle's ``ip`` and
    ``port``. The chief serves the oracle and writes the summary; workers run
    the trials."""

    tuner_id: str
    ip: str
    port: int

    @property
    def chief(self):
        # keras-tuner's own rule (keras_tuner/src/distribute/utils.py, checked on 1.4.8): an id containing "chief"
        return "chief" in self.tuner_id

    @property
    def address(self):
        return f"{self.ip}:{self.port}"


def cluster_role(environ=None):
    """The :class:`ClusterRole` that ``KERASTUNER_TUNER_ID``,
    ``KERASTUNER_ORACLE_IP`` and ``KERASTUNER_ORACLE_PORT`` give this process,
    or ``None`` when none is set (a search in one process). Raises
    ``ValueError`` naming the variable when they are incomplete or wrong, and
    ``ImportError`` when grpcio or protobuf (keras-tuner's transport, which
    it does not declare) cannot be imported."""
    env = os.environ if environ is None else environ
    names = (ENV_TUNER_ID, ENV_ORACLE_IP, ENV_ORACLE_PORT)
    given = {name: env.get(name) for name in names if env.get(name) is not None}
    if not given:
        return None
    missing = [name for name in names if not (given.get(name) or "").strip()]
    if missing:
        shown = ", ".join(f"{name}={value!r}" for name, value in given.items())
        raise ValueError(f"the environment variables {', '.join(missing)} are missing or empty ({shown}): a "
                         f"distributed search needs {', '.join(names)} in every process (the chief: "
                         f"{ENV_TUNER_ID}=chief), a search in one process none of them")
    port = given[ENV_ORACLE_PORT].strip()
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"the environment variable {ENV_ORACLE_PORT} must be a port number (1-65535). "
                         f"Received: {ENV_ORACLE_PORT}={given[ENV_ORACLE_PORT]!r}")
    try:
        import google.protobuf  # noqa: F401
        import grpc  # noqa: F401
    except ImportError as err:
        raise ImportError(f"a distributed search ({ENV_ORACLE_IP} is set) needs grpcio and protobuf, which "
                          "keras-tuner does not install: pip install 'nvan-tf[tune-distributed]' "
                          f"({err})") from err
    return ClusterRole(given[ENV_TUNER_ID].strip(), given[ENV_ORACLE_IP].strip(), int(port))


def _check_can_serve(role):
    """Refuses, before anything is built, an address the chief cannot listen on."""
    import socket

    family = socket.AF_INET6 if ":" in role.ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # as gRPC binds: a port left in TIME_WAIT by an earlier chief is free, one a server listens on is not
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((role.ip, role.port))
        except OSError as err:
            raise RuntimeError(f"the chief cannot listen on {role.address} ({ENV_ORACLE_IP}, {ENV_ORACLE_PORT}): "
                               f"{err.strerror or err}. Is another search's chief serving there?") from None


def wait_for_oracle(role, timeout=ORACLE_TIMEOUT):
    """Waits up to ``timeout`` seconds for the chief's oracle at ``role.address``
    to accept a connection; raises ``RuntimeError`` saying so otherwise."""
    import grpc

    channel = grpc.insecure_channel(role.address)
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
    except grpc.FutureTimeoutError:
        raise RuntimeError(
            f"worker {role.tuner_id!r} could not reach the oracle at {role.address} ({ENV_ORACLE_IP}, "
            f"{ENV_ORACLE_PORT}) within {timeout:g} s: start the chief ({ENV_TUNER_ID}=chief nvan-tune with the "
            "same arguments) on that address, or give it longer (--oracle-timeout)") from None
    finally:
        channel.close()


# -----------------------------------------------------------------------------
# The search
# -----------------------------------------------------------------------------
def build_tuner(hypermodel, output_dir, *, algorithm="bayesian", objective="mAP", max_trials=None,
                factor=3, seed=0, overwrite=False, strategy=None):
    """The keras-tuner tuner over ``hypermodel``, its state in
    ``OUTPUT_DIR/trials`` (reloaded unless ``overwrite``).

    ``bayesian`` runs ``max_trials`` trials (default 10) of ``config.epochs``
    epochs; ``hyperband`` brackets up to ``config.epochs`` epochs with
    reduction ``factor`` (``max_trials``, if given, caps the trial count).
    ``strategy``: the ``tf.distribute`` strategy the trials are built in
    (keras-tuner's ``distribution_strategy``; default: none, one device).
    """
    kt = _keras_tuner()
    target = kt.Objective(objective, "max")
    common = dict(objective=target, seed=seed, directory=output_dir, project_name=PROJECT,
                  overwrite=overwrite, max_consecutive_failed_trials=3, distribution_strategy=strategy)
    if algorithm == "bayesian":
        return _tuner_class(kt, algorithm)(hypermodel, max_trials=max_trials or 10, **common)
    if algorithm == "hyperband":
        tuner = _tuner_class(kt, algorithm)(hypermodel, max_epochs=hypermodel.config.epochs, factor=factor,
                                            **common)
        tuner.oracle.max_trials = max_trials  # None: Hyperband's own budget
        return tuner
    raise ValueError(f"algorithm must be one of {list(ALGORITHMS)}. Received: algorithm={algorithm!r}")


def _check_search(config, space, output_dir, settings, overwrite, write=True):
    """Refuses to resume a search of other settings; records them (``write``:
    the chief, or the only process; a worker compares with the chief's)."""
    path = os.path.join(output_dir, SEARCH_JSON)
    record = {"train": config.to_dict(), "space": space.to_dict(), **settings}
    if not write and not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing: the chief writes it before its oracle answers, so this worker "
                                "does not see the chief's --output-dir. Every process of a search needs the same "
                                "folder (a shared file system)")
    if os.path.exists(path) and (not overwrite or not write):
        try:
            with open(path, encoding="utf-8") as f:
                previous = json.load(f)
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigMismatch(f"{path} is not a readable search record: {err}") from None
        changed = records.differences(_comparable(previous), _comparable(record))
        if changed:
            listing = records.format_differences(changed, "in the search")
            if not write:
                raise ConfigMismatch(f"{output_dir} holds the chief's search of other settings:\n{listing}\n"
                                     "Start every worker with the chief's arguments.")
            raise ConfigMismatch(f"{output_dir} holds a search of other settings:\n{listing}\n"
                                 "Use another --output-dir, or --overwrite to start over in this one.")
    if write:
        os.makedirs(output_dir, exist_ok=True)
        atomic.write_json(path, record)


def _comparable(record):
    """A search record less what may change between its runs: the budget
    (``max_trials`` may grow), and the display, evaluation batching and each
    worker's strategy, which do not change what a trial computes."""
    train = {k: v for k, v in record.get("train", {}).items() if k not in ("progress", "eval_batch_size", "strategy")}
    return {**{k: v for k, v in record.items() if k != "max_trials"}, "train": train}


def search(config, output_dir, *, space=None, algorithm="bayesian", objective="mAP", max_trials=None,
           factor=3, overwrite=False, verbose=0, oracle_timeout=ORACLE_TIMEOUT):
    """Runs (or resumes) a search over ``space`` around the recipe ``config``.

    In one process, or as one process of a distributed search when
    keras-tuner's variables are set (:func:`cluster_role`): the chief
    (``KERASTUNER_TUNER_ID=chief``) serves the oracle at
    ``KERASTUNER_ORACLE_IP:KERASTUNER_ORACLE_PORT`` until every trial has
    ended, then writes the summary; each worker (any other id) waits up to
    ``oracle_timeout`` seconds for it, checks that its settings are the
    chief's (``search.json``) and runs trials under ``config.strategy``
    until the oracle has none left. All share ``output_dir``.

    Args:
        config: a ``TrainConfig``: variant, data, sizes, epochs per trial,
            seed, strategy of the trials (``default`` or ``mirrored``); its
            searched fields are replaced by each trial's values.
        output_dir: the search folder: ``search.json`` (the settings),
            ``trials/`` (keras-tuner's state and each trial's best weights),
            ``trials.csv``, ``trials.png``, ``best_config.json``.
        space: a :class:`SearchSpace` (default: ``SearchSpace()``).
        algorithm: ``bayesian`` or ``hyperband``.
        objective: ``mAP`` or ``rank1`` (maximised).
        max_trials: trials in all, those of earlier runs included.
        overwrite: start over, deleting an earlier search in ``output_dir``
            (the chief's or the only process's; a worker never deletes).
        verbose: keras-tuner's progress display and Keras' fit verbosity.
        oracle_timeout: how long a worker waits for the chief's oracle.

    Returns:
        ``{"role": "chief" | "single", "trials": [row, ...], "best": row,
        "new": [trial numbers run now], "summary": csv path, "plot": png path,
        "best_config": json path}`` (rows: see :func:`trial_rows`); on a
        worker ``{"role": "worker", "worker": its id, "ran": [trial numbers]}``.
    """
    from nvan_tf.training.loop import make_strategy
    from nvan_tf.training.task import ReIDTask

    space = space or SearchSpace()
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {list(ALGORITHMS)}. Received: algorithm={algorithm!r}")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {list(OBJECTIVES)}. Received: objective={objective!r}")
    if max_trials is not None and (not isinstance(max_trials, int) or max_trials < 1):
        raise ValueError(f"max_trials must be a positive integer. Received: max_trials={max_trials!r}")
    if int(factor) < 2:
        raise ValueError(f"factor must be an integer >= 2. Received: factor={factor!r}")
    if config.strategy not in SEARCH_STRATEGIES:
        raise ValueError(f"strategy must be one of {list(SEARCH_STRATEGIES)} in a search: each trial runs on one "
                         "machine, and the search itself spreads trials over machines (a chief and workers, "
                         f"{ENV_TUNER_ID} / {ENV_ORACLE_IP} / {ENV_ORACLE_PORT}). Received: "
                         f"strategy={config.strategy!r}")
    if oracle_timeout is None or not oracle_timeout > 0:
        raise ValueError(f"oracle_timeout must be a positive number of seconds. Received: {oracle_timeout!r}")
    if config.selection != "validation":
        raise ValueError(
            "a search chooses on a validation split, never on the test split (a result reported on the split "
            "that chose it is optimistic by construction): hold out training identities with --val-ids N "
            "(e.g. --val-ids 60 on MARS) or --val-fraction F (val_ids / val_fraction in a TrainConfig); the "
            "test split then scores the best configuration once")
    role = cluster_role()
    worker = role is not None and not role.chief
    resolved = space.resolve(config.variant, config.height)
    output_dir = os.path.abspath(output_dir)
    settings = {"algorithm": algorithm, "objective": objective, "max_trials": max_trials,
                "factor": int(factor) if algorithm == "hyperband" else None}
    if worker:
        wait_for_oracle(role, oracle_timeout)  # the chief has written search.json and the data by then
        _check_search(config, space, output_dir, settings, overwrite, write=False)
    elif role is not None:
        _check_can_serve(role)
    task = ReIDTask(config, output_dir=output_dir)
    task.make_deterministic()
    dataset = task.dataset  # a bad root fails before anything is written
    if not worker:
        _check_search(config, space, output_dir, settings, overwrite)

    hypermodel = _classes()["ReIDHyperModel"](config, resolved, dataset)
    # the chief trains nothing; a worker (or the only process) builds its trials in its strategy
    strategy = None if config.strategy == "default" or (role and role.chief) else make_strategy(config.strategy)
    tuner = build_tuner(hypermodel, output_dir, algorithm=algorithm, objective=objective,
                        max_trials=max_trials, factor=int(factor), seed=config.seed,
                        overwrite=overwrite and not worker, strategy=strategy)
    if worker:
        import grpc

        logger.info("worker %s of the search in %s, its oracle at %s", role.tuner_id, output_dir, role.address)
        try:
            tuner.search(verbose=verbose)
        except grpc.RpcError as err:  # the chief stopped answering (keras-tuner waits an hour), or failed
            code = err.code().name if callable(getattr(err, "code", None)) else type(err).__name__
            details = err.details() if callable(getattr(err, "details", None)) else str(err)
            raise RuntimeError(f"worker {role.tuner_id!r}: the oracle at {role.address} failed ({code}): "
                               f"{details}") from err
        return {"role": "worker", "worker": role.tuner_id, "ran": [_trial_number(t) for t in tuner.ran]}
    done = {t.trial_id for t in tuner.oracle.trials.values() if t.status == "COMPLETED"}
    logger.info("search in %s: %d finished trials kept", output_dir, len(done))
    if role is not None:
        logger.info("chief: serving the oracle at %s until the workers have run every trial", role.address)
    try:
        tuner.search(verbose=verbose)  # the chief: returns once every trial has ended and every worker stopped
    except RuntimeError as err:  # keras-tuner gives up after failed trials; keep the gist
        lines = [line for line in str(err).splitlines() if line.strip()] or [repr(err)]
        raise RuntimeError(f"{lines[0]} The last failure: {lines[-1]} "
                           f"(tracebacks in {output_dir}/{PROJECT}/trial_*/trial.json)") from err
    rows = trial_rows(tuner)
    new = [r["trial"] for r in rows if r["status"] == "COMPLETED" and r["trial_id"] not in done]
    completed = [r for r in rows if r["status"] == "COMPLETED"]
    for row in rows:
        if row["status"] in ("INVALID", "FAILED"):
            logger.warning("trial %s failed: %s", row["trial"], row["message"])
    if not completed:
        reason = next((r["message"] for r in rows if r["message"]), "no trial ran")
        raise RuntimeError(f"no trial of the search in {output_dir} finished: {reason}")
    best = max(completed, key=lambda r: r["score"])
    paths = write_summary(rows, output_dir, objective)
    best_trial = tuner.oracle.get_trial(best["trial_id"])
    best_config = trial_config(config, best_trial.hyperparameters.values)
    test = _test_once(tuner, best_config, dataset)
    atomic.write_json(paths["best_config"],
                      {"train": best_config.to_dict(), "trial": best["trial"], objective: best["score"],
                       "selection": "validation", "validation": {"rank1": best["rank1"], "mAP": best["mAP"]},
                       "test": test})
    return {"role": "single" if role is None else "chief", "trials": rows, "best": best, "new": new,
            "test": test, **paths}


def _test_once(tuner, best_config, dataset):
    """The test split's rank-1 and mAP of the best trial's best weights, the
    one time the search looks at it (the trials were scored on the
    validation split)."""
    from nvan_tf.training.task import ReIDTask

    model = tuner.get_best_models(1)[0]
    scores = ReIDTask(best_config, dataset=dataset).evaluate(model, "test")
    logger.info("test split, once, for the best configuration: rank-1 %.2f%%, mAP %.2f%%",
                100 * scores["rank1"], 100 * scores["mAP"])
    return scores


# -----------------------------------------------------------------------------
# The summary
# -----------------------------------------------------------------------------
HP_COLUMNS = ("lr", "weight_decay", "margin", "identity_weight", "label_smoothing", "non_local",
              "stripes", "seq_len")


def trial_rows(tuner):
    """One dict per trial, in trial order: ``trial`` (its number), ``trial_id``,
    ``status``, ``score`` (the objective at the best epoch), ``rank1``, ``mAP``
    (at that epoch), ``epoch`` (1-based best epoch), ``epochs`` (trained,
    Hyperband's bracket length), ``worker`` (the tuner id that ran it last:
    ``tuner0`` in a search in one process), ``runs`` (times it was started:
    more than 1 when a killed worker's trial ran again), each
    hyper-parameter, ``message`` (why a trial failed)."""
    rows = []
    for trial in tuner.oracle.trials.values():
        values = trial.hyperparameters.values
        # best_step counts the epochs of this trial's own fit (Hyperband's may start later)
        first = values.get("tuner/initial_epoch", 0)
        row = {"trial": _trial_number(trial.trial_id), "trial_id": trial.trial_id,
               "status": str(trial.status), "score": trial.score,
               "epoch": None if trial.best_step is None else first + int(trial.best_step) + 1,
               "epochs": values.get("tuner/epochs", tuner.hypermodel.config.epochs)}
        for name in ("rank1", "mAP"):
            row[name] = trial.metrics.get_last_value(name) if trial.metrics.exists(name) else None
        runs = _read_runs(tuner.get_trial_dir(trial.trial_id))
        row["worker"], row["runs"] = (runs[-1]["worker"], len(runs)) if runs else (None, None)
        row.update({name: values.get(name) for name in HP_COLUMNS})
        message = (trial.message or "").strip().splitlines()
        row["message"] = message[-1] if message else ""
        rows.append(row)
    return sorted(rows, key=lambda r: r["trial"])


def _trial_number(trial_id):
    try:
        return int(trial_id)
    except ValueError:
        return trial_id


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def format_summary(rows, objective):
    """The trials as a text table, best first marked ``*``; scores in %."""
    completed = [r for r in rows if r["status"] == "COMPLETED"]
    best = max(completed, key=lambda r: r["score"])["trial"] if completed else None
    columns = ["", "trial", "status", objective, "rank-1", "mAP", "epoch", "epochs", "worker", *HP_COLUMNS]
    lines = [columns]
    for r in rows:
        pct = [("" if r[k] is None else f"{100 * r[k]:.2f}") for k in ("score", "rank1", "mAP")]
        lines.append(["*" if r["trial"] == best else "", str(r["trial"]), r["status"], *pct,
                      _cell(r["epoch"]), _cell(r["epochs"]), _cell(r.get("worker")),
                      *(_cell(r[k]) for k in HP_COLUMNS)])
    keep = [i for i in range(len(columns)) if i < 8 or any(line[i] for line in lines[1:])]
    widths = [max(len(line[i]) for line in lines) for i in keep]
    return "\n".join("  ".join(line[i].ljust(w) for i, w in zip(keep, widths)).rstrip() for line in lines)


def write_summary(rows, output_dir, objective):
    """Writes ``trials.csv`` (scores as fractions) and ``trials.png`` (the
    objective per trial, the running best and the best trial marked)."""
    # every score is the validation split's (the "split" column says so): a search never looks at the test split
    columns = ["trial", "status", "split", "score", "rank1", "mAP", "epoch", "epochs", "worker", "runs",
               *HP_COLUMNS, "message"]
    text = io.StringIO()
    writer = csv.DictWriter(text, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: "" if r.get(k) is None else r[k] for k in columns} | {"split": "validation"})
    csv_path = os.path.join(output_dir, SUMMARY_CSV)
    atomic.write_text(csv_path, text.getvalue())
    png_path = os.path.join(output_dir, SUMMARY_PNG)
    plot_trials(rows, png_path, objective)
    return {"summary": csv_path, "plot": png_path, "best_config": os.path.join(output_dir, BEST_CONFIG)}


def plot_trials(rows, path, objective):
    from matplotlib.figure import Figure

    done = [r for r in rows if r["status"] == "COMPLETED" and r["score"] is not None]
    fig = Figure(figsize=(7.0, 4.0), dpi=100)
    ax = fig.subplots()
    x = [r["trial"] for r in done]
    y = [100 * r["score"] for r in done]
    name = {"rank1": "rank-1"}.get(objective, objective)
    ax.plot(x, y, "o", color="tab:blue", label=f"{name} of the trial")
    running, best = [], -math.inf
    for value in y:
        best = max(best, value)
        running.append(best)
    ax.step(x, running, where="post", color="tab:gray", alpha=0.6, label="best so far")
    if done:
        i = max(range(len(y)), key=y.__getitem__)
        ax.plot([x[i]], [y[i]], "*", color="tab:red", markersize=16, label=f"best: trial {x[i]}")
    failed = [r["trial"] for r in rows if r["status"] in ("INVALID", "FAILED")]
    if failed:
        ax.plot(failed, [0] * len(failed), "x", color="black", label="failed")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"{name} (%)")
    ax.set_title(f"hyper-parameter search: {len(done)} trials")
    ax.set_ylim(0, 102)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path

"""Command-line flags generated from the config dataclasses they fill.

Every option's help is written once, in its dataclass field's metadata::

    seq_len: int = dataclasses.field(default=8, metadata={"help": "frames per clip (T)"})

and :func:`add_fields` turns fields into ``argparse`` flags (``seq_len`` ->
``--seq-len``; the type from the annotation, booleans as ``--x/--no-x``).
Metadata keys besides ``help``:

- ``flag``: the option string, when it is not the field's name;
- ``group``: the argument group (its title) the flag goes in;
- ``cli``: ``False`` for a field the command sets itself (no flag);
- ``required``: checked after ``--config`` is read (:func:`parse_args`), so a
  config file may give it;
- ``negate`` (with ``flag``): a ``store_true`` flag meaning ``not`` the field
  (``--recompute`` for ``reuse_features``, ``--quiet`` for ``verbose``);
- ``dest``: the option's name in the parsed arguments and in ``--print-config``
  (default: the field's; with ``negate``: the flag's);
- any ``add_argument`` keyword: ``choices``, ``nargs``, ``metavar``, ``type``,
  ``action``.

The groups every command shares: :data:`MODEL` (:class:`ModelShape`: the
model-shape flags, one set of defaults), :data:`SAMPLING_AND_RANKING`
(``nvan-evaluate`` and ``nvan-track``: fields of ``EvaluationConfig`` and
``RankingConfig``) and :data:`RUN` (``--config``, ``--print-config``,
``--log-level``, ``--output-dir`` with its hidden alias ``--out``).

Plain Python: importing this module does not import TensorFlow.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from nvan_tf import choices

__all__ = ["ModelShape", "MODEL", "SAMPLING_AND_RANKING", "RUN", "SHAPE_NAMES", "OVERRIDE_NAMES", "help_of", "flag_of",
           "group_of", "add_fields", "field_values", "add_model_group", "model_overrides", "add_sampling_and_ranking", "add_run_group",
           "parse_args", "options", "printed", "print_config", "read_json", "json_dict"]

MODEL = "model (default: what the model file records, else the variant's preset: 8 frames of 256x128)"
SAMPLING_AND_RANKING = "sampling and ranking"
RUN = "run"

# The add_argument keywords a field's metadata may carry.
_ARGPARSE_KEYS = ("choices", "nargs", "metavar", "type", "action")
# Destinations that are how a command runs, not what it runs on: never in --print-config.
_NOT_CONFIG = ("help", "config", "print_config", "verbose")


def json_dict(text):
    """``argparse`` type: a JSON object."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r} ({err})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def _four_counts(text, minimum, what, example):
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or min(values) < minimum:
        raise argparse.ArgumentTypeError(
            f"expected 4 comma-separated {what} of at least {minimum} (res2..res5), such as {example}; got {text!r}")
    return values


def block_counts(text):
    """``argparse`` type: four comma-separated residual block counts (res2..res5)."""
    return _four_counts(text, 1, "block counts", "3,4,6,3")


def non_local_counts(text):
    """``argparse`` type: four comma-separated non-local block counts (res2..res5)."""
    return _four_counts(text, 0, "non-local block counts", "0,2,3,0")


@dataclasses.dataclass
class ModelShape:
    """The model flags every command shares (``nvan-convert``, ``-evaluate``,
    ``-export``, ``-profile``, ``-train``, ``-tune``). ``None``: what the
    model file records, else the variant's preset (8 frames of 256x128)."""

    variant: str | None = dataclasses.field(default=None, metadata={
        "help": "model variant: a new model's recipe; checked against what a model file records "
                "(PyTorch checkpoints and weights without a recorded config need it)",
        "choices": choices.VARIANT_NAMES})
    num_identities: int | None = dataclasses.field(default=None, metadata={
        "help": "classifier size; default: read from the model file (checked if given)"})
    seq_len: int | None = dataclasses.field(default=None, metadata={"help": "frames per clip (T)"})
    height: int | None = dataclasses.field(default=None, metadata={"help": "frame height"})
    width: int | None = dataclasses.field(default=None, metadata={"help": "frame width"})
    stripes: int | None = dataclasses.field(default=None, metadata={
        "help": "stripe count of the stripe non-local blocks (a model override; small inputs need "
                "fewer than 16)"})
    stage_blocks: tuple | None = dataclasses.field(default=None, metadata={
        "help": "residual blocks per stage res2..res5 (a model override; default 3,4,6,3: ResNet-50, the "
                "reference's; 3,4,23,3: ResNet-101; fewer blocks make a quicker, smaller model)",
        "type": block_counts, "metavar": "N,N,N,N"})
    non_local: tuple | None = dataclasses.field(default=None, metadata={
        "help": "non-local blocks per stage res2..res5 (a model override; default the variant's: 0,2,3,0 for "
                "the NVAN variants, none for the baseline; at most a stage's residual blocks, none in res2)",
        "type": non_local_counts, "metavar": "N,N,N,N"})


# The model-shape flags of every command; --num-identities only where a model file is read.
SHAPE_NAMES = ("variant", "seq_len", "height", "width", "stripes", "stage_blocks", "non_local")
# The ModelShape flags that override a variant's preset (ModelConfig fields).
OVERRIDE_NAMES = ("stripes", "stage_blocks", "non_local")


def model_overrides(args):
    """``{field: value}`` of the model-override flags (``OVERRIDE_NAMES``) given in ``args``."""
    return {name: getattr(args, name) for name in OVERRIDE_NAMES if getattr(args, name, None) is not None}


def help_of(cls, name):
    """The help text of field ``name`` of dataclass ``cls``."""
    return _field(cls, name).metadata["help"]


def flag_of(field):
    return field.metadata.get("flag", "--" + field.name.replace("_", "-"))


def _field(cls, name):
    for field in dataclasses.fields(cls):
        if field.name == name:
            return field
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def _default(field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def group_of(parser, title):
    """The argument group ``title`` of ``parser`` (made on first use)."""
    if title is None:
        return parser
    # argparse offers no public list of a parser's groups or actions; _action_groups and
    # _actions are the attributes its own help formatter reads (stable since Python 3.2)
    for group in parser._action_groups:
        if group.title == title:
            return group
    return parser.add_argument_group(title)


def _dest(field):
    if "dest" in field.metadata:
        return field.metadata["dest"]
    if field.metadata.get("negate"):
        return flag_of(field).lstrip("-").replace("-", "_")
    return field.name


def add_field(parser, field, *, default=dataclasses.MISSING, group=None, help=None, **kwargs):
    """Adds the flag of dataclass field ``field`` (see the module docstring) to
    ``parser`` (in the group of its metadata, else ``group``); returns the action.

    ``default``: the flag's default (default: the field's); ``argparse.SUPPRESS``
    leaves it out of the namespace when not given. ``help``: the field's
    unless given (shared flags take another field's help); ``kwargs`` override
    the generated ``add_argument`` keywords.
    """
    meta = field.metadata
    if "help" not in meta and help is None:
        raise ValueError(f"field {field.name!r} has no help text (metadata={{'help': ...}})")
    options = {k: meta[k] for k in _ARGPARSE_KEYS if k in meta}
    if meta.get("negate"):
        options.update(action="store_true", dest=_dest(field))
        value = False if default is dataclasses.MISSING else default
    else:
        annotation = str(field.type)
        value = _default(field) if default is dataclasses.MISSING else default
        if "action" not in options and "type" not in options:
            if isinstance(_default(field), bool) or annotation.startswith("bool"):
                options["action"] = argparse.BooleanOptionalAction
            elif annotation.startswith("dict"):
                options["type"] = json_dict
            elif "float" in annotation:
                options["type"] = float
            elif "int" in annotation:
                options["type"] = int
        options["dest"] = _dest(field)
        if isinstance(value, tuple):
            value = list(value)
    options.update(kwargs)
    if not isinstance(parser, argparse._ArgumentGroup):
        parser = group_of(parser, meta.get("group", group))
    action = parser.add_argument(flag_of(field), default=value, help=meta.get("help") if help is None else help,
                                 **options)
    action.required_after_config = bool(meta.get("required"))  # parse_args checks it
    return action


def add_fields(parser, cls, names=None, *, exclude=(), defaults=None, group=None):
    """Adds the flags of ``cls``'s fields (``names``, default: all with a
    flag, less ``exclude``) to ``parser``, each in its metadata's group, else
    ``group``. ``defaults``: ``{name: default}``, or one default for all
    (``argparse.SUPPRESS``). Returns ``{name: action}``."""
    fields = dataclasses.fields(cls)
    if names is None:
        names = [f.name for f in fields if f.metadata.get("cli", True) and f.name not in exclude]
    actions = {}
    for name in names:
        default = defaults.get(name, dataclasses.MISSING) if isinstance(defaults, dict) else \
            (dataclasses.MISSING if defaults is None else defaults)
        actions[name] = add_field(parser, _field(cls, name), default=default, group=group)
    return actions


def field_values(args, cls, names=None):
    """``{field: value}`` of ``cls``'s flags in ``args`` (``negate`` flags
    turned back into their field; flags not in ``args`` left out)."""
    values = {}
    for field in dataclasses.fields(cls):
        if (names is not None and field.name not in names) or not field.metadata.get("cli", True):
            continue
        dest = _dest(field)
        if not hasattr(args, dest):
            continue
        value = getattr(args, dest)
        if field.metadata.get("negate"):
            value = type(_default(field))(not value)
        values[field.name] = value
    return values


def add_model_group(parser, names=SHAPE_NAMES, *, defaults=None):
    """The shared ``model`` group: ``ModelShape``'s flags ``names`` (one set of
    defaults, ``None``: the file's, else the preset's). Returns the group."""
    group = group_of(parser, MODEL)
    add_fields(group, ModelShape, names, defaults=defaults)
    return group


SHARED_SAMPLING = ("sampling", "batch_size", "flip", "batch_norm", "metric", "rerank")


def add_sampling_and_ranking(parser, sampling, ranking, defaults_from=None):
    """The shared ``sampling and ranking`` group of ``nvan-evaluate`` and
    ``nvan-track``: the sampling, batch size and flip fields of ``sampling``
    (``EvaluationConfig``) and the metric and re-ranking of ``ranking``
    (``RankingConfig``), their help written there; the defaults of
    ``defaults_from`` (a dataclass with these fields, e.g. ``TrackConfig``),
    else theirs. Returns the group."""
    group = group_of(parser, SAMPLING_AND_RANKING)
    for name in SHARED_SAMPLING:
        field = _field(ranking if name in ("metric", "rerank") else sampling, name)
        default = _default(_field(defaults_from, name)) if defaults_from is not None else dataclasses.MISSING
        add_field(group, field, default=default)
    return group


def add_run_group(parser, cls=None, *, output_help=None, output_default=dataclasses.MISSING, record=None,
                  log_level=True, output=True):
    """The shared ``run`` group: ``--config FILE``, ``--print-config``,
    ``--log-level`` and ``--output-dir`` (help and default: ``cls``'s field
    ``output_dir``, else ``output_help`` / ``output_default``) with ``--out``,
    its alias hidden from the help. ``record``: what else ``--config`` reads
    (e.g. "a run's config.json"). Returns the group."""
    group = group_of(parser, RUN)
    also = f", {record}" if record else ""
    group.add_argument("--config", metavar="FILE.json",
                       help=f"options from a JSON file (what --print-config prints{also}); flags override it")
    group.add_argument("--print-config", action="store_true",
                       help="print the resolved configuration as JSON (what --config reads) and exit")
    if log_level:
        group.add_argument("--log-level", default="INFO", choices=choices.LOG_LEVELS, help="library log level")
    if output:
        field = None
        if cls is not None and "output_dir" in {f.name for f in dataclasses.fields(cls)}:
            field = _field(cls, "output_dir")
        if field is not None:
            add_field(group, field, default=output_default)
        else:
            group.add_argument("--output-dir", dest="output_dir",
                               default=None if output_default is dataclasses.MISSING else output_default,
                               help=output_help)
        # the name of the output folder before it was --output-dir everywhere: an alias, hidden from the help
        group.add_argument("--out", dest="output_dir", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return group


def read_json(path, what="--config"):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{what} {path}: cannot read a JSON file ({err})") from None


def _dests(parser):
    return {a.dest for a in parser._actions if a.dest not in _NOT_CONFIG}


def parse_args(parser, argv=None, *, read=None):
    """``parser.parse_args(argv)`` with ``--config FILE`` applied: the file's
    options (``read(loaded)``: a command's own record turned into options;
    default: the file is ``{option: value}``, what ``--print-config``
    prints) become the defaults, and the flags given override them. Then
    the required options are checked (``prog: error: ...``, exit 2)."""
    args = parser.parse_args(argv)
    if getattr(args, "config", None):
        try:
            loaded = read_json(args.config)
            values = read(loaded) if read is not None else loaded
            if not isinstance(values, dict):
                raise ValueError(f"--config {args.config}: expected a JSON object of options")
        except ValueError as err:
            parser.error(str(err))
        unknown = sorted(set(values) - _dests(parser))
        if unknown:
            parser.error(f"--config {args.config}: unknown option(s) {unknown}; valid: {sorted(_dests(parser))}")
        parser.set_defaults(**values)
        args = parser.parse_args(argv)
    missing = [action.option_strings[0] for action in parser._actions
               if getattr(action, "required_after_config", False) and getattr(args, action.dest, None) in (None, [])]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")
    return args


def options(args, parser):
    """``{option: value}`` of every option of ``parser`` in ``args``: what
    ``--print-config`` prints and ``--config`` reads back."""
    values = {}
    for action in parser._actions:
        if action.dest not in _NOT_CONFIG and hasattr(args, action.dest) and action.dest not in values:
            values[action.dest] = getattr(args, action.dest)
    return json.loads(json.dumps(values))  # tuples as lists, as a file gives them


def printed(args, parser):
    """``True`` after printing the options (:func:`options`) when
    ``--print-config`` was given: the command then returns 0."""
    if not getattr(args, "print_config", False):
        return False
    print_config(options(args, parser))
    return True


def print_config(values):
    """Prints ``values`` as the JSON ``--config`` reads."""
    print(json.dumps(values, indent=2))

"""The README's ``bash`` blocks as command lines, and how a test runs one.

``command_lines(text)`` reads every fenced ```bash block of a Markdown text
(indented ones inside list items included), joins backslash continuations,
drops comments and blank lines and returns the command lines in order. A
line that joins several commands with ``&&``, ``;``, ``|`` or ``&`` stays one
command line. ``tests/test_readme_commands.py`` maps each line to one of:

- ``Run``: run here, at toy size: flags set, added or dropped on the line's
  words, then the line's program started in a fresh process (``run_line``);
- ``Elsewhere``: another test already runs it as a user starts it;
- ``CannotRun``: it cannot run on this machine, with the reason;
- ``Todo``: the README line is wrong; a test fails until it is fixed.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import subprocess
import sys

FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<info>[^`]*)$")


def bash_blocks(text):
    """The bodies of the ```bash blocks of ``text``, each a list of lines,
    dedented by its fence's indentation."""
    blocks, body, indent = [], None, ""
    for line in text.splitlines():
        fence = FENCE.match(line)
        if body is None:
            if fence and fence["info"].strip() == "bash":
                body, indent = [], fence["indent"]
        elif fence and not fence["info"].strip():
            blocks.append(body)
            body = None
        else:
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
    if body is not None:
        raise ValueError("README.md: a ```bash block is not closed")
    return blocks


def strip_comment(line):
    """``line`` without its shell comment: a ``#`` that begins a word outside quotes."""
    quote, escaped = None, False
    for i, char in enumerate(line):
        if escaped:
            escaped = False
        elif char == "\\" and quote != "'":
            escaped = True
        elif quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def command_lines(text):
    """Every command line of the ```bash blocks of ``text``, in order:
    continuations joined (one space where the backslash-newline was), comments
    and blank lines dropped."""
    lines = []
    for block in bash_blocks(text):
        pending = ""
        for raw in block:
            line = strip_comment(raw)
            if line.endswith("\\"):
                pending += line[:-1].strip() + " "
                continue
            line = (pending + line.strip()).strip()
            pending = ""
            if line:
                lines.append(line)
        if pending.strip():
            raise ValueError(f"README.md: a ```bash block ends in a continuation: {pending.strip()!r}")
    return lines


@dataclasses.dataclass(frozen=True)
class Run:
    """Run the line here, in the test of ``group``.

    ``set``: flag -> toy value (a string, a list of strings for a flag taking
    several, or ``None`` for a flag without a value); it replaces the flag's
    values where the line has the flag, else it is appended. ``drop``: flags
    removed with their values. ``needs``: what must exist first (inputs, or
    other README lines). ``cwd``: the working folder, relative to the test's.
    ``instead``: the command run for a line that names no program (``make
    demo-video``: what its recipe runs). ``writes``: files or folders the
    README says it writes; ``expect``: text its output must hold; ``quiet``:
    nothing may reach stderr (TensorFlow's start-up logging included)."""

    group: str
    set: dict = dataclasses.field(default_factory=dict)
    drop: tuple = ()
    needs: tuple = ()
    cwd: str = "."
    instead: str | None = None
    writes: tuple = ()
    expect: tuple = ()
    quiet: bool = False


@dataclasses.dataclass(frozen=True)
class Elsewhere:
    """Run as a user starts it by ``test`` (``tests/test_x.py::test_y``)."""

    test: str
    reason: str


@dataclasses.dataclass(frozen=True)
class CannotRun:
    reason: str


@dataclasses.dataclass(frozen=True)
class Todo:
    """The README line is wrong (what happens when it is run as written)."""

    reason: str


def _flag(word):
    return word.startswith("--")


def toy_words(words, run):
    """``words`` (a command's arguments, the program excluded) with ``run``'s
    flags set and dropped. A flag's values are the words up to the next ``--flag``."""
    out, i, seen = [], 0, set()
    while i < len(words):
        word = words[i]
        j = i + 1
        while j < len(words) and not _flag(words[j]):
            j += 1
        if not _flag(word):  # a positional word before any flag
            out.append(word)
            i += 1
            continue
        name = word.split("=", 1)[0]
        if name in run.drop:
            pass
        elif name in run.set:
            seen.add(name)
            out += [name, *_values(run.set[name])]
        else:
            out += words[i:j]
        i = j
    missing = [name for name in run.drop if name not in words]
    if missing:
        raise ValueError(f"cannot drop {missing}: not on the line {shlex.join(words)!r}")
    for name, value in run.set.items():
        if name not in seen:
            out += [name, *_values(value)]
    return out


def _values(value):
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


PROGRAMS = ("nvan-train", "nvan-tune", "nvan-evaluate", "nvan-export", "nvan-convert", "nvan-profile",
            "nvan-track", "python")


def argv_of(line, run):
    """The process to start for ``line`` under ``run``: the console script
    beside ``sys.executable`` (``python``: ``sys.executable`` itself), its toy
    arguments, and the line's leading ``NAME=value`` environment words."""
    words = shlex.split(line)
    env = {}
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        name, value = words.pop(0).split("=", 1)
        env[name] = value
    if not words or words[0] not in PROGRAMS:
        raise ValueError(f"{line!r}: no program of {PROGRAMS} to run")
    program = sys.executable if words[0] == "python" else os.path.join(os.path.dirname(sys.executable), words[0])
    return [program, *toy_words(words[1:], run)], env


def user_environment(**extra):
    """The environment a user's shell gives: TensorFlow's logging and OpenMP's
    waiting left at their defaults (the test session sets both, tests/conftest.py),
    the project not on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("TF_CPP") and k not in ("PYTHONPATH", "OMP_WAIT_POLICY")}
    env.update(extra)
    return env


def run_line(line, run, cwd, env=None, timeout=600):
    """Runs ``line`` at toy size in ``cwd``; returns a failure message, or
    ``None`` when it exited 0 and wrote every file of ``run.writes``."""
    argv, line_env = argv_of(run.instead or line, run)
    done = subprocess.run(argv, cwd=cwd, env={**(env or user_environment()), **line_env}, capture_output=True,
                          text=True, timeout=timeout)
    shown = shlex.join([os.path.basename(argv[0]), *argv[1:]])
    if done.returncode != 0:
        return f"{line}\n  ran: {shown}\n  exit {done.returncode}:\n{(done.stdout + done.stderr)[-2500:]}"
    missing = [p for p in run.writes if not os.path.exists(os.path.join(cwd, p))]
    if missing:
        return f"{line}\n  ran: {shown}\n  exit 0 but did not write {missing}"
    if run.quiet and done.stderr:
        return f"{line}\n  ran: {shown}\n  exit 0 but wrote to stderr:\n{done.stderr[-2500:]}"
    output = done.stdout + done.stderr
    absent = [text for text in run.expect if text not in output]
    if absent:
        return f"{line}\n  ran: {shown}\n  exit 0 but printed none of {absent}:\n{output[-2500:]}"
    return None

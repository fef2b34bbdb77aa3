"""Kinds of user-given values (command-line options, config settings) and how each is checked.

A kind converts a command-line string (`from_text`), checks a value, e.g. one read from YAML
(`check`), and says in words what it allows (`allowed`). Every message names the setting,
what it got and what is allowed, so it fits on one line. Checks run before any model or data is
loaded: nothing expensive happens before a bad value is refused. `kind(K)` makes a kind the type of
a command-line option (the CLI's commands and the evaluation tasks declare their options with it).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from .errors import UserError


class Kind:
    """A kind of value. Subclasses implement _convert (typed value -> value, or raise _Bad)."""

    nullable = False

    def allowed(self) -> str:
        raise NotImplementedError

    def check(self, value, name: str | None):
        """A typed value -> the checked value, or UserError naming `name`."""
        if value is None and self.nullable:
            return None
        try:
            return self._convert(value)
        except _Bad:
            shown = repr(value) if not isinstance(value, str) else f"'{value}'"
            prefix = f"{name} must be" if name else "must be"
            raise UserError(f"{prefix} {self.allowed()}, got {shown}") from None

    def from_text(self, text: str):
        """A command-line string -> a value of this kind's type, or the text itself when it is not
        one (check then refuses it, naming the option)."""
        return text

    def _convert(self, value):
        raise NotImplementedError


class _Bad(Exception):
    """Raised by _convert: the value is not of this kind (the caller words the message)."""


def kind(k: Kind):
    """An argparse type for kind k: it only converts the text (a number stays text when it is not
    one); cli/options.check_options then checks every value, so errors are UserErrors named by option.
    Here, below every command and task that declares options, so that each can use it."""

    def convert(text: str):
        return k.from_text(text)

    convert.kind = k
    convert.__name__ = type(k).__name__
    return convert


def _bounds(low, low_open: bool, high, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high}"
    return ""


@dataclass
class Whole(Kind):
    """An integer, optionally within [minimum, maximum]; `also` lists special values outside it
    (e.g. -1 = not set)."""

    minimum: int | None = None
    maximum: int | None = None
    also: tuple = ()
    nullable: bool = False
    note: str = ""
    unit: str = ""  # "tokens": "an integer of at least 64 tokens"

    def allowed(self) -> str:
        if self.unit and self.minimum is not None and self.maximum is None:
            text = f"an integer of at least {self.minimum} {self.unit}"
        else:
            text = " ".join(filter(None, ["an integer", _bounds(self.minimum, False, self.maximum, False)]))
        extras = [str(v) for v in self.also] + (["null"] if self.nullable else [])
        return text + (f" (or {' or '.join(extras)}{': ' + self.note if self.note else ''})" if extras else "")

    def from_text(self, text: str):
        try:
            return int(text)
        except ValueError:
            return text

    def _convert(self, value):
        if isinstance(value, float) and value.is_integer():  # YAML 1.1 reads 1e3 as a float
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise _Bad
        if value in self.also:
            return value
        if (self.minimum is not None and value < self.minimum) or (self.maximum is not None and value > self.maximum):
            raise _Bad
        return value


@dataclass
class Real(Kind):
    """A finite number within the given bounds (open bounds: above / below)."""

    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None
    below: float | None = None
    nullable: bool = False

    def allowed(self) -> str:
        low, low_open = (self.above, True) if self.above is not None else (self.minimum, False)
        high, high_open = (self.below, True) if self.below is not None else (self.maximum, False)
        bounds = _bounds(low, low_open, high, high_open)
        text = bounds if bounds.startswith("in ") else " ".join(filter(None, ["a number", bounds]))
        return text + (" (or null)" if self.nullable else "")

    def from_text(self, text: str):
        try:
            return float(text)
        except ValueError:
            return text

    def _convert(self, value):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise _Bad
        if ((self.minimum is not None and value < self.minimum)
                or (self.maximum is not None and value > self.maximum)
                or (self.above is not None and value <= self.above)
                or (self.below is not None and value >= self.below)):
            raise _Bad
        return value


@dataclass
class Flag(Kind):
    """true or false."""

    nullable: bool = False

    def allowed(self) -> str:
        return "true or false" + (" (or null)" if self.nullable else "")

    def _convert(self, value):
        if not isinstance(value, bool):
            raise _Bad
        return value


@dataclass
class Text(Kind):
    """A non-empty string (a name, a path to be looked up later, a free text)."""

    nullable: bool = False

    def allowed(self) -> str:
        return "a non-empty text" + (" (or null)" if self.nullable else "")

    def _convert(self, value):
        if not isinstance(value, str) or not value.strip():
            raise _Bad
        return value


@dataclass
class Choice(Kind):
    """One of a fixed set of strings."""

    choices: tuple = ()
    nullable: bool = False
    what: str = ""  # "demo model": "unknown demo model 'x': choose from a, b"

    def allowed(self) -> str:
        return "one of " + ", ".join(map(str, self.choices)) + (" (or null)" if self.nullable else "")

    def check(self, value, name: str | None):
        if self.what and value not in self.choices and not (value is None and self.nullable):
            where = f"{name}: " if name else ""
            raise UserError(f"{where}unknown {self.what} '{value}': choose from {', '.join(map(str, self.choices))}")
        return super().check(value, name)

    def _convert(self, value):
        if value not in self.choices:
            raise _Bad
        return value


@dataclass
class OutputFolder(Kind):
    """A folder results will be written to: it is a folder or can be made one (it is not an
    existing file, and its nearest existing parent is a writable folder)."""

    nullable: bool = False

    def allowed(self) -> str:
        return "a folder that can be written"

    def check(self, value, name: str | None):
        if value is None and self.nullable:
            return None
        if not isinstance(value, str) or not value.strip():
            return super().check(value, name)  # worded by _convert
        check_output_folder(value, name or "the output folder")
        return value

    def _convert(self, value):
        raise _Bad


@dataclass
class InputFile(Kind):
    """An existing file (`what` words what is wanted instead: "a folder of task YAMLs")."""

    nullable: bool = False
    what: str = ""
    folder = False  # InputFolder: an existing folder

    def allowed(self) -> str:
        return self.what or f"an existing {'folder' if self.folder else 'file'}"

    def check(self, value, name: str | None):
        if value is None and self.nullable:
            return None
        if not isinstance(value, str) or not value:
            return super().check(value, name)
        if os.path.exists(value) and os.path.isdir(value) == self.folder:
            return value
        want, other = ("folder", "file") if self.folder else ("file", "folder")
        label = name or f"the {want}"
        if self.what:
            why = "nothing is at that path" if not os.path.exists(value) else f"it is a {other}"
            raise UserError(f"{label} '{value}' is not {self.what} ({why})")
        if os.path.exists(value):
            raise UserError(f"{label} '{value}' is a {other}; give a {want}")
        raise UserError(f"{label} '{value}' does not exist")

    def _convert(self, value):
        raise _Bad


@dataclass
class InputFolder(InputFile):
    """An existing folder."""

    folder = True


def check_output_folder(path: str, name: str) -> None:
    """Refuse, before any work, an output location that could not take the results: an existing
    file, a path under a file, or a folder that cannot be written."""
    path = os.path.expanduser(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{name} '{path}' is an existing file, not a folder: choose a folder (new or existing)")
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise UserError(f"{name} '{path}' cannot be made: '{probe}' is a file, not a folder")
    if not _writable(probe):
        raise UserError(f"{name} '{path}' cannot be written: no write permission in '{probe}'")


def _writable(folder: str) -> bool:
    """Whether a file can be made in `folder`, tried for real: os.access says yes to root even on a
    read-only mount."""
    import tempfile

    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".difflora-write-check-")
    except OSError:
        return False
    os.close(fd)
    os.remove(probe)
    return True

"""Reading a user's text file (JSONL data, prompts) so that bad bytes and bad rows are reported by
file and line."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

from .errors import UserError


def read_text(path: str) -> str:
    """The file's text as UTF-8; bytes that are not UTF-8 are a one-line UserError naming the file,
    line and column (the whole file is decoded at once, so the line is counted from the bad byte)."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        line = data.count(b"\n", 0, exc.start) + 1
        raise UserError(f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at column "
                        f"{exc.start - line_start + 1}); save the file as UTF-8") from None


def read_lines(path: str) -> list[str]:
    """read_text(path) split into lines (line i of the file is item i - 1)."""
    return read_text(path).splitlines()


def read_jsonl(path: str, text: str | None = None, hint: str = "",
               on_bad_line: Callable[[str, str], None] | None = None) -> Iterator[tuple[str, object]]:
    """(where, row) for every non-blank line of a JSON Lines file, where = "path:line" for messages
    about that row. A line that is not JSON is a one-line UserError "path:line: invalid JSON (...)"
    followed by `hint`; with on_bad_line, on_bad_line(where, "invalid JSON (...)") is called instead
    (to skip the line, or to raise another error).
    text: the contents when they are already in memory (a bundled resource); path then only names it."""
    lines = read_lines(path) if text is None else text.splitlines()
    for line_no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            reason = f"invalid JSON ({exc.msg})"
            if on_bad_line is None:
                raise UserError(f"{where}: {reason}" + (f" {hint}" if hint else "")) from None
            on_bad_line(where, reason)
            continue
        yield where, row

"""Reading a user's text file (JSONL data, prompts) so that bad bytes are reported by file and line."""

from __future__ import annotations

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

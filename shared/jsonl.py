"""JSON Lines files, split on "\\n" only.

`str.splitlines()` also breaks on U+0085, U+2028, U+2029 and other characters that JSON allows
raw inside a string, so a prompt holding one would be cut in two. A trailing "\\r" (a file saved
with CRLF) is dropped; blank lines are skipped but still counted, so line numbers match an editor's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path


def numbered_lines(content: bytes, source: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, text) for each non-blank line of UTF-8 `content` (a BOM is ignored)."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        lines_before = content.count(b"\n", 0, exc.start)
        raise ValueError(f"{source}, line {lines_before + 1}: not UTF-8 text (a bad byte at "
                         f"offset {exc.start})") from None
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if line.strip():
            yield number, line


def read_lines(path: Path) -> list[tuple[int, str]]:
    return list(numbered_lines(path.read_bytes(), str(path)))


def read_objects(path: Path, problem: Callable[[dict], str | None] = lambda row: None
                 ) -> list[dict]:
    """Every non-blank line as a JSON object; the first line that is not one, or that `problem`
    finds wrong, stops the reading with its line number."""
    rows = []
    for number, line in read_lines(path):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}, line {number}: invalid JSON ({exc.msg} at column "
                             f"{exc.colno})") from None
        except (ValueError, RecursionError) as exc:  # a number of 5,000 digits, deep nesting
            raise ValueError(f"{path}, line {number}: invalid JSON ({type(exc).__name__}: "
                             f"{str(exc)[:80]})") from None
        wrong = "not a JSON object" if not isinstance(row, dict) else problem(row)
        if wrong:
            raise ValueError(f"{path}, line {number}: {wrong}")
        rows.append(row)
    return rows

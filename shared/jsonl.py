"""JSON Lines files, split on "\\n" only.

`str.splitlines()` also breaks on U+0085, U+2028, U+2029 and other characters that JSON allows
raw inside a string, so a prompt holding one would be cut in two. A trailing "\\r" (a file saved
with CRLF) is dropped; blank lines are skipped but still counted, so line numbers match an editor's.
A file is read a chunk at a time and each line decoded on its own: a UTF-8 character never holds
the byte "\\n", so that is the whole file's decoding, without the whole file in memory.
"""

from __future__ import annotations

import codecs
import io
import json
from collections.abc import Callable, Generator, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

CHUNK = 1 << 20


class Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...


def numbered_lines(content: bytes, source: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, text) for each non-blank line of UTF-8 `content` (a BOM is ignored)."""
    return _numbered(_raw_lines(io.BytesIO(content)), source)


def numbered_lines_from(path: Path, digest: Digest | None = None, source: str | None = None
                        ) -> Generator[tuple[int, str], None, None]:
    """numbered_lines of the file at `path`, read a chunk at a time; each chunk is also given to
    `digest` (a hashlib object, say), so a first reading can hash the file as it checks it.
    `source` names the file in errors (default: `path`)."""
    with path.open("rb") as file:
        yield from _numbered(_raw_lines(file, digest), source or str(path))


def _raw_lines(file: BinaryIO, digest: Digest | None = None) -> Iterator[bytes]:
    """The file's lines split on b"\\n" only, without it; the last one (b"" after a final
    newline, as str.split gives) too."""
    pending: list[bytes] = []  # the start of a line longer than what was read so far
    while chunk := file.read(CHUNK):
        if digest is not None:
            digest.update(chunk)
        pieces = chunk.split(b"\n")
        if len(pieces) > 1:
            pending.append(pieces[0])
            yield b"".join(pending)
            yield from pieces[1:-1]
            pending = []
        pending.append(pieces[-1])
    yield b"".join(pending)


def _numbered(raw_lines: Iterable[bytes], source: str) -> Iterator[tuple[int, str]]:
    offset = 0  # of the line in the file, for the message on a bad byte
    for number, raw in enumerate(raw_lines, start=1):
        start = 3 if number == 1 and raw.startswith(codecs.BOM_UTF8) else 0
        try:
            line = raw[start:].decode("utf-8") if start else raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{source}, line {number}: not UTF-8 text (a bad byte at "
                             f"offset {offset + start + exc.start})") from None
        offset += len(raw) + 1
        line = line.removesuffix("\r")
        if line.strip():
            yield number, line


def read_lines(path: Path) -> list[tuple[int, str]]:
    return list(numbered_lines_from(path))


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

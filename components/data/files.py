"""What the CSV and JSON Lines readers share: opening a file through its decompressor, and the parts of their error
messages that quote the file (a line that is not UTF-8, the text of line N)."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
from pathlib import Path
from typing import BinaryIO

from components.errors import DataContractError

# Compression suffix → how to open it for reading (the standard library's; .zst would need a new package).
DECOMPRESSORS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def open_binary(path: Path, compression: str | None) -> BinaryIO:
    """The bytes of `path`, decompressed when its name ends in a compression suffix."""
    return DECOMPRESSORS[compression](path, "rb") if compression else path.open("rb")


def not_utf8(path: Path, compression: str | None, exc: UnicodeDecodeError, fix: str) -> DataContractError:
    """The error for a file that is not UTF-8: the first line that is not, the byte, and `fix`."""
    return DataContractError(
        f"{path}: line {first_non_utf8_line(path, compression)} is not UTF-8 text (byte {exc.object[exc.start:exc.start + 1]!r}). {fix} and re-run."
    )


def first_non_utf8_line(path: Path, compression: str | None) -> int:
    with open_binary(path, compression) as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 0


def line_of(path: Path, compression: str | None, number: int) -> str:
    """Line `number` (1-based) of the file, for an error message."""
    with io.TextIOWrapper(open_binary(path, compression), newline="", encoding="utf-8-sig", errors="replace") as handle:
        return next((line for index, line in enumerate(handle, start=1) if index == number), "")


def quote(line: str, limit: int = 80) -> str:
    """The start of a line, quoted, for an error message."""
    line = line.strip()
    return repr(line if len(line) <= limit else line[:limit] + "…")

"""JSON Lines (`.jsonl`, `.ndjson`, or `.json` with one object per line, as product and review dumps and event
pipelines write them; a `.json` file that is one array of objects is read too), read into the frame of text
fields the CSV reader gives (components.data.readers): each object is one row and its values are taken as the text
a CSV file would hold: numbers as written (an id 123 is "123", never a float), lists and objects as JSON text (a
`categories` list reads as '["A", "B"]', which the item text cleaning understands), null or a missing key as an
empty field. A line that is not a JSON object, an object that names a key twice, or text that is not UTF-8 is
refused naming the file and the line."""

from __future__ import annotations

import io
import json
import re
from collections import Counter
from pathlib import Path
from typing import Iterator, TextIO

import numpy as np
import pandas as pd

from components import contract as c
from components.data.files import line_of, not_utf8, open_binary, quote
from components.errors import DataContractError

FILE_COLUMNS = "file_columns"  # frame attrs: every key of the file, also those whose values were not kept


def read_json(path: Path, compression: str | None, kind: str, keep: set[str] | None = None) -> pd.DataFrame:
    """Every field as the text a CSV file would hold ("" and null → NA), with `_row` = the line the object is on.

    The json module reads each line, not pandas: read_json guesses column types (an id 0042 written as a
    number would become 42.0, an id that looks like a date a Timestamp); here each value keeps its JSON text.
    """
    try:
        with io.TextIOWrapper(open_binary(path, compression), newline="", encoding="utf-8-sig") as handle:
            columns, lines, names = _json_columns(path, compression, _json_values(path, handle, arrays=kind == "json"), keep)
    except UnicodeDecodeError as exc:
        raise not_utf8(path, compression, exc, "JSON is UTF-8: write the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from exc
    if not lines:
        raise DataContractError(f"{path}: no JSON objects in the file. Each line must hold one object, {_JSON_EXAMPLE}.")
    frame = pd.DataFrame(columns, dtype="str")
    frame = frame.mask(frame == "")
    frame[c.ROW] = np.asarray(lines, dtype="int64")
    frame.attrs[FILE_COLUMNS] = names
    return frame


_JSON_EXAMPLE = '{"name": value, ...}'
_JSON_SHAPE_ARRAYS = "A .json file must hold one JSON object per line, or be one array of objects"
_JSON_SPACE = re.compile(r"[ \t\n\r]*")


class _RepeatedKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """json's object_pairs_hook: a dict, refusing an object that names a key twice (json keeps the last silently)."""
    record = dict(pairs)
    if len(record) != len(pairs):
        raise _RepeatedKey(next(key for key, count in Counter(key for key, _ in pairs).items() if count > 1))
    return record


_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys)


def _json_values(path: Path, handle: TextIO, arrays: bool) -> Iterator[tuple[int, object]]:
    """(line number, value) of each line that is not blank; for `arrays`, the elements of a file that is one array."""
    shape = _JSON_SHAPE_ARRAYS if arrays else f"Each line must hold one object, {_JSON_EXAMPLE}"
    for number, line in enumerate(handle, start=1):
        if not line.strip():  # a blank line is no record
            continue
        if arrays and line.lstrip().startswith("["):
            yield from _json_array_values(path, "\n" * (number - 1) + line + handle.read())
            return
        arrays = False  # only the first non-blank line can open an array
        try:
            yield number, _DECODER.decode(line.rstrip("\r\n"))  # without its line break: an error's column is on this line
        except _RepeatedKey as exc:
            raise DataContractError(f"{path}: line {number} names the key {exc.key!r} more than once: {quote(line)}. Give each field one name and re-run.") from None
        except json.JSONDecodeError as exc:
            raise DataContractError(
                f"{path}: line {number} is not JSON ({exc.msg}: column {exc.colno}): {quote(line)}. {shape}: fix that line and re-run."
            ) from None


def _json_array_values(path: Path, text: str) -> Iterator[tuple[int, object]]:
    """The elements of `text`, one JSON array, each with the line it starts on."""
    line, counted = 1, 0
    try:
        position = _JSON_SPACE.match(text, _JSON_SPACE.match(text).end() + 1).end()  # past '[' and blanks
        while not text.startswith("]", position):
            line, counted = line + text.count("\n", counted, position), position
            value, position = _DECODER.raw_decode(text, position)
            yield line, value
            position = _JSON_SPACE.match(text, position).end()
            if text.startswith(",", position):
                position = _JSON_SPACE.match(text, position + 1).end()
            elif not text.startswith("]", position):
                raise json.JSONDecodeError("Expecting ',' or ']' after an element", text, position)
        if _JSON_SPACE.match(text, position + 1).end() != len(text):
            raise json.JSONDecodeError("Extra data after the array", text, position + 1)
    except _RepeatedKey as exc:
        raise DataContractError(f"{path}: the object on line {line} names the key {exc.key!r} more than once. Give each field one name and re-run.") from None
    except json.JSONDecodeError as exc:
        line_text = text[text.rfind("\n", 0, exc.pos) + 1:].partition("\n")[0]
        raise DataContractError(
            f"{path}: line {exc.lineno} is not JSON ({exc.msg}: column {exc.colno}): {quote(line_text)}. "
            f"{_JSON_SHAPE_ARRAYS}: fix that line and re-run."
        ) from None


def _json_columns(
    path: Path, compression: str | None, values: Iterator[tuple[int, object]], keep: set[str] | None = None
) -> tuple[dict[str, list], list[int], list[str]]:
    """Columns (key → one field per row, in the order keys first appear; only the keys in `keep` unless it is None),
    the line of each row, and every key of the file in the order keys first appear."""
    columns: dict[str, list] = {}
    lines: list[int] = []
    names: dict[str, None] = {}
    for row, (number, record) in enumerate(values):
        if type(record) is not dict:
            kind = {list: "an array", str: "a string", bool: "true/false", type(None): "null"}.get(type(record), "a number")
            raise DataContractError(
                f"{path}: line {number} is {kind}, not a JSON object: {quote(line_of(path, compression, number))}. "
                f"Each row must be one object, {_JSON_EXAMPLE}: fix that line and re-run."
            )
        stored = 0
        for key, value in record.items():
            column = columns.get(key)
            if column is None:  # a key first seen here: empty in the rows before
                names[key] = None
                if keep is not None and key not in keep:
                    continue
                column = columns[key] = [None] * row
            column.append(value if type(value) is str else _json_text(value))
            stored += 1
        lines.append(number)
        if stored != len(columns):  # keys this object lacks: empty fields (validation says which are required)
            for column in columns.values():
                if len(column) == row:
                    column.append(None)
    return columns, lines, list(names)


def _json_text(value: object) -> str | None:
    """A JSON value that is not a string as the text a CSV field would hold: null → missing, numbers as written
    (123 → "123"; 5.0 → "5", as parquet's float ids read), true/false, lists and objects as JSON text."""
    if value is None:
        return None
    if type(value) is int:
        return str(value)
    if type(value) is float:
        return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)
    return json.dumps(value, ensure_ascii=False)

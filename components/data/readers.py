"""Read interaction events and the item catalog into data-contract frames (see components.contract).

Readers normalise types and never drop a row: ids become strings (leading zeros kept), timestamps epoch
seconds, and a timestamp that cannot be parsed becomes NA so that validation reports it with its row
(column `_row`: the line number in a CSV or JSON Lines file, the 1-based row in a parquet file). A file that
cannot be read as a table (not UTF-8, a header naming a column twice, a damaged parquet file, a ragged line,
a line that is no JSON object) or an optional `value` that is not a number is refused here, naming the file
and the line.

JSON Lines (`.jsonl`, `.ndjson`, or `.json` with one object per line, or one array of objects) is read by
components.data.json_lines into the same frame a CSV file gives: each object one row, its values as the text a
CSV file would hold.

CSV and JSON Lines may be compressed (`.gz`, `.bz2`, `.xz`: what the standard library decompresses); they are
read as they stream through the decompressor, with the same line numbers as the plain file. A compressed
file that stops before its end (a download cut short) is refused as incomplete, never read as fewer rows.

A file that names the contract's columns differently is read through `DataConfig` (components.data.config):
`event_columns` / `item_columns` rename the file's columns to the contract's (the frame keeps the file's names in
its attrs, SOURCE_COLUMNS, so that messages can name the column the user sees), `event_type` adds a constant
event type, and `timestamp_unit` says whether numeric timestamps are seconds or milliseconds (`auto`: milliseconds
when every numeric value is >= 1e11; the unit read is in the frame's attrs, TIMESTAMP_UNIT).
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import lzma
import zlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from components import contract as c
from components.data.config import DataConfig
from components.data.files import DECOMPRESSORS, not_utf8, open_binary
from components.data.json_lines import FILE_COLUMNS, read_json
from components.errors import BehaviorflowError, DataContractError

log = logging.getLogger(__name__)

_EPOCH = pd.Timestamp(0, tz="UTC")
# File suffix → how the file is read. A .json file is JSON Lines, or one array of objects when it starts with '['.
_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet"}
_SUPPORTED = ".csv, .jsonl (JSON Lines; also .ndjson, .json) or .parquet (CSV and JSON Lines may be compressed: .gz, .bz2, .xz)"
_NAMED_UTC = r"(?i)\s+(?:UTC|GMT)$"  # a trailing " UTC" / " GMT" after an ISO-8601 date and time
UNREADABLE_TIMESTAMPS = "unreadable_timestamps"  # events frame attrs: {file row: raw text} of the first few timestamps not read
SOURCE_COLUMNS = "source_columns"  # frame attrs: {contract name: the file's column name} for the columns read under another name
TIMESTAMP_UNIT = "timestamp_unit"  # events frame attrs: the unit numeric timestamps were read in ("s"/"ms") and why
# auto: numeric timestamps are milliseconds when every one is at least this. Epoch seconds reach it in 5138 (far past
# the contract's 2100); epoch milliseconds passed it in 1973.
MILLISECONDS_FROM = 1e11


def load_events(path: str | Path, data: DataConfig | None = None) -> pd.DataFrame:
    """Events (`user_id, item_id, event_type, timestamp` [+ `value`]) from a CSV, JSON Lines or parquet file.

    `timestamp` becomes nullable Int64 epoch seconds: numbers are taken as seconds or milliseconds (see
    `data.timestamp_unit`), strings are parsed as ISO-8601 (UTC when they carry no zone). `event_type` is
    stripped and lower-cased. `data` (default: the contract's names, no constant event type, unit auto) says
    how the file's columns map to the contract's.
    """
    path = Path(path)
    data = data or DataConfig()
    keep = {*c.EVENT_REQUIRED, *c.EVENT_OPTIONAL, *data.event_columns.values()}
    frame = _map_columns(_read_table(path, keep), data.event_columns, "event_columns", path)
    if data.event_type is not None:
        if c.EVENT_TYPE in frame:
            raise DataContractError(
                f"{path}: has an event_type column ({_label(frame, c.EVENT_TYPE)}), and data.event_type = {data.event_type!r} would "
                f"replace it for every row. Use one of the two: leave data.event_type unset to read the file's column, or drop that column."
            )
        frame[c.EVENT_TYPE] = data.event_type
    _require_columns(frame, c.EVENT_REQUIRED, c.EVENT_OPTIONAL, path, "events")
    frame = _contract_columns(frame, c.EVENT_REQUIRED + c.EVENT_OPTIONAL)
    for column in (c.USER_ID, c.ITEM_ID):
        frame[column] = _as_id_strings(frame[column])
    frame[c.EVENT_TYPE] = frame[c.EVENT_TYPE].astype("str").str.strip().str.lower()
    raw = frame[c.TIMESTAMP]
    frame[c.TIMESTAMP], unit = _epoch_seconds(raw, data.timestamp_unit)
    frame.attrs[TIMESTAMP_UNIT] = {"unit": unit, "setting": data.timestamp_unit}
    if data.timestamp_unit == "auto" and unit == "ms":
        log.info("%s: %s: every numeric timestamp is >= %.0e, so they are read as epoch milliseconds (data.timestamp_unit: auto; "
                 "set s or ms to force the unit)", path, _label(frame, c.TIMESTAMP), MILLISECONDS_FROM)
    # Unreadable timestamps become nulls, which the events suite refuses by row; the raw text is kept for its
    # message (what was written there is what the user has to fix), the first few only.
    unreadable = frame[c.TIMESTAMP].isna() & raw.notna() & (raw.astype("str").str.strip() != "")
    frame.attrs[UNREADABLE_TIMESTAMPS] = dict(zip(frame.loc[unreadable, c.ROW].head(5).tolist(), raw[unreadable].head(5).astype("str").tolist()))
    if c.VALUE in frame:
        raw = frame[c.VALUE]
        frame[c.VALUE] = pd.to_numeric(raw, errors="coerce").astype("float64")
        unreadable = frame[c.VALUE].isna() & raw.notna()
        if unreadable.any():  # an empty value is fine (it is optional); text where a number belongs is not
            shown = ", ".join(f"{value!r} (row {row})" for value, row in zip(raw[unreadable].head(3), frame.loc[unreadable, c.ROW].head(3)))
            raise DataContractError(
                f"{path}: {_label(frame, c.VALUE)}: {int(unreadable.sum())} row(s) not a number — e.g. {shown}. 'value' is optional: "
                f"a number (a rating, a price) or empty. Fix or empty these fields and re-run."
            )
    return frame


def load_items(path: str | Path, data: DataConfig | None = None) -> pd.DataFrame:
    """The item catalog (`item_id, title` [+ `category, brand, description`]) from a CSV, JSON Lines or parquet file.

    Optional text columns stay absent when the file lacks them; present ones, and the title, have missing values
    filled with "" (an item without a brand is fine; one without a title too, when its category, brand or
    description has text: validation refuses only an item with no text at all).
    `data.item_columns` maps the file's column names to the contract's.
    """
    path = Path(path)
    mapping = (data or DataConfig()).item_columns
    frame = _map_columns(_read_table(path, {*c.ITEM_REQUIRED, *c.ITEM_OPTIONAL, *mapping.values()}), mapping, "item_columns", path)
    _require_columns(frame, c.ITEM_REQUIRED, c.ITEM_OPTIONAL, path, "items")
    frame = _contract_columns(frame, c.ITEM_REQUIRED + c.ITEM_OPTIONAL)
    frame[c.ITEM_ID] = _as_id_strings(frame[c.ITEM_ID])
    frame[c.TITLE] = frame[c.TITLE].astype("str").fillna("")
    for column in c.ITEM_OPTIONAL:
        if column in frame:
            frame[column] = frame[column].astype("str").fillna("")
    return frame


def load_movielens(folder: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Events and items from a MovieLens-1M folder: `ratings.dat[.gz]` and `movies.dat` (ISO-8859-1).

    Every rating becomes a `rating` event whose `value` is the star rating; an item's category is its
    genres joined with ", ". `_row` is the line number in ratings.dat / movies.dat (they have no header).
    """
    folder = Path(folder)
    ratings_path = _find_ratings(folder)
    movies_path = folder / "movies.dat"
    if not movies_path.is_file():
        raise DataContractError(
            f"{folder}: movies.dat not found (MovieLens-1M items: MovieID::Title::Genres). "
            f"Pass the folder that holds both the ratings file and movies.dat, and re-run."
        )
    return _read_ratings(ratings_path), _read_movies(movies_path)


@dataclass(frozen=True, eq=False)  # eq=False: comparing DataFrames with == is ambiguous
class Dataset:
    """The loaded input of one training run, and where it came from."""

    events: pd.DataFrame  # events frame as returned by load_events / load_movielens
    items: pd.DataFrame  # item catalog as returned by load_items / load_movielens
    events_source: str  # the file the events came from; error messages name it
    items_source: str  # the file the items came from

    @cached_property
    def item_texts(self) -> list[str]:
        """What the language model reads of each row of `items` (prepare.item_texts), computed once: validation
        (which items have text) and preparation both need it, and cleaning the text of a catalog with long HTML
        descriptions is the data stage's largest step (100,000 generated Amazon-like items: ~30 s on 2 cores)."""
        from components.preparation.prepare import item_texts

        return item_texts(self.items)

    def fingerprint(self) -> str:
        """16 hex chars of a sha256 over the content (columns sorted, `_row` excluded), stable across
        runs and processes: the cache key of everything computed from this data."""
        digest = hashlib.sha256()
        for name, frame in (("events", self.events), ("items", self.items)):
            columns = sorted(col for col in frame.columns if col != c.ROW)
            digest.update(f"{name}:{','.join(columns)}:{len(frame)};".encode())
            # hash_pandas_object uses a fixed key, so the row hashes do not change between processes.
            digest.update(pd.util.hash_pandas_object(frame[columns], index=False).to_numpy().tobytes())
        return digest.hexdigest()[:16]


def load_dataset(
    events: str | Path | None = None,
    items: str | Path | None = None,
    movielens: str | Path | None = None,
    data: DataConfig | None = None,
) -> Dataset:
    """Load either an events file plus an items file, or a MovieLens-1M folder (exactly one of the two);
    `data` says how the files' columns and timestamps are read (not used for MovieLens)."""
    if movielens is not None and events is None and items is None:
        events_frame, items_frame = load_movielens(movielens)
        folder = Path(movielens)
        return Dataset(events_frame, items_frame, str(_find_ratings(folder)), str(folder / "movies.dat"))
    if movielens is None and events is not None and items is not None:
        return Dataset(load_events(events, data), load_items(items, data), str(Path(events)), str(Path(items)))
    raise BehaviorflowError(
        f"Give either an events file and an items file, or a MovieLens folder — got events={events!r}, "
        f"items={items!r}, movielens={movielens!r}."
    )


def epoch_seconds(raw: pd.Series, unit: str = "s") -> pd.Series:
    """Nullable Int64 epoch seconds from numbers (seconds, or milliseconds with unit "ms"; "auto" decides as
    DataConfig.timestamp_unit says), ISO-8601 strings or datetimes.

    What cannot be parsed becomes NA: validation reports it with its row instead of it vanishing here.
    """
    return _epoch_seconds(raw, unit)[0]


def _epoch_seconds(raw: pd.Series, unit: str) -> tuple[pd.Series, str]:
    """epoch_seconds, and the unit its numbers were read in ("s" or "ms"; `unit` resolved when "auto")."""
    if pd.api.types.is_datetime64_any_dtype(raw):
        stamps = raw if raw.dt.tz is not None else raw.dt.tz_localize("UTC")
        return ((stamps - _EPOCH) // pd.Timedelta(seconds=1)).astype("Int64"), "s"
    seconds = pd.to_numeric(raw, errors="coerce").astype("float64")
    if unit == "auto":
        numbers = seconds.dropna()
        unit = "ms" if len(numbers) and bool((numbers >= MILLISECONDS_FROM).all()) else "s"
    if unit == "ms":
        seconds = seconds // 1000
    if not pd.api.types.is_numeric_dtype(raw):
        text = raw[seconds.isna() & raw.notna()]
        if len(text):
            stamps = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
            # "2019-03-04 10:00:00 UTC" (BigQuery's and many databases' text form of a timestamp) is ISO-8601
            # with the zone spelled out; pandas' ISO-8601 parser refuses the named zone, so it is read as UTC.
            words = text.astype("str")
            named_utc = stamps.isna() & words.str.contains(_NAMED_UTC, regex=True, na=False)
            if named_utc.any():
                stamps[named_utc] = pd.to_datetime(words[named_utc].str.replace(_NAMED_UTC, "", regex=True), format="ISO8601", utc=True, errors="coerce")
            seconds.loc[text.index] = (stamps - _EPOCH) // pd.Timedelta(seconds=1)
    # "inf" or 1e20 are numbers but no timestamp, and Int64 cannot hold them: treat them as unparseable.
    return np.floor(seconds.where(seconds.abs() < 2**53)).astype("Int64"), unit


def _map_columns(frame: pd.DataFrame, mapping: dict[str, str], setting: str, path: Path) -> pd.DataFrame:
    """The file's columns renamed to the contract's as data.<setting> says ({contract name: file's name});
    the file's names are kept in attrs[SOURCE_COLUMNS] for messages."""
    if not mapping:
        return frame
    renamed = {column: name for name, column in mapping.items() if column != name}  # file's name -> contract name
    found = _found_columns(frame)
    missing = [(name, column) for name, column in mapping.items() if column not in found]
    if missing:
        listed = ", ".join(f"{column!r} (for {name}, data.{setting}.{name})" for name, column in missing)
        raise DataContractError(
            f"{path}: no column {listed}; the file has {found}. Correct the name in data.{setting} (names are case-sensitive) and re-run."
        )
    # A contract-named column beside the one mapped to that name: which one was meant is not for the reader to guess.
    shadowed = [(name, column) for column, name in renamed.items() if name in found and name not in renamed]
    if shadowed:
        name, column = shadowed[0]
        raise DataContractError(
            f"{path}: data.{setting} reads the column {column!r} as {name}, but the file has a column {name!r} too. "
            f"Keep one: remove {name} from data.{setting} to read the file's {name!r}, or drop or rename that column, and re-run."
        )
    frame = frame.rename(columns=renamed)
    frame.attrs[SOURCE_COLUMNS] = {name: column for column, name in renamed.items()}
    if FILE_COLUMNS in frame.attrs:
        frame.attrs[FILE_COLUMNS] = [renamed.get(column, column) for column in found]
    return frame


def _found_columns(frame: pd.DataFrame) -> list[str]:
    """The file's columns, for messages: also the JSON keys whose values the reader did not keep."""
    return list(frame.attrs.get(FILE_COLUMNS) or [column for column in frame.columns if column != c.ROW])


def column_label(name: str, source_columns: dict[str, str]) -> str:
    """How a message names a contract column: "column 'parent_asin' (item_id)" when the file calls it
    parent_asin (data.event_columns / data.item_columns), else "column 'item_id'"."""
    column = source_columns.get(name)
    return f"column {column!r} ({name})" if column else f"column {name!r}"


def _label(frame: pd.DataFrame, name: str) -> str:
    return column_label(name, frame.attrs.get(SOURCE_COLUMNS) or {})


def _read_table(path: Path, keep: set[str] | None = None) -> pd.DataFrame:
    """The file as a frame of text fields plus `_row`. For JSON, `keep` (None: all) names the keys whose values are
    kept: a dump's other keys (a review's text, an item's images) are only listed, in attrs[FILE_COLUMNS], for
    messages, so that reading a large dump does not hold every field of it in memory."""
    kind, compression = _file_type(path)
    if not path.is_file():
        raise DataContractError(f"{path}: file not found. Check the path and re-run.")
    if kind == "parquet":
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # pyarrow's ArrowInvalid, OSError, …: a file that is not (whole) parquet
            raise DataContractError(
                f"{path}: not a readable parquet file ({' '.join(str(exc).split())[:200]}). Write it again (e.g. "
                f"pandas' to_parquet) or give a .csv or .jsonl, and re-run."
            ) from exc
        frame[c.ROW] = np.arange(1, len(frame) + 1)
        return frame
    try:
        try:
            return _read_csv(path, compression) if kind == "csv" else read_json(path, compression, kind, keep)
        except DataContractError:
            if compression:  # damaged compressed data can decode to garbage lines before the checksum at its end is
                _read_to_the_end(path, compression)  # read: report the damage, not a line of that garbage
            raise
    except EOFError:  # gzip, bz2 and lzma alike: the stream ended before its end-of-stream marker
        raise DataContractError(
            f"{path}: incomplete: the {compression} data stops before its end (a download or copy cut short). "
            f"Fetch or copy the whole file again and re-run."
        ) from None
    except (OSError, zlib.error, lzma.LZMAError) as exc:
        if compression is None or (isinstance(exc, OSError) and exc.errno is not None):
            raise  # an operating-system error (permissions, I/O), not the content of the file
        raise DataContractError(
            f"{path}: not readable as {compression} compressed data ({exc}). Check that the file is what its name "
            f"says (e.g. gzip -t for .gz) and re-run."
        ) from None


def _file_type(path: Path) -> tuple[str, str | None]:
    """(how the file is read, its compression suffix or None), from its name; refuses what is not read."""
    suffixes = [suffix.lower() for suffix in path.suffixes]
    compression = suffixes.pop() if suffixes and suffixes[-1] in DECOMPRESSORS else None
    suffix = suffixes[-1] if suffixes else ""
    if suffix == ".parquet" and compression:
        raise DataContractError(
            f"{path}: a compressed parquet file. Parquet compresses its columns itself: decompress the file "
            f"(e.g. gunzip) or write it again without the {compression}, and re-run."
        )
    if suffix in _FORMATS:
        return _FORMATS[suffix], compression
    last = path.suffix.lower()
    if last in (".zst", ".zstd", ".lz4", ".sz", ".snappy"):
        raise DataContractError(
            f"{path}: '{path.suffix}' compression is not read (Python's standard library has no decompressor for it). "
            f"Decompress it (e.g. zstd -d) or compress it with gzip instead, and re-run with {_SUPPORTED}."
        )
    if last in (".zip", ".tar", ".tgz", ".7z"):
        raise DataContractError(f"{path}: an archive. Unpack it and give the file inside: {_SUPPORTED}.")
    if compression and not suffix:
        raise DataContractError(
            f"{path}: {compression} compressed, but the name does not say what is inside. Name it "
            f"like events.csv{compression} and re-run ({_SUPPORTED})."
        )
    raise DataContractError(f"{path}: unsupported file type '{suffix}{compression or ''}'. Convert it to {_SUPPORTED} and re-run.")


def _read_to_the_end(path: Path, compression: str) -> None:
    with open_binary(path, compression) as handle:
        while handle.read(1 << 20):
            pass


def _read_csv(path: Path, compression: str | None) -> pd.DataFrame:
    """Every field as a string ("" → NA), with `_row` = the line where the record starts.

    The csv module is used instead of pandas because it knows line numbers: a quoted field that spans
    lines or a blank line would otherwise shift every reported row after it.
    """
    try:
        records, lines, header = _csv_records(path, compression)
    except UnicodeDecodeError as exc:
        raise not_utf8(path, compression, exc, "Save the file as UTF-8 (e.g. re-export it, or iconv -f latin1 -t utf-8)") from exc
    frame = pd.DataFrame(records, columns=header, dtype="str")
    frame = frame.mask(frame == "")
    frame[c.ROW] = np.asarray(lines, dtype="int64")
    return frame


def _csv_records(path: Path, compression: str | None) -> tuple[list[list[str]], list[int], list[str]]:
    # A long description is text like any other (the tokenizer reads its first text.max_tokens tokens), as it
    # is in parquet: the csv module's 128 KiB field limit is lifted, and what csv still refuses is one line.
    csv.field_size_limit(2**31 - 1)
    # utf-8-sig: a byte-order mark (Excel writes one) must not end up in the first column's name.
    with io.TextIOWrapper(open_binary(path, compression), newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        try:
            return _csv_rows(path, reader)
        except csv.Error as exc:
            raise DataContractError(f"{path}: line {reader.line_num}: not readable as CSV ({exc}). Fix the quoting on that line and re-run.") from None


def _csv_rows(path: Path, reader) -> tuple[list[list[str]], list[int], list[str]]:
    """(records, the line each starts on, the header) from a csv.reader over `path`."""
    header = next(reader, [])
    if not header:
        raise DataContractError(f"{path}: no header: the file is empty or starts with a blank line; its first line must name the columns.")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise DataContractError(
            f"{path}: the header names column(s) {repeated} more than once ({', '.join(header)}). "
            f"Give each column one name and re-run."
        )
    records, lines = [], []
    start = reader.line_num + 1
    for record in reader:
        if record:  # a blank line is no record
            if len(record) != len(header):
                raise DataContractError(
                    f"{path}: line {start} has {len(record)} fields but the header has {len(header)} "
                    f"({', '.join(header)}). Quote fields that contain commas and re-run."
                )
            records.append(record)
            lines.append(start)
        start = reader.line_num + 1
    return records, lines, header


def _require_columns(
    frame: pd.DataFrame, required: tuple[str, ...], optional: tuple[str, ...], path: Path, kind: str
) -> None:
    missing = [column for column in required if column not in frame.columns]
    if missing:
        found = _found_columns(frame)
        separator = next((sep for sep in (";", "\t", "|") if len(found) == 1 and sep in found[0]), None)
        if separator is not None:  # a CSV saved with another separator (European spreadsheets use ';'): one long column
            raise DataContractError(
                f"{path}: the header is one column, {found[0]!r}: the file is separated by {separator!r}, not by commas. "
                f"Save it as comma-separated CSV (or as parquet) and re-run."
            )
        names = "the keys of its objects" if _file_type(path)[0] in ("jsonl", "json") else "the columns in its header"
        setting = "event_columns" if kind == "events" else "item_columns"
        hint = f"data.{setting} (e.g. --set data.{setting}.{missing[0]}=<the file's name for it>)"
        if c.EVENT_TYPE in missing and kind == "events":
            hint += ", or, for event_type, give every row one type with data.event_type (e.g. --set data.event_type=rating)"
        raise DataContractError(
            f"{path}: missing required column(s) {missing}; found {found}. An {kind} file needs "
            f"{list(required)} (optional: {list(optional)}): rename {names}, or name the file's columns for them in {hint}, and re-run."
        )


def _contract_columns(frame: pd.DataFrame, names: tuple[str, ...]) -> pd.DataFrame:
    """`frame` with the contract's columns and `_row` only, in the file's order: the file's other columns (a review's
    text, an item's price or images) are not kept, so they take no memory and do not enter the data fingerprint (a
    re-download whose helpful votes or prices changed is the same training data)."""
    kept = frame.drop(columns=[column for column in frame.columns if column not in names and column != c.ROW])
    kept.attrs = {key: value for key, value in frame.attrs.items() if key != FILE_COLUMNS}
    return kept


def _as_id_strings(values: pd.Series) -> pd.Series:
    """Ids as strings; parquet may hold integers, or floats when an id is missing (1.0 → "1", not "1.0")."""
    if pd.api.types.is_float_dtype(values) and (values.dropna() % 1 == 0).all():
        values = values.astype("Int64")
    return values.astype("str")


def _find_ratings(folder: Path) -> Path:
    if not folder.is_dir():
        raise DataContractError(f"{folder}: MovieLens folder not found. Check the path and re-run.")
    for name in ("ratings.dat", "ratings.dat.gz"):
        if (folder / name).is_file():
            return folder / name
    candidates = sorted({*folder.glob("ratings*.dat.gz"), *folder.glob("ratings*.dat")})
    if len(candidates) == 1:
        return candidates[0]
    found = f"found {[p.name for p in candidates]}" if candidates else "found none"
    raise DataContractError(
        f"{folder}: expected MovieLens ratings (UserID::MovieID::Rating::Timestamp) in ratings.dat, "
        f"ratings.dat.gz or a single ratings*.dat[.gz] file; {found}. Leave exactly one there and re-run."
    )


def _read_ratings(path: Path) -> pd.DataFrame:
    # "::" split on ":" gives empty fields between the values; keeping every other column lets pandas'
    # C parser do the work (the python engine needed for a two-character separator is ~10x slower).
    # Everything is read as text so that a malformed value becomes NA (reported by validation).
    names = [c.USER_ID, "_a", c.ITEM_ID, "_b", c.VALUE, "_c", c.TIMESTAMP]
    try:
        ratings = pd.read_csv(
            path, sep=":", header=None, names=names, usecols=[0, 2, 4, 6], dtype="str", encoding="latin-1"
        )
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise DataContractError(
            f"{path}: not in MovieLens-1M ratings format UserID::MovieID::Rating::Timestamp ({error}). "
            f"Fix the file and re-run."
        ) from error
    return pd.DataFrame(
        {
            c.USER_ID: ratings[c.USER_ID],
            c.ITEM_ID: ratings[c.ITEM_ID],
            c.EVENT_TYPE: pd.Series("rating", index=ratings.index, dtype="str"),
            c.TIMESTAMP: epoch_seconds(ratings[c.TIMESTAMP]),
            c.VALUE: pd.to_numeric(ratings[c.VALUE], errors="coerce").astype("float64"),
            c.ROW: np.arange(1, len(ratings) + 1),
        }
    )


def _read_movies(path: Path) -> pd.DataFrame:
    # Titles contain ":" ("Star Wars: Episode IV ..."), so split each of the ~4k lines by hand.
    rows = []
    for line_number, line in enumerate(path.read_text(encoding="iso-8859-1").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("::")
        if len(parts) < 3:
            raise DataContractError(
                f"{path}: line {line_number} is not MovieID::Title::Genres: {line!r}. Fix it and re-run."
            )
        item_id, title, genres = parts[0], "::".join(parts[1:-1]), parts[-1]
        rows.append((item_id, title, ", ".join(g for g in genres.split("|") if g), line_number))
    return pd.DataFrame(rows, columns=[c.ITEM_ID, c.TITLE, c.CATEGORY, c.ROW]).astype(
        {c.ITEM_ID: "str", c.TITLE: "str", c.CATEGORY: "str"}
    )

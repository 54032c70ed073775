"""Readers (CSV and JSON Lines, plain and compressed; parquet; MovieLens-1M), the dataset fingerprint and the synthetic sample."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components import contract as c
from components.data import (
    DataConfig,
    SampleConfig,
    generate_sample,
    load_dataset,
    load_events,
    load_items,
    load_movielens,
    write_sample,
)
from components.errors import BehaviorflowError, DataContractError
from tests.helpers import AMAZON_EVENT_COLUMNS, AMAZON_ITEM_COLUMNS, write_amazon_like

ROOT = Path(__file__).resolve().parents[1]
JAN_1_2024 = 1_704_067_200

EVENTS_CSV = """\
user_id,item_id,event_type,timestamp,value
007,0042,view,1704067200,
007,0042, Click ,2024-01-01T00:00:00Z,
007,0042,cart,2024-01-01T02:00:00+02:00,19.90
010,0043,purchase,2024-01-01 00:00:00, 7 
010,0043,view,yesterday,
"""


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_text(text, encoding=encoding)
    return path


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sample")
    write_sample(out)
    return out


def to_json_lines(csv_path: Path, out: Path) -> Path:
    """A sample CSV as an event pipeline or a product dump writes it: one object per line, numbers as JSON
    numbers (timestamps, prices), ids as strings, null for an empty field."""
    frame = pd.read_csv(csv_path, dtype={c.USER_ID: "str", c.ITEM_ID: "str"})
    out.write_text(frame.to_json(orient="records", lines=True, force_ascii=False))
    return out


@pytest.fixture(scope="module")
def sample_json_dir(tmp_path_factory, sample_dir) -> Path:
    out = tmp_path_factory.mktemp("sample_json")
    for name in ("events", "items"):
        to_json_lines(sample_dir / f"{name}.csv", out / f"{name}.jsonl")
    return out


# --- CSV and parquet -------------------------------------------------------------------------------


def test_csv_events_are_normalised_and_numbered_by_line(tmp_path):
    events = load_events(write(tmp_path / "events.csv", EVENTS_CSV))

    assert events[c.USER_ID].tolist() == ["007", "007", "007", "010", "010"]  # leading zeros kept
    assert events[c.ITEM_ID].tolist() == ["0042"] * 3 + ["0043"] * 2
    assert events[c.EVENT_TYPE].tolist() == ["view", "click", "cart", "purchase", "view"]
    # Seconds kept; ISO-8601 with Z, with an offset and without a zone (= UTC) all mean 2024-01-01 00:00Z.
    assert events[c.TIMESTAMP].iloc[:4].tolist() == [JAN_1_2024] * 4
    assert events[c.TIMESTAMP].isna().tolist() == [False] * 4 + [True]  # "yesterday": kept, as NA
    assert events[c.VALUE].iloc[2] == pytest.approx(19.9)
    assert events[c.VALUE].isna().tolist() == [True, True, False, False, True]  # "" is no value; " 7 " is 7
    assert events[c.VALUE].iloc[3] == 7.0
    assert events[c.ROW].tolist() == [2, 3, 4, 5, 6]  # header is line 1


def test_timestamps_with_a_named_utc_zone_are_read(tmp_path):
    # BigQuery (and many databases) write timestamps as text like "2024-01-01 00:00:00 UTC": ISO-8601 with the
    # zone named. pandas' ISO-8601 parser refuses it; before, every such row became NA and failed validation.
    events = load_events(write(tmp_path / "events.csv", "user_id,item_id,event_type,timestamp\n"
                               "u,a,view,2024-01-01 00:00:00 UTC\nu,b,view,2024-01-01 00:00:00.250 utc\n"
                               "u,c,view,2024-01-01 00:00:00 GMT\nu,d,view,yesterday UTC\nu,e,view,2024-01-01T00:00:00Z\n"))
    assert events[c.TIMESTAMP].tolist()[:3] == [JAN_1_2024] * 3 and events[c.TIMESTAMP].iloc[4] == JAN_1_2024
    assert events[c.TIMESTAMP].isna().tolist() == [False, False, False, True, False]  # not a date: still NA, reported by validation


def test_parquet_matches_csv(tmp_path, sample_dir):
    from_csv = load_events(sample_dir / "events.csv")
    from_csv.drop(columns=c.ROW).to_parquet(tmp_path / "events.parquet")
    from_parquet = load_events(tmp_path / "events.parquet")

    assert from_parquet[c.ROW].tolist() == list(range(1, len(from_csv) + 1))
    pd.testing.assert_frame_equal(from_parquet.drop(columns=c.ROW), from_csv.drop(columns=c.ROW))


def test_parquet_integer_and_float_ids_become_clean_strings(tmp_path):
    pd.DataFrame(
        {"user_id": [1, 2], "item_id": [5.0, np.nan], "event_type": ["view", "view"], "timestamp": [1, 2]}
    ).to_parquet(tmp_path / "events.parquet")
    events = load_events(tmp_path / "events.parquet")
    assert events[c.USER_ID].tolist() == ["1", "2"]
    assert events[c.ITEM_ID].iloc[0] == "5" and pd.isna(events[c.ITEM_ID].iloc[1])


def test_items_optional_columns(tmp_path):
    text = 'item_id,title,brand\n01,Tent,\n02,"Boot, tall",Acme\n03,,x\n'
    items = load_items(write(tmp_path / "items.csv", text))
    assert list(items.columns) == ["item_id", "title", "brand", c.ROW]  # absent optional columns stay absent
    assert items["brand"].tolist() == ["", "Acme", "x"]  # present ones: missing → ""
    assert items[c.TITLE].iloc[1] == "Boot, tall"
    assert items[c.TITLE].iloc[2] == ""  # a missing title too: validation refuses only an item with no text at all


def test_csv_rows_are_line_numbers_even_with_multiline_fields_and_blank_lines(tmp_path):
    text = 'item_id,title,description\n1,A,"two\nlines"\n\n2,B,plain\n'
    items = load_items(write(tmp_path / "items.csv", text))
    assert items[c.ROW].tolist() == [2, 5]
    assert items["description"].iloc[0] == "two\nlines"


def test_byte_order_mark_is_not_part_of_the_first_column(tmp_path):
    events = load_events(write(tmp_path / "events.csv", EVENTS_CSV, encoding="utf-8-sig"))
    assert events.columns[0] == c.USER_ID


@pytest.mark.parametrize("separator", [";", "\t", "|"])
def test_a_file_separated_by_something_else_than_commas_is_named_as_such(tmp_path, separator):
    # A spreadsheet's ';'-separated export (or a TSV renamed .csv) reads as one column; the message said to
    # rename the columns in the header, which was not the problem.
    path = write(tmp_path / "events.csv", separator.join(["user_id", "item_id", "event_type", "timestamp"]) + "\n" + separator.join(["u", "a", "view", "1"]) + "\n")
    with pytest.raises(DataContractError) as error:
        load_events(path)
    assert str(error.value) == (f"{path}: the header is one column, {separator.join(['user_id', 'item_id', 'event_type', 'timestamp'])!r}: "
                                f"the file is separated by {separator!r}, not by commas. Save it as comma-separated CSV (or as parquet) and re-run.")


def test_missing_column_names_file_column_and_what_was_found(tmp_path):
    path = write(tmp_path / "clicks.csv", "user_id,item_id,event_type,ts\n1,2,view,3\n")
    with pytest.raises(DataContractError) as error:
        load_events(path)
    message = str(error.value)
    assert "clicks.csv" in message
    assert "missing required column(s) ['timestamp']" in message
    assert "found ['user_id', 'item_id', 'event_type', 'ts']" in message
    assert "rename" in message


def test_ragged_csv_line_is_reported_with_its_line(tmp_path):
    path = write(tmp_path / "items.csv", "item_id,title\n1,Tent\n2,Boot, tall\n")
    with pytest.raises(DataContractError, match=r"items\.csv: line 3 has 3 fields but the header has 2"):
        load_items(path)


def test_an_empty_file_is_named_as_such(tmp_path):
    for content in ("", "\nitem_id,title\n1,Tent\n"):
        with pytest.raises(DataContractError, match=r"items\.csv: no header: the file is empty or starts with a blank line"):
            load_items(write(tmp_path / "items.csv", content))


def test_a_long_text_field_is_read_and_what_csv_refuses_is_one_line(tmp_path, monkeypatch):
    long = "word " * 60_000  # 300,000 characters: past the csv module's default 131,072 limit, as parquet takes it
    items = load_items(write(tmp_path / "items.csv", f'item_id,title,description\n1,Tent,"{long}"\n'))
    assert len(items.loc[0, "description"]) == len(long)

    import csv

    import components.data.readers as readers

    previous = csv.field_size_limit(1000)
    monkeypatch.setattr(readers.csv, "field_size_limit", lambda *_: None)  # keep the small limit, to see csv refuse
    try:
        with pytest.raises(DataContractError, match=r"items\.csv: line 2: not readable as CSV \(field larger than field limit \(1000\)\)\. Fix"):
            load_items(tmp_path / "items.csv")
    finally:
        monkeypatch.undo()
        csv.field_size_limit(previous)


def test_unreadable_files_are_named_with_the_line_and_what_to_do(tmp_path):
    latin = tmp_path / "items.csv"
    latin.write_bytes("item_id,title\n1,Tent\n2,Caf\u00e9 chair\n".encode("latin-1"))
    with pytest.raises(DataContractError, match=r"items\.csv: line 3 is not UTF-8 text \(byte b'\\xe9'\)\. Save the file as UTF-8"):
        load_items(latin)
    doubled = write(tmp_path / "events.csv", "user_id,item_id,event_type,timestamp,user_id\n1,2,view,3,x\n")
    with pytest.raises(DataContractError, match=r"events\.csv: the header names column\(s\) \['user_id'\] more than once"):
        load_events(doubled)
    broken = tmp_path / "events.parquet"
    broken.write_bytes(b"PAR1garbage")
    with pytest.raises(DataContractError, match=r"events\.parquet: not a readable parquet file \(.*\)\. Write it again"):
        load_events(broken)


def test_a_value_that_is_not_a_number_is_reported_not_dropped(tmp_path):
    path = write(tmp_path / "events.csv", "user_id,item_id,event_type,timestamp,value\n1,2,rating,3,4\n1,3,rating,4,\n1,4,rating,5,abc\n")
    with pytest.raises(DataContractError) as error:
        load_events(path)
    assert str(error.value) == (f"{path}: column 'value': 1 row(s) not a number — e.g. 'abc' (row 4). 'value' is optional: "
                                "a number (a rating, a price) or empty. Fix or empty these fields and re-run.")
    fixed = load_events(write(tmp_path / "ok.csv", "user_id,item_id,event_type,timestamp,value\n1,2,rating,3, 4.5 \n1,3,rating,4,\n"))
    assert fixed[c.VALUE].iloc[0] == 4.5 and pd.isna(fixed[c.VALUE].iloc[1])


def test_unsupported_suffix_and_missing_file(tmp_path):
    with pytest.raises(DataContractError, match=r"events\.txt: unsupported file type '\.txt'\. Convert it to \.csv, \.jsonl"):
        load_events(write(tmp_path / "events.txt", "{}"))
    with pytest.raises(DataContractError, match=r"nope\.csv: file not found"):
        load_items(tmp_path / "nope.csv")


# --- compressed CSV ------------------------------------------------------------------------------

COMPRESSORS = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress}


def compressed(path: Path, suffix: str, data: bytes | None = None) -> Path:
    """`path` (or `data`) compressed into `path` + `suffix`."""
    out = path.with_name(path.name + suffix)
    out.write_bytes(COMPRESSORS[suffix](path.read_bytes() if data is None else data))
    return out


@pytest.mark.parametrize("suffix", list(COMPRESSORS))
def test_compressed_csv_reads_as_the_plain_file(tmp_path, sample_dir, suffix):
    for load, name in ((load_events, "events.csv"), (load_items, "items.csv")):
        plain = load(sample_dir / name)
        from_compressed = load(compressed(sample_dir / name, suffix))
        pd.testing.assert_frame_equal(from_compressed, plain)  # `_row` included: the same line numbers
    events = load_events(compressed(write(tmp_path / "events.csv", EVENTS_CSV, encoding="utf-8-sig"), suffix))
    assert events[c.USER_ID].tolist() == ["007", "007", "007", "010", "010"] and events[c.ROW].tolist() == [2, 3, 4, 5, 6]
    long = "word " * 60_000  # past the csv module's default field limit, as for a plain file
    items = load_items(compressed(write(tmp_path / "items.csv", f'item_id,title,description\n1,Tent,"{long}"\n\n2,B,"two\nlines"\n'), suffix))
    assert len(items.loc[0, "description"]) == len(long) and items[c.ROW].tolist() == [2, 4]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"item_id,title\n1,Tent\n2,Boot, tall\n", r"items\.csv\.gz: line 3 has 3 fields but the header has 2"),
        ("item_id,title\n1,Tent\n\n2,Caf\u00e9 chair\n".encode("latin-1"), r"items\.csv\.gz: line 4 is not UTF-8 text \(byte b'\\xe9'\)"),
        (b"item_id,title,item_id\n1,Tent,1\n", r"items\.csv\.gz: the header names column\(s\) \['item_id'\] more than once"),
        (b"item_id;title\n1;Tent\n", r"items\.csv\.gz: the header is one column, 'item_id;title': the file is separated by ';'"),
        (b"", r"items\.csv\.gz: no header: the file is empty"),
    ],
    ids=["ragged", "latin-1", "repeated-column", "semicolons", "empty"],
)
def test_compressed_csv_faults_are_named_with_file_and_line(tmp_path, content, message):
    with pytest.raises(DataContractError, match=message):
        load_items(compressed(tmp_path / "items.csv", ".gz", content))


@pytest.mark.parametrize("suffix", list(COMPRESSORS))
@pytest.mark.parametrize("name", ["events.csv", "events.jsonl"])
def test_a_truncated_compressed_file_is_refused_as_incomplete_not_read_short(tmp_path, sample_dir, sample_json_dir, suffix, name):
    whole = compressed((sample_dir if name.endswith(".csv") else sample_json_dir) / name, suffix).read_bytes()
    # Cut in the header, in the middle, and just before the end (a gzip member's last 8 bytes are its CRC and size).
    for keep in (6, len(whole) // 2, len(whole) - 4):
        cut = tmp_path / f"{name}{suffix}"
        cut.write_bytes(whole[:keep])
        with pytest.raises(DataContractError) as error:
            load_events(cut)
        assert str(error.value) == (f"{cut}: incomplete: the {suffix} data stops before its end (a download or copy cut short). "
                                    "Fetch or copy the whole file again and re-run."), keep


def test_a_file_that_is_not_what_its_compression_suffix_says_is_named(tmp_path, sample_dir):
    fake = tmp_path / "events.csv.gz"
    fake.write_bytes((sample_dir / "events.csv").read_bytes())  # plain CSV named .gz
    with pytest.raises(DataContractError, match=r"events\.csv\.gz: not readable as \.gz compressed data \(Not a gzipped file"):
        load_events(fake)
    damaged = bytearray(compressed(sample_dir / "events.csv", ".gz").read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    fake.write_bytes(bytes(damaged))
    with pytest.raises(DataContractError, match=r"events\.csv\.gz: not readable as \.gz compressed data"):
        load_events(fake)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("events.csv.zst", r"'\.zst' compression is not read \(Python's standard library has no decompressor for it\)\. Decompress it"),
        ("events.zip", r"events\.zip: an archive\. Unpack it and give the file inside"),
        ("events.parquet.gz", r"events\.parquet\.gz: a compressed parquet file\. Parquet compresses its columns itself"),
        ("events.gz", r"events\.gz: \.gz compressed, but the name does not say what is inside\. Name it like events\.csv\.gz"),
        ("events.xlsx", r"events\.xlsx: unsupported file type '\.xlsx'\. Convert it to \.csv"),
    ],
)
def test_file_types_that_are_not_read_say_what_to_do(tmp_path, name, message):
    with pytest.raises(DataContractError, match=message):
        load_events(write(tmp_path / name, "user_id,item_id,event_type,timestamp\n"))


# --- JSON Lines ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["{}.jsonl", "{}.jsonl.gz", "{}.ndjson", "{}.json", "{}.json.bz2"])
def test_json_lines_read_as_the_csv_file(tmp_path, sample_dir, sample_json_dir, name):
    for load, kind in ((load_events, "events"), (load_items, "items")):
        source = sample_json_dir / f"{kind}.jsonl"
        path = tmp_path / name.format(kind)
        suffix = path.suffix if path.suffix in COMPRESSORS else None
        path.write_bytes(COMPRESSORS[suffix](source.read_bytes()) if suffix else source.read_bytes())
        from_csv, from_json = load(sample_dir / f"{kind}.csv"), load(path)
        # The same line of text: line n + 1 of the CSV (its header is line 1) is line n of the JSON Lines file.
        assert from_json[c.ROW].tolist() == (from_csv[c.ROW] - 1).tolist() == list(range(1, len(from_csv) + 1))
        pd.testing.assert_frame_equal(from_json.drop(columns=c.ROW), from_csv.drop(columns=c.ROW))


def test_json_ids_stay_strings_and_timestamps_read_as_in_csv(tmp_path):
    lines = [
        {"user_id": "007", "item_id": "0042", "event_type": " Click ", "timestamp": "2024-01-01T02:00:00+02:00", "value": None},
        {"user_id": 12345678901234567890, "item_id": 42, "event_type": "cart", "timestamp": JAN_1_2024, "value": 19.9},
        None,  # a blank line
        {"user_id": "2024-01-01", "item_id": 5.0, "event_type": "view", "timestamp": float(JAN_1_2024)},  # no value key
        {"timestamp": "2024-01-01 00:00:00 UTC", "event_type": "view", "item_id": "1e3", "user_id": "0x1F", "value": "7"},
    ]
    path = tmp_path / "events.jsonl.gz"
    path.write_bytes(gzip.compress("".join("\n" if line is None else json.dumps(line) + "\n" for line in lines).encode()))
    events = load_events(path)

    # A JSON number id is its decimal text (5.0 as "5", as a parquet float id reads); strings, dates and hex stay as written.
    assert events[c.USER_ID].tolist() == ["007", "12345678901234567890", "2024-01-01", "0x1F"]
    assert events[c.ITEM_ID].tolist() == ["0042", "42", "5", "1e3"]
    assert events[c.EVENT_TYPE].tolist() == ["click", "cart", "view", "view"]
    assert events[c.TIMESTAMP].tolist() == [JAN_1_2024] * 4  # ISO text with an offset or a named UTC, seconds as int or float
    assert events[c.VALUE].isna().tolist() == [True, False, True, False] and events[c.VALUE].iloc[1] == pytest.approx(19.9)
    assert events[c.ROW].tolist() == [1, 2, 4, 5]  # line numbers: the blank line 3 is counted, not read


def test_json_lists_and_objects_become_json_text_the_item_text_cleaning_reads(tmp_path):
    from components.preparation.text_cleaning import category_text, description_text

    lines = [  # as Amazon's 2018/2023 dumps write items: lists of categories and of description paragraphs
        {"item_id": "B0001", "title": "Tent \u00e9t\u00e9", "category": ["Sports", "Camping", "Tents"],
         "description": ["Two people.", "<b>Storm</b>-proof."], "details": {"Gr\u00f6\u00dfe": "XL", "kg": 2.5}, "brand": None},
        {"item_id": "B0002", "title": "Boot"},  # no optional keys: empty fields
    ]
    path = write(tmp_path / "items.jsonl", "".join(json.dumps(line) + "\n" for line in lines))
    items = load_items(path)
    assert items[c.CATEGORY].tolist() == ['["Sports", "Camping", "Tents"]', ""]
    assert category_text(items[c.CATEGORY].iloc[0]) == "Sports, Camping, Tents"
    assert description_text(items[c.DESCRIPTION].iloc[0]) == "Two people. <b>Storm</b>-proof."
    from components.data.readers import _read_table

    table = _read_table(path)  # an object as its JSON text (load_items then keeps the contract's columns only)
    assert table["details"].iloc[0] == '{"Größe": "XL", "kg": 2.5}' and pd.isna(table["details"].iloc[1]) and "details" not in items
    assert items[c.BRAND].tolist() == ["", ""] and items[c.TITLE].tolist() == ["Tent été", "Boot"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"item_id": "3", "title": "Boot"', "line 3 is not JSON (Expecting ',' delimiter: column 33): '{\"item_id\": \"3\", \"title\": \"Boot\"'. "
                                              'Each line must hold one object, {"name": value, ...}: fix that line and re-run.'),
        ('item_id,title', "line 3 is not JSON (Expecting value: column 1): 'item_id,title'. Each line must hold one object"),
        ('["3", "Boot"]', "line 3 is an array, not a JSON object: '[\"3\", \"Boot\"]'. Each row must be one object"),
        ('42', "line 3 is a number, not a JSON object: '42'. Each row must be one object"),
        ('{"item_id": "3", "title": "Boot", "title": "Shoe"}', "line 3 names the key 'title' more than once: '{\"item_id\""),
        ('{"item_id": "3", "title": "' + "x" * 100, "line 3 is not JSON (Unterminated string starting at: column 27): '{\"item_id\": \"3\", \"title\": \"xxx"),
    ],
    ids=["unclosed", "csv-line", "array", "number", "repeated-key", "long-line"],
)
def test_a_line_that_is_not_a_json_object_is_named_with_file_line_and_its_start(tmp_path, line, message):
    text = '{"item_id": "1", "title": "Tent"}\n{"item_id": "2", "title": "Mat"}\n' + line + '\n{"item_id": "4", "title": "Cap"}\n'
    path = tmp_path / "items.jsonl.gz"
    path.write_bytes(gzip.compress(text.encode()))
    with pytest.raises(DataContractError) as error:
        load_items(path)
    assert str(error.value).startswith(f"{path}: {message}")
    assert len(str(error.value).removeprefix(str(path))) < 250  # the start of a long line is quoted, not all of it


def test_json_files_that_are_not_utf8_empty_or_one_pretty_object_are_named(tmp_path):
    latin = tmp_path / "items.jsonl"
    latin.write_bytes('{"item_id": "1", "title": "Tent"}\n{"item_id": "2", "title": "Caf\u00e9"}\n'.encode("latin-1"))
    with pytest.raises(DataContractError, match=r"items\.jsonl: line 2 is not UTF-8 text \(byte b'\\xe9'\)\. JSON is UTF-8"):
        load_items(latin)
    with pytest.raises(DataContractError, match=r"items\.jsonl: no JSON objects in the file\."):
        load_items(write(tmp_path / "items.jsonl", "\n\n"))
    with pytest.raises(DataContractError, match=r"items\.json: line 1 is not JSON \(.*\): '\{'\. A \.json file must hold one JSON object per line, or be one array"):
        load_items(write(tmp_path / "items.json", '{\n  "item_id": "1",\n  "title": "Tent"\n}\n'))
    with pytest.raises(DataContractError, match=r"items\.jsonl: missing required column\(s\) \['title'\]; found \['item_id', 'name'\]\. .*: rename the keys of its objects"):
        load_items(write(tmp_path / "items.jsonl", '{"item_id": "1", "name": "Tent"}\n'))


def test_a_json_file_that_is_one_array_is_read_with_the_line_each_object_starts_on(tmp_path):
    text = '\n[\n  {"item_id": 1, "title": "Tent"},\n  {"item_id": "02",\n   "title": "Boot"}, {"item_id": 3, "title": "Mat"}\n]\n'
    items = load_items(write(tmp_path / "items.json", text))
    assert items[c.ITEM_ID].tolist() == ["1", "02", "3"] and items[c.TITLE].tolist() == ["Tent", "Boot", "Mat"]
    assert items[c.ROW].tolist() == [3, 4, 5]
    with pytest.raises(DataContractError, match=r"items\.json: line 4 is not JSON \(Expecting ',' delimiter: column 20\): '\{\"item_id\": \"02\" \"title\""):
        load_items(write(tmp_path / "items.json", '[\n  {"item_id": 1, "title": "Tent"},\n\n  {"item_id": "02" "title": "Boot"}\n]'))
    with pytest.raises(DataContractError, match=r"items\.json: line 3 is an array, not a JSON object: '\[\"02\", \"Boot\"\]'"):
        load_items(write(tmp_path / "items.json", '[\n  {"item_id": 1, "title": "Tent"},\n  ["02", "Boot"]\n]'))


# --- MovieLens-1M ----------------------------------------------------------------------------------

RATINGS = "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n"
MOVIES = (
    "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
    "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
    "73::Misérables, Les (1995)::Drama|Musical\n"
    "1196::Star Wars: Episode V - The Empire Strikes Back (1980)::Action|Sci-Fi\n"
)


@pytest.fixture
def movielens_dir(tmp_path) -> Path:
    write(tmp_path / "ratings.dat", RATINGS)
    write(tmp_path / "movies.dat", MOVIES, encoding="iso-8859-1")
    return tmp_path


def test_movielens_reader(movielens_dir):
    events, items = load_movielens(movielens_dir)

    assert events[c.USER_ID].tolist() == ["1", "1", "2"]
    assert events[c.ITEM_ID].tolist() == ["1193", "661", "1193"]
    assert set(events[c.EVENT_TYPE]) == {"rating"}
    assert events[c.VALUE].tolist() == [5.0, 3.0, 4.0]
    assert events[c.TIMESTAMP].tolist() == [978300760, 978302109, 978298413]
    assert events[c.ROW].tolist() == [1, 2, 3]

    assert items[c.TITLE].tolist()[2:] == [
        "Misérables, Les (1995)",  # ISO-8859-1 decoded
        "Star Wars: Episode V - The Empire Strikes Back (1980)",  # ":" inside a title
    ]
    assert items[c.CATEGORY].tolist()[0] == "Animation, Children's, Musical"
    assert items[c.ROW].tolist() == [1, 2, 3, 4]


def test_movielens_gzip_and_renamed_ratings(movielens_dir):
    plain = load_movielens(movielens_dir)[0]
    ratings = movielens_dir / "ratings.dat"
    (movielens_dir / "ratings.partial-users.dat.gz").write_bytes(gzip.compress(ratings.read_bytes()))
    ratings.unlink()
    pd.testing.assert_frame_equal(load_movielens(movielens_dir)[0], plain)


def test_movielens_missing_files(movielens_dir):
    (movielens_dir / "movies.dat").unlink()
    with pytest.raises(DataContractError, match="movies.dat not found"):
        load_movielens(movielens_dir)
    (movielens_dir / "ratings.dat").unlink()
    with pytest.raises(DataContractError, match=r"ratings\.dat.*found none") as error:
        load_movielens(movielens_dir)
    assert str(movielens_dir) in str(error.value)


# --- Dataset and fingerprint -----------------------------------------------------------------------


def test_load_dataset_needs_exactly_one_source(sample_dir, movielens_dir):
    dataset = load_dataset(sample_dir / "events.csv", sample_dir / "items.csv")
    assert dataset.events_source.endswith("events.csv") and dataset.items_source.endswith("items.csv")
    assert load_dataset(movielens=movielens_dir).items_source.endswith("movies.dat")
    for wrong in ({}, {"events": "e.csv"}, {"events": "e.csv", "items": "i.csv", "movielens": "ml"}):
        with pytest.raises(BehaviorflowError, match="either an events file and an items file"):
            load_dataset(**wrong)


def test_fingerprint_is_stable_across_processes_and_sensitive_to_content(sample_dir):
    dataset = load_dataset(sample_dir / "events.csv", sample_dir / "items.csv")
    fingerprint = dataset.fingerprint()
    assert len(fingerprint) == 16 and int(fingerprint, 16) >= 0

    code = (
        "from components.data import load_dataset; import sys; "
        "print(load_dataset(sys.argv[1] + '/events.csv', sys.argv[1] + '/items.csv').fingerprint())"
    )
    other = subprocess.run(
        [sys.executable, "-c", code, str(sample_dir)], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert other.stdout.strip() == fingerprint

    changed = dataset.events.copy()
    changed.loc[5, c.TIMESTAMP] += 1
    assert type(dataset)(changed, dataset.items, "e", "i").fingerprint() != fingerprint
    renumbered = dataset.events.assign(**{c.ROW: dataset.events[c.ROW] + 100})
    assert type(dataset)(renumbered, dataset.items, "e", "i").fingerprint() == fingerprint  # _row ignored


# --- The synthetic sample --------------------------------------------------------------------------


def test_sample_is_fast_and_byte_identical_for_a_seed(tmp_path, sample_dir):
    start = time.perf_counter()
    write_sample(tmp_path / "again")
    assert time.perf_counter() - start < 2.0
    for name in ("events.csv", "items.csv"):
        assert (tmp_path / "again" / name).read_bytes() == (sample_dir / name).read_bytes()
    write_sample(tmp_path / "other", SampleConfig(seed=8))
    assert (tmp_path / "other" / "events.csv").read_bytes() != (sample_dir / "events.csv").read_bytes()


def test_sample_shape(sample_dir):
    events, items = load_events(sample_dir / "events.csv"), load_items(sample_dir / "items.csv")

    assert events[c.USER_ID].nunique() == 1500
    assert 380 <= len(items) <= 480
    assert 25_000 <= len(events) <= 40_000
    assert list(items.columns) == [c.ITEM_ID, *c.ITEM_TEXT_FIELDS, c.ROW]
    assert items[c.CATEGORY].nunique() == 12

    kinds = events[c.EVENT_TYPE].value_counts()
    assert kinds["view"] > kinds["click"] > kinds["cart"] > kinds["purchase"] > 0  # a funnel
    priced = events[c.EVENT_TYPE].isin(["cart", "purchase"])
    assert events.loc[priced, c.VALUE].gt(0).all() and events.loc[~priced, c.VALUE].isna().all()

    assert 0.003 <= events.drop(columns=c.ROW).duplicated().mean() <= 0.007  # exact duplicates, ~0.5 %
    unseen = set(items[c.ITEM_ID]) - set(events[c.ITEM_ID])
    assert 0.01 <= len(unseen) / len(items) <= 0.04  # catalog-only (brand-new) items

    stamps = pd.to_datetime(events[c.TIMESTAMP].astype("int64"), unit="s")
    assert stamps.min().year == 2024 and stamps.max().year <= 2025
    per_user = events.drop(columns=c.ROW).drop_duplicates().groupby(c.USER_ID)[c.TIMESTAMP]
    assert per_user.apply(lambda s: s.is_monotonic_increasing and s.is_unique).all()
    assert 8 <= per_user.size().median() <= 40


def _view_sequences(events: pd.DataFrame) -> list[list[str]]:
    views = events[events[c.EVENT_TYPE] == "view"].sort_values([c.USER_ID, c.TIMESTAMP], kind="stable")
    return views.groupby(c.USER_ID)[c.ITEM_ID].apply(list).tolist()


def test_sample_has_sequential_structure_a_popularity_baseline_misses():
    """Leave-last-out HR@10: a first-order Markov model (most frequent successors) vs. most popular."""
    sequences = _view_sequences(generate_sample()[0])
    successors, popularity = defaultdict(Counter), Counter()
    for seq in sequences:  # fit on everything but each user's last item
        popularity.update(seq[:-1])
        for prev, nxt in zip(seq[:-2], seq[1:-1]):
            successors[prev][nxt] += 1
    popular = {item for item, _ in popularity.most_common(10)}

    hits_popular = np.mean([seq[-1] in popular for seq in sequences])
    markov = {prev: {item for item, _ in counts.most_common(10)} for prev, counts in successors.items()}
    hits_markov = np.mean([seq[-1] in markov.get(seq[-2], ()) for seq in sequences])
    assert hits_markov >= 0.4
    assert hits_markov >= 2 * hits_popular, (hits_markov, hits_popular)


def test_sample_text_follows_the_structure():
    """An item's most frequent successor is mostly the next part of the same series: same brand and
    series word in the title, same category — what lets a text-aware model place a brand-new part."""
    events, items = generate_sample()
    successors = defaultdict(Counter)
    for seq in _view_sequences(events):
        for prev, nxt in zip(seq, seq[1:]):
            successors[prev][nxt] += 1
    title = dict(zip(items[c.ITEM_ID], items[c.TITLE]))
    same_series = [
        title[prev].rsplit(" ", 1)[0] == title[counts.most_common(1)[0][0]].rsplit(" ", 1)[0]
        for prev, counts in successors.items()
    ]
    assert np.mean(same_series) >= 0.6
    # Each unreleased item is the next part of a series someone did see.
    seen = set(events[c.ITEM_ID])
    series_seen = {title[i].rsplit(" ", 1)[0] for i in seen}
    assert all(title[i].rsplit(" ", 1)[0] in series_seen for i in set(items[c.ITEM_ID]) - seen)


def test_launched_items_are_only_last_visits_of_users_who_saw_the_part_before():
    """The sample's cold-start cases: a launched part is visited only as a user's last visit, by users who
    saw the part before it — so leave-one-out makes it a test target no training sequence holds."""
    events, items = generate_sample()
    baseline, _ = generate_sample(SampleConfig(launched_share=0.0))
    launched = set(items[c.ITEM_ID]) - set(baseline[c.ITEM_ID]) - (set(items[c.ITEM_ID]) - set(events[c.ITEM_ID]))
    assert 5 <= len(launched) <= 15  # 2 % of ~450 items
    # Everything else is the log without launches, row for row.
    rest = events[~events[c.ITEM_ID].isin(launched)].reset_index(drop=True)
    pd.testing.assert_frame_equal(rest, baseline)
    title = dict(zip(items[c.ITEM_ID], items[c.TITLE]))
    by_title = {t: i for i, t in title.items()}
    views = events[events[c.EVENT_TYPE] == "view"].sort_values([c.USER_ID, c.TIMESTAMP], kind="stable")
    returning = 0
    for _, seq in views.groupby(c.USER_ID)[c.ITEM_ID]:
        seq = seq.tolist()
        assert not set(seq[:-1]) & launched  # never before the last visit
        if seq[-1] in launched:
            returning += 1
            series, part = title[seq[-1]].rsplit(" ", 1)
            assert by_title[f"{series} {int(part) - 1}"] in seq[:-1]  # they saw the part before it
    assert returning >= 50


# --- A file that names the contract's columns differently (data.event_columns / item_columns / event_type / timestamp_unit) ---

AMAZON_READING = DataConfig(event_columns=AMAZON_EVENT_COLUMNS, item_columns=AMAZON_ITEM_COLUMNS, event_type="rating")


@pytest.fixture(scope="module")
def amazon(tmp_path_factory) -> dict[str, Path]:
    events, items = generate_sample(SampleConfig(n_users=40, series_per_category=1))
    return write_amazon_like(events, items, tmp_path_factory.mktemp("amazon"))


def test_an_amazon_2023_dump_reads_through_the_mapping_to_the_frames_of_its_contract_named_equivalent(amazon, caplog):
    with caplog.at_level("INFO", logger="components.data.readers"):
        mapped = load_dataset(amazon["reviews"], amazon["meta"], data=AMAZON_READING)
    named = load_dataset(amazon["events"], amazon["items"])
    for got, expected in ((mapped.events, named.events), (mapped.items, named.items)):
        assert sorted(got.columns) == sorted(expected.columns)
        pd.testing.assert_frame_equal(got[sorted(got.columns)], expected[sorted(expected.columns)])
    assert mapped.fingerprint() == named.fingerprint()  # the same data: the same cache key, whatever the file called its columns
    assert set(mapped.events[c.EVENT_TYPE]) == {"rating"} and mapped.events[c.VALUE].between(1, 5).all()
    assert mapped.items[c.CATEGORY].iloc[0].startswith('["Sports & Outdoors", ') and mapped.items[c.BRAND].iloc[0] != ""
    # Where the file's names are kept, for messages; the unit the timestamps were read in, and the one line that says so.
    assert mapped.events.attrs["source_columns"] == {"item_id": "parent_asin", "value": "rating"}
    assert mapped.items.attrs["source_columns"] == {"item_id": "parent_asin", "category": "categories", "brand": "store"}
    assert mapped.events.attrs["timestamp_unit"] == {"unit": "ms", "setting": "auto"}
    assert named.events.attrs["timestamp_unit"] == {"unit": "s", "setting": "auto"} and "source_columns" not in named.events.attrs
    said = [r.getMessage() for r in caplog.records if "milliseconds" in r.getMessage()]
    assert said == [f"{amazon['reviews']}: column 'timestamp': every numeric timestamp is >= 1e+11, so they are read as epoch milliseconds "
                    "(data.timestamp_unit: auto; set s or ms to force the unit)"]


def test_the_files_other_columns_are_not_kept_and_do_not_change_the_fingerprint(amazon, tmp_path):
    """README: a dump's other columns (a review's text, helpful votes; an item's features, price) are ignored. They take
    no memory in the frames, and a re-download in which only they changed has the same fingerprint."""
    import json

    before = load_dataset(amazon["reviews"], amazon["meta"], data=AMAZON_READING)
    assert list(before.events.columns) == ["value", "item_id", "user_id", "timestamp", c.ROW, c.EVENT_TYPE]
    assert list(before.items.columns) == ["title", "category", "brand", "description", "item_id", c.ROW]
    assert before.events.attrs["source_columns"] == {"item_id": "parent_asin", "value": "rating"}  # attrs kept
    redownloaded = {}
    for name, extra in (("reviews", {"helpful_vote": 99, "text": "edited later"}), ("meta", {"price": 12.5, "features": []})):
        lines = amazon[name].read_text(encoding="utf-8").splitlines()
        redownloaded[name] = tmp_path / f"{name}.jsonl"
        redownloaded[name].write_text("".join(json.dumps(json.loads(line) | extra) + "\n" for line in lines), encoding="utf-8")
    after = load_dataset(redownloaded["reviews"], redownloaded["meta"], data=AMAZON_READING)
    assert after.fingerprint() == before.fingerprint()


def test_a_json_dump_s_other_keys_are_listed_not_held_while_reading(amazon, monkeypatch):
    """Reading keeps the values of the contract's keys and the mapped ones only: a review's text is never stored (a
    category's reviews would otherwise be held whole in memory), while messages still list every key of the file."""
    import components.data.json_lines as json_lines
    import components.data.readers as readers

    stored = []
    real = json_lines._json_text
    monkeypatch.setattr(json_lines, "_json_text", lambda value: stored.append(value) or real(value))
    table = readers._read_table(amazon["reviews"], {"user_id", "parent_asin", "rating", "timestamp"})
    assert list(table.columns) == ["rating", "parent_asin", "user_id", "timestamp", c.ROW]
    assert table.attrs["file_columns"] == ["rating", "title", "text", "asin", "parent_asin", "user_id", "timestamp", "helpful_vote", "verified_purchase"]
    assert not any(type(value) is bool for value in stored)  # verified_purchase's values were never converted
    assert list(readers._read_table(amazon["reviews"]).columns)[:3] == ["rating", "title", "text"]  # keep=None: every key


def test_a_mapped_column_the_file_lacks_is_refused_naming_the_file_the_column_the_field_and_what_the_file_has(amazon):
    reading = DataConfig(event_columns={"item_id": "parent_ASIN", "value": "rating"}, event_type="rating")
    with pytest.raises(DataContractError) as refused:
        load_events(amazon["reviews"], reading)
    assert str(refused.value) == (
        f"{amazon['reviews']}: no column 'parent_ASIN' (for item_id, data.event_columns.item_id); the file has ['rating', 'title', 'text', "
        "'asin', 'parent_asin', 'user_id', 'timestamp', 'helpful_vote', 'verified_purchase']. Correct the name in data.event_columns "
        "(names are case-sensitive) and re-run.")
    with pytest.raises(DataContractError, match=r"meta\.jsonl: no column 'brand_name' \(for brand, data\.item_columns\.brand\); the file has \['main_category', "):
        load_items(amazon["meta"], DataConfig(item_columns={"item_id": "parent_asin", "brand": "brand_name"}))


def test_without_the_mapping_the_missing_columns_are_named_with_the_settings_that_would_read_them(amazon):
    with pytest.raises(DataContractError) as refused:
        load_events(amazon["reviews"])
    assert str(refused.value).endswith(
        "(optional: ['value']): rename the keys of its objects, or name the file's columns for them in data.event_columns "
        "(e.g. --set data.event_columns.item_id=<the file's name for it>), or, for event_type, give every row one type with "
        "data.event_type (e.g. --set data.event_type=rating), and re-run.")
    with pytest.raises(DataContractError) as refused:
        load_events(amazon["reviews"], DataConfig(event_columns=AMAZON_EVENT_COLUMNS))
    assert "missing required column(s) ['event_type']" in str(refused.value)
    assert "data.event_columns (e.g. --set data.event_columns.event_type=<the file's name for it>), or, for event_type, give every row " in str(refused.value)


def test_a_constant_event_type_is_refused_when_the_file_has_an_event_type_column(amazon):
    with pytest.raises(DataContractError) as refused:
        load_events(amazon["events"], DataConfig(event_type="rating"))
    assert str(refused.value) == (
        f"{amazon['events']}: has an event_type column (column 'event_type'), and data.event_type = 'rating' would replace it for every row. "
        "Use one of the two: leave data.event_type unset to read the file's column, or drop that column.")


def test_a_contract_named_column_beside_the_column_mapped_to_that_name_is_refused(amazon):
    # events.jsonl has item_id (and asin): reading asin as item_id would leave the reader to guess which is meant.
    with pytest.raises(DataContractError) as refused:
        load_events(amazon["events"], DataConfig(event_columns={"item_id": "asin"}))
    assert str(refused.value) == (
        f"{amazon['events']}: data.event_columns reads the column 'asin' as item_id, but the file has a column 'item_id' too. Keep one: "
        "remove item_id from data.event_columns to read the file's 'item_id', or drop or rename that column, and re-run.")
    # Swapping two columns is no clash: each contract name is read from the column mapped to it.
    (swapped := amazon["items"].with_name("swapped.csv")).write_text("item_id,title,description\nP1,the description,the title\n")
    frame = load_items(swapped, DataConfig(item_columns={"title": "description", "description": "title"}))
    assert frame[c.TITLE].tolist() == ["the title"] and frame[c.DESCRIPTION].tolist() == ["the description"]


def test_a_value_that_is_no_number_is_named_by_the_files_column(tmp_path):
    (tmp_path / "r.csv").write_text("user_id,parent_asin,rating,timestamp\nu1,P1,five,1704067200\n")
    with pytest.raises(DataContractError, match=r"r\.csv: column 'rating' \(value\): 1 row\(s\) not a number — e.g\. 'five' \(row 2\)"):
        load_events(tmp_path / "r.csv", DataConfig(event_columns=AMAZON_EVENT_COLUMNS, event_type="rating"))


@pytest.mark.parametrize(
    "written, unit, expected",
    [
        # auto: milliseconds only when every numeric value is >= 1e11; ISO text is read as it is, in any unit.
        (["1704067200", "1704067201"], "auto", [JAN_1_2024, JAN_1_2024 + 1]),
        (["1704067200123", "1704067201999", "2024-01-01T00:00:00Z"], "auto", [JAN_1_2024, JAN_1_2024 + 1, JAN_1_2024]),
        (["1704067200123", "1704067200"], "auto", [1_704_067_200_123, JAN_1_2024]),  # mixed: seconds; validation names the big one
        (["99999999999", "100000000000"], "auto", [99_999_999_999, 100_000_000_000]),  # one below 1e11: seconds
        # forced: s reads milliseconds as (far-future) seconds, ms reads seconds as 1970 (validation refuses both)
        (["1704067200123"], "s", [1_704_067_200_123]),
        (["1704067200", "1704067200999", "2024-01-01T00:00:00Z"], "ms", [1_704_067, JAN_1_2024, JAN_1_2024]),
        (["-1500"], "ms", [-2]),  # floor, as for seconds: 1.5 s before the epoch is in its second -2
    ],
)
def test_timestamp_units(tmp_path, written, unit, expected):
    (tmp_path / "e.csv").write_text("user_id,item_id,event_type,timestamp\n" + "".join(f"u1,I1,view,{stamp}\n" for stamp in written))
    frame = load_events(tmp_path / "e.csv", DataConfig(timestamp_unit=unit))
    assert frame[c.TIMESTAMP].tolist() == expected
    numbers = [float(stamp) for stamp in written if stamp.lstrip("-").isdigit()]
    read_as = unit if unit != "auto" else "ms" if all(n >= 1e11 for n in numbers) else "s"
    assert frame.attrs["timestamp_unit"] == {"unit": read_as, "setting": unit}


def test_parquet_millisecond_integers_and_datetimes(tmp_path):
    stamps = pd.DataFrame({"user_id": ["u1", "u1"], "item_id": ["I1", "I2"], "event_type": ["view", "view"]})
    stamps.assign(timestamp=np.array([1704067200123, 1704067201000], dtype="int64")).to_parquet(tmp_path / "ms.parquet")
    assert load_events(tmp_path / "ms.parquet")[c.TIMESTAMP].tolist() == [JAN_1_2024, JAN_1_2024 + 1]
    stamps.assign(timestamp=pd.to_datetime(["2024-01-01 00:00:00", "2024-01-01 00:00:01"])).to_parquet(tmp_path / "dt.parquet")
    assert load_events(tmp_path / "dt.parquet", DataConfig(timestamp_unit="ms"))[c.TIMESTAMP].tolist() == [JAN_1_2024, JAN_1_2024 + 1]


def test_a_mapping_that_differs_from_the_recorded_one_is_noted():
    from components.data.config import differs_from_recorded

    recorded = str(AMAZON_ITEM_COLUMNS)  # as MLflow keeps the param data.item_columns
    assert differs_from_recorded("item_columns", recorded, dict(reversed(AMAZON_ITEM_COLUMNS.items()))) is None  # order does not matter
    assert differs_from_recorded("item_columns", None, {}) is None and differs_from_recorded("item_columns", "{}", {}) is None
    note = differs_from_recorded("item_columns", recorded, {"item_id": "parent_asin"})
    assert note.startswith("data.item_columns is {'item_id': 'parent_asin'} here, but the source version's catalog was read with "
                           "{'item_id': 'parent_asin', 'category': 'categories', 'brand': 'store'}: ")
    assert differs_from_recorded("item_columns", "{}", {"item_id": "parent_asin"}).startswith("data.item_columns is {'item_id': 'parent_asin'} here, but the source version's catalog was read with {}")

"""The Great Expectations suites in expectations/, run for real on the sample and on broken copies of it."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from components import contract as c
from components import settings
from components.data import Dataset, load_dataset, write_sample
from components.errors import ValidationFailed
from components.validation import ValidationReport, raise_for_failures, validate

ROOT = Path(__file__).resolve().parents[1]
DUPLICATE_LINE = 4  # items.csv line whose item_id the broken catalog repeats at its end


def run(dataset: Dataset, gx_root: Path) -> ValidationReport:
    return validate(
        dataset.events,
        dataset.items,
        events_source=dataset.events_source,
        items_source=dataset.items_source,
        gx_root=gx_root,
    )


def failure(report: ValidationReport, expectation: str, column: str) -> dict:
    found = [f for f in report.failures if f["expectation"] == expectation and f["column"] == column]
    assert len(found) == 1, [f["message"] for f in report.failures]
    return found[0]


@pytest.fixture(scope="module")
def gx_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gx")  # one GE project for the module: every run re-uses it


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Dataset:
    out = tmp_path_factory.mktemp("sample")
    write_sample(out)
    return load_dataset(out / "events.csv", out / "items.csv")


@pytest.fixture(scope="module")
def sample_report(sample, gx_root) -> ValidationReport:
    return run(sample, gx_root)


@pytest.fixture(scope="module")
def broken(tmp_path_factory, sample) -> Dataset:
    """The sample with known faults at known lines, written as CSV and read back by the real readers."""
    out = tmp_path_factory.mktemp("broken")
    events = Path(sample.events_source).read_text().splitlines()
    items = Path(sample.items_source).read_text().splitlines()

    def set_field(line: int, column: str, value: str) -> None:
        fields = events[line - 1].split(",")  # the sample's events have no quoted fields
        fields[events[0].split(",").index(column)] = value
        events[line - 1] = ",".join(fields)

    set_field(17, c.EVENT_TYPE, "viewd")
    set_field(40, c.EVENT_TYPE, " PURCHASED")  # normalised to "purchased": still unknown
    set_field(25, c.TIMESTAMP, "yesterday")  # unparseable → NA → the not-null expectation
    set_field(33, c.ITEM_ID, "P9999")  # not in the catalog
    items.append(" P9002,An id with a space before it,hiking boots,Alpenrock,")  # line SPACED_LINE
    repeated_id = items[DUPLICATE_LINE - 1].split(",")[0]
    items.append(f"{repeated_id},Same id as line {DUPLICATE_LINE},hiking boots,Alpenrock,")
    items.append("P9000,,hiking boots,Alpenrock,")  # no title, but a category and brand: fine
    items.append("P9001,   ,,,A light tent.")  # a blank one, but a description: fine
    items.append("P9003,,,,")  # no text at all: refused
    items.append('P9004,<br>,,"&nbsp;",[]')  # only markup, an entity for a space and an empty list: no text either
    (out / "events.csv").write_text("\n".join(events) + "\n")
    (out / "items.csv").write_text("\n".join(items) + "\n")
    return load_dataset(out / "events.csv", out / "items.csv")


@pytest.fixture(scope="module")
def broken_report(broken, gx_root, sample_report) -> ValidationReport:
    return run(broken, gx_root)  # after sample_report: a second run in the same GE project


def test_sample_passes(sample, sample_report):
    assert sample_report.success, [f["message"] for f in sample_report.failures]
    assert sample_report.failures == []
    assert sample_report.statistics["events"]["rows"] == len(sample.events)
    assert sample_report.statistics["items"] == {
        "source": sample.items_source, "rows": len(sample.items), "expectations": 6, "failed": 0
    }
    assert sample_report.statistics["events"]["expectations"] == 10
    raise_for_failures(sample_report)  # no-op on success


def test_data_docs_are_written(sample_report, gx_root):
    assert sample_report.data_docs.name == "index.html"
    assert sample_report.data_docs.is_file()
    assert sample_report.data_docs.is_relative_to(gx_root)
    assert "events" in sample_report.data_docs.read_text()


def test_report_is_json_serialisable(broken_report):
    restored = json.loads(json.dumps(broken_report.to_dict()))
    assert restored["success"] is False
    assert restored["data_docs"] == str(broken_report.data_docs)
    assert len(restored["failures"]) == len(broken_report.failures)


def test_unknown_event_types(broken_report):
    found = failure(broken_report, "expect_column_values_to_be_in_set", c.EVENT_TYPE)
    assert found["unexpected_count"] == 2
    assert found["rows"] == [17, 40]
    assert found["examples"] == ["viewd", "purchased"]


def test_unparseable_timestamp_is_reported_by_its_row(broken_report):
    found = failure(broken_report, "expect_column_values_to_not_be_null", c.TIMESTAMP)
    assert (found["unexpected_count"], found["rows"]) == (1, [25])
    assert "empty or unparseable" in found["message"] and "row 25" in found["message"]
    # What the file held there is quoted (the reader made it a null), with the forms a timestamp may take.
    assert "Unreadable: 'yesterday' (row 25). A timestamp is epoch seconds (1704103200) or ISO-8601" in found["message"]


def test_event_for_an_item_missing_from_the_catalog(broken_report):
    found = failure(broken_report, "expect_column_values_to_be_in_set", c.ITEM_ID)
    assert (found["unexpected_count"], found["rows"], found["examples"]) == (1, [33], ["P9999"])
    assert "missing from the catalog" in found["message"]


def test_duplicate_item_id(broken, broken_report):
    last_line = int(broken.items[c.ROW].max())
    duplicate = failure(broken_report, "expect_column_values_to_be_unique", c.ITEM_ID)
    assert (duplicate["suite"], duplicate["unexpected_count"]) == ("items", 2)
    assert duplicate["rows"] == [DUPLICATE_LINE, last_line - 4]


def test_an_item_without_a_title_needs_other_text(broken, broken_report):
    """A missing or blank title is fine when the category, brand or description has text (product dumps have such
    items); an item with no text at all, once cleaned of markup, is refused by id and row."""
    last_line = int(broken.items[c.ROW].max())
    assert not [f for f in broken_report.failures if f["column"] == c.TITLE]
    textless = failure(broken_report, "expect_column_values_to_be_in_set", c.HAS_TEXT)
    assert (textless["suite"], textless["unexpected_count"]) == ("items", 2)
    assert (textless["rows"], textless["examples"]) == ([last_line - 1, last_line], ["P9003", "P9004"])
    assert textless["message"] == (
        f"{broken.items_source}: 2 items with no text: title, category, brand and description all empty, blank or only markup "
        f"(the language model would read nothing) — 'P9003' (row {last_line - 1}), 'P9004' (row {last_line}). "
        f"Give each a title or a description, or remove these rows, and re-run."
    )


def test_an_untitled_item_with_a_description_passes_and_reads_its_other_fields(tmp_path):
    from components.preparation.prepare import item_texts

    items = pd.DataFrame({c.ITEM_ID: ["a", "b", "c"], c.TITLE: ["Tent", "", None], c.CATEGORY: ["Camping", "Camping", ""],
                          c.DESCRIPTION: ["", "A light tent.", "<p>Two-person dome.</p>"]})
    report = validate(None, items, events_source="", items_source="i.csv", gx_root=tmp_path / "gx")
    assert report.success, [f["message"] for f in report.failures]
    assert item_texts(items) == ["Tent. Camping", "Camping. A light tent.", "Two-person dome."]
    assert report.statistics["items"]["expectations"] == 6


def test_an_item_with_only_markup_is_refused_when_built_in_code(tmp_path):
    items = pd.DataFrame({c.ITEM_ID: ["a", "b"], c.TITLE: ["Tent", "<br>"]})
    report = validate(None, items, events_source="", items_source="i.csv", gx_root=tmp_path / "gx")
    (found,) = report.failures
    assert found["message"] == (
        "i.csv: 1 item with no text: title, category, brand and description all empty, blank or only markup "
        "(the language model would read nothing) — 'b' (row 2). Give each a title or a description, or remove these rows, and re-run."
    )
    with pytest.raises(ValidationFailed, match="'b' \\(row 2\\)"):
        raise_for_failures(report)


def test_an_item_id_with_spaces_is_refused(broken, broken_report):
    spaced = failure(broken_report, "expect_column_values_to_match_regex", c.ITEM_ID)
    line = int(broken.items[c.ROW].max()) - 5
    assert (spaced["rows"], spaced["examples"]) == ([line], [" P9002"])
    assert spaced["message"] == (f"{broken.items_source}: column 'item_id': 1 row with spaces in or around the id (histories separate item ids "
                                 f"by spaces) — e.g. ' P9002' (row {line}). Fix or remove these rows and re-run.")


def test_a_user_id_with_whitespace_is_refused(tmp_path, sample, gx_root):
    """As an item id: ' u1' beside 'u1' would silently be two users, and a tab inside a user id breaks
    predict's user_id<TAB>item ids lines."""
    events = pd.read_csv(sample.events_source, dtype=str, keep_default_na=False)
    events.loc[3, c.USER_ID] = " " + events.loc[3, c.USER_ID]  # data row 3 = line 5
    events.loc[7, c.USER_ID] += "\tx"
    events.loc[11, c.USER_ID] = "u 4"
    events.to_csv(tmp_path / "events.csv", index=False)
    dataset = load_dataset(tmp_path / "events.csv", sample.items_source)
    report = run(dataset, gx_root)
    spaced = failure(report, "expect_column_values_to_match_regex", c.USER_ID)
    shown = ", ".join(f"{events.loc[i, c.USER_ID]!r} (row {i + 2})" for i in (3, 7, 11))
    assert spaced["message"] == (f"{dataset.events_source}: column 'user_id': 3 rows with spaces in or around the id (' u1' would be a second "
                                 f"user beside 'u1', and predict's lines are user_id<TAB>item ids) — e.g. {shown}. Fix or remove these rows and re-run.")
    assert [f["column"] for f in report.failures] == [c.USER_ID]


def test_an_id_ending_in_a_line_break_is_refused(tmp_path, sample, gx_root):
    """'P0001\\n' beside 'P0001' would be a second item (and '00175\\n' a second user): a quoted CSV field or a
    parquet string can end in a line break, which the regex's $ used to let through."""
    events = pd.read_csv(sample.events_source, dtype=str, keep_default_na=False).drop(columns=[c.VALUE])  # '' is no number
    items = pd.read_csv(sample.items_source, dtype=str, keep_default_na=False)
    events.loc[3, c.USER_ID] += "\n"
    items = pd.concat([items, items.iloc[[0]].assign(**{c.ITEM_ID: items.loc[0, c.ITEM_ID] + "\n"})], ignore_index=True)
    events.to_parquet(tmp_path / "events.parquet")  # parquet rows are numbered from 1
    items.to_parquet(tmp_path / "items.parquet")
    report = run(load_dataset(tmp_path / "events.parquet", tmp_path / "items.parquet"), gx_root)
    for column, value, row in ((c.USER_ID, events.loc[3, c.USER_ID], 4), (c.ITEM_ID, items[c.ITEM_ID].iloc[-1], len(items))):
        message = failure(report, "expect_column_values_to_match_regex", column)["message"]
        assert "1 row with spaces in or around the id" in message and f"e.g. {value!r} (row {row})" in message


def test_rows_are_line_numbers_in_csv_and_json_lines_alike(tmp_path, sample, gx_root):
    """'row 7' means line 7 of the file the user opens, whatever its format: in CSV that is the 6th event (the
    header is line 1), in JSON Lines the 7th object; compressed files are numbered as their text."""
    events = pd.read_csv(sample.events_source, dtype={c.USER_ID: "str", c.ITEM_ID: "str"})
    as_csv, as_json = events.copy(), events.copy()
    as_csv.loc[5, c.EVENT_TYPE] = "viewd"  # 6th event = line 7 under the header
    as_json.loc[6, c.EVENT_TYPE] = "viewd"  # 7th object = line 7
    (tmp_path / "events.csv.gz").write_bytes(gzip.compress(as_csv.to_csv(index=False).encode()))
    (tmp_path / "events.jsonl.gz").write_bytes(gzip.compress(as_json.to_json(orient="records", lines=True).encode()))
    for name in ("events.csv.gz", "events.jsonl.gz"):
        dataset = load_dataset(tmp_path / name, sample.items_source)
        report = run(dataset, gx_root)
        assert [f["column"] for f in report.failures] == [c.EVENT_TYPE], name
        found = failure(report, "expect_column_values_to_be_in_set", c.EVENT_TYPE)
        assert found["rows"] == [7] and found["examples"] == ["viewd"], name
        assert found["message"].startswith(f"{tmp_path / name}: column 'event_type': 1 row not in the allowed set") and "'viewd' (row 7)" in found["message"]


def test_nothing_else_fails(broken_report):
    assert len(broken_report.failures) == 6
    assert broken_report.statistics["events"]["failed"] == 3
    assert broken_report.statistics["items"]["failed"] == 3  # a spaced id, a duplicated id, items with no text


def test_error_message_names_file_column_rows_and_data_docs(broken, broken_report):
    with pytest.raises(ValidationFailed) as error:
        raise_for_failures(broken_report)
    lines = str(error.value).splitlines()
    assert lines[0] == "Data validation failed: 6 expectation(s) not met."
    assert (
        f"{broken.events_source}: column 'event_type': 2 rows not in the allowed set "
        f"['view', 'click', 'cart', 'purchase', 'rating'] — e.g. 'viewd' (row 17), 'purchased' (row 40). "
        f"Fix or remove these rows and re-run."
    ) in lines
    assert any(line.startswith(f"{broken.items_source}: column 'item_id': 2 rows") for line in lines)
    assert lines[-1] == f"Data Docs: {broken_report.data_docs}"
    assert error.value.report == broken_report.to_dict()


def test_any_number_in_the_optional_value_column_passes(sample):
    # The model never reads `value`: a price in won (1,290,000) or a refund (-15.5) must not stop a retrain.
    # Before, an expectation held it to [0, 1,000,000] and its message said to fix or remove those events.
    events = sample.events.copy()
    events.loc[events.index[:2], c.VALUE] = [1_290_000.0, -15.5]
    report = validate(events, sample.items, events_source="e.csv", items_source="i.csv")
    assert report.success, [f["message"] for f in report.failures]


def test_optional_value_column_may_be_absent_and_gx_root_defaults_to_settings(sample):
    events = sample.events.drop(columns=c.VALUE)
    report = validate(events, sample.items, events_source="e.csv", items_source="i.csv")
    assert report.success and report.statistics["events"]["expectations"] == 10
    assert report.data_docs.is_relative_to(settings.gx_root())


def test_missing_required_column_and_frames_without_row_numbers(sample, gx_root):
    events = sample.events.drop(columns=[c.TIMESTAMP, c.ROW])
    report = validate(events, sample.items, events_source="e.csv", items_source="i.csv", gx_root=gx_root)
    (found,) = report.failures
    assert found["expectation"] == "expect_table_columns_to_match_set"
    assert found["message"] == (
        "e.csv: missing required column(s) ['timestamp']; "
        "found ['event_type', 'item_id', 'user_id', 'value']. Fix the file and re-run."
    )


def test_rerun_in_the_same_project_keeps_one_copy_of_each_suite(sample, gx_root, broken_report):
    assert run(sample, gx_root).success  # after several runs in this project, with other data
    assert sorted(p.name for p in (gx_root / "expectations").glob("*.json")) == ["events.json", "items.json"]
    assert sorted(p.name for p in (gx_root / "checkpoints").glob("*.json")) == ["events.json", "items.json"]


def test_suite_files_are_documented():
    for name in ("events", "items"):
        suite = json.loads((ROOT / "expectations" / f"{name}.json").read_text())
        assert suite["name"] == name and suite["meta"]["notes"]
        assert all(e["meta"]["notes"] for e in suite["expectations"])


def test_importing_the_package_does_not_import_great_expectations():
    code = "import sys, components.validation; print('great_expectations' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


def test_item_ids_that_lost_their_leading_zeros_are_explained(tmp_path):
    # The catalog keeps "000123" as text; the events went through a spreadsheet or an integer column.
    items = pd.DataFrame({c.ITEM_ID: ["000123", "000124", "000125"], c.TITLE: ["A", "B", "C"]})
    events = pd.DataFrame({
        c.USER_ID: ["u1", "u1", "u1", "u1"], c.ITEM_ID: ["123", "124.0", "zz", "000125"],
        c.EVENT_TYPE: ["view"] * 4, c.TIMESTAMP: pd.array([1_700_000_000 + i for i in range(4)], dtype="Int64"),
    })
    report = validate(events, items, events_source="e.csv", items_source="i.csv", gx_root=tmp_path / "gx")
    (failure,) = report.failures
    assert failure["message"] == (
        "e.csv: column 'item_id': 3 rows with an item_id missing from the catalog (i.csv) — e.g. '123' (row 1), '124.0' (row 2), "
        "'zz' (row 3). 2 of these 3 unknown id(s) equal a catalog id once leading zeros and a trailing '.0' are ignored "
        "(events ~ i.csv: '123' ~ '000123', '124.0' ~ '000124'): one of the two files lost its ids' leading zeros or turned "
        "them into numbers (a spreadsheet, an integer or float column). Write the ids as text, the same in both files, and re-run."
    )
    # Ids that are simply unknown keep the plain message.
    report = validate(events.iloc[2:], items, events_source="e.csv", items_source="i.csv", gx_root=tmp_path / "gx")
    assert report.failures[0]["message"].endswith("e.g. 'zz' (row 1). Fix or remove these rows and re-run.")  # rows of a frame built in code count from 1


def test_failures_on_mapped_columns_name_the_files_column_and_timestamps_point_at_timestamp_unit(tmp_path, gx_root):
    """A dump read through data.event_columns / item_columns: a message names the column the user finds in the file,
    "column 'parent_asin' (item_id)"; timestamps read in the wrong unit point at data.timestamp_unit."""
    from components.data import DataConfig, generate_sample
    from components.data.sample import SampleConfig
    from tests.helpers import AMAZON_EVENT_COLUMNS, AMAZON_ITEM_COLUMNS, write_amazon_like

    paths = write_amazon_like(*generate_sample(SampleConfig(n_users=40, series_per_category=1)), tmp_path)
    reading = DataConfig(event_columns=AMAZON_EVENT_COLUMNS, item_columns=AMAZON_ITEM_COLUMNS, event_type="rating")
    passed = run(load_dataset(paths["reviews"], paths["meta"], data=reading), gx_root)
    assert passed.success, [f["message"] for f in passed.failures]
    assert passed.statistics["events"]["timestamp_unit"] == "ms (detected: every numeric value >= 1e11)"
    assert passed.statistics["events"]["columns"] == AMAZON_EVENT_COLUMNS and passed.statistics["items"]["columns"] == AMAZON_ITEM_COLUMNS

    meta = paths["meta"].read_text().splitlines()
    meta.append(meta[0])  # a second object with the first one's parent_asin, on the last line
    paths["meta"].write_text("\n".join(meta) + "\n")
    forced = run(load_dataset(paths["reviews"], paths["meta"], data=replace(reading, timestamp_unit="s")), gx_root)
    duplicate = failure(forced, "expect_column_values_to_be_unique", c.ITEM_ID)
    first = json.loads(meta[0])["parent_asin"]
    assert duplicate["message"] == (f"{paths['meta']}: column 'parent_asin' (item_id): 2 rows with a duplicated value (must be unique) — "
                                    f"e.g. {first!r} (row 1), {first!r} (row {len(meta)}). Fix or remove these rows and re-run.")
    stamps = failure(forced, "expect_column_values_to_be_between", c.TIMESTAMP)["message"]
    assert stamps.startswith(f"{paths['reviews']}: column 'timestamp': ")
    assert " rows outside [631152000, 4102444800] epoch seconds (1990-01-01 to 2100-01-01; milliseconds? set data.timestamp_unit: ms) — e.g. " in stamps
    assert "timestamp_unit" not in forced.statistics["events"]  # read as seconds, as the contract says

    seconds = run(load_dataset(paths["events"], paths["items"], data=DataConfig(timestamp_unit="ms")), gx_root)
    assert "epoch seconds (1990-01-01 to 2100-01-01) once read as epoch milliseconds (seconds? set data.timestamp_unit: s) — e.g. " in (
        failure(seconds, "expect_column_values_to_be_between", c.TIMESTAMP)["message"])
    assert seconds.statistics["events"]["timestamp_unit"] == "ms (data.timestamp_unit)"


def large_catalog(n: int = 3000) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A catalog of n items and events on it of which rows 2, 5 and the last two (counted from 1) name unknown items."""
    ids = [f"{i:06d}" for i in range(n)]
    items = pd.DataFrame({c.ITEM_ID: ids, c.TITLE: [f"item {i}" for i in range(n)]})
    event_items = ids[::7] + ["1", "zz"]
    event_items[1], event_items[4] = event_items[-2], event_items[-1]
    events = pd.DataFrame({
        c.USER_ID: ["u1"] * len(event_items), c.ITEM_ID: event_items, c.EVENT_TYPE: ["view"] * len(event_items),
        c.TIMESTAMP: pd.array([1_700_000_000 + i for i in range(len(event_items))], dtype="Int64"),
    })
    return events, items


def test_a_large_catalog_check_reports_what_ges_own_expectation_reports(tmp_path, monkeypatch):
    # The catalog check runs as ExpectColumnValuesToBeInLargeSet; GE's ExpectColumnValuesToBeInSet (the suite file's
    # type, run as it is) must find the same rows and the message the same words.
    from components.validation import validator

    events, items = large_catalog()
    report = validate(events, items, events_source="e.csv", items_source="i.csv", gx_root=tmp_path / "large")
    monkeypatch.setattr(validator, "_as_run", lambda raw_suite: raw_suite)
    as_ge = validate(events, items, events_source="e.csv", items_source="i.csv", gx_root=tmp_path / "ge")
    assert report.failures == as_ge.failures
    found = failure(report, "expect_column_values_to_be_in_set", c.ITEM_ID)
    assert (found["unexpected_count"], found["rows"], found["examples"]) == (4, [2, 5, 430, 431], ["1", "zz", "1", "zz"])
    assert found["message"].startswith("e.csv: column 'item_id': 4 rows with an item_id missing from the catalog (i.csv) — e.g. '1' (row 2)")
    assert "1 of these 2 unknown id(s) equal a catalog id once leading zeros" in found["message"]  # '1' ~ '000001'


def test_the_large_set_expectation_gives_ges_configuration():
    import great_expectations.expectations as gxe

    from components.validation.large_set import ExpectColumnValuesToBeInLargeSet

    kwargs = {"column": c.ITEM_ID, "value_set": [f"P{i}" for i in range(500)] + [None, 3, 2.5, True], "mostly": 0.5,
              "meta": {"notes": "n"}, "row_condition": None}
    ours, ges = ExpectColumnValuesToBeInLargeSet(**kwargs), gxe.ExpectColumnValuesToBeInSet(**kwargs)
    for how in ({}, {"exclude_defaults": True}, {"exclude_none": True}, {"exclude": {"meta"}}, {"include": {"value_set"}}):
        mine, theirs = ours.dict(**how), ges.dict(**how)
        assert mine == theirs and list(mine) == list(theirs), how
    assert ours.dict()["value_set"] is not ours.value_set  # a copy, as pydantic's
    assert ours.configuration.kwargs == ges.configuration.kwargs
    assert ours.configuration.type == "expect_column_values_to_be_in_large_set"


def test_data_docs_render_this_runs_pages_not_every_earlier_runs(sample, tmp_path):
    # Each run's pages hold its value sets (a large catalog: 5.5 MB for the events page at 100,000 items); a
    # re-run rendered every earlier run's page again.
    gx = tmp_path / "gx"
    first = run(sample, gx)
    pages = sorted((gx / "uncommitted" / "data_docs" / "local_site" / "validations").rglob("*.html"))
    assert len(pages) == 2
    written = {page: page.stat().st_mtime_ns for page in pages}
    second = run(sample, gx)
    assert {page: page.stat().st_mtime_ns for page in pages} == written
    now = sorted((gx / "uncommitted" / "data_docs" / "local_site" / "validations").rglob("*.html"))
    assert len(now) == 4
    index = second.data_docs.read_text()
    assert first.data_docs == second.data_docs and all(page.parent.name in index for page in now)  # the index links every run


def test_timestamps_reach_ge_as_numpy_numbers_and_fail_on_the_same_rows(tmp_path):
    # GE compares a numpy column at once, a nullable Int64 one value by value in Python; nulls stay nulls.
    from components.validation.validator import _numpy_timestamps

    stamps = pd.array([1_700_000_000, None, 1_700_000_000_000, 5], dtype="Int64")
    events = pd.DataFrame({c.USER_ID: ["u1"] * 4, c.ITEM_ID: ["A"] * 4, c.EVENT_TYPE: ["view"] * 4, c.TIMESTAMP: stamps})
    assert str(_numpy_timestamps(events)[c.TIMESTAMP].dtype) == "float64"
    assert str(_numpy_timestamps(events.iloc[[0, 2]])[c.TIMESTAMP].dtype) == "int64"
    assert _numpy_timestamps(events)[c.TIMESTAMP].isna().tolist() == [False, True, False, False]
    items = pd.DataFrame({c.ITEM_ID: ["A"], c.TITLE: ["a"]})
    report = validate(events, items, events_source="e.csv", items_source="i.csv", gx_root=tmp_path / "gx")
    between = failure(report, "expect_column_values_to_be_between", c.TIMESTAMP)
    assert (between["rows"], between["examples"]) == ([3, 4], [1_700_000_000_000, 5])
    assert "e.g. 1700000000000 (row 3), 5 (row 4)" in between["message"] and all(type(x) is int for x in between["examples"])
    assert failure(report, "expect_column_values_to_not_be_null", c.TIMESTAMP)["rows"] == [2]


def test_the_ge_project_keeps_the_newest_runs_of_each_suite_and_the_index_lists_only_them(sample, tmp_path, monkeypatch):
    # A scheduled retrain validates every time: each run's stored result and page stayed for ever (8 MB a run at
    # 100,000 items), and the Data Docs index read them all. BEHAVIORFLOW_GX_KEEP_RUNS keeps the newest.
    from components.errors import BehaviorflowError
    from components.validation.validator import KEEP_RUNS_DEFAULT, KEEP_RUNS_ENV, keep_runs

    gx = tmp_path / "gx"
    monkeypatch.setenv(KEEP_RUNS_ENV, "2")
    reports = [run(sample, gx)]
    first = [p.name for p in (gx / "uncommitted" / "validations" / "events").glob("*/*")]
    reports += [run(sample, gx) for _ in range(2)]
    stored = sorted(p.name for p in (gx / "uncommitted" / "validations" / "events").glob("*/*"))
    pages = sorted(p.parent.name for p in (gx / "uncommitted" / "data_docs" / "local_site" / "validations" / "events").rglob("*.html"))
    assert len(stored) == 2 and pages == stored  # the first run's result and page are gone, for both suites
    assert len(list((gx / "uncommitted" / "validations" / "items").glob("*/*"))) == 2
    index = reports[-1].data_docs.read_text()
    assert all(name in index for name in stored) and len(first) == 1 and first[0] not in stored and first[0] not in index
    monkeypatch.setenv(KEEP_RUNS_ENV, "0")  # keep all
    run(sample, gx)
    assert len(list((gx / "uncommitted" / "validations" / "events").glob("*/*"))) == 3
    monkeypatch.setenv(KEEP_RUNS_ENV, "ten")
    with pytest.raises(BehaviorflowError, match="BEHAVIORFLOW_GX_KEEP_RUNS='ten': expected a whole number of validation runs to keep"):
        keep_runs()
    monkeypatch.delenv(KEEP_RUNS_ENV)
    assert keep_runs() == KEEP_RUNS_DEFAULT == 30

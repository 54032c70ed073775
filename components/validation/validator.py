"""Validate events and items with the Great Expectations suites in `expectations/`, before anything trains.

The suites are plain JSON files a reviewer reads in the repository; contract facts (event types,
timestamp range) and the catalog's item ids reach them as suite parameters at run time, so each fact
keeps one owner. Every run writes Data Docs into the GE project folder (`settings.gx_root()`), and every
failing expectation is reported with the file, column, offending values and their rows (`_row`). The items suite
also checks `_text`, a column the validator adds: whether the item has any text the language model reads. An
expect_column_values_to_be_in_set whose value set is a run-time parameter (the catalog, the event types) runs as
GE's same expectation with a faster copy of its configuration (large_set.py); failures name the suite file's type.

great_expectations takes several seconds to import, so it is imported inside the functions that use it.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import numpy as np
import pandas as pd

from components import contract as c
from components import settings
from components.errors import BehaviorflowError, ValidationFailed

EXPECTATIONS_DIR = Path(__file__).resolve().parents[2] / "expectations"
DATASOURCE = "behaviorflow"
MAX_EXAMPLES = 10  # failing values/rows kept per expectation (the message quotes the first few)
_QUOTED = 3  # values quoted in a message line
_QUOTED_ROWS = 6  # row numbers quoted when the values themselves are empty

_RESULT_FORMAT = {
    "result_format": "SUMMARY",
    "partial_unexpected_count": MAX_EXAMPLES,
    "unexpected_index_column_names": [c.ROW],  # report failing rows by their line in the source file
}


@dataclass
class ValidationReport:
    """What the suites found; `to_dict()` is what gets logged to MLflow."""

    success: bool
    failures: list[dict]  # per failing expectation: suite, source, expectation, column, count, rows, message
    data_docs: Path  # the Data Docs index.html of this GE project
    statistics: dict[str, dict]  # per suite: source, rows checked, expectations evaluated / failed

    def to_dict(self) -> dict:
        return {**asdict(self), "data_docs": str(self.data_docs)}


def validate(
    dataset_events: pd.DataFrame | None,
    dataset_items: pd.DataFrame,
    *,
    events_source: str,
    items_source: str,
    gx_root: Path | None = None,
    item_texts: list[str] | None = None,
) -> ValidationReport:
    """Run the `items` and `events` suites on the two frames and build Data Docs (pass or fail).
    dataset_events None: the items suite alone (items added to a trained model's catalog). item_texts: the
    items' texts as prepare.item_texts gives them, one per row, where the caller has them (Dataset.item_texts):
    not cleaned again."""
    context = _context(Path(gx_root) if gx_root is not None else settings.gx_root())
    # Re-created on every run: assets left from an earlier run would point at stale batch definitions.
    datasource = context.data_sources.add_or_update_pandas(DATASOURCE)
    catalog = dataset_items[c.ITEM_ID].dropna().unique().tolist() if c.ITEM_ID in dataset_items else []
    parameters = {
        "event_types": list(c.EVENT_TYPES),
        "min_timestamp": c.MIN_TIMESTAMP,
        "max_timestamp": c.MAX_TIMESTAMP,
        "catalog_item_ids": sorted(catalog),
    }
    failures, statistics, pages = [], {}, []
    tables = (("items", dataset_items, items_source), ("events", dataset_events, events_source))
    for name, frame, source in (t for t in tables if t[1] is not None):
        if c.ROW not in frame:  # a frame built in code: number its rows 1..n
            frame = frame.assign(**{c.ROW: np.arange(1, len(frame) + 1)})
        if name == "items":
            frame = _with_text_flag(frame, item_texts)
            dataset_items = frame
        else:
            frame = _numpy_timestamps(frame)
        found, evaluated, results = _run_suite(context, datasource, name, frame, parameters, source, items_source)
        failures += found
        pages += results
        statistics[name] = {
            "source": source, "rows": len(frame), "expectations": evaluated, "failed": len(found)
        } | _reading(frame)
    prune_old_runs(context, keep_runs())  # before the index is built: it lists the stored runs
    context.build_data_docs(resource_identifiers=pages)  # this run's pages (and the index), not every earlier run's
    _name_textless_items(failures, dataset_items, items_source)
    if dataset_events is not None:
        _explain_unknown_items(failures, dataset_events, catalog, items_source)
        _quote_unreadable_timestamps(failures, dataset_events)
    return ValidationReport(not failures, failures, _docs_index(context), statistics)


def _with_text_flag(items: pd.DataFrame, texts: list[str] | None = None) -> pd.DataFrame:
    """`items` with the items suite's derived column `_text` (c.HAS_TEXT): whether the item has text the language
    model reads — prepare.item_texts of its row is not empty, i.e. its title, category, brand or description is
    not empty or blank once cleaned of markup (a title of only '<br>', a description '[]' is no text). The
    same function the model's input is built with, so the suite and the model agree on what "no text" is."""
    from components.preparation.prepare import texts_per_row

    return items.assign(**{c.HAS_TEXT: [bool(text) for text in texts_per_row(items, texts)]})


def _numpy_timestamps(events: pd.DataFrame) -> pd.DataFrame:
    """`events` with nullable integer timestamps (the readers' Int64) as numpy int64, or float64 where some are
    missing (exact for epoch seconds and milliseconds; NaN is null to GE): GE's between check compares a numpy column
    at once but calls a Python function per value of a nullable one (1.1 s at 1.26M events). Same rows pass and fail."""
    column = events.get(c.TIMESTAMP)
    if column is None or not (pd.api.types.is_extension_array_dtype(column) and pd.api.types.is_integer_dtype(column)):
        return events
    return events.assign(**{c.TIMESTAMP: column.astype("float64" if column.hasnans else "int64")})


_NO_TEXT_FIX = "Give each a title or a description, or remove these rows, and re-run."


def _name_textless_items(failures: list[dict], items: pd.DataFrame, items_source: str) -> None:
    """The `_text` failure names the items without text by id and row (the suite alone has only their rows)."""
    failure = next((f for f in failures if f["suite"] == "items" and f["column"] == c.HAS_TEXT), None)
    if failure is None or c.HAS_TEXT not in items:
        return
    textless = items.loc[~items[c.HAS_TEXT].astype(bool)]
    ids = [_plain(item) for item in textless[c.ITEM_ID]] if c.ITEM_ID in textless else [None] * len(textless)
    rows = [int(row) for row in textless[c.ROW]]
    shown = ", ".join(f"{item!r} (row {row})" for item, row in list(zip(ids, rows))[:_QUOTED_ROWS])
    more = ", …" if len(rows) > _QUOTED_ROWS else ""
    problem = _problem("expect_column_values_to_be_in_set", {"column": c.HAS_TEXT}, {}, {"unexpected_count": len(rows)}, items_source)
    failure.update(
        unexpected_count=len(rows), examples=ids[:MAX_EXAMPLES], rows=rows[:MAX_EXAMPLES],
        message=f"{items_source}: {problem} — {shown}{more}. {_NO_TEXT_FIX}",
    )


def _reading(frame: pd.DataFrame) -> dict:
    """How the reader read the file, where it was not as the contract names it: the file's column names, the
    unit of numeric timestamps when they were milliseconds (recorded with the run's validation statistics)."""
    from components.data.readers import SOURCE_COLUMNS, TIMESTAMP_UNIT

    reading = {}
    if frame.attrs.get(SOURCE_COLUMNS):
        reading["columns"] = dict(frame.attrs[SOURCE_COLUMNS])
    unit = frame.attrs.get(TIMESTAMP_UNIT) or {}
    if unit.get("unit") == "ms":
        how = "detected: every numeric value >= 1e11" if unit.get("setting") == "auto" else "data.timestamp_unit"
        reading["timestamp_unit"] = f"ms ({how})"
    return reading


def _id_key(item_id: str) -> str:
    """An id as a spreadsheet or an integer column may have rewritten it: no leading zeros, no trailing '.0'."""
    key = item_id[:-2] if item_id.endswith(".0") else item_id
    return key.lstrip("0") or "0"


_ROWS_FIX = "Fix or remove these rows and re-run."  # how a failure that names rows ends (see _failure)


def _events_failure(failures: list[dict], column: str, expectation: str) -> dict | None:
    """The events suite's failure of `expectation` on `column`, if it failed."""
    return next((f for f in failures if f["suite"] == "events" and f["column"] == column and f["expectation"] == expectation), None)


def _without_fix(message: str) -> str:
    """A failure's message without its closing advice, for a caller that knows better advice to give."""
    return message.rsplit(f" {_ROWS_FIX}", 1)[0]


def _quote_unreadable_timestamps(failures: list[dict], events: pd.DataFrame) -> None:
    """The timestamp failure quotes what the file held in the rows the reader could not read (it made them
    nulls: the suite alone could only give their row numbers)."""
    from components.data.readers import UNREADABLE_TIMESTAMPS

    raw = events.attrs.get(UNREADABLE_TIMESTAMPS) or {}
    failure = _events_failure(failures, c.TIMESTAMP, "expect_column_values_to_not_be_null")
    if failure is None or not raw:
        return
    quoted = ", ".join(f"{text!r} (row {row})" for row, text in list(raw.items())[:_QUOTED])
    failure["message"] = _without_fix(failure["message"]) + (
        f" Unreadable: {quoted}. A timestamp is epoch seconds (1704103200) or ISO-8601 (2024-01-01T10:00:00Z, "
        f"2024-01-01 10:00:00, 2024-01-01); fix or remove these rows and re-run."
    )


def _explain_unknown_items(failures: list[dict], events: pd.DataFrame, catalog: list, items_source: str) -> None:
    """When events' item ids miss the catalog only by leading zeros or a '.0' (one file went through a
    spreadsheet or an integer column, the other did not), say so in the catalog failure's message."""
    failure = _events_failure(failures, c.ITEM_ID, "expect_column_values_to_be_in_set")
    if failure is None or c.ITEM_ID not in events:
        return
    known = set(catalog)
    unknown = [item for item in events[c.ITEM_ID].dropna().unique().tolist() if item not in known]
    by_key: dict[str, str] = {}
    for item in catalog:
        by_key.setdefault(_id_key(str(item)), str(item))
    matched = [(item, by_key[_id_key(str(item))]) for item in unknown if _id_key(str(item)) in by_key]
    if not matched:
        return
    shown = ", ".join(f"{event_id!r} ~ {catalog_id!r}" for event_id, catalog_id in matched[:_QUOTED])
    failure["message"] = _without_fix(failure["message"]) + (
        f" {len(matched)} of these {len(unknown)} unknown id(s) equal a catalog id once leading zeros and a trailing "
        f"'.0' are ignored (events ~ {items_source}: {shown}): one of the two files lost its ids' leading zeros or "
        f"turned them into numbers (a spreadsheet, an integer or float column). Write the ids as text, the same in both files, and re-run."
    )


def raise_for_failures(report: ValidationReport) -> None:
    """Raise ValidationFailed listing every failing expectation (one per line) and the Data Docs path."""
    if report.success:
        return
    lines = [f"Data validation failed: {len(report.failures)} expectation(s) not met."]
    lines += [failure["message"] for failure in report.failures]
    lines.append(f"Data Docs: {report.data_docs}")
    raise ValidationFailed("\n".join(lines), report.to_dict())


def _context(root: Path):
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    root.mkdir(parents=True, exist_ok=True)
    context = gx.get_context(mode="file", context_root_dir=str(root))
    quiet = ProgressBarsConfig(globally=False, metric_calculations=False)
    if context.variables.progress_bars != quiet:  # a tqdm bar per expectation otherwise floods the logs
        context.variables.progress_bars = quiet
        context.variables.save()
    return context


def _run_suite(
    context, datasource, name: str, frame: pd.DataFrame, parameters: dict, source: str, items_source: str
) -> tuple[list[dict], int]:
    """Run one suite through a checkpoint; returns its failures, how many expectations it evaluated and this run's
    Data Docs resources (its validation result, the suite)."""
    import great_expectations as gx
    from great_expectations.data_context.types.resource_identifiers import ExpectationSuiteIdentifier

    raw_suite = _read_suite(name, frame.columns)
    suite = context.suites.add_or_update(gx.ExpectationSuite(**_as_run(raw_suite)))
    batch = datasource.add_dataframe_asset(name).add_batch_definition_whole_dataframe("whole")
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=name, data=batch, suite=suite)
    )
    checkpoint = context.checkpoints.add_or_update(
        gx.Checkpoint(name=name, validation_definitions=[definition], result_format=_RESULT_FORMAT)
    )
    outcome = checkpoint.run(batch_parameters={"dataframe": frame}, expectation_parameters=parameters)
    # Results carry the parameters substituted and the type run (_as_run); the suite file says which parameter it was,
    # and its type is the one reported.
    raw = {e.id: expectation for e, expectation in zip(suite.expectations, raw_suite["expectations"])}
    failures = [
        _failure(name, source, items_source, result, raw[result.expectation_config.id], frame.attrs)
        for run in outcome.run_results.values()
        for result in run.results
        if not result.success
    ]
    return failures, len(suite.expectations), [*outcome.run_results, ExpectationSuiteIdentifier(name)]


def _as_run(raw_suite: dict[str, Any]) -> dict[str, Any]:
    """The suite as it is run: an expect_column_values_to_be_in_set whose value set is a run-time parameter (the
    catalog's item ids: 100,000 of them in a large shop) runs as ExpectColumnValuesToBeInLargeSet, the same GE
    expectation with a faster copy of its configuration (see large_set.py: GE copied the ids ~110 times a run)."""
    from components.validation.large_set import ExpectColumnValuesToBeInLargeSet

    def run_as(expectation: dict) -> dict:
        parameter = isinstance(expectation["kwargs"].get("value_set"), dict)
        if expectation["type"] == "expect_column_values_to_be_in_set" and parameter:
            return {**expectation, "type": ExpectColumnValuesToBeInLargeSet.expectation_type}
        return expectation

    return {**raw_suite, "expectations": [run_as(expectation) for expectation in raw_suite["expectations"]]}


def _read_suite(name: str, columns: pd.Index) -> dict[str, Any]:
    path = EXPECTATIONS_DIR / f"{name}.json"
    if not path.is_file():
        raise BehaviorflowError(
            f"{path}: the '{name}' expectation suite is missing. The suites live in the repository's "
            f"expectations/ folder; run from a checkout of behaviorflow."
        )
    raw = json.loads(path.read_text(encoding="utf-8"))
    raw.pop("id", None)  # ids belong to a GE project, not to the file
    # Expectations on a column the frame lacks are skipped: optional columns may be absent, and a missing
    # required column is reported once, by expect_table_columns_to_match_set.
    raw["expectations"] = [
        {key: value for key, value in expectation.items() if key != "id"}
        for expectation in raw["expectations"]
        if expectation["kwargs"].get("column") in (None, *columns)
    ]
    return raw


KEEP_RUNS_ENV = "BEHAVIORFLOW_GX_KEEP_RUNS"  # validation runs of each suite the GE project keeps; 0 = all
KEEP_RUNS_DEFAULT = 30


def keep_runs() -> int:
    """How many validation runs of each suite the GE project keeps (KEEP_RUNS_ENV, else KEEP_RUNS_DEFAULT)."""
    return settings.count_from_env(KEEP_RUNS_ENV, KEEP_RUNS_DEFAULT, "validation runs to keep (0 = keep all)")


def prune_old_runs(context, keep: int) -> list[str]:
    """Remove all but the newest `keep` runs of each suite from the GE project's validation results and their Data
    Docs pages (0: keep all); returns the run folders removed. A scheduled retrain validates every time, and each run
    stored its results (on a 100,000-item catalog, a 2.6 MB result and a 5.5 MB page: the catalog's ids) for ever,
    the Data Docs index reading all of them. Every run's validation.json stays with its MLflow run."""
    if keep <= 0:
        return []
    root = Path(context.root_directory)
    results = root / context.variables.config.stores["validation_results_store"]["store_backend"]["base_directory"]
    sites = [root / site["store_backend"]["base_directory"] / "validations" for site in context.variables.config.data_docs_sites.values()
             if site.get("store_backend", {}).get("class_name") == "TupleFilesystemStoreBackend"]
    removed = []
    for suite in (p for p in results.iterdir() if p.is_dir()) if results.is_dir() else ():
        runs = sorted((p for p in suite.glob("*/*") if p.is_dir()), key=lambda p: p.name)  # <run name>/<run time, sortable>
        for run in runs[: max(0, len(runs) - keep)]:
            shutil.rmtree(run, ignore_errors=True)
            for site in sites:
                shutil.rmtree(site / run.relative_to(results), ignore_errors=True)
            removed.append(str(run.relative_to(results)))
    return removed


def _docs_index(context) -> Path:
    url = context.get_docs_sites_urls()[0]["site_url"]  # file:///.../data_docs/local_site/index.html
    return Path(url2pathname(urlparse(url).path))


def _failure(suite: str, source: str, items_source: str, result, raw: dict, attrs: dict | None = None) -> dict:
    """A failing expectation as a plain dict, with the line a user reads. `raw`: the expectation as the suite file
    has it (its type and kwargs). `attrs`: the frame's, from the reader: a column the file names differently is
    named as the file does, "column 'parent_asin' (item_id)"."""
    from components.data.readers import SOURCE_COLUMNS, TIMESTAMP_UNIT, column_label

    attrs = attrs or {}
    kind, kwargs, raw_kwargs = raw["type"], result.expectation_config.kwargs, raw["kwargs"]
    details = result.result or {}
    column = kwargs.get("column")
    indexed = details.get("partial_unexpected_index_list") or []
    rows = [int(entry[c.ROW]) for entry in indexed if c.ROW in entry]
    examples = [_plain(entry.get(column)) for entry in indexed] or [
        _plain(value) for value in details.get("partial_unexpected_list") or []
    ]
    count = details.get("unexpected_count")
    error = _exception_message(result)
    if error:
        problem = f"{kind} could not be evaluated: {error}"
    else:
        problem = _problem(kind, kwargs, raw_kwargs, details, items_source, (attrs.get(TIMESTAMP_UNIT) or {}).get("unit", "s"))

    if rows and (column == c.HAS_TEXT or all(value in (None, "") for value in examples)):  # empty values: the rows say it all
        shown = rows[:_QUOTED_ROWS]
        more = ", …" if count > len(shown) else ""
        evidence = f" — row{'s' if count > 1 else ''} {', '.join(map(str, shown))}{more}"
    elif rows:
        quoted = zip(examples[:_QUOTED], rows)
        evidence = " — e.g. " + ", ".join(f"{value!r} (row {row})" for value, row in quoted)
    else:
        evidence = ""
    where = f"{source}: {column_label(column, attrs.get(SOURCE_COLUMNS) or {})}" if column and column != c.HAS_TEXT else source
    fix = (_NO_TEXT_FIX if column == c.HAS_TEXT else _ROWS_FIX) if rows else "Fix the file and re-run."
    return {
        "suite": suite,
        "source": source,
        "expectation": kind,
        "column": column,
        "unexpected_count": count,
        "examples": examples[:MAX_EXAMPLES],
        "rows": rows[:MAX_EXAMPLES],
        "message": f"{where}: {problem}{evidence}. {fix}",
    }


# Why an id may hold no whitespace (the suites' "^\S+\Z" expectations), per id column.
_WHITESPACE_IN_ID = {
    c.ITEM_ID: "histories separate item ids by spaces",
    c.USER_ID: "' u1' would be a second user beside 'u1', and predict's lines are user_id<TAB>item ids",
}


def _problem(kind: str, kwargs: dict, raw_kwargs: dict, details: dict, items_source: str, unit: str = "s") -> str:
    """What is wrong, in words, for the expectation types the suites use (a generic line for others).
    `unit`: what the reader took numeric timestamps for ("s" or "ms")."""
    count = details.get("unexpected_count")
    n_rows = f"{count} row{'s' if count != 1 else ''}"
    low, high = _plain(kwargs.get("min_value")), _plain(kwargs.get("max_value"))
    if kind == "expect_table_row_count_to_be_between":
        return f"has {details.get('observed_value')} rows; at least {low} expected"
    if kind == "expect_table_columns_to_match_set":
        missing = (details.get("details") or {}).get("mismatched", {}).get("missing", [])
        found = [column for column in details.get("observed_value") or [] if column not in (c.ROW, c.HAS_TEXT)]
        return f"missing required column(s) {missing}; found {found}"
    if kind == "expect_column_values_to_not_be_null":
        if kwargs["column"] == c.TIMESTAMP:  # the reader turns unparseable timestamps into nulls
            return f"{n_rows} empty or unparseable (expected epoch seconds or ISO-8601)"
        return f"{n_rows} empty"
    if kind == "expect_column_values_to_be_in_set":
        if kwargs["column"] == c.HAS_TEXT:
            items = f"{count} item{'s' if count != 1 else ''}"
            return (f"{items} with no text: title, category, brand and description all empty, blank or only markup "
                    f"(the language model would read nothing)")
        if raw_kwargs.get("value_set") == {"$PARAMETER": "catalog_item_ids"}:
            return f"{n_rows} with an item_id missing from the catalog ({items_source})"
        return f"{n_rows} not in the allowed set {list(kwargs['value_set'])}"
    if kind == "expect_column_values_to_be_between":
        if kwargs["column"] == c.TIMESTAMP:
            span = f"{_date(low)} to {_date(high)}"
            if unit == "ms":
                return (f"{n_rows} outside [{low}, {high}] epoch seconds ({span}) once read as epoch milliseconds "
                        f"(seconds? set data.timestamp_unit: s)")
            return f"{n_rows} outside [{low}, {high}] epoch seconds ({span}; milliseconds? set data.timestamp_unit: ms)"
        return f"{n_rows} outside [{low}, {high}]"
    if kind == "expect_column_values_to_be_unique":
        return f"{n_rows} with a duplicated value (must be unique)"
    if kind == "expect_column_values_to_match_regex":
        if kwargs.get("regex") == r"\S":
            return f"{n_rows} blank (only spaces)"
        if kwargs.get("regex") == r"^\S+\Z":
            why = _WHITESPACE_IN_ID.get(kwargs["column"], "")
            return f"{n_rows} with spaces in or around the id" + (f" ({why})" if why else "")
        return f"{n_rows} not matching {kwargs.get('regex')!r}"
    if kind == "expect_column_value_lengths_to_be_between":
        if (low, high) == (1, None):
            return f"{n_rows} empty ('')"
        return f"{n_rows} with length outside [{low}, {high}]"
    return f"{n_rows} fail {kind}"


def _exception_message(result) -> str | None:
    """The error GE caught while evaluating an expectation, if any (it may be keyed by metric)."""
    info = result.exception_info or {}
    for entry in [info] if "raised_exception" in info else list(info.values()):
        if isinstance(entry, dict) and entry.get("raised_exception"):
            return str(entry.get("exception_message"))
    return None


def _plain(value: Any) -> Any:
    """JSON-safe scalars: numpy numbers become Python numbers, NaN/NA become None."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, float) and value.is_integer():  # GE hands bounds back as floats: 1e9 → 1000000000
        return int(value)
    return value


def _date(seconds: int | float | None) -> str:
    return "?" if seconds is None else pd.Timestamp(seconds, unit="s").date().isoformat()

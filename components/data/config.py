"""Where the data comes from and how its files map onto the data contract (the `data` section of the config).

A dump written for another purpose (Amazon Reviews: `parent_asin`, `rating`, millisecond timestamps, no event
type) is read as it is: the readers rename its columns, add a constant event type and convert its timestamps,
so validate, retrain and add-items see contract frames without the file being rewritten.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from components import contract as c

TIMESTAMP_UNITS = ("auto", "s", "ms")


@dataclass(frozen=True)
class DataConfig:
    events: str | None = None  # events file (.csv / .jsonl / .parquet, CSV and JSON Lines also .gz/.bz2/.xz); with `items`
    items: str | None = None  # item catalog file (same formats as events)
    movielens: str | None = None  # or: a MovieLens-1M style folder (ratings.dat, movies.dat)
    #   (with none of the three, the bundled synthetic sample is generated, deterministically, and used)
    # The events file's column for each contract field it names differently: contract name -> the file's name,
    # e.g. {item_id: parent_asin, value: rating}. Other columns keep their names; extra columns are ignored
    event_columns: dict[str, str] = field(default_factory=dict)
    # The items file's, likewise, e.g. {item_id: parent_asin, category: categories, brand: store}; add-items
    # reads its items file with it too
    item_columns: dict[str, str] = field(default_factory=dict)
    # For a log without an event_type column (a reviews or ratings dump): this type for every row, e.g.
    # rating. Refused when the file has an event_type column too
    event_type: str | None = None
    # Numeric timestamps: s (epoch seconds), ms (epoch milliseconds), or auto: milliseconds when every
    # numeric value is >= 1e11 (no date in 1990-2100 is that many seconds), else seconds. ISO-8601 text is
    # read as it is whatever this says
    timestamp_unit: str = "auto"

    def __post_init__(self):
        _check_columns("event_columns", self.event_columns, c.EVENT_REQUIRED + c.EVENT_OPTIONAL)
        _check_columns("item_columns", self.item_columns, c.ITEM_REQUIRED + c.ITEM_OPTIONAL)
        if self.event_type is not None:
            if self.event_type not in c.EVENT_TYPES:
                raise ValueError(f"event_type {self.event_type!r} is not one of the contract's event types {list(c.EVENT_TYPES)}")
            if c.EVENT_TYPE in self.event_columns:
                raise ValueError(f"event_type {self.event_type!r} gives every row one type, and event_columns maps event_type to the file's "
                                 f"column {self.event_columns[c.EVENT_TYPE]!r}: keep one of the two")
        if self.timestamp_unit not in TIMESTAMP_UNITS:
            raise ValueError(f"timestamp_unit {self.timestamp_unit!r}: choose one of {', '.join(TIMESTAMP_UNITS)}")
        reading = self.event_columns or self.item_columns or self.event_type is not None or self.timestamp_unit != "auto"
        if self.movielens is not None and reading:
            raise ValueError("event_columns, item_columns, event_type and timestamp_unit apply to events and items files; a MovieLens "
                             "folder is read in its own fixed format: leave them unset with movielens")


def _check_columns(name: str, mapping: dict[str, str], contract: tuple[str, ...]) -> None:
    """A mapping from contract names to file column names: known contract names, non-empty names, one file column per field."""
    if not isinstance(mapping, dict):
        raise ValueError(f"{name} must be a mapping from contract name to the file's column name, e.g. {{item_id: parent_asin}}; got {mapping!r}")
    unknown = [key for key in mapping if key not in contract]
    if unknown:
        raise ValueError(f"{name}: unknown contract field(s) {unknown}; valid ones are {list(contract)} (contract name: the file's column name)")
    for key, column in mapping.items():
        if not isinstance(column, str) or not column.strip():
            raise ValueError(f"{name}.{key}: expected the file's column name (text), got {column!r}")
    fields_of: dict[str, list[str]] = {}
    for key, column in mapping.items():
        fields_of.setdefault(column, []).append(key)
    twice = {column: keys for column, keys in fields_of.items() if len(keys) > 1}
    if twice:
        column, keys = next(iter(twice.items()))
        raise ValueError(f"{name}: the file's column {column!r} is mapped to {len(keys)} contract fields ({', '.join(keys)}); a column "
                         f"stands for one field: map each field to its own column")


def differs_from_recorded(setting: str, recorded: str | None, given: dict[str, str]) -> str | None:
    """A note when a mapping differs from the one a run recorded (`recorded`: its MLflow param, the str of a dict;
    None where the run did not record one), e.g. add-items reading new items otherwise than their model's catalog was
    read: a categories column the model read as category would be left out of the new items' text."""
    import ast

    if recorded is None:
        return None
    try:
        before = ast.literal_eval(recorded)
    except (ValueError, SyntaxError):
        return None
    if not isinstance(before, dict) or before == given:
        return None
    return (f"data.{setting} is {given or '{}'} here, but the source version's catalog was read with {before or '{}'}: "
            f"a column it read (e.g. categories as category) may be missing from the new items' text; pass the same "
            f"--set data.{setting}=... (or --config) if the new items come from the same kind of file")

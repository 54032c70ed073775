"""The data contract, defined once and read by validation, preparation and serving alike.

Events: one row per interaction — `user_id, item_id, event_type, timestamp` (+ optional `value`,
e.g. a rating). Items: one row per catalog item — `item_id, title` (+ optional `category, brand,
description`). Ids are read as strings; timestamps as epoch seconds (or milliseconds) or ISO-8601 strings. A file
that names these columns otherwise is read through the `data` settings (components/data/config.py), not rewritten.
"""

from __future__ import annotations

USER_ID = "user_id"
ITEM_ID = "item_id"
EVENT_TYPE = "event_type"
TIMESTAMP = "timestamp"
VALUE = "value"

EVENT_REQUIRED = (USER_ID, ITEM_ID, EVENT_TYPE, TIMESTAMP)
EVENT_OPTIONAL = (VALUE,)

TITLE = "title"
CATEGORY = "category"
BRAND = "brand"
DESCRIPTION = "description"

ITEM_REQUIRED = (ITEM_ID, TITLE)
ITEM_OPTIONAL = (CATEGORY, BRAND, DESCRIPTION)
# The item text the language model reads, in this order.
ITEM_TEXT_FIELDS = (TITLE, CATEGORY, BRAND, DESCRIPTION)

# Behaviour types the platform understands. `rating` is an explicit-feedback event (MovieLens).
EVENT_TYPES = ("view", "click", "cart", "purchase", "rating")

# Timestamps outside this range are rejected by validation (epoch seconds): 1990-01-01 .. 2100-01-01.
MIN_TIMESTAMP = 631_152_000
MAX_TIMESTAMP = 4_102_444_800

# The readers add this column: where each row is in the source file, so that every failing value can be
# reported with its row. CSV and JSON Lines: the line number (a CSV header is line 1, its first row line 2; a
# JSON Lines file's first object is line 1); parquet: the 1-based row.
ROW = "_row"

# Validation adds this column to the items before the items suite runs: whether the item has any text the
# language model can read (prepare.item_texts non-empty: some field non-blank once cleaned of markup).
HAS_TEXT = "_text"

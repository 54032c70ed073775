"""Preparation: dedup, chronological order, repeat collapsing and a leakage-free leave-one-out split."""

import numpy as np
import pandas as pd
import pytest

from components.errors import BehaviorflowError
from components.preparation import PrepareConfig, check_leave_one_out, prepare


def frame(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "timestamp"])


ITEMS = pd.DataFrame({"item_id": ["a", "b", "c", "d", "e"], "title": ["A", "B", "C", "D", "E"], "category": ["x", "", "y", None, "z"]})


def test_sequences_are_chronological_deduplicated_and_collapsed():
    events = frame([
        ("u1", "c", "view", 30), ("u1", "a", "view", 10), ("u1", "a", "click", 11), ("u1", "b", "view", 20),
        ("u1", "b", "view", 20),  # exact duplicate
        ("u1", "d", "view", 40), ("u2", "e", "view", 5), ("u2", "a", "view", 6),
    ])
    p = prepare(events, ITEMS)
    assert p.user_ids == ["u1", "u2"]
    ids = [[p.item_ids[i - 1] for i in s] for s in p.sequences]
    assert ids == [["a", "b", "c", "d"], ["e", "a"]]  # a(view)+a(click) collapsed, duplicate removed
    assert p.stats["duplicate_rows_removed"] == 1
    assert p.stats["repeat_steps_collapsed"] == 1
    assert p.stats["short_users_train_only"] == 1  # u2 has 2 steps < 3
    assert p.item_texts[:2] == ["A. x", "B"]  # empty / missing text fields are left out


def test_leave_one_out_split_has_no_leakage():
    rng = np.random.default_rng(0)
    rows = [(f"u{u}", f"i{rng.integers(0, 50)}", "view", t) for u in range(40) for t in range(rng.integers(3, 15))]
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(50)], "title": [f"item {i}" for i in range(50)]})
    p = prepare(frame(rows), items, PrepareConfig(collapse_repeats=False))
    val_in, val_t = p.valid_split()
    test_in, test_t = p.test_split()
    for j, u in enumerate(p.eval_users):
        seq, train = p.sequences[u], p.train[u]
        assert len(train) == len(seq) - 2
        np.testing.assert_array_equal(val_in[j], train)  # validation input is exactly the training data
        assert val_t[j] == seq[-2] and test_t[j] == seq[-1]
        np.testing.assert_array_equal(test_in[j], seq[:-1])  # the test target is never in its own input
        assert len(test_in[j]) == len(seq) - 1


def test_event_type_filter_counts_what_it_drops():
    events = frame([("u1", "a", "view", 1), ("u1", "b", "purchase", 2), ("u1", "c", "purchase", 3), ("u1", "d", "purchase", 4)])
    p = prepare(events, ITEMS, PrepareConfig(event_types=("purchase",)))
    assert p.stats["rows_of_other_event_types"] == 1
    assert [p.item_ids[i - 1] for i in p.sequences[0]] == ["b", "c", "d"]


def test_unknown_items_are_an_error_not_a_silent_drop():
    with pytest.raises(BehaviorflowError, match=r"1 events refer to items missing from the catalog \(e.g. \['zz'\]\)"):
        prepare(frame([("u1", "zz", "view", 1), ("u1", "a", "view", 2)]), ITEMS)


def test_trained_items_mask_marks_only_training_items():
    events = frame([("u1", "a", "view", 1), ("u1", "b", "view", 2), ("u1", "c", "view", 3), ("u1", "d", "view", 4)])
    p = prepare(events, ITEMS)
    mask = p.trained_items()
    assert [p.item_ids[i - 1] for i in np.flatnonzero(mask)] == ["a", "b"]  # c = validation, d = test, e = never seen


def test_targets_already_in_their_input_are_counted_and_reported():
    # u1 re-buys a (a target already in its input); u2's targets are new; u3 repeats in validation only.
    events = frame([
        ("u1", "a", "purchase", 1), ("u1", "b", "purchase", 2), ("u1", "c", "purchase", 3), ("u1", "a", "purchase", 4),
        ("u2", "a", "view", 1), ("u2", "b", "view", 2), ("u2", "c", "view", 3), ("u2", "d", "view", 4),
        ("u3", "a", "view", 1), ("u3", "b", "view", 2), ("u3", "a", "view", 3), ("u3", "e", "view", 4),
    ])
    p = prepare(events, ITEMS)
    assert p.stats["test_targets_in_input"] == 1 and p.stats["valid_targets_in_input"] == 1 and p.stats["test_cases"] == 3

    from components.preparation import repeat_target_note
    from flows.cli import _data_notes

    note = repeat_target_note(p.stats, exclude_seen=True)
    assert note.startswith("1 of 3 test targets (33.3%) are items already in the user's history") and "cannot exceed 0.667" in note
    assert "evaluate.exclude_seen=false" in note
    assert repeat_target_note(p.stats, exclude_seen=False) is None  # repeats are ranked then: nothing to warn about
    assert repeat_target_note({**p.stats, "test_targets_in_input": 0}, exclude_seen=True) is None
    assert _data_notes({"preparation": p.stats, "exclude_seen": True}) == ["1 of 3 test targets (33.3%) repeat an item of their history: misses for every ranker with evaluate.exclude_seen"]
    assert _data_notes({"preparation": p.stats, "exclude_seen": False}) == []


def test_targets_tied_with_the_step_before_are_counted_and_reported():
    # Day-granularity timestamps: u1's last two steps share a day, so the file's row order picks the target.
    day = 86_400
    events = frame([
        ("u1", "a", "rating", 1 * day), ("u1", "b", "rating", 2 * day), ("u1", "d", "rating", 3 * day), ("u1", "c", "rating", 3 * day),
        ("u2", "a", "rating", 1 * day), ("u2", "b", "rating", 1 * day), ("u2", "c", "rating", 2 * day), ("u2", "d", "rating", 3 * day),
    ])
    p = prepare(events, ITEMS)
    assert [p.item_ids[i - 1] for i in p.sequences[0]] == ["a", "b", "d", "c"]  # ties keep the file order
    assert p.stats["test_targets_tied"] == 1 and p.stats["steps_tied_with_previous"] == 2

    from components.preparation import tied_target_note
    from flows.cli import _data_notes

    note = tied_target_note(p.stats)
    assert note.startswith("1 of 2 test targets (50.0%) have the same timestamp as the step before them (2 of 8 steps tie")
    assert "row order of the events file" in note
    assert tied_target_note({**p.stats, "test_targets_tied": 0}) is None
    assert _data_notes({"preparation": p.stats}) == ["1 of 2 test targets (50.0%) share the timestamp of the step before: the events file's row order decides them"]


def test_no_user_long_enough_to_evaluate_is_one_clear_error():
    # Every user has 1-2 steps (a sparse review log): before, the flow embedded the catalog and crashed in
    # training with a traceback ('ValueError: no evaluation cases').
    events = frame([("u1", "a", "view", 1), ("u1", "b", "view", 2), ("u2", "c", "view", 1), ("u3", "a", "view", 1), ("u3", "a", "click", 2)])
    with pytest.raises(BehaviorflowError, match=r"^no user has 3 or more steps \(prepare.min_sequence_length\), so there is no validation or test "
                                                r"case: 3 users, the longest with 2 steps after de-duplication and collapsing repeats\. .*prepare.split=temporal$"):
        prepare(events, ITEMS)


def test_min_sequence_length_below_3_is_refused_naming_why():
    """With 2, a user of 2 steps gave a validation case with an empty input: a target predicted from nothing."""
    with pytest.raises(ValueError, match=r"^min_sequence_length \(2\) must be at least 3: a user needs a step to predict from, then a validation step"):
        PrepareConfig(min_sequence_length=2)
    assert PrepareConfig(min_sequence_length=3).min_sequence_length == 3


@pytest.mark.parametrize("config", [
    PrepareConfig(),  # u1: a(view)+a(click) collapse: 2 steps
    PrepareConfig(collapse_repeats=False),  # 3 steps
    PrepareConfig(event_types=("view",)),  # a, b: 2 steps
    PrepareConfig(min_sequence_length=4),
    PrepareConfig(split="temporal"),  # its own checks, in prepare
], ids=["collapsed", "not-collapsed", "views-only", "min-4", "temporal"])
def test_the_early_check_from_the_events_alone_agrees_with_prepare(config):
    """check_leave_one_out (the CLI runs it before any server starts) refuses exactly what prepare refuses for
    short histories, with the same message; it needs no catalog."""
    events = frame([("u1", "a", "view", 1), ("u1", "a", "click", 2), ("u1", "b", "view", 3), ("u1", "b", "view", 3), ("u2", "c", "view", 1)])
    try:
        prepare(events, ITEMS, config)
        expected = None
    except BehaviorflowError as exc:
        expected = str(exc)
    try:
        check_leave_one_out(events, config)
        found = None
    except BehaviorflowError as exc:
        found = str(exc)
    assert found == (expected if config.split == "leave_one_out" else None)
    assert (found is None) == ((config.collapse_repeats is False and config.min_sequence_length == 3) or config.split == "temporal")


def test_an_item_without_a_title_is_prepared_and_tokenized_from_its_other_fields(tmp_path):
    """Validation lets an item without a title through when its category, brand or description has text: it
    reads 'category. description', its title is "" (what the service returns), and it tokenizes like any other."""
    from components.tokenization import TextEncoderConfig
    from components.tokenization.encode import tokenize_items

    items = pd.DataFrame({"item_id": ["a", "b", "c"], "title": ["A", "", None], "category": ["x", "tents", "tents"],
                          "description": ["", "<p>A light tent.</p>", "['Two-person dome.']"]})
    events = frame([("u1", "a", "view", 1), ("u1", "b", "view", 2), ("u1", "c", "view", 3)])
    p = prepare(events, items)
    assert p.item_texts == ["A. x", "tents. A light tent.", "tents. Two-person dome."]
    assert p.titles == ["A", "", ""]
    tokens = tokenize_items(p.item_texts, TextEncoderConfig(max_tokens=16), tmp_path / "tokens")
    assert tokens["input_ids"].shape == (3, 16) and tokens["attention_mask"][1].sum() > 2  # more than [CLS] [SEP]


def test_item_texts_are_cleaned_once_for_validation_and_preparation(monkeypatch):
    # Cleaning the text of a large catalog with HTML descriptions is the data stage's largest step; a retrain
    # used to clean it twice (validation's has-text check, then prepare). Dataset.item_texts cleans it once, and
    # validation and prepare take it as given, with the same result as cleaning it themselves.
    import importlib

    from components.data.readers import Dataset
    from components.validation.validator import _with_text_flag

    preparation = importlib.import_module("components.preparation.prepare")  # the module (the package exports the function)

    events = frame([("u1", "a", "view", 1), ("u1", "b", "view", 2), ("u1", "c", "view", 3), ("u2", "c", "view", 1), ("u2", "a", "view", 2)])
    items = pd.DataFrame({
        "item_id": ["a", "b", "c", "a"],  # "a" twice: prepare keeps the first row
        "title": ["<b>Alpha</b>", "Beta", "", "Alpha again"],
        "description": ["<p>First&nbsp;item</p>", "", "['Only', 'a description']", ""],
    })
    expected = prepare(events, items)
    cleaned = []
    clean = preparation._clean_field
    monkeypatch.setattr(preparation, "_clean_field", lambda values, name: cleaned.append(name) or clean(values, name))
    dataset = Dataset(events, items, "events.csv", "items.csv")
    assert dataset.item_texts == ["Alpha. First item", "Beta", "Only a description", "Alpha again"]
    assert dataset.item_texts is dataset.item_texts and cleaned == ["title", "description"]  # once, not per use
    flagged = _with_text_flag(items, dataset.item_texts)
    given = prepare(events, items, texts=dataset.item_texts)
    # Neither validation's flag nor prepare cleaned the item texts again; prepare cleans the title column alone once
    # more, for the titles the service returns (display_titles): short fields, not the descriptions.
    assert cleaned == ["title", "description", "title"]
    assert flagged["_text"].tolist() == [True, True, True, True]
    assert given.item_texts == expected.item_texts == ["Alpha. First item", "Beta", "Only a description"]
    assert given.item_ids == expected.item_ids and given.stats == expected.stats
    with pytest.raises(ValueError, match="2 texts for 4 item rows"):
        prepare(events, items, texts=["x", "y"])


def test_add_items_is_told_when_new_items_lack_a_kind_of_text_the_model_learned_from():
    from components.preparation.prepare import missing_text_fields, text_field_shares

    catalog = pd.DataFrame({"item_id": ["a", "b", "c", "d"], "title": ["Tent", "Stove", "", "Lamp"],
                            "description": ["Two-person tent.", "  ", "Gas stove.", None], "brand": ["Alpenrock", "", "", ""]})
    shares = text_field_shares(catalog)
    assert shares == {"title": 0.75, "category": 0.0, "brand": 0.25, "description": 0.5}  # blank and missing values are empty
    # New items read with another column name for the description: none of them has one.
    new = pd.DataFrame({"item_id": ["n1", "n2"], "title": ["Mat", "Pump"]})
    note = missing_text_fields(shares, new)
    assert note == ("the new items have no description text, which the model's catalog items had: description (50% of them). Their "
                    "vectors are made from less of the text than the model learned from, so they are not scored as items that had it. "
                    "If the file names the column otherwise, map it: --set 'data.item_columns={description: <its column>}'")
    # A field the catalog seldom filled (brand: 25 %) is not expected; one new item with a description is enough.
    assert missing_text_fields(shares, new.assign(description=["Foam mat.", ""])) is None
    assert missing_text_fields({"title": 1.0, "category": 0.9, "brand": 0.0, "description": 0.8}, new).startswith(
        "the new items have no category or description text, which the model's catalog items had: category (90% of them), description (80% of them).")
    assert missing_text_fields(shares, new.iloc[:0].assign(description=[])) is not None  # no rows: nothing filled

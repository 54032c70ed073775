"""Turn a validated behaviour log into per-user item sequences and a leakage-safe evaluation split.

Two splits (`PrepareConfig.split`):

* `leave_one_out` (the protocol of SASRec, BERT4Rec and gSASRec): for a user whose sequence is
  s_1 … s_n, training sees s_1 … s_{n-2}; validation asks for s_{n-1} given s_1 … s_{n-2}; the test
  asks for s_n given s_1 … s_{n-1}. Users with fewer than `min_sequence_length` steps are too short
  to evaluate: their whole sequence is used for training and they are counted in the statistics.
* `temporal` (one global cut-off, so no training step comes from the evaluation period): the test
  cut-off T is the `temporal_quantile` quantile of all event timestamps, the validation cut-off T_val
  the same quantile of the timestamps before T (numpy's default, linear interpolation). Training
  sees each user's steps strictly before T_val; a user's validation case is their first step in
  [T_val, T), their test case their first step at or after T — each with every earlier step of that
  user as its input. A step's time is the time of its first event (a view, click and cart of one item
  in a row are one step, timed by the view). Users with no step before a cut-off have no history to
  predict from: they get no case for that period and are counted in the statistics.

Either way, a case's input is a prefix of the user's chronological sequence ending right before its
target, so no target is ever part of its own input or of the training data. No row is dropped without
a count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from components import contract as C
from components.data.readers import epoch_seconds
from components.errors import BehaviorflowError
from components.preparation.text_cleaning import category_text, clean_text, description_text

SPLITS = ("leave_one_out", "temporal")


@dataclass(frozen=True)
class PrepareConfig:
    event_types: tuple[str, ...] | None = None  # behaviours that form sequences; None = all of them
    collapse_repeats: bool = True  # view→click→cart→purchase of one item in a row is one step
    min_sequence_length: int = 3  # leave_one_out: fewer steps cannot give train + validation + test targets
    split: str = "leave_one_out"  # "leave_one_out" (last two steps per user) or "temporal" (global time cut-offs)
    temporal_quantile: float = 0.9  # temporal: the test cut-off is this quantile of event times, 0 < q < 1

    def __post_init__(self):
        if self.event_types is not None and not self.event_types:
            raise ValueError("event_types is an empty list: name the behaviours that form sequences, e.g. [cart, purchase], or null for all of them")
        if self.min_sequence_length < 3:  # with 2, a 2-step user's validation case had an empty input (nothing to predict from)
            raise ValueError(f"min_sequence_length ({self.min_sequence_length}) must be at least 3: a user needs a step to predict from, "
                             "then a validation step and a test step (shorter users are used for training only)")
        if self.split not in SPLITS:
            raise ValueError(f"split {self.split!r} is not one of {list(SPLITS)}")
        if not 0.0 < self.temporal_quantile < 1.0:
            raise ValueError(f"temporal_quantile ({self.temporal_quantile}) must lie strictly between 0 and 1, e.g. 0.9")


@dataclass(frozen=True)
class EvalCases:
    """Held-out next-item cases. Case j asks for step `positions[j]` of user `users[j]`'s sequence,
    given `inputs[j]` = every step of that user before it (a prefix of the sequence, oldest first)."""

    users: np.ndarray  # int64 [N]: positions in PreparedData.user_ids
    positions: np.ndarray  # int64 [N]: index of the target step in that user's sequence (= len(inputs[j]))
    inputs: list[np.ndarray]  # [N] item-index arrays: sequences[users[j]][:positions[j]]
    targets: np.ndarray  # int64 [N]: item index of the target step

    def __len__(self) -> int:
        return len(self.targets)

    @classmethod
    def at(cls, sequences: list[np.ndarray], users: np.ndarray, positions: np.ndarray) -> "EvalCases":
        """The cases asking for `sequences[u][p]` given `sequences[u][:p]`, for each (u, p)."""
        users, positions = np.asarray(users, dtype=np.int64), np.asarray(positions, dtype=np.int64)
        inputs = [sequences[u][:p] for u, p in zip(users, positions)]
        targets = np.array([sequences[u][p] for u, p in zip(users, positions)], dtype=np.int64)
        return cls(users=users, positions=positions, inputs=inputs, targets=targets)


@dataclass
class PreparedData:
    """Item indices are 1-based (0 is padding): item index i is `item_ids[i - 1]`."""

    item_ids: list[str]
    item_texts: list[str]  # what the language model reads, one per item
    titles: list[str]
    user_ids: list[str]  # every user, in order
    sequences: list[np.ndarray]  # each user's full chronological sequence (item indices)
    step_times: list[np.ndarray]  # float64 epoch seconds of each step (its first event), like `sequences`
    train: list[np.ndarray]  # what training may see, per user (a prefix of the user's sequence)
    valid: EvalCases  # validation cases (early stopping)
    test: EvalCases  # test cases (evaluation, the gate)
    split: str = "leave_one_out"  # how valid/test were cut (PrepareConfig.split)
    stats: dict = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def eval_users(self) -> np.ndarray:
        """Positions in user_ids of the users with a test case (leave-one-out: also their validation case)."""
        return self.test.users

    def valid_split(self) -> tuple[list[np.ndarray], np.ndarray]:
        """(inputs, targets) of the validation cases."""
        return self.valid.inputs, self.valid.targets

    def test_split(self) -> tuple[list[np.ndarray], np.ndarray]:
        """(inputs, targets) of the test cases."""
        return self.test.inputs, self.test.targets

    def trained_items(self, max_len: int | None = None, all_steps: bool = True) -> np.ndarray:
        """Boolean mask [n_items + 1] (index 0 = padding, False): the items training learns from, those in a
        training sequence of two or more steps (`train.training_pairs`: a one-step sequence has no target, so a
        user with three steps trains on nothing); without `all_steps`, only in the last `max_len` + 1 steps of
        each. An item that occurs only elsewhere (the older steps, a one-step sequence, validation or test) is
        new to the model: read from its text like a never-seen item, and never a negative. It was marked
        trained, so its id embedding, never learned, only ever went down as a negative."""
        return trained_mask(self.train, self.n_items, max_len, all_steps)


def trained_mask(train: Sequence[np.ndarray], n_items: int, max_len: int | None = None, all_steps: bool = True) -> np.ndarray:
    """`PreparedData.trained_items` of training sequences `train` over `n_items` items (also the evaluation's
    cold-start slice: components/evaluation/slices.py)."""
    mask = np.zeros(n_items + 1, dtype=bool)
    for seq in train:
        if len(seq) >= 2:
            mask[seq if all_steps or max_len is None else seq[-(max_len + 1):]] = True
    mask[0] = False
    return mask


def item_texts(catalog: pd.DataFrame) -> list[str]:
    """'title. category. brand. description' per item, each field cleaned of markup (HTML, entities, a category
    written as a list literal, runs of whitespace, control characters: text_cleaning), empty fields left out.
    Retrain and add-items both read items through this, so an item added later gets the text it would get in a retrain."""
    return _joined(catalog, _clean_field)


def texts_per_row(items: pd.DataFrame, texts: list[str] | None = None) -> list[str]:
    """item_texts(items), or `texts` where the caller has them already (Dataset.item_texts: cleaned once for
    validation and prepare), checked to hold one text per row of `items`."""
    if texts is None:
        return item_texts(items)
    if len(texts) != len(items):
        raise ValueError(f"texts holds {len(texts)} texts for {len(items)} item rows: give one per row, as item_texts does")
    return texts


def display_titles(catalog: pd.DataFrame) -> list[str]:
    """Each item's title as the service returns it: cleaned as the text the model reads is
    (a dump's "Salt &amp; Pepper <b>Set</b>" is shown "Salt & Pepper Set", not escaped twice by a client), ""
    for an item without a title (it has other text). Retrain and add-items both take titles from here."""
    return _clean_field(catalog[C.TITLE].fillna("").astype(str), C.TITLE)


def _joined(catalog: pd.DataFrame, field_text) -> list[str]:
    """Per item, its text fields (as `field_text(values, name)` gives each column) joined by '. ', empty ones left out."""
    fields = [field_text(catalog[f].fillna("").astype(str), f) for f in C.ITEM_TEXT_FIELDS if f in catalog.columns]
    return [". ".join(p for p in parts if p) for parts in zip(*fields)]


def cleaning_note(stats: dict, items: int, where: str) -> str | None:
    """The INFO line for `cleaning_stats`' `stats` of `items` item texts, pointing at the file `where` that shows
    an example; None when the cleaning changed nothing."""
    if not stats.get("item_texts_cleaned"):
        return None
    return (f"item text: cleaning (HTML, entities, list literals, whitespace) changed {stats['item_texts_cleaned']} of {items} "
            f"items' text; {where} shows one as the file had it and as the model reads it")


def cleaning_stats(catalog: pd.DataFrame, texts: list[str]) -> dict:
    """How many of `texts` (item_texts of `catalog`) the cleaning changed and, when any, the item it shortened most:
    its fields as the file had them and its text as the model reads it (each cut to 300 characters). Recorded with
    the run's preparation.json, so that a user can see what the language model read, not only that cleaning exists."""
    raw = _joined(catalog, lambda values, _name: values)
    changed = [i for i, (before, after) in enumerate(zip(raw, texts)) if before != after]
    stats: dict[str, object] = {"item_texts_cleaned": len(changed)}
    if changed:
        most = max(changed, key=lambda i: len(raw[i]) - len(texts[i]))
        stats["item_text_cleaned_example"] = {"item_id": str(catalog[C.ITEM_ID].iloc[most]), "in_file": raw[most][:300], "read": texts[most][:300]}
    return stats


def text_field_shares(catalog: pd.DataFrame) -> dict[str, float]:
    """Per text field (title, category, brand, description) the share of `catalog`'s items with something in it (0 for
    a field the file has no column for). A retrain records it with the model (its manifest), so that add-items can
    tell when new items come without a kind of text that the model learned from."""
    return {f: round(float(catalog[f].fillna("").astype(str).str.strip().ne("").mean()), 4) if f in catalog.columns and len(catalog) else 0.0
            for f in C.ITEM_TEXT_FIELDS}


def missing_text_fields(recorded: dict[str, float], new_items: pd.DataFrame, most: float = 0.5) -> str | None:
    """A note when `new_items` fill none of the text fields that at least `most` of the model's catalog filled
    (`recorded`: its text_field_shares), else None: their vectors would be made from less of the text than the model
    learned from — most often a column the new file names otherwise, which data.item_columns maps."""
    shares = text_field_shares(new_items)
    lacking = [f for f, share in recorded.items() if share >= most and shares.get(f, 0.0) == 0.0]
    if not lacking:
        return None
    had = ", ".join(f"{f} ({recorded[f]:.0%} of them)" for f in lacking)
    example = ", ".join(f"{f}: <its column>" for f in lacking)
    return (f"the new items have no {' or '.join(lacking)} text, which the model's catalog items had: {had}. Their vectors are "
            f"made from less of the text than the model learned from, so they are not scored as items that had it. If the file "
            f"names the column otherwise, map it: --set 'data.item_columns={{{example}}}'")


def _clean_field(values: pd.Series, name: str) -> list[str]:
    if name == C.CATEGORY:
        values = values.map(category_text)
    elif name == C.DESCRIPTION:
        values = values.map(description_text)
    return [clean_text(value) for value in values]


def check_leave_one_out(events: pd.DataFrame, config: PrepareConfig) -> None:
    """Raise the error `prepare` raises for a log in which no user has `min_sequence_length` steps (leave-one-out
    has no validation or test case), from the events alone: a command checks it in a second, before it starts
    any server, instead of when the flow reaches its prepare stage. Any other problem is left to validation and
    `prepare`, which report it in their words."""
    if config.split != "leave_one_out" or events.empty or not set(C.EVENT_REQUIRED) <= set(events.columns):
        return
    frame = _behaviour(events, config, {})
    if frame.empty:
        return
    # Item ids stand for the item indices `prepare` compares: the same steps collapse (for the catalog's ids).
    _, lengths = _chronological_steps(frame, C.ITEM_ID, config, {})
    _require_long_enough(lengths, config)


def _behaviour(events: pd.DataFrame, config: PrepareConfig, stats: dict) -> pd.DataFrame:
    """The contract columns of `events`, without duplicate rows and behaviours outside `config.event_types`."""
    columns = [c for c in (C.USER_ID, C.ITEM_ID, C.EVENT_TYPE, C.TIMESTAMP, C.VALUE) if c in events.columns]
    frame = events[columns]
    before = len(frame)
    frame = frame.drop_duplicates()
    stats["duplicate_rows_removed"] = before - len(frame)
    if config.event_types is not None:
        kept = frame[C.EVENT_TYPE].isin(config.event_types)
        stats["rows_of_other_event_types"] = int((~kept).sum())
        frame = frame[kept]
    return frame


def _chronological_steps(frame: pd.DataFrame, item: str, config: PrepareConfig, stats: dict) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """(users, steps, step times) in per-user chronological order, repeats collapsed when `config` says so
    (`item` is the column that tells items apart), and the number of steps of each user in that order."""
    # Stable chronological order per user; ties keep the file order (mergesort is stable).
    frame = frame.sort_values([C.USER_ID, C.TIMESTAMP], kind="mergesort")
    users = frame[C.USER_ID].to_numpy()
    steps = frame[item].to_numpy()
    times = epoch_seconds(frame[C.TIMESTAMP]).to_numpy(dtype="float64", na_value=np.nan)
    if config.collapse_repeats:
        same = np.zeros(len(steps), dtype=bool)
        same[1:] = (steps[1:] == steps[:-1]) & (users[1:] == users[:-1])
        stats["repeat_steps_collapsed"] = int(same.sum())
        users, steps, times = users[~same], steps[~same], times[~same]  # a step keeps its first event's time
    starts = np.r_[0, np.flatnonzero(users[1:] != users[:-1]) + 1]
    return (users, steps, times), np.diff(np.r_[starts, len(users)])


def _require_long_enough(lengths: np.ndarray, config: PrepareConfig) -> None:
    """Leave-one-out needs at least one user with `min_sequence_length` steps (`lengths`: steps per user)."""
    if (lengths >= config.min_sequence_length).any():
        return
    longest = int(lengths.max())
    raise BehaviorflowError(
        f"no user has {config.min_sequence_length} or more steps (prepare.min_sequence_length), so there is no "
        f"validation or test case: {len(lengths)} users, the longest with {longest} step{'s' if longest != 1 else ''} "
        f"after de-duplication and collapsing repeats. Leave-one-out holds out each user's last two steps; give users "
        f"longer histories (more events per user_id), or use prepare.split=temporal"
    )


def prepare(events: pd.DataFrame, items: pd.DataFrame, config: PrepareConfig = PrepareConfig(), texts: list[str] | None = None) -> PreparedData:
    """Sequences, split and item texts of a validated log. texts: item_texts(items), one per row of `items`, where the
    caller has them already (Dataset.item_texts, which validation used): not cleaned again."""
    stats: dict[str, object] = {"event_rows_in": len(events), "items_in_catalog": len(items)}
    frame = _behaviour(events, config, stats)
    if frame.empty:
        raise BehaviorflowError(
            f"no events left after de-duplication and the event-type filter {config.event_types}: "
            "widen 'prepare.event_types' or check the events file"
        )

    first = ~items[C.ITEM_ID].duplicated().to_numpy()  # the rows drop_duplicates keeps
    catalog = items[first].reset_index(drop=True)
    item_ids = catalog[C.ITEM_ID].astype(str).tolist()
    index_of = pd.Series(np.arange(1, len(item_ids) + 1), index=item_ids)
    frame = frame.assign(_item=frame[C.ITEM_ID].map(index_of))
    unknown = frame["_item"].isna()
    if unknown.any():  # validation normally stops this earlier; never drop such rows silently
        examples = frame.loc[unknown, C.ITEM_ID].unique()[:5].tolist()
        raise BehaviorflowError(
            f"{int(unknown.sum())} events refer to items missing from the catalog (e.g. {examples}): "
            "add them to the items file or remove those events"
        )

    frame = frame.assign(_item=frame["_item"].astype(np.int64))
    event_times = epoch_seconds(frame[C.TIMESTAMP]).to_numpy(dtype="float64", na_value=np.nan)
    (users, steps, times), _ = _chronological_steps(frame, "_item", config, stats)

    boundaries = np.flatnonzero(users[1:] != users[:-1]) + 1
    user_ids = [str(u) for u in users[np.r_[0, boundaries]]]
    sequences = np.split(steps, boundaries)
    step_times = np.split(times, boundaries)
    stats.update(
        users=len(user_ids),
        sequence_steps=int(len(steps)),
        items_with_events=int(len(np.unique(steps))),
        split=config.split,
    )
    if config.split == "temporal":
        train, valid, test = _temporal_split(sequences, step_times, event_times, config, stats)
    else:
        train, valid, test = _leave_one_out_split(sequences, config, stats)
    stats.update(valid_cases=len(valid), test_cases=len(test))
    # Repeat interactions (a re-rating, a re-purchase, a return to a viewed item) make targets that are already
    # in their own input: evaluate.exclude_seen ranks no history item, so such a case is a miss for every
    # ranker. Counted here so that the run can say how many there are, not hide them in a low HR@10.
    stats.update(valid_targets_in_input=_targets_in_input(valid), test_targets_in_input=_targets_in_input(test))
    # Timestamps at day (or coarser) granularity tie many steps: their order, and so which step is a user's
    # test target, is then the row order of the events file (the sort is stable), not the order they happened in.
    stats.update(steps_tied_with_previous=int(sum(int(np.sum(t[1:] == t[:-1])) for t in step_times)),
                 test_targets_tied=_targets_tied(test, step_times))
    texts = texts_per_row(items, texts)
    if not first.all():
        texts = [text for text, kept in zip(texts, first) if kept]
    stats.update(cleaning_stats(catalog, texts), item_text_fields=text_field_shares(catalog))
    return PreparedData(
        item_ids=item_ids,
        item_texts=texts,
        titles=display_titles(catalog),
        user_ids=user_ids,
        sequences=sequences,
        step_times=step_times,
        train=train,
        valid=valid,
        test=test,
        split=config.split,
        stats=stats,
    )


REPEAT_NOTE_SHARE = 0.01  # a run warns from this share of test targets already in their own history ...
TIED_NOTE_SHARE = 0.05  # ... and from this share of test targets that share the timestamp of the step before


def repeat_target_note(stats: dict, exclude_seen: bool, short: bool = False) -> str | None:
    """A warning (`short`: the summary's line) when at least REPEAT_NOTE_SHARE of the test targets are items
    already in their history and the evaluation ranks no history item: those cases are misses for every
    ranker, a ceiling on HR@K."""
    repeats, cases = stats.get("test_targets_in_input", 0), stats.get("test_cases", 0)
    if not exclude_seen or not cases or repeats < REPEAT_NOTE_SHARE * cases:
        return None
    share = f"{repeats} of {cases} test targets ({repeats / cases:.1%})"
    if short:
        return f"{share} repeat an item of their history: misses for every ranker with evaluate.exclude_seen"
    return (
        f"{share} are items already in the user's history (repeat interactions): evaluate.exclude_seen ranks no "
        f"history item, so they are misses for every ranker and HR@10 cannot exceed {1 - repeats / cases:.3f}. "
        f"Set evaluate.exclude_seen=false to rank repeats as well"
    )


def tied_target_note(stats: dict, short: bool = False) -> str | None:
    """A warning (`short`: the summary's line) when at least TIED_NOTE_SHARE of the test targets have the
    timestamp of the step before them: which of the two is the target is then the events file's row order."""
    tied, cases = stats.get("test_targets_tied", 0), stats.get("test_cases", 0)
    if not cases or tied < TIED_NOTE_SHARE * cases:
        return None
    share = f"{tied} of {cases} test targets ({tied / cases:.1%})"
    if short:
        return f"{share} share the timestamp of the step before: the events file's row order decides them"
    return (
        f"{share} have the same timestamp as the step before them "
        f"({stats.get('steps_tied_with_previous', 0)} of {stats.get('sequence_steps', 0)} steps tie with their predecessor): "
        f"events with equal timestamps keep the row order of the events file, so for these users the test target is "
        f"the row that comes last in the file, not necessarily the last thing they did. Give timestamps with seconds, "
        f"or order each user's events in the file as they happened"
    )


def _targets_in_input(cases: EvalCases) -> int:
    """How many cases ask for an item their input already holds."""
    return int(sum(bool(np.any(inputs == target)) for inputs, target in zip(cases.inputs, cases.targets)))


def _targets_tied(cases: EvalCases, step_times: list[np.ndarray]) -> int:
    """How many cases' target step has the same timestamp as the step right before it."""
    return int(sum(bool(step_times[u][p] == step_times[u][p - 1]) for u, p in zip(cases.users, cases.positions) if p > 0))


def _leave_one_out_split(sequences: list[np.ndarray], config: PrepareConfig, stats: dict) -> tuple[list[np.ndarray], EvalCases, EvalCases]:
    """Train on s_1..s_{n-2}; validate on s_{n-1}; test on s_n. Short users train only."""
    # Nothing to validate or test on: say so here, not as a traceback from training (check_leave_one_out says it earlier).
    _require_long_enough(np.array([len(s) for s in sequences], dtype=np.int64), config)
    long_enough = np.array([len(s) >= config.min_sequence_length for s in sequences], dtype=bool)
    train = [s[:-2] if ok else s for s, ok in zip(sequences, long_enough)]
    users = np.flatnonzero(long_enough)
    lengths = np.array([len(sequences[u]) for u in users], dtype=np.int64)
    stats.update(eval_users=int(long_enough.sum()), short_users_train_only=int((~long_enough).sum()))
    return train, EvalCases.at(sequences, users, lengths - 2), EvalCases.at(sequences, users, lengths - 1)


def _temporal_split(
    sequences: list[np.ndarray], step_times: list[np.ndarray], event_times: np.ndarray, config: PrepareConfig, stats: dict
) -> tuple[list[np.ndarray], EvalCases, EvalCases]:
    """Global cut-offs T_val < T (see the module docstring); one validation and one test case per user."""
    q = config.temporal_quantile
    missing = int(np.isnan(event_times).sum())
    if missing:
        raise BehaviorflowError(
            f"prepare.split=temporal: {missing} events have no readable timestamp; fix the 'timestamp' column "
            "(epoch seconds or ISO-8601) or use prepare.split=leave_one_out"
        )
    cutoff = float(np.quantile(event_times, q))
    earlier = event_times[event_times < cutoff]
    if len(earlier) == 0:
        raise BehaviorflowError(
            f"prepare.split=temporal: no event comes before the test cut-off {cutoff:.0f} (the {q} quantile of "
            "event times); raise prepare.temporal_quantile or check the timestamps"
        )
    valid_cutoff = float(np.quantile(earlier, q))
    train, valid_at, test_at = [], [], []
    no_history_valid = no_history_test = 0
    for u, (seq, t) in enumerate(zip(sequences, step_times)):
        n_train = int(np.searchsorted(t, valid_cutoff, side="left"))  # steps strictly before T_val
        n_before_test = int(np.searchsorted(t, cutoff, side="left"))  # steps strictly before T
        train.append(seq[:n_train])
        if n_train < n_before_test:  # a step in [T_val, T): the first one is the validation target
            if n_train > 0:
                valid_at.append((u, n_train))
            else:
                no_history_valid += 1
        if n_before_test < len(seq):  # a step at or after T: the first one is the test target
            if n_before_test > 0:
                test_at.append((u, n_before_test))
            else:
                no_history_test += 1
    valid = EvalCases.at(sequences, *_pairs(valid_at))
    test = EvalCases.at(sequences, *_pairs(test_at))
    stats.update(
        temporal_quantile=q,
        cutoff_timestamp=cutoff,
        valid_cutoff_timestamp=valid_cutoff,
        train_steps=int(sum(len(s) for s in train)),
        users_without_history_before_valid_cutoff=no_history_valid,
        users_without_history_before_cutoff=no_history_test,
    )
    for name, cases, where in (("validation", valid, f"[{valid_cutoff:.0f}, {cutoff:.0f})"), ("test", test, f"at or after {cutoff:.0f}")):
        if len(cases) == 0:
            raise BehaviorflowError(
                f"prepare.split=temporal: no {name} case — no user has a step {where} after an earlier step "
                f"(temporal_quantile={q}); change prepare.temporal_quantile or use prepare.split=leave_one_out"
            )
    return train, valid, test


def _pairs(pairs: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    if not pairs:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    users, positions = zip(*pairs)
    return np.array(users, dtype=np.int64), np.array(positions, dtype=np.int64)

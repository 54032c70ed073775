"""Turn a validated behaviour log into per-user item sequences and a leave-one-out split.

Leave-one-out (the protocol of SASRec, BERT4Rec and gSASRec): for a user whose sequence is
s_1 … s_n, training sees s_1 … s_{n-2}; validation asks for s_{n-1} given s_1 … s_{n-2}; the test asks
for s_n given s_1 … s_{n-1}. No target is ever part of the training data or of its own input.
Users with fewer than `min_sequence_length` steps are too short to evaluate: their whole sequence
is used for training and they are counted in the statistics — no row is dropped without a count.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from components import contract as C
from components.errors import BehaviorflowError


@dataclass(frozen=True)
class PrepareConfig:
    event_types: tuple[str, ...] | None = None  # behaviours that form sequences; None = all of them
    collapse_repeats: bool = True  # view→click→cart→purchase of one item in a row is one step
    min_sequence_length: int = 3  # fewer steps cannot give train + validation + test targets


@dataclass
class PreparedData:
    """Item indices are 1-based (0 is padding): item index i is `item_ids[i - 1]`."""

    item_ids: list[str]
    item_texts: list[str]  # what the language model reads, one per item
    titles: list[str]
    user_ids: list[str]  # every user, in order
    sequences: list[np.ndarray]  # each user's full chronological sequence (item indices)
    train: list[np.ndarray]  # what training may see, per user
    eval_users: np.ndarray  # positions in user_ids of the users with validation/test targets
    stats: dict = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def valid_split(self) -> tuple[list[np.ndarray], np.ndarray]:
        """(inputs, targets): s_1..s_{n-2} → s_{n-1}."""
        seqs = [self.sequences[u] for u in self.eval_users]
        return [s[:-2] for s in seqs], np.array([s[-2] for s in seqs], dtype=np.int64)

    def test_split(self) -> tuple[list[np.ndarray], np.ndarray]:
        """(inputs, targets): s_1..s_{n-1} → s_n."""
        seqs = [self.sequences[u] for u in self.eval_users]
        return [s[:-1] for s in seqs], np.array([s[-1] for s in seqs], dtype=np.int64)

    def trained_items(self) -> np.ndarray:
        """Boolean mask [n_items + 1]: items that occur in training data (index 0 = padding, False)."""
        mask = np.zeros(self.n_items + 1, dtype=bool)
        for seq in self.train:
            mask[seq] = True
        mask[0] = False
        return mask


def item_texts(catalog: pd.DataFrame) -> list[str]:
    """'title. category. brand. description' per item, empty fields left out."""
    fields = [catalog[f].fillna("").astype(str).str.strip() for f in C.ITEM_TEXT_FIELDS if f in catalog.columns]
    return [". ".join(p for p in parts if p) for parts in zip(*fields)]


def prepare(events: pd.DataFrame, items: pd.DataFrame, config: PrepareConfig = PrepareConfig()) -> PreparedData:
    stats: dict[str, int] = {"event_rows_in": len(events), "items_in_catalog": len(items)}
    columns = [c for c in (C.USER_ID, C.ITEM_ID, C.EVENT_TYPE, C.TIMESTAMP, C.VALUE) if c in events.columns]
    frame = events[columns]
    before = len(frame)
    frame = frame.drop_duplicates()
    stats["duplicate_rows_removed"] = before - len(frame)
    if config.event_types is not None:
        kept = frame[C.EVENT_TYPE].isin(config.event_types)
        stats["rows_of_other_event_types"] = int((~kept).sum())
        frame = frame[kept]
    if frame.empty:
        raise BehaviorflowError(
            f"no events left after de-duplication and the event-type filter {config.event_types}: "
            "widen 'prepare.event_types' or check the events file"
        )

    catalog = items.drop_duplicates(C.ITEM_ID).reset_index(drop=True)
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

    # Stable chronological order per user; ties keep the file order (mergesort is stable).
    frame = frame.sort_values([C.USER_ID, C.TIMESTAMP], kind="mergesort")
    users = frame[C.USER_ID].to_numpy()
    steps = frame["_item"].to_numpy(dtype=np.int64)
    if config.collapse_repeats:
        same = np.zeros(len(steps), dtype=bool)
        same[1:] = (steps[1:] == steps[:-1]) & (users[1:] == users[:-1])
        stats["repeat_steps_collapsed"] = int(same.sum())
        users, steps = users[~same], steps[~same]

    boundaries = np.flatnonzero(users[1:] != users[:-1]) + 1
    user_ids = [str(u) for u in users[np.r_[0, boundaries]]]
    sequences = np.split(steps, boundaries)

    long_enough = np.array([len(s) >= config.min_sequence_length for s in sequences])
    train = [s[:-2] if ok else s for s, ok in zip(sequences, long_enough)]
    stats.update(
        users=len(user_ids),
        eval_users=int(long_enough.sum()),
        short_users_train_only=int((~long_enough).sum()),
        sequence_steps=int(len(steps)),
        items_with_events=int(len(np.unique(steps))),
    )
    return PreparedData(
        item_ids=item_ids,
        item_texts=item_texts(catalog),
        titles=catalog[C.TITLE].astype(str).tolist(),
        user_ids=user_ids,
        sequences=sequences,
        train=train,
        eval_users=np.flatnonzero(long_enough),
        stats=stats,
    )

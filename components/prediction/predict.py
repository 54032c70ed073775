"""Batch prediction: the top-K next items for every user history in a file, ranked by a registered
model's bundle through ONNX Runtime — the graph, item table and exclusion rule the Bento service uses
(`serving.ranking.BundleRanker`), so a batch answer equals the online one for the same known items.

Input, one user per line (UTF-8):   user_id<TAB>item_id item_id …      (oldest first)
Output, one line per input line:    user_id<TAB>item_id item_id …      (best first, at most K)

Item ids the model does not know are skipped and counted; a user left with no known item (a new
visitor, or one whose items all left the catalog) gets the model's most popular training items, as
`history: []` does in the service (the bundle's popularity list; the same K for all of them, whatever
--keep-seen, --new-items and --new-item-boost say), and is counted. A bundle exported before it had
that list leaves them an empty line, as before, and the summary says why. The service instead refuses
a history with an unknown id (400, listing it): online, a client learns of its stale ids; in a
backfill, one retired item must not cost a user their answer. Blank lines are skipped, and so is a first line that names the columns (user_id<TAB>…, no item of it in the catalog). A line without
a tab or with an empty user id stops the run, naming the file and line; the output file appears only
when every line was written (it is written next to its final name and renamed).

    behaviorflow predict --model behaviorflow-recommender@champion --histories h.tsv --k 10 --out top10.tsv
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from components.errors import BehaviorflowError, ConfigFieldError
from serving.contract import MAX_K, POPULARITY_MISSING, NewItemPolicy

_EXAMPLES = 3  # unknown item ids quoted in the summary line


@dataclass(frozen=True)
class PredictConfig:
    k: int = 10  # items per user, 1..MAX_K (the exported graph returns at most MAX_K)
    exclude_seen: bool = True  # never recommend an item of the user's history (the service's default)
    batch_size: int = 1024  # histories per ONNX Runtime call; also the progress-bar step
    new_items: int = 0  # keep at least this many of the k places for new items (the service's `new_items`)
    new_item_boost: float = 0.0  # added to new items' scores before ranking (the service's `new_item_boost`)

    def __post_init__(self):
        if not 1 <= self.k <= MAX_K:
            raise ConfigFieldError("k", f"k ({self.k}) must be between 1 and {MAX_K}: the exported graph returns at most {MAX_K} items")
        problem = self.new_item_policy.problem(self.k)
        if problem:
            raise ConfigFieldError(*problem)
        if self.batch_size < 1:
            raise ConfigFieldError("batch_size", f"batch_size ({self.batch_size}) must be at least 1")

    @property
    def new_item_policy(self) -> NewItemPolicy:
        return NewItemPolicy(places=self.new_items, boost=self.new_item_boost)


@dataclass
class PredictionSummary:
    users: int = 0  # histories read (non-blank lines)
    unknown_items: int = 0  # item ids not in the model's catalog, skipped (every occurrence counts)
    lines_with_unknown: int = 0  # lines that held at least one of them
    no_known_items: int = 0  # users whose history had no known item: written with the most popular items
    popular_fallback: bool = True  # False: the bundle has no popularity list, so those users got an empty list
    unknown_examples: list[str] = field(default_factory=list)  # the first few unknown ids, for the summary
    short_lists: int = 0  # users with known items who got fewer than k (too few items left once the seen ones are out)
    repeated_users: int = 0  # lines whose user id an earlier line had (each line gets its own answer)
    header: str | None = None  # a first line read as a column header and skipped (looks_like_header), as the file had it

    def line(self) -> str:
        """The one-line summary the CLI prints."""
        text = f"{_n(self.users, 'user')}, {_n(self.unknown_items, 'unknown item id')} skipped in {_n(self.lines_with_unknown, 'line')}"
        if self.header is not None:
            text = f"header line {self.header!r} skipped; " + text
        if self.unknown_examples:
            text += f" (e.g. {', '.join(map(repr, self.unknown_examples))})"
        if self.no_known_items and self.popular_fallback:
            text += f"; {_n(self.no_known_items, 'user')} had no known item and got the most popular items"
        elif self.no_known_items:
            text += f"; {_n(self.no_known_items, 'user')} had no known item and got no recommendations: {POPULARITY_MISSING}"
        if self.short_lists:
            text += f"; {_n(self.short_lists, 'user')} got fewer than k items (too few left once the items they have seen are left out)"
        if self.repeated_users:
            text += f"; {_n(self.repeated_users, 'line')} repeated an earlier line's user id (each got its own answer)"
        return text


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


HEADER_USER_COLUMNS = ("user_id", "userid", "user", "user id")  # what a tab-separated export's first column is called


def looks_like_header(user: str, items: list[str], known) -> bool:
    """A first line that names its columns (`user_id<TAB>item_ids`, as pandas' to_csv(sep="\\t") writes) rather than
    holding a user: its user field is a column name and no item of it is in the model's catalog."""
    return user.lower() in HEADER_USER_COLUMNS and not any(item in known for item in items)


def read_histories(path: Path) -> Iterator[tuple[int, str, list[str], int]]:
    """(line number, user id, item ids, bytes read) per line of a histories file; a blank line gives
    user id "" and no items (its bytes still count, for the progress bar)."""
    with Path(path).open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:  # utf-8-sig: the byte-order mark Windows tools write must not become part of the first user id
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                raise BehaviorflowError(f"{path}, line {number}: not UTF-8 text ({exc.reason} at byte {exc.start}); save the file as UTF-8") from None
            if not line.strip():
                yield number, "", [], len(raw)  # blank: counted for progress only
                continue
            user, tab, items = line.partition("\t")
            if not tab:
                raise BehaviorflowError(f"{path}, line {number}: no tab — expected user_id<TAB>item_id item_id … (oldest first), got {line[:60]!r}")
            if not user.strip():
                raise BehaviorflowError(f"{path}, line {number}: empty user_id before the tab")
            yield number, user.strip(), items.split(), len(raw)


def check_out(out: Path, histories: Path | None = None) -> None:
    """Refuse an --out that cannot become a file before any work: it is only written at the end."""
    if histories is not None and out.exists() and out.resolve() == Path(histories).resolve():
        raise BehaviorflowError(f"--out {out} is the histories file: writing it would replace the input; name another file")
    if out.is_dir():
        raise BehaviorflowError(f"--out {out} is a folder: name the file to write, e.g. {out / 'top10.tsv'}")
    parent = next((p for p in out.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise BehaviorflowError(f"--out {out}: {parent} is a file, not a folder")


def predict_file(bundle_dir: Path, histories: Path, out: Path, config: PredictConfig = PredictConfig(), progress: bool = False) -> PredictionSummary:
    """Rank every history of `histories` with the bundle in `bundle_dir` and write `out`."""
    from tqdm import tqdm

    from serving.ranking import BundleRanker

    histories, out = Path(histories), Path(out)
    if not histories.is_file():
        raise BehaviorflowError(f"histories file {histories}: no such file")
    check_out(out, histories)
    ranker = BundleRanker(bundle_dir)
    known = ranker.bundle.index_of
    summary = PredictionSummary(popular_fallback=ranker.bundle.popular is not None)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    try:
        with partial.open("w", encoding="utf-8", newline="\n") as sink, tqdm(
            total=histories.stat().st_size, unit="B", unit_scale=True, desc="predict", disable=not progress
        ) as bar:
            batch: list[tuple[str, list[str]]] = []
            seen_users: set[str] = set()
            first = True
            for _, user, items, size in read_histories(histories):
                bar.update(size)
                if not user:
                    continue
                if first and looks_like_header(user, items, known):
                    summary.header, first = f"{user}\t{' '.join(items)}", False
                    continue
                first = False
                kept = [i for i in items if i in known]
                if len(kept) < len(items):
                    summary.lines_with_unknown += 1
                    summary.unknown_items += len(items) - len(kept)
                    for item in items:
                        if item not in known and len(summary.unknown_examples) < _EXAMPLES and item not in summary.unknown_examples:
                            summary.unknown_examples.append(item)
                summary.users += 1
                summary.repeated_users += user in seen_users
                seen_users.add(user)
                summary.no_known_items += not kept
                batch.append((user, kept))
                if len(batch) >= config.batch_size:
                    summary.short_lists += _write(sink, batch, ranker, config)
                    batch = []
            summary.short_lists += _write(sink, batch, ranker, config)
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    return summary


def _write(sink, batch: list[tuple[str, list[str]]], ranker, config: PredictConfig) -> int:
    """Write the batch's lines; returns how many users with known items got fewer than k. A user with no
    known item gets the bundle's most popular items (none from a bundle without them)."""
    ranked = iter(ranker.topk([h for _, h in batch if h], config.k, config.exclude_seen, config.batch_size, config.new_item_policy))
    bundle = ranker.bundle
    popular = [bundle.item_ids[i - 1] for i, _ in (bundle.popular or [])[: config.k]]
    short = 0
    for user, history in batch:
        items = next(ranked) if history else popular
        short += bool(history) and len(items) < config.k
        sink.write(f"{user}\t{' '.join(items)}\n")
    return short


def predict_with_registered_model(model: str, histories: Path, out: Path, config: PredictConfig = PredictConfig(), progress: bool = False) -> tuple[str, PredictionSummary]:
    """Resolve `model` (NAME@ALIAS or NAME/VERSION) in the MLflow registry, download its bundle and run
    `predict_file`. Returns (the version used, the summary)."""
    from components import registry

    histories = Path(histories)
    if not histories.is_file():  # before any registry call
        raise BehaviorflowError(f"histories file {histories}: no such file")
    check_out(Path(out), histories)
    version = registry.resolve_version(registry.ModelRef.parse(model))
    registry.check_usable(version, "predict")
    with tempfile.TemporaryDirectory(prefix="behaviorflow-predict-") as scratch:
        bundle = registry.download_bundle(version, Path(scratch))
        return str(version.version), predict_file(bundle, histories, out, config, progress)

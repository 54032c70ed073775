"""The bundled sample data: a small synthetic shop with learnable sequential structure.

Items come in *series* within a category ("Alpenrock hiking boot Ridge 1", "... Ridge 2", ...), and a
user who saw part n goes on to part n+1 most of the time (`p_follow_series`); otherwise they jump to a
popular item of a category they like, or to any popular item. So the next item is predictable from the
previous one — a popularity baseline is clearly beatable — and the text says why (a series shares
brand, series word and category), so a text-aware model can place a brand-new part it never saw in an
event. Two kinds of such parts: a few *unreleased* items sit in the catalog only, and a few items are
*launched* at the end of the log — the next part of a series, visited only as the last visit of some users
who saw the part before it (they came back for the sequel). Leave-one-out makes those visits test targets
that no training sequence holds: the cold-start slice of the evaluation, where an id-only model scores 0.

Each item visit is a funnel of events: a view, sometimes a click, fewer carts, fewer purchases, with
increasing timestamps in 2024. A few exact duplicate rows exercise de-duplication.

    python -m components.data.sample --out data/sample   # writes events.csv and items.csv
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from components import contract as c
from components.errors import BehaviorflowError

class Category(NamedTuple):
    noun: str  # used in titles: "<brand> <noun> <series word> <part>"
    brands: tuple[str, ...]  # series of this category are spread over these brands
    features: tuple[str, ...]  # description phrases
    price: tuple[float, float]  # EUR range a series' base price is drawn from


CATEGORIES: dict[str, Category] = {
    "hiking boots": Category(
        "hiking boot", ("Alpenrock", "Trailcraft", "Summitline"),
        ("a waterproof membrane", "a grippy lugged sole", "ankle support"), (80, 220)),
    "espresso machines": Category(
        "espresso machine", ("Caffeno", "Brewmaster", "Lucca"),
        ("a 15-bar pump", "a steam wand", "a built-in grinder"), (150, 900)),
    "fantasy novels": Category(
        "fantasy novel", ("Ember Press", "Northwind Books", "Gryphon House"),
        ("dragons and old magic", "a heist in a floating city", "a map of the realm"), (9, 25)),
    "mechanical keyboards": Category(
        "keyboard", ("Keyforge", "Clacktron", "Tactile Labs"),
        ("hot-swappable switches", "PBT keycaps", "a tenkeyless layout"), (60, 250)),
    "running shoes": Category(
        "running shoe", ("Stride", "Velocita", "Pacewell"),
        ("a carbon plate", "a cushioned midsole", "a breathable mesh upper"), (70, 200)),
    "board games": Category(
        "board game", ("Meeple Works", "Dicecraft", "Tabletop Co"),
        ("2-5 players", "a campaign mode", "hand-painted miniatures"), (20, 90)),
    "yoga mats": Category(
        "yoga mat", ("Lotus", "Zenflow", "Asana Supply"),
        ("natural rubber", "alignment lines", "a carry strap"), (25, 120)),
    "camping tents": Category(
        "tent", ("Basecamp", "Nomad Gear", "Pinecrest"),
        ("a two-person dome", "aluminium poles", "a storm-proof fly"), (90, 600)),
    "skincare serums": Category(
        "serum", ("Lumiere", "Dermalab", "Verdant"),
        ("vitamin C", "hyaluronic acid", "niacinamide"), (15, 80)),
    "cookbooks": Category(
        "cookbook", ("Saffron House", "Hearth Books", "Mise Press"),
        ("weeknight recipes", "regional classics", "step-by-step photos"), (15, 45)),
    "wireless headphones": Category(
        "headset", ("Sonara", "Auralis", "Beatline"),
        ("active noise cancelling", "a 30-hour battery", "multipoint Bluetooth"), (40, 400)),
    "indoor plants": Category(
        "plant", ("Greenleaf", "Fernway", "Botanica"),
        ("low light tolerance", "a ceramic pot", "pet-safe leaves"), (10, 70)),
}

SERIES_WORDS = (
    "Ridge Atlas Nova Ember Aurora Cascade Summit Tundra Meridian Harbor Falcon Orchid Granite Solace "
    "Vertex Willow Zephyr Cobalt Juniper Lumen Monarch Nimbus Onyx Prairie Quartz Raven Sable Tempest "
    "Umber Vale Wren Yarrow Zenith Aspen Birch Cedar Delta Echo Fjord Glacier Haven Iris Jasper Kestrel "
    "Lagoon Mistral Nectar Oasis Pebble Quill Rowan Sierra Thistle Upland Vesper Wharf Alder Basalt "
    "Cinder Dune Elm Flint Grove Heather Inlet Jade Kelp Larch Moss Nettle Opal Pine Reed Slate Tide "
    "Vireo Willet Yew Amber Bramble Coral Drift"
).split()

# Funnel timing: seconds after the previous step (low, high), drawn uniformly.
_STEP_DELAY = {"click": (3, 60), "cart": (20, 300), "purchase": (60, 1200)}
_START_2024 = 1_704_067_200  # 2024-01-01T00:00:00Z


@dataclass(frozen=True)
class SampleConfig:
    """Size and behaviour of the synthetic shop; the defaults train in about a minute on 2 CPU cores."""

    seed: int = 7  # the same seed gives byte-identical files
    n_users: int = 1500
    series_per_category: int = 6  # 12 categories x 6 series x 4-8 parts ≈ 430 items
    series_length: tuple[int, int] = (4, 8)  # parts per series, inclusive
    unreleased_share: float = 0.02  # share of items that are in the catalog but in no event (cold start)
    launched_share: float = 0.02  # share of items launched at the end of the log: only ever a user's last visit
    p_return_for_launch: float = 0.5  # a user who saw the part before a launched item comes back for it
    mean_visits: float = 11.0  # item visits per user: log-normal (sigma 0.45) around this, ...
    visits_range: tuple[int, int] = (5, 30)  # ...clipped to this range (each visit is 1-4 events)
    p_follow_series: float = 0.65  # next visit is the next part of the current series
    p_preferred_category: float = 0.25  # else: a popular item of a preferred category; rest: any popular item
    p_click: float = 0.5  # P(click | view)
    p_cart: float = 0.3  # P(cart | click)
    p_purchase: float = 0.5  # P(purchase | cart)
    p_new_session: float = 0.2  # a visit starts a new session (hours to days later) instead of minutes later
    duplicate_share: float = 0.005  # exact duplicate event rows, as logging pipelines produce


@dataclass(frozen=True)
class _Catalog:
    items: pd.DataFrame  # the written catalog, released and unreleased
    ids: np.ndarray  # per released item: its item_id (arrays below are indexed like this one)
    category: np.ndarray  # per released item: category index
    next_part: np.ndarray  # per released item: index of the next released part, -1 at the end of a series
    popularity: np.ndarray  # per released item: sampling weight (popular series, early parts; 0 for launched items)
    price: np.ndarray  # per released item: EUR
    launch: np.ndarray  # per released item: index of the launched part that follows it, else -1


def generate_sample(config: SampleConfig = SampleConfig()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(events, items) frames in the data-contract layout, deterministic for `config.seed`."""
    rng = np.random.default_rng(config.seed)
    catalog = _make_catalog(config, rng)
    n_categories = len(CATEGORIES)
    global_cdf = np.cumsum(catalog.popularity) / catalog.popularity.sum()
    # Per category: its item indices and the cumulative popularity within it, for fast sampling.
    members = [np.flatnonzero(catalog.category == k) for k in range(n_categories)]
    member_cdf = [np.cumsum(catalog.popularity[m]) / catalog.popularity[m].sum() for m in members]

    def popular_in(category: int) -> int:
        return int(members[category][np.searchsorted(member_cdf[category], rng.random())])

    funnel = (("click", config.p_click), ("cart", config.p_cart), ("purchase", config.p_purchase))
    rows, launch_rows = [], []  # (user, item index, event type, timestamp)
    # Launch visits draw from their own generator, so the rest of the log does not depend on them.
    launch_rng = np.random.default_rng([config.seed, 1])

    def visit(out: list, user: int, item: int, clock: int, draw) -> int:
        """A view and its funnel (click, cart, purchase, each less likely); returns the clock after it."""
        out.append((user, item, "view", clock))
        for step, p_step in funnel:
            if draw.random() >= p_step:
                break
            clock += int(draw.integers(*_STEP_DELAY[step]))
            out.append((user, item, step, clock))
        return clock

    for user in range(1, config.n_users + 1):
        liked = rng.choice(n_categories, size=rng.integers(1, 4), replace=False)
        n_visits = int(np.clip(round(rng.lognormal(np.log(config.mean_visits), 0.45)), *config.visits_range))
        clock = _START_2024 + int(rng.integers(0, 330 * 86_400))
        item = popular_in(int(rng.choice(liked)))
        launches = []  # launched parts whose predecessor this user saw, in order of first sight
        for _ in range(n_visits):
            clock = visit(rows, user, item, clock, rng)
            if catalog.launch[item] >= 0 and catalog.launch[item] not in launches:
                launches.append(int(catalog.launch[item]))
            if rng.random() < config.p_new_session:
                clock += 3_600 + int(rng.exponential(2 * 86_400))
            else:
                clock += int(rng.integers(20, 600))
            draw = rng.random()
            if draw < config.p_follow_series and catalog.next_part[item] >= 0:
                item = int(catalog.next_part[item])
            elif draw < config.p_follow_series + config.p_preferred_category:
                item = popular_in(int(rng.choice(liked)))
            else:
                item = int(np.searchsorted(global_cdf, rng.random()))
        # At most one launch visit, the user's last: no training sequence of leave-one-out holds it.
        if launches and launch_rng.random() < config.p_return_for_launch:
            visit(launch_rows, user, launches[0], clock + 86_400 + int(launch_rng.integers(0, 2 * 86_400)), launch_rng)

    users, items, kinds, stamps = (np.asarray(col) for col in zip(*(rows + launch_rows)))
    priced = np.isin(kinds, ("cart", "purchase"))
    events = pd.DataFrame(
        {
            c.USER_ID: pd.Series(users).map("{:05d}".format).astype("str"),  # leading zeros matter
            c.ITEM_ID: pd.Series(catalog.ids[items], dtype="str"),
            c.EVENT_TYPE: pd.Series(kinds, dtype="str"),
            c.TIMESTAMP: stamps.astype("int64"),
            c.VALUE: np.where(priced, catalog.price[items], np.nan),
        }
    )
    n_duplicates = round(config.duplicate_share * len(rows))
    duplicates = np.sort(rng.choice(len(rows), size=n_duplicates, replace=False))  # of the regular visits
    # A log is ordered by time across users; the stable sort keeps each duplicate next to its original.
    order = np.concatenate([np.arange(len(events)), duplicates])
    events = events.iloc[order].assign(_order=order)
    events = events.sort_values([c.TIMESTAMP, "_order"], kind="stable").drop(columns="_order")
    return events.reset_index(drop=True), catalog.items


def write_sample(out_dir: str | Path, config: SampleConfig = SampleConfig()) -> tuple[Path, Path]:
    """Write `events.csv` and `items.csv` into `out_dir`; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    events, items = generate_sample(config)
    events_path, items_path = out / "events.csv", out / "items.csv"
    # Written next to their names and renamed: a run reading the sample while another writes it (two
    # deployments) never sees half a file, and a write that fails (a full disk) leaves none behind.
    for table, path, options in ((events, events_path, {"float_format": "%.2f"}), (items, items_path, {})):
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        try:
            table.to_csv(partial, index=False, lineterminator="\n", **options)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
    return events_path, items_path


def _make_catalog(config: SampleConfig, rng: np.random.Generator) -> _Catalog:
    n_series = len(CATEGORIES) * config.series_per_category
    if n_series > len(SERIES_WORDS):
        raise BehaviorflowError(
            f"series_per_category={config.series_per_category} needs {n_series} series names; "
            f"only {len(SERIES_WORDS)} exist (at most {len(SERIES_WORDS) // len(CATEGORIES)} per category)."
        )
    words = rng.permutation(SERIES_WORDS)[:n_series]
    lengths = rng.integers(config.series_length[0], config.series_length[1] + 1, size=n_series)
    # Unreleased items are the next part of a few series: text-wise they belong, but no one saw them yet.
    n_unreleased = max(1, round(config.unreleased_share * lengths.sum()))
    unreleased = set(rng.choice(n_series, size=n_unreleased, replace=False).tolist())
    # Launched items are the next part of a few other series (drawn apart, so the rest stays as it was).
    launch_rng = np.random.default_rng([config.seed, 2])
    others = np.array(sorted(set(range(n_series)) - unreleased))
    n_launched = min(len(others), round(config.launched_share * lengths.sum()))
    launched = set(launch_rng.choice(others, size=n_launched, replace=False).tolist()) if n_launched else set()
    # Within a category, series popularity falls off Zipf-like with a random rank.
    ranks = np.concatenate([rng.permutation(config.series_per_category) for _ in CATEGORIES])
    names = list(CATEGORIES)

    records, category, next_part, popularity, price, launch = [], [], [], [], [], []
    launched_records = []  # appended after the others, so the regular items keep their ids
    for s, word in enumerate(words):
        k, within = divmod(s, config.series_per_category)
        name = names[k]
        noun, brands, features, (low, high) = CATEGORIES[name]
        brand = brands[within % len(brands)]
        base_price = rng.uniform(low, high)
        series_weight = 1.0 / (1 + ranks[s]) ** 0.8
        n_parts = int(lengths[s]) + (s in unreleased)
        for part in range(1, n_parts + 1):
            records.append(_part_record(brand, noun, word, part, name, features[(s + part) % len(features)], released=part <= lengths[s]))
            if part <= lengths[s]:
                category.append(k)
                next_part.append(len(category) if part < lengths[s] else -1)
                popularity.append(series_weight * 0.85 ** (part - 1))
                price.append(round(base_price * rng.uniform(0.9, 1.1), 2))
                launch.append(-1)
        if s in launched:  # the part after the last: indexed after every regular item (see below)
            part = int(lengths[s]) + 1
            launched_records.append((len(category) - 1, k, round(base_price * launch_rng.uniform(0.9, 1.1), 2),
                                     _part_record(brand, noun, word, part, name, features[(s + part) % len(features)], released=True)))

    # Ids in random order, so that "next id" does not give the series away.
    ids = [f"P{n:04d}" for n in rng.permutation(len(records)) + 1]
    for n, (before, k, cost, record) in zip(launch_rng.permutation(len(launched_records)) + len(records) + 1, launched_records):
        launch[before] = len(category)  # the released-item index the launched part gets here
        category.append(k)
        next_part.append(-1)
        popularity.append(0.0)  # never drawn in the log: only a returning user's last visit
        price.append(cost)
        launch.append(-1)
        records.append(record)
        ids.append(f"P{n:04d}")
    frame = pd.DataFrame(records)
    frame.insert(0, c.ITEM_ID, ids)
    released = frame.pop("released").to_numpy(dtype=bool)
    return _Catalog(
        items=frame.sort_values(c.ITEM_ID).astype("str").reset_index(drop=True),
        ids=frame[c.ITEM_ID].to_numpy()[released],
        category=np.asarray(category),
        next_part=np.asarray(next_part),
        popularity=np.asarray(popularity),
        price=np.asarray(price),
        launch=np.asarray(launch),
    )


def _part_record(brand: str, noun: str, word: str, part: int, category: str, feature: str, released: bool) -> dict:
    """One part of a series as a catalog row (plus whether it is released)."""
    hook = f"Continues {word} {part - 1}." if part > 1 else f"The first {brand} {word} {noun}."
    return {
        c.TITLE: f"{brand} {noun} {word} {part}",
        c.CATEGORY: category,
        c.BRAND: brand,
        c.DESCRIPTION: f"Part {part} of the {brand} {word} {category} series: {_article(noun)} {noun} with {feature}. {hook}",
        "released": released,
    }


def _article(noun: str) -> str:
    return "an" if noun[0] in "aeiou" else "a"


def main() -> None:
    parser = argparse.ArgumentParser(description="Write the synthetic sample (events.csv, items.csv).")
    parser.add_argument("--out", type=Path, default=Path("data/sample"), help="output folder")
    parser.add_argument("--seed", type=int, default=SampleConfig.seed)
    args = parser.parse_args()
    for path in write_sample(args.out, SampleConfig(seed=args.seed)):
        print(path)


if __name__ == "__main__":
    main()


def load_configured(data):
    """The dataset a `DataConfig` names, read as it says (components.data.readers.load_dataset); the bundled
    sample, written under $BEHAVIORFLOW_HOME/sample, when it names no file. What retrain reads, and what the
    CLI reads before it (validate, the early history check)."""
    from dataclasses import replace

    from components import settings
    from components.data.readers import load_dataset

    if not (data.events or data.items or data.movielens):
        events, items = write_sample(settings.home() / "sample", SampleConfig())
        data = replace(data, events=str(events), items=str(items))
    return load_dataset(events=data.events, items=data.items, movielens=data.movielens, data=data)

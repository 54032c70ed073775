"""A generated Amazon-like shop at scale, for auditing a retrain's time and memory on a CPU box.

Writes `items.csv` (item_id, title, category, brand, description) and `events.csv` (user_id, item_id,
event_type, timestamp) under `--out`, seeded, no dataset needed. The shape: `--items` products whose
descriptions range from none to long HTML pages (paragraphs, bullet lists, entities; categories as list
literals, as Amazon's dumps write them), `--users` users with short histories (steps log-normal, median
about 6, long tail), items drawn with power-law popularity, within a user's favourite category, and often
the previous item's "companion" (so that a model has sequential signal to learn beyond popularity). Some
steps are a view followed by a cart (and a purchase) of the same item: one step, several events.

    .venv/bin/python benchmarks/shop_scale_data.py --out /tmp/shop_100k            # ~1M events, ~1 min
    .venv/bin/python benchmarks/shop_scale_data.py --out /tmp/shop_20k --items 20000 --users 30000
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

CATEGORY_ROOTS = ["Electronics", "Home & Kitchen", "Sports & Outdoors", "Beauty & Personal Care", "Books", "Toys & Games",
                  "Clothing, Shoes & Jewelry", "Tools & Home Improvement", "Automotive", "Pet Supplies", "Office Products",
                  "Health & Household"]
SUBS = ["Accessories", "Essentials", "Storage", "Cleaning", "Outdoor", "Kids", "Travel", "Gifts", "Replacement Parts", "Sets"]
ADJECTIVES = ("durable lightweight compact premium portable waterproof wireless rechargeable ergonomic adjustable foldable "
              "stainless reusable organic hypoallergenic heavy-duty slim ultra quiet fast non-slip breathable insulated "
              "magnetic universal vintage classic modern professional mini large extra-soft").split()
NOUNS = ("cable charger headphones speaker lamp kettle blender backpack tent bottle jacket sneakers shampoo serum "
         "notebook pen drill wrench tire-inflator leash bowl puzzle doll novel cookbook mat organizer sheet towel "
         "watch bracelet case stand mouse keyboard monitor-arm router camera tripod").split()
WORDS = ("made with high quality materials for everyday use designed to last easy to clean and store fits most "
         "standard sizes comes with a one year warranty perfect gift for family and friends compatible with all "
         "major brands includes everything you need to get started tested for safety and performance lightweight "
         "enough to carry anywhere soft touch finish keeps drinks cold for hours quick setup no tools required "
         "improves comfort reduces noise saves space protects against scratches and drops").split()


def sentence(rng) -> str:
    return " ".join(rng.choice(WORDS, rng.integers(6, 16))).capitalize() + "."


def description(rng, kind: int) -> str:
    """0: none, 1: one plain sentence, 2: a short HTML block, 3: a long page (several paragraphs and lists)."""
    if kind == 0:
        return ""
    if kind == 1:
        return sentence(rng)
    parts = [f"<p>{sentence(rng)}&nbsp;{sentence(rng)}</p>"]
    paragraphs = 1 if kind == 2 else int(rng.integers(4, 12))
    for _ in range(paragraphs):
        if rng.random() < 0.6:
            items = "".join(f"\n\t<li><b>{rng.choice(ADJECTIVES).title()}:</b> {sentence(rng)}</li>" for _ in range(rng.integers(2, 6)))
            parts.append(f"<ul>{items}\n</ul>")
        if rng.random() < 0.5:
            parts.append(f'<span style="font-weight: bold;">Don&#39;t forget:</span> {sentence(rng)}<br/>{sentence(rng)}<br>')
        parts.append(f"<p>Size &amp; fit: {sentence(rng)} &quot;{rng.choice(WORDS)}&quot; {sentence(rng)}</p>")
    return "\n".join(parts)


def write_items(path: Path, n: int, rng) -> np.ndarray:
    """The catalog; returns each item's category index."""
    categories = [(root, sub) for root in CATEGORY_ROOTS for sub in SUBS]
    item_category = rng.integers(len(categories), size=n)
    brands = [f"Brand{b:04d}" for b in range(2000)]
    kinds = rng.choice(4, size=n, p=[0.15, 0.30, 0.35, 0.20])
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["item_id", "title", "category", "brand", "description"])
        for i in range(n):
            root, sub = categories[item_category[i]]
            path_ = [root, sub, f"{sub} {rng.choice(NOUNS).title()}s"]
            category = json.dumps(path_) if rng.random() < 0.3 else repr(path_) if rng.random() < 0.7 else " > ".join(path_)
            title = f"{rng.choice(brands)} {' '.join(rng.choice(ADJECTIVES, rng.integers(1, 4)))} {rng.choice(NOUNS)} model {rng.integers(100, 9999)}"
            if rng.random() < 0.2:
                title += rng.choice([" &amp; case", " (2&#39;s pack)", ", black", " - 3 pack"])
            out.writerow([f"B{i:09d}", title, category, rng.choice(brands), description(rng, int(kinds[i]))])
    return item_category


def write_events(path: Path, n_users: int, item_category: np.ndarray, rng) -> int:
    n_items = len(item_category)
    # Power-law popularity: the item at popularity rank r (a random permutation) has weight 1 / (r + 10).
    rank = rng.permutation(n_items)
    weight = 1.0 / (rank + 10.0)
    by_category = {}
    for cat in np.unique(item_category):
        members = np.flatnonzero(item_category == cat)
        p = weight[members] / weight[members].sum()
        by_category[cat] = (members, np.cumsum(p))
    global_cdf = np.cumsum(weight / weight.sum())
    # Each item's companion: a popular item of its own category (what people buy next).
    companion = np.empty(n_items, dtype=np.int64)
    for cat, (members, cdf) in by_category.items():
        companion[members] = members[np.searchsorted(cdf, rng.random(len(members)), side="right").clip(max=len(members) - 1)]
    steps = np.clip(np.round(rng.lognormal(np.log(6), 0.65, size=n_users)), 1, 600).astype(np.int64)
    start = rng.integers(1_672_531_200, 1_704_067_200, size=n_users)  # 2023
    rows = 0
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["user_id", "item_id", "event_type", "timestamp"])
        for u in range(n_users):
            n = int(steps[u])
            fav = int(item_category[np.searchsorted(global_cdf, rng.random(), side="right").clip(max=n_items - 1)])
            members, cdf = by_category[fav]
            draws = rng.random((n, 3))
            in_cat = members[np.searchsorted(cdf, draws[:, 1], side="right").clip(max=len(members) - 1)]
            anywhere = np.searchsorted(global_cdf, draws[:, 2], side="right").clip(max=n_items - 1)
            gaps = rng.exponential(3600.0, size=n).astype(np.int64) + 1
            t = int(start[u])
            prev = -1
            user = f"U{u:07d}"
            extra = rng.random(n)
            for s in range(n):
                if prev >= 0 and draws[s, 0] < 0.4:
                    item = int(companion[prev])
                elif draws[s, 0] < 0.85:
                    item = int(in_cat[s])
                else:
                    item = int(anywhere[s])
                t += int(gaps[s])
                iid = f"B{item:09d}"
                out.writerow([user, iid, "view", t])
                rows += 1
                if extra[s] < 0.10:
                    out.writerow([user, iid, "cart", t + 30])
                    rows += 1
                    if extra[s] < 0.03:
                        out.writerow([user, iid, "purchase", t + 90])
                        rows += 1
                prev = item
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for items.csv and events.csv (outside the repository)")
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=150_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    item_category = write_items(args.out / "items.csv", args.items, rng)
    rows = write_events(args.out / "events.csv", args.users, item_category, rng)
    print(json.dumps({"items": args.items, "users": args.users, "events": rows, "out": str(args.out)}))


if __name__ == "__main__":
    main()

"""How much of the language model's token budget goes to markup, before and after item text cleaning.

Real product dumps (Amazon's among them) carry HTML in descriptions, entities, and categories written as list
literals. The model reads each item's first `text.max_tokens` (64) tokens. This generates a catalog of
Amazon-like items (seeded, no dataset needed), builds each item's text the way `prepare.item_texts` did before
cleaning ('title. category. brand. description', fields stripped) and the way it does now, tokenizes both with
the bundled all-MiniLM-L6-v2 tokenizer (offline), and counts the tokens inside each item's window that come from
markup: a token is markup when its characters overlap a tag, a comment, an entity or the brackets and quotes of
a list literal (one yardstick for both texts, independent of the cleaner's own patterns).

    .venv/bin/python benchmarks/text_markup.py                 # a few seconds
    .venv/bin/python benchmarks/text_markup.py --items 1000 --plain-share 0.3
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from components import contract as c  # noqa: E402
from components.preparation.prepare import item_texts  # noqa: E402
from components.tokenization import TextEncoderConfig, resolve_model_path  # noqa: E402
from provenance import git_state  # noqa: E402

CATEGORIES = [
    ["Electronics", "Computers & Accessories", "Cables & Accessories"],
    ["Electronics", "Headphones, Earbuds & Accessories", "Earbud Headphones"],
    ["Home & Kitchen", "Kitchen & Dining", "Coffee, Tea & Espresso"],
    ["Sports & Outdoors", "Outdoor Recreation", "Camping & Hiking"],
    ["Beauty & Personal Care", "Skin Care", "Face"],
    ["Books"],
]
BRANDS = ["Anker", "Sony", "Breville", "Coleman", "CeraVe", "Penguin", "UGREEN", "JBL"]
NOUNS = ["cable", "earbuds", "espresso machine", "tent", "moisturizer", "charger", "lantern", "hardcover"]
WORDS = ("durable lightweight fast charging braided nylon premium sound deep bass compact water resistant "
         "easy to clean stainless steel hydrating gentle daily use portable long battery life").split()

EXAMPLE = 2  # the item shown in the results file (one with HTML, entities and a list-literal category)

# What counts as markup, in the text before cleaning and after it.
MARKUP = re.compile(
    r"<!--.*?-->"  # comments
    r"|</?[A-Za-z][^<>]*>"  # tags, any name
    r"|&(?:#[0-9]+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);"  # entities
    r"""|\[(?=\s*['"])|(?<=['"])\s*\]|['"](?=\s*[,\]])|(?<=[\[,])\s*['"]""",  # a list literal's brackets and quotes (not its commas)
    re.DOTALL,
)


def sentence(rng) -> str:
    return " ".join(rng.choice(WORDS, rng.integers(5, 12))).capitalize() + "."


def description(rng) -> str:
    """An HTML product description as product pages hold them: paragraphs, line breaks, bullet lists, inline
    styling, entities, and the newlines and tabs of the page's source."""
    parts = [f"<p>{sentence(rng)}&nbsp;{sentence(rng)}</p>"]
    if rng.random() < 0.7:
        items = "".join(f"\n\t<li>{emphasised(sentence(rng), rng)}</li>" for _ in range(rng.integers(2, 6)))
        parts.append(f"<ul>{items}\n</ul>")
    if rng.random() < 0.5:
        parts.append(f'<span style="font-weight: bold;">Don&#39;t forget:</span> {sentence(rng)}<br/>{sentence(rng)}<br>')
    if rng.random() < 0.4:
        parts.append(f"<p>Size &amp; fit: {sentence(rng)} &quot;{rng.choice(WORDS)}&quot;</p>")
    return "\n".join(parts)


def emphasised(text: str, rng) -> str:
    tag = rng.choice(["b", "strong", ""])
    return f"<{tag}>{text}</{tag}>" if tag else text


def catalog(n: int, plain_share: float, seed: int) -> pd.DataFrame:
    """`n` items; a `plain_share` of them as a clean catalog writes them (no markup at all)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        path, brand, noun = CATEGORIES[rng.integers(len(CATEGORIES))], rng.choice(BRANDS), rng.choice(NOUNS)
        plain = rng.random() < plain_share
        title = f"{brand} {noun} {i}" + ("" if plain else rng.choice(["", " &amp; case", " (2&#39;s pack)"]))
        if plain:
            category, text = ", ".join(path), " ".join(sentence(rng) for _ in range(rng.integers(3, 8)))
        else:
            category = json.dumps(path) if rng.random() < 0.3 else repr(path)  # JSON or a Python list literal
            text = description(rng)
        rows.append({c.ITEM_ID: str(i), c.TITLE: title, c.CATEGORY: category, c.BRAND: brand, c.DESCRIPTION: text})
    return pd.DataFrame(rows)


def old_item_texts(items: pd.DataFrame) -> list[str]:
    """item_texts before cleaning (f458ed2 and earlier): the stripped fields joined as they were."""
    fields = [items[f].fillna("").astype(str).str.strip() for f in c.ITEM_TEXT_FIELDS if f in items.columns]
    return [". ".join(p for p in parts if p) for parts in zip(*fields)]


def window_counts(texts: list[str], tokenizer, max_tokens: int) -> dict[str, np.ndarray]:
    """Per text: tokens in the model's window (no [CLS]/[SEP]), and how many of them overlap markup."""
    encoded = tokenizer(texts, truncation=True, max_length=max_tokens, return_offsets_mapping=True)
    read, markup = [], []
    for text, offsets in zip(texts, encoded["offset_mapping"]):
        spans = [m.span() for m in MARKUP.finditer(text)]
        tokens = [(s, e) for s, e in offsets if e > s]  # special tokens have empty spans
        read.append(len(tokens))
        markup.append(sum(any(s < me and ms < e for ms, me in spans) for s, e in tokens))
    return {"read": np.array(read), "markup": np.array(markup)}


def summary(counts: dict[str, np.ndarray], max_tokens: int) -> dict:
    read, markup = counts["read"], counts["markup"]
    return {
        "tokens_read_mean": round(float(read.mean()), 1),
        "markup_tokens_mean": round(float(markup.mean()), 1),
        "markup_tokens_median": float(np.median(markup)),
        "markup_tokens_mean_items_with_markup": round(float(markup[markup > 0].mean()), 1) if (markup > 0).any() else 0.0,
        "markup_share_of_tokens_read": round(float(markup.sum() / read.sum()), 3),
        "content_tokens_mean": round(float((read - markup).mean()), 1),
        "items_with_markup": int((markup > 0).sum()),
        "items_cut_at_max_tokens": int((read == max_tokens - 2).sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--plain-share", type=float, default=0.2, help="share of items without any markup")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "text_markup.json")
    args = parser.parse_args()

    from transformers import AutoTokenizer

    commit, dirty = git_state()
    config = TextEncoderConfig()
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(config), local_files_only=True)
    items = catalog(args.items, args.plain_share, args.seed)
    before = summary(window_counts(old_item_texts(items), tokenizer, config.max_tokens), config.max_tokens)
    after = summary(window_counts(item_texts(items), tokenizer, config.max_tokens), config.max_tokens)
    result = {
        "what": f"per item, tokens of markup among the text tokens the language model reads (at most {config.max_tokens - 2}: the "
                f"text.max_tokens = {config.max_tokens} window less [CLS] and [SEP]), before and after item text cleaning, on a "
                "generated Amazon-like catalog",
        "items": args.items,
        "plain_share": args.plain_share,
        "seed": args.seed,
        "max_tokens": config.max_tokens,
        "before": before,
        "after": after,
        "example": {"before": old_item_texts(items.iloc[[EXAMPLE]])[0], "after": item_texts(items.iloc[[EXAMPLE]])[0]},
        "git_commit": commit,
        "git_dirty": dirty,
    }
    for name, numbers in (("before", before), ("after", after)):
        print(f"{name:6s}: {numbers['markup_tokens_mean']:5.1f} of {numbers['tokens_read_mean']:.1f} tokens read are markup "
              f"(median {numbers['markup_tokens_median']:.0f}; {numbers['items_with_markup']} of {args.items} items with any), "
              f"{numbers['content_tokens_mean']:.1f} content tokens; {numbers['items_cut_at_max_tokens']} items cut at {config.max_tokens}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()

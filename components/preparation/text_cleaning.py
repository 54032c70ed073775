"""Clean catalog text before the language model reads it: product dumps (Amazon's, a shop's CMS export) carry
HTML, entities and list literals that would spend the text.max_tokens budget on markup and pull the embedding
toward it.

Only what looks like markup changes: plain text ("Romeo & Juliet (1996)", "x < y", "<Untitled>", "Love&not war")
comes out as it went in. Of MovieLens-1M's 3,883 item texts one changes: a title that holds the entity "&#8230;"
now reads "…". Used for the text the model reads (`prepare.item_texts`) and for the titles the service returns
(`prepare.display_titles`).
"""

from __future__ import annotations

import ast
import html
import json
import re

# Tags of HTML elements only, so that "x < y" or "<Untitled>" in a title stays: `<` must be followed directly by
# a known element name (optionally after `/`) and then by whitespace, `/` or `>`.
_SEPARATING = (  # block elements and line breaks: "a<br>b" and "</li><li>" read as a word boundary
    "address article aside blockquote br caption center dd details dialog dir div dl dt fieldset figcaption figure "
    "footer form h1 h2 h3 h4 h5 h6 header hr iframe img legend li main menu nav ol option p pre section select "
    "script style summary table tbody td textarea tfoot th thead tr ul"
).split()
_INLINE = (  # inline elements: "<b>5</b>-pack" reads "5-pack"
    "a abbr acronym b bdi bdo big cite code del dfn em font i ins kbd label mark nobr q s samp small span strike "
    "strong sub sup time tt u var wbr"
).split()
_TAG = r"</?(?:{})(?=[\s/>])[^<>]*>"
_SEPARATING_TAG = re.compile(_TAG.format("|".join(_SEPARATING)), re.IGNORECASE)
_INLINE_TAG = re.compile(_TAG.format("|".join(_INLINE)), re.IGNORECASE)
# Script and style bodies are code, not text: dropped with their tags. Comments likewise.
_HIDDEN = re.compile(r"<(script|style)(?=[\s>])[^<>]*>.*?</\1\s*>|<!--.*?-->", re.IGNORECASE | re.DOTALL)
# Entities with their closing ';' only (&amp; &nbsp; &#39; &#x27;): html.unescape alone would also read
# "&not" in "Love&not war" as '¬' (HTML5 accepts some legacy names without ';').
_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
# Unicode's control characters (Cc: U+0000-001F, U+007F-009F) but those that are whitespace (tab, newline,
# U+001C-001F, U+0085), which _WHITESPACE turns into a space.
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f]")
# Whitespace that is not already one plain space: a run, or one tab, newline, no-break space (&nbsp;) …
# (str patterns: Unicode whitespace). Single spaces are left alone, which keeps this fast on long descriptions.
_WHITESPACE = re.compile(r"\s{2,}|[^\S ]")


def clean_text(text: str) -> str:
    """`text` without HTML markup, with entities unescaped, control characters dropped and every run of
    whitespace (newlines, tabs, no-break spaces) one space, stripped.

    Entities are unescaped before tags are read, so that escaped markup ("&lt;br&gt;", common in dumps
    that were encoded twice) goes too; an escaped '<' that starts no HTML tag stays a '<'.
    """
    text = _ENTITY.sub(lambda entity: html.unescape(entity.group()), text)
    text = _HIDDEN.sub(" ", text)
    text = _SEPARATING_TAG.sub(" ", text)
    text = _INLINE_TAG.sub("", text)
    text = _CONTROL.sub("", text)
    return _WHITESPACE.sub(" ", text).strip()


def category_text(text: str) -> str:
    """A category written as a list literal ("['Electronics', 'Computers & Accessories']", '["Books"]', or a list
    of category paths) as "Electronics, Computers & Accessories": each name once, in order. Text that does not
    parse as a list of strings (JSON or a Python literal) is returned unchanged."""
    return list_text(text, ", ", unique=True)


def description_text(text: str) -> str:
    """A description written as a list literal of its paragraphs or bullet points (as Amazon's 2018 and 2023
    dumps store `description` and `features`: "['Fits most phones.', 'Two-year warranty.']") as the
    paragraphs joined by a space, in order; "[]" is empty. Text that does not parse as a list of strings is
    returned unchanged."""
    return list_text(text, " ", unique=False)


def list_text(text: str, separator: str, unique: bool) -> str:
    """The strings of `text` read as a (nested) list literal, joined by `separator` (each once when `unique`);
    `text` itself when it is not such a literal."""
    stripped = text.strip()
    if not (stripped.startswith("[") and stripped.endswith("]")):
        return text
    value = _literal(stripped)
    names = _strings(value) if isinstance(value, (list, tuple)) else None
    if names is None:
        return text
    names = [name.strip() for name in names if name.strip()]
    return separator.join(dict.fromkeys(names) if unique else names)


def _literal(text: str):
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


def _strings(value) -> list[str] | None:
    """The strings of a (nested) list, in order; None when anything in it is not a string."""
    out = []
    for element in value:
        if isinstance(element, str):
            out.append(element)
        elif isinstance(element, (list, tuple)):
            inner = _strings(element)
            if inner is None:
                return None
            out.extend(inner)
        else:
            return None
    return out

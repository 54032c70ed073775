"""Item text hygiene: markup out of what the language model reads, plain text untouched, and add-items reading a
new item exactly as a retrain would."""

import numpy as np
import pandas as pd
import pytest

from components import contract as c
from components.preparation.prepare import item_texts
from components.preparation.text_cleaning import category_text, clean_text, description_text


def test_html_is_stripped_and_entities_unescaped():
    description = (
        "<p>Deep&nbsp;bass &amp; clear highs.</p><p>Don&#39;t miss it:<br/>Fits&#x20;all<br>phones"
        "<ul>\n\t<li>USB-C</li><li><b>5</b>-pack</li></ul><script>track();</script><!-- sku 12 --></p>"
    )
    assert clean_text(description) == "Deep bass & clear highs. Don't miss it: Fits all phones USB-C 5-pack"
    assert clean_text('<DIV CLASS="x">A</DIV><SPAN>B</SPAN>') == "A B"  # any case, with attributes
    assert clean_text("&lt;br&gt;Escaped twice") == "Escaped twice"  # markup that was escaped once more goes too
    assert clean_text("a\x00b\x07c\n\n\td\u00a0\u00a0e\r\n") == "abc d e"  # control characters, whitespace runs


def test_list_literal_categories_read_as_names():
    assert category_text("['Electronics', 'Computers & Accessories']") == "Electronics, Computers & Accessories"
    assert category_text('["Books"]') == "Books"
    assert category_text('[["Home", "Kitchen"], ["Home", "Bath"]]') == "Home, Kitchen, Bath"  # paths: each name once
    assert category_text("[]") == ""
    for kept in ("[Region 1]", "['unclosed]", "[1995]", "['a', None]", "Animation, Comedy", "Books [used]"):
        assert category_text(kept) == kept  # not a list of strings: left as it is
    items = pd.DataFrame({c.ITEM_ID: ["1", "2"], c.TITLE: ["Cable", "Novel"],
                          c.CATEGORY: ["['Electronics', 'Cables &amp; Adapters']", "[]"], c.BRAND: ["Acme", ""]})
    assert item_texts(items) == ["Cable. Electronics, Cables & Adapters. Acme", "Novel"]  # an empty list is no category


def test_list_literal_descriptions_read_as_paragraphs():
    # Amazon's 2018 and 2023 dumps store a description as the list of its paragraphs (often with HTML in them).
    assert description_text("['Fits most phones.', 'Two-year warranty.']") == "Fits most phones. Two-year warranty."
    assert description_text('["Same line.", "Same line."]') == "Same line. Same line."  # paragraphs are not de-duplicated
    assert description_text("[]") == ""
    for kept in ("[Region 1] DVD", "['unclosed]", "[1, 2]"):
        assert description_text(kept) == kept
    items = pd.DataFrame({c.ITEM_ID: ["1", "2"], c.TITLE: ["Case", "Lamp"], c.DESCRIPTION: ["['<p>Slim.</p>', 'Drop &amp; scratch proof.']", "[]"]})
    assert item_texts(items) == ["Case. Slim. Drop & scratch proof.", "Lamp"]


# MovieLens rows as load_movielens gives them (genres joined with ", "), with the odd characters its titles hold.
MOVIELENS_LIKE = pd.DataFrame({
    c.ITEM_ID: [str(i) for i in range(1, 8)],
    c.TITLE: ["Toy Story (1995)", "Romeo & Juliet (1996)", "Wallace & Gromit: The Best of Aardman Animation (1996)",
              "Et Dieu Créa la Femme (1956)", "Love&not war", "<Untitled> (2001)", "x < y, but z > w (1999)"],
    c.CATEGORY: ["Animation, Children's, Comedy", "Drama, Romance", "Animation", "Drama", "Comedy", "Drama", "Documentary"],
})


def test_plain_text_comes_out_unchanged():
    assert item_texts(MOVIELENS_LIKE) == [f"{t}. {g}" for t, g in zip(MOVIELENS_LIKE[c.TITLE], MOVIELENS_LIKE[c.CATEGORY])]


def test_the_sample_catalog_reads_as_before():
    # Its cached embeddings and the numbers published on it are keyed by these texts: byte for byte the old join.
    from components.data.sample import generate_sample

    items = generate_sample()[1]
    fields = [items[f].fillna("").astype(str).str.strip() for f in c.ITEM_TEXT_FIELDS if f in items.columns]
    assert item_texts(items) == [". ".join(p for p in parts if p) for parts in zip(*fields)]


@pytest.mark.parametrize("text", ["x < y", "a <b", "i<p", "<3 this", "<Untitled>", "1 <= 2 >= 0", "<bold> claims", "if x &lt; y"])
def test_a_less_than_sign_that_starts_no_tag_survives(text):
    assert clean_text(text) == text.replace("&lt;", "<")


def test_add_items_reads_a_new_item_as_a_retrain_does(tmp_path):
    """The same catalog row, once in a retrain's catalog and once in an add-items file: the same text, token ids and
    LM vector (the two flows' own tokenize steps, the real language model)."""
    from components.config import RetrainConfig
    from components.data import load_dataset, load_items
    from components.preparation import prepare
    from components.preparation.prepare import item_texts
    from flows.add_items import embed
    from flows.retrain import encode_item_text

    header = "item_id,title,category,brand,description\n"
    new_row = 'n1,Earbuds &amp; Case,"[\'Electronics\', \'Headphones\']",Acme,"<p>Deep&nbsp;bass.<br/>IPX4</p>"\n'
    (tmp_path / "items.csv").write_text(header + "a,Cable,Electronics,Acme,USB-C\n" + new_row)
    (tmp_path / "new.csv").write_text(header + new_row)
    (tmp_path / "events.csv").write_text("user_id,item_id,event_type,timestamp\n" + "".join(
        f"u{u},{item},view,{t}\n" for u in range(2) for t, item in enumerate(["a", "n1", "a"])))
    dataset = load_dataset(tmp_path / "events.csv", tmp_path / "items.csv")
    prepared = prepare(dataset.events, dataset.items)
    in_retrain = prepared.item_ids.index("n1")
    assert prepared.item_texts[in_retrain] == "Earbuds & Case. Electronics, Headphones. Acme. Deep bass. IPX4"
    assert prepared.titles[in_retrain] == "Earbuds & Case"  # what the service returns, cleaned alike

    config = RetrainConfig()
    retrained = encode_item_text.fn(prepared.item_texts, config)
    added_vectors, added_tokens = embed.fn(item_texts(load_items(tmp_path / "new.csv")), config.text, with_tokens=True)  # as add-items reads them
    np.testing.assert_array_equal(added_tokens[0], retrained["tokens"][in_retrain])
    np.testing.assert_allclose(added_vectors[0], retrained["embeddings"][in_retrain], atol=1e-5)


def test_titles_are_shown_cleaned_and_plain_titles_as_written():
    from components.preparation.prepare import display_titles

    items = pd.DataFrame({c.ITEM_ID: ["1", "2", "3", "4", "5"],
                          c.TITLE: ["Salt &amp; Pepper <b>Set</b>", "Romeo & Juliet (1996)", "x < y", None, "  Two\n lines\t"]})
    assert display_titles(items) == ["Salt & Pepper Set", "Romeo & Juliet (1996)", "x < y", "", "Two lines"]


def test_the_run_records_how_many_item_texts_cleaning_changed_and_shows_one():
    from components.preparation import prepare

    items = pd.DataFrame({c.ITEM_ID: ["1", "2", "3"], c.TITLE: ["Case", "Lamp", "Cable &amp; plug"],
                          c.DESCRIPTION: ["['<p>Slim.</p>', 'Drop &amp; scratch proof.']", "Bright", ""]})
    events = pd.DataFrame({c.USER_ID: ["u"] * 3, c.ITEM_ID: ["1", "2", "3"], c.EVENT_TYPE: ["view"] * 3, c.TIMESTAMP: [1, 2, 3]})
    stats = prepare(events, items).stats
    assert stats["item_texts_cleaned"] == 2  # "Lamp. Bright" is read as written
    assert stats["item_text_cleaned_example"] == {  # the one cleaning shortened most
        "item_id": "1", "in_file": "Case. ['<p>Slim.</p>', 'Drop &amp; scratch proof.']", "read": "Case. Slim. Drop & scratch proof."}
    plain = prepare(events, items.assign(**{c.TITLE: ["Case", "Lamp", "Cable"], c.DESCRIPTION: ["Slim.", "Bright", ""]})).stats
    assert plain["item_texts_cleaned"] == 0 and "item_text_cleaned_example" not in plain

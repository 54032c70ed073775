"""Item text embeddings: the same vector for an item whatever batch it is embedded in."""

import numpy as np

from components.tokenization import TextEncoderConfig, embed_items


def test_length_sorted_batches_give_each_item_the_vector_it_gets_alone(tmp_path):
    # Bare titles mixed with long descriptions, in catalog order (short and long neighbours).
    texts = [
        "Trail running shoe" if i % 3 else "Trail running shoe. Outdoor. " + "A light shoe with a grippy sole for wet rock and mud. " * (1 + i % 4)
        for i in range(30)
    ]
    sorted_ = embed_items(texts, TextEncoderConfig(batch_size=8, device="cpu"), tmp_path / "sorted", progress=False)
    in_order = embed_items(texts, TextEncoderConfig(batch_size=8, device="cpu"), tmp_path / "order", progress=False, sort_by_length=False)
    alone = embed_items(texts, TextEncoderConfig(batch_size=1, device="cpu"), tmp_path / "alone", progress=False)
    assert sorted_.shape == (30, 384) and sorted_.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(sorted_, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(sorted_, alone, atol=1e-5)  # row i is item i's own vector, not a neighbour's
    np.testing.assert_allclose(in_order, alone, atol=1e-5)
    assert not np.allclose(sorted_[0], sorted_[1], atol=1e-3)  # the texts differ, so do their vectors


def test_tokenizing_in_chunks_gives_the_ids_of_one_call(tmp_path, monkeypatch):
    # Long descriptions are tokenized in chunks (one call over a large catalog held the whole tokenization of
    # every text: 5.3 GB for 30,000 items of ~1,600 characters). The chunks must not change a single id.
    from components.tokenization import encode

    texts = [f"Item {i} ✨ caf&eacute; &amp; größe. " + "a long description with many words " * (i * 7 % 40) for i in range(11)]
    config = TextEncoderConfig(max_tokens=16)
    monkeypatch.setattr(encode, "TOKENIZE_CHUNK", 4)  # 11 texts: chunks of 4, 4 and 3
    chunked = encode.tokenize_items(texts, config, tmp_path / "chunked")
    whole = encode._load("tokenizer", config)(texts, padding="max_length", truncation=True, max_length=16, return_tensors="np")
    np.testing.assert_array_equal(chunked["input_ids"], whole["input_ids"])
    np.testing.assert_array_equal(chunked["attention_mask"], whole["attention_mask"])
    assert chunked["input_ids"].shape == (11, 16) and chunked["input_ids"].dtype == np.int64
    assert encode.tokenize_items([], config, tmp_path / "empty")["input_ids"].shape == (0, 16)


def test_a_cache_written_by_this_run_is_read_back_without_a_cache_hit_line(tmp_path, caplog):
    # The retrain's embed step writes the token cache and its token step reads it a moment later: "cache hit" then
    # told the user of a cache that did not exist when the run began. A cache from an earlier process still says so.
    from components.tokenization import encode, item_tokens

    texts = ["Trail running shoe", "Rain jacket. Outdoor"]
    config = TextEncoderConfig(max_tokens=8)
    with caplog.at_level("INFO", logger="components"):
        written = encode.tokenize_items(texts, config, tmp_path)
        ids, _ = item_tokens(texts, config, tmp_path)
    np.testing.assert_array_equal(ids, written["input_ids"] * written["attention_mask"])
    assert not [r for r in caplog.records if "cache hit" in r.getMessage()]
    encode._WRITTEN_HERE.clear()  # as a later process finds it
    with caplog.at_level("INFO", logger="components"):
        item_tokens(texts, config, tmp_path)
    assert [r.getMessage() for r in caplog.records if "cache hit" in r.getMessage()] == [f"tokens: cache hit tokens-{encode.fingerprint(texts, config)}.npz"]


def _whole_text_ids(texts, max_tokens):
    from components.tokenization import encode

    tokenizer = encode._load("tokenizer", TextEncoderConfig(max_tokens=max_tokens))
    return tokenizer(texts, padding="max_length", truncation=True, max_length=max_tokens, return_tensors="np")


def test_long_texts_are_tokenized_from_their_leading_words_with_the_same_ids(tmp_path, monkeypatch):
    # The tokenizer tokenizes a whole text before it truncates it; tokenize_items hands it only the leading words
    # of a long text when they fill the window. Every id and mask must be what the whole text gives.
    from components.tokenization import encode

    long = "<p>Durable, lightweight & compact: fits most standard sizes.</p> " * 400  # ~26,000 characters
    texts = [
        "Trail shoe",  # shorter than the window
        long,
        "Café größe naïve ÉCOLE " * 30 + long,  # accents the normalizer strips, upper case
        "単語 中文字符 " * 40 + long,  # CJK characters, each its own word for BERT
        "\u200b " * 80 + "after eighty zero-width words " + long,  # words that give no token: the whole text is read
        "tab\tand\nnewline\x1fseparated words " * 30 + long,
        " ".join(["word"] * 64),  # exactly max_tokens words, nothing after them
        " ".join(["word"] * 65),  # one word more
        "  leading and  double  spaces " * 40,
        "supercalifragilisticexpialidocious" * 5 + " " + long,  # a word longer than WordPiece reads (one [UNK])
    ]
    passed = []
    load = encode._load

    class Recording:  # the real tokenizer, recording the texts it is given
        def __init__(self, tokenizer):
            self.tokenizer = tokenizer

        def __getattr__(self, name):
            return getattr(self.tokenizer, name)

        def __len__(self):
            return len(self.tokenizer)

        def __call__(self, batch, **kwargs):
            passed.extend(batch)
            return self.tokenizer(batch, **kwargs)

    monkeypatch.setattr(encode, "_load", lambda kind, config: Recording(load(kind, config)))
    for max_tokens in (64, 16):
        passed.clear()
        tokens = encode.tokenize_items(texts, TextEncoderConfig(max_tokens=max_tokens), tmp_path / str(max_tokens))
        lengths = sorted(map(len, passed))
        whole = _whole_text_ids(texts, max_tokens)
        np.testing.assert_array_equal(tokens["input_ids"], whole["input_ids"])
        np.testing.assert_array_equal(tokens["attention_mask"], whole["attention_mask"])
        assert lengths[-1] == len(texts[4])  # only the zero-width one is read whole (after its cut text fell short) ...
        assert lengths[-2] < 2_000  # ... every other long text from its leading words


def test_tokenizers_that_are_not_bert_like_get_the_whole_text():
    from components.tokenization.encode import window_texts

    class Other:  # a tokenizer without BERT's normalizer and pre-tokenizer: no cut is known to be safe
        backend_tokenizer = type("Backend", (), {"pre_tokenizer": None, "normalizer": None})()
        truncation_side = "right"

    texts = ["word " * 500, "short"]
    assert window_texts(texts, Other(), 64) == texts


def test_an_id_only_model_does_not_embed_the_item_texts(monkeypatch):
    # model.use_text=false reads no text: embedding a large catalog (100,000 items: ~22 CPU minutes) was work for nothing.
    import components.tokenization as tokenization
    from components.config import RetrainConfig
    from flows.retrain import encode_item_text

    def refuse(*args, **kwargs):
        raise AssertionError("the language model was run for an id-only model")

    monkeypatch.setattr(tokenization, "embed_items", refuse)
    monkeypatch.setattr(tokenization, "item_tokens", refuse)
    config = RetrainConfig.from_dict({"model": {"use_text": False}})
    assert encode_item_text.fn(["Trail running shoe", "Rain jacket"], config) == {"embeddings": None, "tokens": None, "token_vocab": 0}

"""Adding items to a trained model: new rows from text, old items untouched, the checkpoint round trip."""

import numpy as np
import pytest
import torch

from components.catalog import extend_catalog, load_checkpoint, save_checkpoint, unchanged_scores
from components.errors import BehaviorflowError
from components.export import ExportConfig, check_parity, export_onnx
from components.models.text_sasrec import TextSASRec, TextSASRecConfig
from components.tokenization import TextEncoderConfig

N_ITEMS, TEXT_DIM, ADDED = 30, 16, 4


def trained_like(imputation="mlp", seed=0) -> TextSASRec:
    """A small model with weights far from their initial scale (as after training): 3 items never trained."""
    torch.manual_seed(seed)
    cfg = TextSASRecConfig(n_items=N_ITEMS, text_dim=TEXT_DIM, d_model=16, n_layers=2, n_heads=2, max_len=10, dropout=0.0, cold_imputation=imputation, token_embeddings=False)
    has_id = torch.ones(N_ITEMS + 1, dtype=torch.bool)
    has_id[-3:] = False
    model = TextSASRec(cfg, torch.nn.functional.normalize(torch.randn(N_ITEMS, TEXT_DIM), dim=1), has_id)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model.eval()


def histories(n=40, seed=1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(1, N_ITEMS + 1, size=rng.integers(1, 15)) for _ in range(n)]


@pytest.mark.parametrize("imputation", ["mlp", "neighbors"])
def test_new_items_are_text_plus_imputed_id_and_old_items_keep_their_scores(imputation):
    model = trained_like(imputation)
    new_text = torch.nn.functional.normalize(torch.randn(ADDED, TEXT_DIM), dim=1)
    extended = extend_catalog(model, new_text.numpy())

    assert extended.cfg.n_items == N_ITEMS + ADDED and extended.cfg.max_len == model.cfg.max_len
    assert extended.has_id[: N_ITEMS + 1].equal(model.has_id) and not extended.has_id[N_ITEMS + 1 :].any()
    with torch.no_grad():
        old_table, table = model.item_table(), extended.item_table()
        torch.testing.assert_close(table[: N_ITEMS + 1], old_table)  # every old row, cold ones included
        if imputation == "mlp":  # a new row is exactly what the trained weights make of its text
            expected = model.text_proj(new_text) + model.imputer(new_text)
        else:  # the weighted ids of its nearest trained items by text
            unit, trained = torch.nn.functional.normalize(extended.text_table, dim=1), torch.nonzero(model.has_id).squeeze(1)
            top, idx = (unit[N_ITEMS + 1 :] @ unit[trained].T).topk(model.cfg.cold_neighbors, dim=1)
            weights = torch.softmax(top / model.cfg.neighbor_temperature, 1).unsqueeze(-1)
            expected = model.text_proj(new_text) + (weights * model.id_emb.weight[trained[idx]]).sum(1)
        torch.testing.assert_close(table[N_ITEMS + 1 :], expected)
        assert table[N_ITEMS + 1 :].abs().sum() > 0
    assert unchanged_scores(model, extended, histories()) < 1e-5
    # and the new items do compete: for some history one of them is in the top 5
    with torch.no_grad():
        top = extended.score_last(torch.from_numpy(np.stack([np.pad(h, (10 - len(h[-10:]), 0))[-10:] for h in histories(200)]))).topk(5).indices
    assert (top > N_ITEMS).any()


def test_extended_model_exports_and_passes_the_parity_gate(tmp_path):
    extended = extend_catalog(trained_like(), np.random.default_rng(0).normal(size=(ADDED, TEXT_DIM)).astype(np.float32))
    path = export_onnx(extended, tmp_path / "m.onnx", ExportConfig(k=10))
    report = check_parity(extended, path, histories(), ExportConfig(k=10, probe_size=40))
    assert report.identical_topk and report.cases >= 40


def test_the_extended_catalog_is_served_in_the_precision_of_its_source(tmp_path):
    from components.export import keep_source_precision, quantize_graph

    model = trained_like()
    source = quantize_graph(export_onnx(model, tmp_path / "source.onnx"), tmp_path / "source.int8.onnx")
    probes = histories(64)
    with torch.no_grad():
        largest = model.item_table().abs().max().item()

    def served(new_text: torch.Tensor, precision: str, name: str):
        extended = extend_catalog(model, new_text.numpy())
        with torch.no_grad():
            new_rows = extended.item_table()[N_ITEMS + 1 :].abs().max().item()
        fp32 = export_onnx(extended, tmp_path / f"{name}.onnx")
        return new_rows, keep_source_precision(source if precision == "int8" else tmp_path / "source.onnx", precision, fp32,
                                               tmp_path / f"{name}.int8.onnx", probes, model.cfg.max_len, N_ITEMS, "m/1")

    small = 0.1 * torch.nn.functional.normalize(torch.randn(ADDED, TEXT_DIM), dim=1)
    # From an fp32 source: fp32, nothing quantized.
    _, kept = served(small, "fp32", "from_fp32")
    assert (kept.precision, kept.reason, kept.cases) == ("fp32", "fp32, as version m/1", 0) and not (tmp_path / "from_fp32.int8.onnx").exists()
    # From an int8 source, with added items inside the table's range: int8, the old answers exactly the source's.
    new_rows, kept = served(small, "int8", "inside")
    assert new_rows < largest
    assert kept.precision == "int8" and kept.cases == 64 and kept.changed_answers == 0 and kept.max_abs_score_change == 0.0
    assert kept.reason == "int8, as version m/1: re-quantized with the added items, the answers among its items are unchanged on 64 probe histories (max |Δscore| 0.0e+00)"
    # An added item larger than every old one moves the int8 scale and so every old score: fp32, and how far it is from the source.
    new_rows, moved = served(small * 1000, "int8", "outside")
    assert new_rows > largest
    assert moved.precision == "fp32" and moved.source_precision == "int8" and 0 < moved.changed_answers <= 64 and moved.max_abs_score_change > 1e-4
    assert 0 < moved.top10_overlap <= 1
    assert moved.reason == (
        f"fp32, where version m/1 served int8: re-quantized with the added items, the answers among its items changed on {moved.changed_answers} of 64 "
        f"probe histories (scores by up to {moved.max_abs_score_change:.1e}; the item table's one int8 scale follows its largest value, which added "
        f"items can raise); fp32's top-10 overlaps version m/1's by {moved.top10_overlap:.3f}"
    )


def test_checkpoint_round_trip_gives_the_same_model_and_text_config(tmp_path):
    model = trained_like("neighbors")
    text = TextEncoderConfig(model_name_or_path="/models/encoder", max_tokens=32)
    restored, restored_text = load_checkpoint(save_checkpoint(model, text, tmp_path / "ckpt" / "model.pt"))
    assert restored_text == text and restored.cfg == model.cfg
    assert unchanged_scores(model, restored, histories()) == 0.0


def test_refuses_what_it_cannot_extend():
    with pytest.raises(BehaviorflowError, match=r"new items' text embeddings have shape \(4, 8\); the model reads 16-wide embeddings"):
        extend_catalog(trained_like(), np.zeros((4, 8), dtype=np.float32))
    cfg = TextSASRecConfig(n_items=N_ITEMS, text_dim=TEXT_DIM, d_model=16, n_heads=2, max_len=10, use_text=False)
    with pytest.raises(BehaviorflowError, match=r"an id-only model cannot represent an item it never trained on"):
        extend_catalog(TextSASRec(cfg), np.zeros((4, TEXT_DIM), dtype=np.float32))


def test_id_only_checkpoints_hold_no_text_table_and_those_from_before_still_load(tmp_path):
    """The id-only variant reads no text: it keeps no table of zeros (154 MB at 100,000 items) to store, or to copy
    at every best epoch. Its checkpoints from before, which hold that table, load as they did."""
    torch.manual_seed(0)
    cfg = TextSASRecConfig(n_items=N_ITEMS, text_dim=TEXT_DIM, d_model=16, n_layers=2, n_heads=2, max_len=10, dropout=0.0, use_text=False)
    model = TextSASRec(cfg, None, torch.ones(N_ITEMS + 1, dtype=torch.bool)).eval()
    assert "text_table" not in model.state_dict() and model.text_table is None
    path = save_checkpoint(model, TextEncoderConfig(), tmp_path / "model.pt")
    assert "text_table" not in torch.load(path, weights_only=True)["state_dict"]
    restored, _ = load_checkpoint(path)
    assert unchanged_scores(model, restored, histories()) == 0.0
    saved = torch.load(path, weights_only=True)
    saved["state_dict"]["text_table"] = torch.zeros(N_ITEMS + 1, TEXT_DIM)  # what a checkpoint written before holds
    torch.save(saved, path)
    restored, _ = load_checkpoint(path)
    assert unchanged_scores(model, restored, histories()) == 0.0 and restored.text_table is None


def tokens_model(**overrides) -> TextSASRec:
    """trained_like() with token embeddings: item i reads tokens 3 and 10 + i (3 is in every item)."""
    torch.manual_seed(0)
    cfg = TextSASRecConfig(n_items=N_ITEMS, text_dim=TEXT_DIM, d_model=16, n_layers=2, n_heads=2, max_len=10, dropout=0.0,
                           token_embeddings=True, token_vocab=100, **overrides)
    has_id = torch.ones(N_ITEMS + 1, dtype=torch.bool)
    has_id[-3:] = False
    tokens = torch.stack([torch.full((N_ITEMS,), 3), 10 + torch.arange(1, N_ITEMS + 1)], 1)
    model = TextSASRec(cfg, torch.nn.functional.normalize(torch.randn(N_ITEMS, TEXT_DIM), dim=1), has_id, tokens)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model.eval()


def test_new_items_read_their_tokens_with_the_trained_token_embeddings(tmp_path):
    model = tokens_model()
    new_text = torch.nn.functional.normalize(torch.randn(2, TEXT_DIM), dim=1)
    new_tokens = np.array([[3, 11, 12, 0], [3, 99, 98, 97]])  # wider than the catalog's 2 columns
    extended = extend_catalog(model, new_text.numpy(), new_tokens)
    w = model.token_emb.weight
    with torch.no_grad():
        table = extended.item_table()
        torch.testing.assert_close(table[: N_ITEMS + 1], model.item_table())
        torch.testing.assert_close(table[N_ITEMS + 1], model.text_proj(new_text[0]) + model.imputer(new_text[0]) + (w[3] + w[11] + w[12]) / 3)
        # Tokens no trained item has (99, 98, 97) were never learned: left out of the mean (token_trained_only).
        torch.testing.assert_close(table[N_ITEMS + 2], model.text_proj(new_text[1]) + model.imputer(new_text[1]) + w[3])
    assert unchanged_scores(model, extended, histories()) < 1e-5
    # The extended model's checkpoint keeps the tokens, so items can be added to it in turn.
    restored, _ = load_checkpoint(save_checkpoint(extended, TextEncoderConfig(), tmp_path / "model.pt"))
    assert restored.item_tokens.equal(extended.item_tokens) and unchanged_scores(extended, restored, histories()) == 0.0
    with pytest.raises(BehaviorflowError, match=r"the model reads its items' tokens \(token_embeddings\): give the 2 new items' token ids, one row each"):
        extend_catalog(model, new_text.numpy())
    with pytest.raises(BehaviorflowError, match=r"new items' token ids reach 100; the model's tokenizer has 100"):
        extend_catalog(model, new_text.numpy(), np.array([[3, 100], [3, 4]]))


def test_checkpoints_from_before_token_embeddings_load_without_them(tmp_path):
    model = trained_like()
    path = save_checkpoint(model, TextEncoderConfig(), tmp_path / "model.pt")
    saved = torch.load(path, weights_only=True)
    for key in ("token_embeddings", "token_vocab"):  # what a checkpoint written before them holds
        del saved["config"][key]
    torch.save(saved, path)
    restored, _ = load_checkpoint(path)
    assert restored.token_emb is None and not restored.cfg.token_embeddings
    assert unchanged_scores(model, restored, histories()) == 0.0


def test_checkpoints_from_before_token_trained_only_keep_every_token(tmp_path):
    model = tokens_model(token_trained_only=False)  # as before the option: the 3 untrained items' own tokens count
    with torch.no_grad():
        model.token_emb.weight.normal_()
    path = save_checkpoint(model, TextEncoderConfig(), tmp_path / "model.pt")
    saved = torch.load(path, weights_only=True)
    del saved["config"]["token_trained_only"]
    torch.save(saved, path)
    restored, _ = load_checkpoint(path)
    assert not restored.cfg.token_trained_only and restored.item_tokens.equal(model.item_tokens)
    assert unchanged_scores(model, restored, histories()) == 0.0
    # Read with today's default, the same weights would score those items differently.
    today = TextSASRec(TextSASRecConfig(**(saved["config"])), model.text_table[1:], model.has_id, model.item_tokens[1:])
    today.load_state_dict({k: v for k, v in model.state_dict().items() if k != "item_tokens"}, strict=False)
    assert unchanged_scores(model, today.eval(), histories()) > 1e-3

"""The CUDA paths: training, ranking and text embedding on a GPU give what the CPU gives.

These run only where torch sees a CUDA device (CI has none: they are reported as skipped there, never as
passed). They need none of the services, so on a GPU machine they run alone:
`python -m pytest --noconftest tests/test_gpu.py tests/test_model.py` (test_model then trains on the GPU
too, since the training default is device="auto").
"""

import numpy as np
import pytest
import torch

from components.evaluation import model_topk
from components.export import ExportConfig, check_parity, export_onnx
from components.models.text_sasrec import TextSASRec, TextSASRecConfig
from components.tokenization import TextEncoderConfig
from components.tokenization.encode import embed_items
from components.training import TrainConfig, train_model
from serving import contract

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

N_ITEMS, TEXT_DIM = 60, 24


def model(seed=0, cold=6, **overrides):
    torch.manual_seed(seed)
    cfg = TextSASRecConfig(n_items=N_ITEMS, text_dim=TEXT_DIM, d_model=32, n_layers=2, n_heads=2, max_len=16, dropout=0.0, **({"token_embeddings": False} | overrides))
    has_id = torch.ones(N_ITEMS + 1, dtype=torch.bool)
    has_id[-cold:] = False
    return TextSASRec(cfg, torch.randn(N_ITEMS, TEXT_DIM), has_id).eval()


def histories(n=300, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(1, N_ITEMS + 1, size=rng.integers(1, 30)) for _ in range(n)]


@pytest.fixture(autouse=True)
def exact_matmul():
    # Hopper and Ampere may use TF32 for float32 products when allowed: these tests compare with the CPU.
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = before


@pytest.mark.parametrize("imputation", ["mlp", "neighbors"])
def test_scores_and_topk_on_cuda_match_the_cpu(imputation):
    cpu = model(cold_imputation=imputation)
    gpu = model(cold_imputation=imputation).cuda()
    assert gpu.has_id.is_cuda  # buffers move with the model (has_id, text embeddings, neighbour tables)
    batch = torch.from_numpy(contract.pad_histories(histories(64), 16))
    with torch.no_grad():
        np.testing.assert_allclose(gpu.item_table().cpu().numpy(), cpu.item_table().numpy(), atol=1e-5)
        table_cpu, table_gpu = cpu.item_table(), gpu.item_table()
        np.testing.assert_allclose(gpu.encode(batch.cuda(), table_gpu).cpu().numpy(), cpu.encode(batch, table_cpu).numpy(), atol=1e-4)
    probe = histories()
    top_cpu, top_gpu = model_topk(cpu, probe, 10), model_topk(gpu, probe, 10)
    assert top_gpu.shape == (300, 10)
    assert (top_cpu == top_gpu).mean() > 0.99  # only near-ties may swap


def test_training_on_cuda_learns_then_exports_an_onnx_graph_that_passes_parity(tmp_path):
    # item i is always followed by i + 1 (cyclic), among trained items only.
    n_trained = N_ITEMS - 6
    seqs = [np.array([(s + t) % n_trained + 1 for t in range(10)]) for s in range(n_trained) for _ in range(4)]
    train, valid = [s[:-2] for s in seqs], ([s[:-2] for s in seqs], np.array([s[-2] for s in seqs]))
    config = TrainConfig(max_epochs=30, lr=3e-3, warmup_steps=5, batch_size=32, patience=30, progress=False, imputed_loss_weight=0.5)
    result = train_model(model(), train, valid, config)
    assert result.device.startswith("cuda") and next(result.model.parameters()).is_cuda
    assert result.best_val["HR@10"] > 0.9, result.curve[-1]
    assert result.curve[-1]["loss"] < result.curve[0]["loss"]
    # The flow exports the model it trained, wherever it trained it: the graph is built on the CPU.
    path = export_onnx(result.model, tmp_path / "model.onnx", ExportConfig(k=10))
    report = check_parity(result.model, path, valid[0], ExportConfig(k=10, probe_size=256))
    assert report.passed and report.max_abs_score_diff < 1e-4


def _tiny_language_model(folder):
    """A randomly initialised 2-layer BERT with a 40-word vocabulary, saved as a local HF model folder."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + "the a of and toy story comedy drama action space war love night city man woman life dead house black white blue red big little new old first last".split()
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)).save_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    tokenizer.save_pretrained(folder)
    return folder


def test_text_embeddings_on_cuda_match_the_cpu(tmp_path):
    folder = str(_tiny_language_model(tmp_path / "lm"))
    texts = ["toy story comedy", "the big night", "war and love drama", "a little red house", "space action"] * 7
    on_cpu = embed_items(texts, TextEncoderConfig(model_name_or_path=folder, device="cpu", batch_size=8), tmp_path / "cpu", progress=False)
    on_gpu = embed_items(texts, TextEncoderConfig(model_name_or_path=folder, device="auto", batch_size=8), tmp_path / "gpu", progress=False)
    assert on_gpu.shape == (35, 32) and on_gpu.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(on_gpu, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(on_gpu, on_cpu, atol=1e-4)

"""Evaluation as a component: slices and sampled metrics on hand-computed cases, and leakage checks of
both splits (leave-one-out and temporal) on generated data, verified against the raw events."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from components.config import RetrainConfig
from components.data.sample import SampleConfig, generate_sample
from components.errors import BehaviorflowError
from components.evaluation.evaluate import evaluate_rankers
from components.evaluation.metrics import ranks_from_topk
from components.evaluation.rankers import model_topk
from components.evaluation.sampled import sample_negatives, sampled_ranks
from components.evaluation.slices import case_slices, empty_slices, head_items, slice_metrics
from components.models.text_sasrec import TextSASRec, TextSASRecConfig
from components.preparation import PrepareConfig, prepare

NEG = -np.inf


def frame(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "timestamp"])


def catalog(ids):
    return pd.DataFrame({"item_id": list(ids), "title": [i.upper() for i in ids]})


def tiny_model(n_items: int, seed: int = 0) -> TextSASRec:
    torch.manual_seed(seed)
    cfg = TextSASRecConfig(n_items=n_items, text_dim=8, d_model=16, n_layers=1, n_heads=1, max_len=8, dropout=0.0, token_embeddings=False)
    model = TextSASRec(cfg, torch.randn(n_items, 8))
    with torch.no_grad():  # well-separated scores: no float ties between the two ranking paths
        model.id_emb.weight.normal_(0, 1.0)
    return model.eval()


# --- slices ---------------------------------------------------------------------------------------


def test_head_is_the_top_fifth_by_training_count_never_an_unseen_item():
    counts = np.array([0, 1, 5, 5, 0, 0, 0, 0, 0, 0, 2])  # padding + 10 items
    assert np.flatnonzero(head_items(counts)).tolist() == [2, 3]  # ⌊0.2 × 10⌋ = 2; 2 and 3 tie at 5
    counts = np.array([0, 3, 3, 3, 0, 0, 0, 0, 0, 0, 0])
    assert np.flatnonzero(head_items(counts)).tolist() == [1, 2]  # a tie at the boundary: lower index
    counts = np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 7, 0])
    assert np.flatnonzero(head_items(counts)).tolist() == [9]  # one seen item: zero counts are never head


def test_slices_hand_computed():
    train = [np.array([1, 1, 1, 2, 2, 3]), np.array([1, 4])]  # counts: 1→4, 2→2, 3→1, 4→1; head = {1, 2}
    targets = np.array([1, 2, 3, 5, 4, 9])
    masks = case_slices(targets, train, n_items=10)
    assert masks["head"].tolist() == [True, True, False, False, False, False]
    assert masks["long_tail"].tolist() == [False, False, True, True, True, True]
    assert masks["cold_start"].tolist() == [False, False, False, True, False, True]  # 5 and 9 never trained on
    assert masks["warm"].tolist() == [True, True, True, False, True, False]

    ranks = np.array([0, 12, 1, 3, 20, 9])  # from top-20 lists: 20 = not in the list
    got = slice_metrics(ranks, masks, k=10)
    assert got["head"] == pytest.approx({"HR@10": 0.5, "NDCG@10": 0.5, "cases": 2})
    ndcg = lambda r: 1 / math.log2(r + 2)  # noqa: E731
    assert got["long_tail"] == pytest.approx({"HR@10": 0.75, "NDCG@10": (ndcg(1) + ndcg(3) + ndcg(9)) / 4, "cases": 4})
    assert got["cold_start"] == pytest.approx({"HR@10": 1.0, "NDCG@10": (ndcg(3) + ndcg(9)) / 2, "cases": 2})
    assert got["warm"] == pytest.approx({"HR@10": 0.5, "NDCG@10": (1 + ndcg(1)) / 4, "cases": 4})  # ranks 0, 12, 1, 20


def test_an_item_only_in_a_one_step_training_sequence_is_new_to_the_model_and_cold_start():
    """A user with three steps trains on a one-step sequence: no target, nothing learned. Its item was marked
    trained (an id never learned, only pushed down as a negative) and counted warm; it is read from its text now."""
    p = prepare(frame([("u1", "a", "view", 1), ("u1", "b", "view", 2), ("u1", "c", "view", 3),
                       ("u2", "d", "view", 1), ("u2", "a", "view", 2), ("u2", "b", "view", 3), ("u2", "e", "view", 4)]), HAND_ITEMS)
    def ids(prepared, mask):
        return "".join(sorted(prepared.item_ids[i - 1] for i in np.flatnonzero(mask)))

    assert [len(s) for s in p.train] == [1, 2]  # u1: [a]; u2: [d, a]
    assert ids(p, p.trained_items()) == "ad"
    u1_only = prepare(frame([("u1", "g", "view", 1), ("u1", "b", "view", 2), ("u1", "c", "view", 3),
                             ("u2", "d", "view", 1), ("u2", "a", "view", 2), ("u2", "b", "view", 3), ("u2", "e", "view", 4)]), HAND_ITEMS)
    assert ids(u1_only, u1_only.trained_items()) == "ad"  # g: only in u1's one step
    g, a = (u1_only.item_ids.index(x) + 1 for x in "ga")
    masks = case_slices(np.array([g, a]), u1_only.train, u1_only.n_items)
    assert masks["cold_start"].tolist() == [True, False] and masks["head"].tolist() == [False, True]
    long = prepare(frame([("u1", x, "view", t) for t, x in enumerate("abcdefgh")]), HAND_ITEMS)  # train: a … f
    assert ids(long, long.trained_items(max_len=2, all_steps=False)) == "def"  # the last max_len + 1 steps
    assert ids(long, long.trained_items(max_len=2, all_steps=True)) == "abcdef"


def test_an_empty_slice_is_left_out_and_named():
    masks = case_slices(np.array([1, 2]), [np.array([1, 1, 2])], n_items=10)
    assert set(slice_metrics(np.array([0, 1]), masks)) == {"warm", "head"}
    assert empty_slices(masks) == ["cold_start", "long_tail"]


# A hand-built leave-one-out dataset (repeats kept): train / validation target / test target per user.
#   u1: a a g | c | b      u2: a b b | d | c      u3: c e | f | j
# Training counts: a 3, b 2, c 1, e 1, g 1 — head (⌊0.2 × 10⌋ = 2 items) = {a, b}; j is never trained on.
# Popularity with seen items excluded ranks the test targets b → 0, c → 0, j → 6.
HAND_ITEMS = catalog("abcdefghij")
HAND_EVENTS = frame([
    (user, item, "view", t)
    for user, items in (("u1", "aagcb"), ("u2", "abbdc"), ("u3", "cefj"))
    for t, item in enumerate(items)
])


def hand_prepared():
    return prepare(HAND_EVENTS, HAND_ITEMS, PrepareConfig(collapse_repeats=False))


def test_evaluate_rankers_reports_slices_per_ranker():
    prepared = hand_prepared()
    assert [[prepared.item_ids[i - 1] for i in h] for h in prepared.test.inputs] == [list("aagc"), list("abbd"), list("cef")]
    report = evaluate_rankers(tiny_model(10), prepared, list_len=10)
    pop = report.slices["popularity"]
    assert pop["head"] == pytest.approx({"HR@10": 1.0, "NDCG@10": 1.0, "cases": 1})  # b at rank 0
    assert pop["long_tail"] == pytest.approx({"HR@10": 1.0, "NDCG@10": (1 + 1 / 3) / 2, "cases": 2})  # c at 0, j at 6
    assert pop["cold_start"] == pytest.approx({"HR@10": 1.0, "NDCG@10": 1 / 3, "cases": 1})  # j at 6: 1/log2(8)
    assert {name: v["cases"] for name, v in report.slices["model"].items()} == {"cold_start": 1, "warm": 2, "long_tail": 2, "head": 1}
    assert report.notes == [] and report.sampled_negatives is None
    assert not any(key.startswith("sampled_") for metrics in report.results.values() for key in metrics)

    flat = report.flat_metrics()  # what MLflow records (with '@' spelled '_at_')
    assert flat["popularity_cold_start_NDCG@10"] == pytest.approx(1 / 3)
    assert flat["head_cases"] == 1 and "cold_start_HR@10" in flat and flat["NDCG@10"] == report.results["model"]["NDCG@10"]


def test_a_slice_without_cases_is_omitted_with_a_note():
    events = HAND_EVENTS.copy()
    events.loc[events.index[-1], "item_id"] = "b"  # u3's test target becomes a head item: no cold start left
    report = evaluate_rankers(tiny_model(10), prepare(events, HAND_ITEMS, PrepareConfig(collapse_repeats=False)), list_len=10)
    assert "cold_start" not in report.slices["model"] and "cold_start" not in report.slices["popularity"]
    assert report.notes == ["slice 'cold_start': no test case has such a target, so it is left out"]
    assert "cold_start_HR@10" not in report.flat_metrics()


def id_only_model(prepared, seed: int = 1) -> TextSASRec:
    """The id-only variant over the hand data: it knows only the items that occur in training."""
    torch.manual_seed(seed)
    cfg = TextSASRecConfig(n_items=prepared.n_items, text_dim=8, d_model=16, n_layers=1, n_heads=1, max_len=8, dropout=0.0, use_text=False)
    model = TextSASRec(cfg, None, torch.from_numpy(prepared.trained_items()))
    with torch.no_grad():
        model.id_emb.weight.normal_(0, 1.0)
    return model.eval()


def test_a_top_k_longer_than_the_rankable_items_lists_no_excluded_or_unscorable_item():
    prepared = hand_prepared()
    name = {i + 1: item for i, item in enumerate(prepared.item_ids)}
    top = model_topk(id_only_model(prepared), prepared.test.inputs, 10)  # 10 slots, 10 items
    # The id-only model can rank only trained items (a b c e g); seen ones are excluded: u1 (a a g c) has b
    # and e left, u2 (a b b d) has c e g, u3 (c e f) has a b g. The rest of each row is padding (0).
    assert [sorted(name[i] for i in row if i) for row in top] == [["b", "e"], ["c", "e", "g"], ["a", "b", "g"]]
    assert (top[:, 3:] == 0).all() and (top[0, 2:] == 0).all()


def test_a_catalog_smaller_than_k_scores_an_unlisted_target_as_a_miss():
    """A target absent from a top-K list has rank K (ranks_from_topk), a miss for every cut-off up to K. The
    rankers cut K to the catalog size, so with 6 items a target left out of the list (a repeat, excluded) had
    rank 6 and counted as a hit at 10: the validation HR@10 that early stopping reads (train_model asks for 10)
    and every @10 and @20 number of a small catalog. The lists keep K places, the unfilled ones 0 (padding)."""
    from components.evaluation.metrics import metrics_from_ranks
    from components.evaluation.rankers import popularity_topk

    model_top = model_topk(tiny_model(6), [np.array([1, 2])], 10)
    assert model_top.shape == (1, 10) and sorted(model_top[0, :4].tolist()) == [3, 4, 5, 6] and not model_top[0, 4:].any()
    popular = popularity_topk([np.array([4, 4, 3])], [np.array([1, 2])], 6, 10)
    assert popular.tolist() == [[4, 3, 5, 6, 0, 0, 0, 0, 0, 0]]
    for top in (model_top, popular):
        ranks = ranks_from_topk(top, np.array([1]))  # item 1 is in the history: never listed
        assert ranks.tolist() == [10]
        assert metrics_from_ranks(ranks, top.shape[1], ks=(10,)) == {"HR@10": 0.0, "NDCG@10": 0.0, "MRR@10": 0.0}


def test_the_id_only_baseline_is_reported_like_the_model_and_cannot_reach_new_items():
    prepared = hand_prepared()
    baseline = id_only_model(prepared)
    report = evaluate_rankers(tiny_model(10), prepared, list_len=10, sampled=5, baselines={"id_only": baseline})
    assert list(report.results) == ["model", "id_only", "popularity"]  # the order of the report and its chart
    ranks = ranks_from_topk(model_topk(baseline, prepared.test.inputs, 10), prepared.test.targets)
    assert report.results["id_only"]["HR@10"] == pytest.approx(float(np.mean(ranks < 10)))
    assert report.results["id_only"]["HR@10"] == pytest.approx(2 / 3)  # b and c are rankable, j never is
    # u3's target j has no training interaction: the text model can rank it, the id-only model cannot.
    assert report.slices["id_only"]["cold_start"] == {"HR@10": 0.0, "NDCG@10": 0.0, "cases": 1}
    assert set(report.intervals["id_only"]) == {"HR@10", "NDCG@10"} and "sampled_HR@10" in report.results["id_only"]
    flat = report.flat_metrics()
    assert flat["id_only_cold_start_HR@10"] == 0.0 and flat["id_only_NDCG@10"] == report.results["id_only"]["NDCG@10"]


# --- sampled metrics ------------------------------------------------------------------------------


def test_sampled_ranks_hand_computed():
    scores = np.array([
        [NEG, 0.5, 0.9, 0.1, 0.7, 0.3],  # target 1 (0.5) vs 2 (0.9), 3 (0.1), 5 (0.3): rank 1
        [NEG, 1.0, 1.0, 1.0, 0.0, 2.0],  # target 3 vs 1, 2 (tied, lower index: above), 4: rank 2
        [NEG, 1.0, 1.0, 1.0, 0.0, 2.0],  # target 2 vs 3 (tied, higher index: below), 4, 5 (2.0): rank 1
        [NEG, NEG, 0.0, 0.0, 0.0, 0.0],  # target 1 is a seen item (-inf): below every negative, rank 3
    ])
    negatives = np.array([[2, 3, 5], [1, 2, 4], [3, 4, 5], [2, 3, 4]])
    ranks = sampled_ranks([scores[:2], scores[2:]], np.array([1, 3, 2, 1]), negatives)  # two batches
    assert ranks.tolist() == [1, 2, 1, 3]
    with pytest.raises(ValueError, match="score rows for 2 cases, but there are 4 targets"):
        sampled_ranks([scores[:2]], np.array([1, 3, 2, 1]), negatives)


def test_a_target_the_ranker_cannot_rank_is_a_miss_even_among_negatives_it_cannot_rank_either():
    """The id-only model scores -inf every item without training interactions, and a seen target is -inf with
    exclude_seen: such a target tied the untrained negatives, and the lower-index rule put it above those with a
    higher index, so a target the ranker never lists counted as a hit (row 1 was rank 0: HR@1 = 1)."""
    scores = np.array([
        [NEG, NEG, 0.5, NEG, NEG],  # target 1 (-inf) vs 2 (0.5), 3 and 4 (-inf): below all three, rank 3 (was 1)
        [NEG, NEG, NEG, NEG, NEG],  # target 1 vs 2, 3, 4, all -inf: rank 3 (was 0)
        [NEG, 0.1, NEG, 0.2, NEG],  # target 3 (0.2) vs 1 (0.1), 2 and 4 (-inf): rank 0, as before
        [NEG, np.nan, 0.1, 0.2, 0.3],  # target 1 scored NaN (a diverged model): no ranking, rank 3 (was 0)
    ])
    negatives = np.array([[2, 3, 4], [2, 3, 4], [1, 2, 4], [2, 3, 4]])
    assert sampled_ranks([scores], np.array([1, 1, 3, 1]), negatives).tolist() == [3, 3, 0, 3]


def test_negatives_are_distinct_seeded_and_never_the_input_or_the_target():
    rng = np.random.default_rng(0)
    inputs = [rng.integers(1, 60, size=rng.integers(1, 30)) for _ in range(200)]
    targets = rng.integers(1, 60, size=200)
    negatives = sample_negatives(inputs, targets, n_items=60, n=25, seed=3)
    assert negatives.shape == (200, 25)
    for history, target, row in zip(inputs, targets, negatives):
        assert len(set(row.tolist())) == 25 and row.min() >= 1 and row.max() <= 60
        assert not set(row.tolist()) & (set(history.tolist()) | {int(target)})
    np.testing.assert_array_equal(negatives, sample_negatives(inputs, targets, 60, 25, seed=3))
    assert not np.array_equal(negatives, sample_negatives(inputs, targets, 60, 25, seed=4))
    # Uniform: over many draws every allowed item turns up about equally often.
    counts = np.bincount(sample_negatives([np.array([1, 2])] * 3000, np.full(3000, 3), 13, 5, seed=0).ravel(), minlength=14)
    assert counts[:4].tolist() == [0, 0, 0, 0] and counts[4:].min() > 0.8 * 1500 and counts[4:].max() < 1.2 * 1500


def test_too_few_items_for_the_negatives_names_the_setting():
    with pytest.raises(BehaviorflowError, match=r"evaluate.sampled_negatives=8: test case 0 leaves only 7 items"):
        sample_negatives([np.array([1, 2])], np.array([3]), n_items=10, n=8)


def test_sampled_metrics_are_labelled_and_hand_computed():
    prepared = hand_prepared()
    full = evaluate_rankers(tiny_model(10), prepared, list_len=10)
    # Every case leaves exactly 6 allowed negatives: with all 6 drawn, a sampled rank is the full rank.
    report = evaluate_rankers(tiny_model(10), prepared, list_len=10, sampled=6, seed=1)
    pop = report.results["popularity"]
    assert pop["sampled_HR@1"] == pytest.approx(2 / 3)  # ranks 0, 0, 6
    assert pop["sampled_NDCG@10"] == pytest.approx((1 + 1 + 1 / 3) / 3)
    assert pop["sampled_MRR@10"] == pytest.approx((1 + 1 + 1 / 7) / 3)
    for ranker in ("model", "popularity"):
        sampled = {k: v for k, v in report.results[ranker].items() if k.startswith("sampled_")}
        unlabelled = {k: v for k, v in report.results[ranker].items() if not k.startswith("sampled_")}
        assert unlabelled == full.results[ranker]  # the full-ranking numbers are untouched
        assert set(sampled) == {f"sampled_{k}" for k in full.results[ranker] if not k.startswith("coverage")}
    # Two code paths (torch top-k over the catalog; scores of sampled items) agree on the model.
    for metric in ("HR@1", "HR@5", "NDCG@10", "MRR@10"):
        assert report.results["model"][f"sampled_{metric}"] == pytest.approx(full.results["model"][metric])
    assert report.sampled_negatives == 6 and report.flat_metrics()["popularity_sampled_HR@1"] == pytest.approx(2 / 3)


def test_eval_config_checks_its_fields():
    assert RetrainConfig.from_dict({"evaluate": {"sampled_negatives": 100}}).evaluate.sampled_negatives == 100
    with pytest.raises(BehaviorflowError, match=r"config.evaluate: sampled_negatives \(0\) must be at least 1"):
        RetrainConfig.from_dict({"evaluate": {"sampled_negatives": 0}})
    with pytest.raises(BehaviorflowError, match=r"config.prepare: split 'random' is not one of \['leave_one_out', 'temporal'\]"):
        RetrainConfig.from_dict({"prepare": {"split": "random"}})
    with pytest.raises(BehaviorflowError, match=r"config.prepare: temporal_quantile \(1.0\) must lie strictly between 0 and 1"):
        RetrainConfig.from_dict({"prepare": {"split": "temporal", "temporal_quantile": 1.0}})


# --- leakage, on generated data, checked against the raw events -------------------------------------


@pytest.fixture(scope="module")
def shop():
    # Every visit starts a new session (hours to days later): histories span weeks, so many users cross
    # the temporal cut-offs (with the default sample's few-day histories only a handful do).
    events, items = generate_sample(SampleConfig(n_users=400, series_per_category=2, seed=11, p_new_session=1.0, mean_visits=20))
    return events, items


def raw_steps_are_real_and_chronological(prepared, events):
    """Each step is one of the user's events (item and time), and each sequence is in time order."""
    seen = set(zip(events["user_id"], events["item_id"], events["timestamp"].astype(float)))
    for user, seq, times in zip(prepared.user_ids, prepared.sequences, prepared.step_times):
        assert len(seq) == len(times) and np.all(np.diff(times) >= 0)
        assert all((user, prepared.item_ids[i - 1], t) in seen for i, t in zip(seq, times))


def inputs_are_prefixes(prepared, cases):
    """Case j asks for position p of its user's sequence given exactly positions 0 … p-1."""
    for u, p, history, target in zip(cases.users, cases.positions, cases.inputs, cases.targets):
        seq = prepared.sequences[u]
        assert 1 <= p < len(seq) and len(history) == p  # the target position is not part of the input
        np.testing.assert_array_equal(history, seq[:p])
        assert target == seq[p]


def test_leave_one_out_has_no_leakage(shop):
    events, items = shop
    prepared = prepare(events, items)
    raw_steps_are_real_and_chronological(prepared, events)
    inputs_are_prefixes(prepared, prepared.valid)
    inputs_are_prefixes(prepared, prepared.test)
    lengths = np.array([len(s) for s in prepared.sequences])
    np.testing.assert_array_equal(prepared.test.positions, lengths[prepared.test.users] - 1)  # the last step
    np.testing.assert_array_equal(prepared.valid.positions, lengths[prepared.valid.users] - 2)  # the one before
    for u, p in zip(prepared.valid.users, prepared.valid.positions):
        np.testing.assert_array_equal(prepared.train[u], prepared.sequences[u][:p])  # training stops before both targets
    short = lengths < PrepareConfig().min_sequence_length
    assert set(np.flatnonzero(short)).isdisjoint(prepared.test.users) and prepared.stats["short_users_train_only"] == short.sum()
    assert len(prepared.test) == len(prepared.valid) == prepared.stats["test_cases"] > 300


@pytest.mark.parametrize("quantile", [0.9, 0.6])
def test_temporal_split_has_no_leakage(shop, quantile):
    events, items = shop
    prepared = prepare(events, items, PrepareConfig(split="temporal", temporal_quantile=quantile))
    stats = prepared.stats
    # The cut-offs follow the documented rule, recomputed here from the raw (de-duplicated) events.
    stamps = events.drop_duplicates()["timestamp"].to_numpy(dtype=float)
    cutoff = np.quantile(stamps, quantile)
    valid_cutoff = np.quantile(stamps[stamps < cutoff], quantile)
    assert stats["cutoff_timestamp"] == pytest.approx(cutoff) and stats["valid_cutoff_timestamp"] == pytest.approx(valid_cutoff)
    raw_steps_are_real_and_chronological(prepared, events)
    inputs_are_prefixes(prepared, prepared.valid)
    inputs_are_prefixes(prepared, prepared.test)

    # No training interaction at or after the validation cut-off: per user, the items trained on are
    # exactly the items of that user's raw events before it.
    before = events[events["timestamp"] < valid_cutoff].groupby("user_id")["item_id"].agg(set)
    for user, train, seq, times in zip(prepared.user_ids, prepared.train, prepared.sequences, prepared.step_times):
        np.testing.assert_array_equal(train, seq[: len(train)])
        assert np.all(times[: len(train)] < valid_cutoff) and np.all(times[len(train) :] >= valid_cutoff)
        assert {prepared.item_ids[i - 1] for i in train} == before.get(user, set())

    # Each target is the user's first step of its period; its input holds every earlier step.
    for cases, low, high in ((prepared.valid, valid_cutoff, cutoff), (prepared.test, cutoff, np.inf)):
        for u, p in zip(cases.users, cases.positions):
            times = prepared.step_times[u]
            assert low <= times[p] < high and times[p - 1] < low
    # Every user who could be evaluated is, and those who could not are counted.
    first, last = np.array([t[0] for t in prepared.step_times]), np.array([t[-1] for t in prepared.step_times])
    assert len(prepared.test) == int(((first < cutoff) & (last >= cutoff)).sum()) > 30
    assert stats["users_without_history_before_cutoff"] == int((first >= cutoff).sum())
    assert stats["train_steps"] == sum(len(t) for t in prepared.train)


def test_temporal_split_hand_computed():
    # 11 events: the median is 10 (T); the median of the 5 events before it is 5 (T_val). A step exactly
    # at a cut-off belongs to the later period.
    events = frame([
        ("u1", "a", "view", 1), ("u1", "b", "view", 4), ("u1", "c", "view", 5), ("u1", "e", "view", 6),
        ("u1", "d", "view", 11), ("u1", "e", "view", 14),
        ("u2", "c", "view", 8), ("u2", "a", "view", 10),  # nothing before T_val: no validation case
        ("u3", "b", "view", 12), ("u3", "d", "view", 13), ("u3", "a", "view", 15),  # nothing before T: no case
    ])
    p = prepare(events, catalog("abcde"), PrepareConfig(split="temporal", temporal_quantile=0.5))
    ids = lambda xs: "".join(p.item_ids[i - 1] for i in xs)  # noqa: E731
    assert (p.stats["cutoff_timestamp"], p.stats["valid_cutoff_timestamp"]) == (10.0, 5.0)
    assert [ids(t) for t in p.train] == ["ab", "", ""]
    assert p.valid.users.tolist() == [0] and ids(p.valid.inputs[0]) == "ab" and ids(p.valid.targets) == "c"
    assert p.test.users.tolist() == [0, 1] and [ids(h) for h in p.test.inputs] == ["abce", "c"] and ids(p.test.targets) == "da"
    assert p.stats["users_without_history_before_valid_cutoff"] == 1 and p.stats["users_without_history_before_cutoff"] == 1
    assert ids(np.flatnonzero(p.trained_items())) == "ab"


def test_temporal_split_refuses_what_it_cannot_cut():
    same_time = frame([("u1", "a", "view", 5), ("u1", "b", "view", 5), ("u2", "c", "view", 5)])
    with pytest.raises(BehaviorflowError, match=r"prepare.split=temporal: no event comes before the test cut-off 5"):
        prepare(same_time, catalog("abc"), PrepareConfig(split="temporal"))
    no_stamp = frame([("u1", "a", "view", 1), ("u1", "b", "view", None), ("u1", "c", "view", 3)])
    with pytest.raises(BehaviorflowError, match=r"1 events have no readable timestamp"):
        prepare(no_stamp, catalog("abc"), PrepareConfig(split="temporal"))


def test_evaluation_on_a_temporal_split(shop):
    events, items = shop
    prepared = prepare(events, items, PrepareConfig(split="temporal", temporal_quantile=0.6))
    report = evaluate_rankers(tiny_model(prepared.n_items), prepared, list_len=20, sampled=50)
    assert report.split == "temporal" and report.cases == len(prepared.test)
    trained = {int(i) for t in prepared.train for i in t}
    cold = sum(int(t) not in trained for t in prepared.test.targets)
    model = report.slices["model"]
    assert model["head"]["cases"] + model["long_tail"]["cases"] == report.cases
    assert model.get("cold_start", {"cases": 0})["cases"] == cold
    assert 0 <= report.results["model"]["NDCG@10"] <= report.results["model"]["sampled_NDCG@10"] <= 1  # sampling flatters
    top = model_topk(tiny_model(prepared.n_items), prepared.test.inputs, 20)
    assert report.results["model"]["HR@20"] == pytest.approx((ranks_from_topk(top, prepared.test.targets) < 20).mean())


def test_slice_chart_shows_each_slice_every_ranker_has(tmp_path):
    from components.evaluation.plots import slice_bar_values, slice_bars

    slices = {
        "model": {"cold_start": {"HR@10": 0.25, "cases": 4}, "warm": {"HR@10": 0.5, "cases": 16}, "head": {"HR@10": 0.6, "cases": 5}},
        "id_only": {"cold_start": {"HR@10": 0.0, "cases": 4}, "warm": {"HR@10": 0.55, "cases": 16}},
        "champion": {},  # no slices (e.g. not re-scored): no bars
    }
    labels, heights = slice_bar_values(slices)
    assert labels == ["cold start\n(4 cases)", "warm\n(16 cases)"]  # head: only the model has it
    assert heights == {"model": [0.25, 0.5], "id_only": [0.0, 0.55]}
    path = slice_bars(slices, tmp_path / "slices.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_a_baseline_above_the_models_interval_is_a_warning_and_a_summary_line():
    from components.evaluation.evaluate import EvaluationReport
    from flows.cli import format_summary

    def report(base: float | None) -> EvaluationReport:
        results = {"model": {"NDCG@10": 0.20, "HR@10": 0.30}, "popularity": {"NDCG@10": 0.02, "HR@10": 0.04}}
        if base is not None:
            results["id_only"] = {"NDCG@10": base, "HR@10": 0.30}
        return EvaluationReport(cases=100, list_len=20, exclude_seen=True, results=results, intervals={"model": {"NDCG@10": [0.18, 0.22]}})

    assert report(None).text_behind_baseline() is None  # no baseline trained
    assert report(0.22).text_behind_baseline() is None  # inside the interval: not told apart
    note = report(0.25).text_behind_baseline()
    assert note.startswith("the id-only baseline (NDCG@10 0.2500) beats the text-aware model (0.2000, 95 % interval 0.1800–0.2200)")
    assert "train.max_minutes" in note and "not with this baseline" in note

    summary = {
        "metrics": report(0.25).results, "data_fingerprint": "f", "preparation": {"users": 100, "test_cases": 100}, "cases": 100,
        "data_docs": "d", "training": {"epochs": 1, "device": "cpu", "wall_s": 1.0, "best_epoch": 1, "stopped": "max_epochs"},
        "gate": {"passed": True, "reasons": ["ok"]}, "run_id": "r", "tracking_uri": "sqlite:///m.db", "text_behind_baseline": note,
    }
    assert "the baseline is above the model's 95 % interval: the item text does not help on this data yet" in format_summary(summary)
    assert "the item text does not help" not in format_summary(summary | {"text_behind_baseline": None})

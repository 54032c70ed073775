"""`behaviorflow predict` against a real MLflow SQLite store: two versions logged and registered the way
the flow does it, the real CLI run as a subprocess, its output checked against an independent numpy
reference of the model (tests/tiny_bundle.py); and the mistakes a user makes, each a one-line error."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import json

import mlflow
import numpy as np
import pytest

from components import registry
from components.errors import BehaviorflowError
from components.prediction import PredictConfig, predict_file, read_histories
from components.registry.tracking import log_folder, log_onnx_model
from flows.cli import main
from serving import contract
from tests.helpers import ROOT
from tests.tiny_bundle import MAX_LEN, embeddings, item_id, make_tiny_bundle, reference_popular, reference_top_k, tiny_users

NAME = "predict-test-model"
N_ITEMS, DIM = 30, 8
SEEDS = {"1": 0, "2": 5}  # registry version -> the tiny bundle's seed

LONG = [item_id(1 + (7 * i) % N_ITEMS) for i in range(MAX_LEN + 9)]  # longer than the model's window
HISTORIES = "\n".join([
    "alice\ti001 i005 i009",
    "bob\ti002 zz1 i003 zz2",  # two unknown ids: skipped
    "carol\t" + " ".join(LONG),
    "dave\tzz3",  # nothing known: the most popular items
    "",  # blank lines are skipped
    "erin\ti010",
]) + "\n"
KNOWN = {"alice": ["i001", "i005", "i009"], "bob": ["i002", "i003"], "carol": LONG, "dave": [], "erin": ["i010"]}


def expected(seed: int, k: int, exclude_seen: bool = True, popularity: bool = True) -> list[str]:
    """The output lines for HISTORIES: the model's top k, or for a user with no known item the tiny
    bundle's k most popular training items (nothing, from a bundle without them)."""
    table = embeddings(N_ITEMS, DIM, seed)
    popular = reference_popular(tiny_users(N_ITEMS, seed), k)[0] if popularity else []
    lines = []
    for user, history in KNOWN.items():
        top = [item_id(i) for i in reference_top_k(table, [int(i[1:]) for i in history], k, exclude_seen)[0]] if history else popular
        lines.append(f"{user}\t{' '.join(top)}")
    return lines


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Version 1 (champion) and version 2 (challenger only), each with its bundle logged as the flow does."""
    root = tmp_path_factory.mktemp("predict")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        registry.configure(experiment="predict-test")
        for version, seed in SEEDS.items():
            bundle = make_tiny_bundle(root / f"bundle-{version}", n_items=N_ITEMS, dim=DIM, seed=seed)
            with mlflow.start_run() as run:
                log_folder(bundle, registry.BUNDLE_ARTIFACT)
                uri = log_onnx_model(bundle / "model.onnx", {})
                with registry.pending_version(uri, run.info.run_id, name=NAME) as registered:
                    registry.finalize_version(registered, {}, promote=version == "1", name=NAME)
            assert registered == version
        (root / "histories.tsv").write_text(HISTORIES)
        yield root, dict(os.environ)


def run_cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", "predict", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)


@pytest.mark.parametrize(("model", "seed"), [(f"{NAME}@champion", 0), (f"{NAME}/1", 0), (f"{NAME}@challenger", 5)])
def test_cli_predicts_what_the_model_computes(store, model, seed):
    root, env = store
    out = root / f"top-{model.replace('/', '_').replace('@', '_')}.tsv"
    done = run_cli(env, "--model", model, "--histories", str(root / "histories.tsv"), "--k", "7", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert out.read_text().splitlines() == expected(seed, 7)
    version = "1" if seed == 0 else "2"
    assert done.stdout.strip() == (
        f"{model} (version {version}): 5 users, 3 unknown item ids skipped in 2 lines (e.g. 'zz1', 'zz2', 'zz3'); "
        f"1 user had no known item and got the most popular items; "
        f"1 user got fewer than k items (too few left once the items they have seen are left out); wrote {out}"
    )
    lines = dict(line.split("\t") for line in expected(seed, 7))
    assert len(lines["carol"].split()) < 7  # carol has seen most of the catalog
    assert len(lines["dave"].split()) == 7  # dave knows nothing: the 7 most popular items


def test_the_versions_really_differ():
    """Guards the test above: were both versions alike, resolving the wrong one would go unnoticed."""
    assert expected(0, 7) != expected(5, 7)
    assert expected(0, 7)[3] != expected(5, 7)[3]  # their popular items too (dave's line)


def test_users_with_no_known_item_get_the_training_popularity_order(tmp_path):
    """The popularity list export stores (rankers.popularity_record, from the training sequences), written
    for every user with no known item, whatever --keep-seen and --new-items say; the rest as before."""
    from components.evaluation.rankers import popularity_record, popularity_topk

    bundle = make_tiny_bundle(tmp_path / "bundle", n_items=N_ITEMS, dim=DIM, seed=0, new_items=[4, 9])
    train = [np.array([12, 3, 12, 7]), np.array([7, 12, 30, 3]), np.array([25, 3])]  # 12 and 3 three times, 7 twice, 25 and 30 once
    manifest = json.loads((bundle / contract.MANIFEST_FILE).read_text())
    manifest[contract.POPULARITY_FIELD] = popularity_record(train, [item_id(i) for i in range(1, N_ITEMS + 1)])
    (bundle / contract.MANIFEST_FILE).write_text(json.dumps(manifest))
    source = tmp_path / "h.tsv"
    source.write_text("new1\tzz9\nalice\ti001 i005 i009\nnew2\t\nnew3\ti999 zz9\n")
    want = ["i003", "i012", "i007", "i025"]  # most first, ties to the lower index
    assert [item_id(i) for i in popularity_topk(train, [np.array([], dtype=np.int64)], N_ITEMS, 4, exclude_seen=False)[0]] == want
    for config in (PredictConfig(k=4), PredictConfig(k=4, exclude_seen=False, new_items=2, batch_size=1)):
        summary = predict_file(bundle, source, tmp_path / "o.tsv", config)
        lines = dict(line.split("\t") for line in (tmp_path / "o.tsv").read_text().splitlines())
        assert lines["new1"].split() == lines["new2"].split() == lines["new3"].split() == want
        assert lines["alice"].split() != want and len(lines["alice"].split()) == 4
        assert summary.no_known_items == 3 and summary.short_lists == 0
        assert "; 3 users had no known item and got the most popular items" in summary.line()
    predict_file(bundle, source, tmp_path / "o.tsv", PredictConfig(k=10))  # more than the 5 items ever trained on
    assert (tmp_path / "o.tsv").read_text().splitlines()[0] == "new1\t" + " ".join(want + ["i030"])


def test_the_bundle_ranker_answers_a_history_with_no_known_item_as_predict_and_the_service_do(tmp_path):
    """Evaluation re-scores the champion through BundleRanker.topk, which leaves out the items unknown to its
    bundle: a test case whose items all came after the champion was left with an empty history, and the graph
    ranked it from its all-padding state, an answer the champion never serves. Batch prediction and the
    service's `history: []` answer such a history with the bundle's most popular training items."""
    from components.evaluation.bundle import bundle_topk
    from serving.ranking import BundleRanker

    bundle = make_tiny_bundle(tmp_path / "bundle", n_items=N_ITEMS, dim=DIM, seed=0)
    popular = reference_popular(tiny_users(N_ITEMS, 0), 6)[0]
    table = embeddings(N_ITEMS, DIM, 0)
    alice = [item_id(i) for i in reference_top_k(table, [1, 5, 9], 6, True)[0]]
    for exclude_seen in (True, False):
        answers = BundleRanker(bundle).topk([["zz1", "zz2"], ["i001", "zz1", "i005", "i009"], []], 6, exclude_seen)
        assert answers[0] == answers[2] == popular
        assert answers[1] == (alice if exclude_seen else [item_id(i) for i in reference_top_k(table, [1, 5, 9], 6, False)[0]])
    assert bundle_topk(bundle, [["zz3"]], 6) == [popular]
    predict_file(bundle, _text_file(tmp_path / "h.tsv", "dave\tzz3\n"), tmp_path / "o.tsv", PredictConfig(k=6))
    assert (tmp_path / "o.tsv").read_text() == "dave\t" + " ".join(popular) + "\n"


def _text_file(path, text: str):
    path.write_text(text)
    return path


def test_a_bundle_from_before_the_popularity_list_leaves_those_users_empty_and_says_why(tmp_path):
    bundle = make_tiny_bundle(tmp_path / "bundle", n_items=N_ITEMS, dim=DIM, seed=0, popularity=False)
    source = tmp_path / "h.tsv"
    source.write_text(HISTORIES)
    summary = predict_file(bundle, source, tmp_path / "o.tsv", PredictConfig(k=7))
    assert (tmp_path / "o.tsv").read_text().splitlines() == expected(0, 7, popularity=False)
    assert dict(line.split("\t") for line in expected(0, 7, popularity=False))["dave"] == ""
    assert summary.line() == (
        "5 users, 3 unknown item ids skipped in 2 lines (e.g. 'zz1', 'zz2', 'zz3'); 1 user had no known item and got no "
        f"recommendations: {contract.POPULARITY_MISSING}; 1 user got fewer than k items (too few left once the items they have seen are left out)"
    )


def test_keep_seen_and_the_whole_history_is_excluded_by_default(tmp_path):
    bundle = make_tiny_bundle(tmp_path / "bundle", n_items=N_ITEMS, dim=DIM, seed=0)
    source = tmp_path / "h.tsv"
    source.write_text(HISTORIES)
    out = tmp_path / "out" / "top.tsv"  # a missing folder is created
    summary = predict_file(bundle, source, out, PredictConfig(k=5, exclude_seen=False, batch_size=2))
    assert out.read_text().splitlines() == expected(0, 5, exclude_seen=False)
    assert (summary.users, summary.unknown_items, summary.lines_with_unknown, summary.no_known_items) == (5, 3, 2, 1)
    predict_file(bundle, source, out, PredictConfig(k=25))
    carol = dict(line.split("\t") for line in out.read_text().splitlines())["carol"].split()
    assert carol and not set(carol) & set(LONG)  # also items before the model's last MAX_LEN are left out
    assert not list(tmp_path.glob("out/.*partial"))


def test_new_items_keep_their_places_as_in_the_service(tmp_path):
    new = [4, 9, 13, 21]
    bundle = make_tiny_bundle(tmp_path / "bundle", n_items=N_ITEMS, dim=DIM, seed=0, new_items=new)
    source = tmp_path / "h.tsv"
    source.write_text(HISTORIES)
    out = tmp_path / "top.tsv"
    predict_file(bundle, source, out, PredictConfig(k=6, new_items=3, batch_size=2))
    table, checked = embeddings(N_ITEMS, DIM, 0), 0
    for line in out.read_text().splitlines():
        user, _, items = line.partition("\t")
        if not KNOWN[user]:  # the most popular items, places for new items or not (none is popular: no interactions)
            assert items.split() == reference_popular(tiny_users(N_ITEMS, 0), 6)[0], user
            continue
        ranking = reference_top_k(table, [int(i[1:]) for i in KNOWN[user]], N_ITEMS, True)[0]
        best_new = [i for i in ranking if i in new][: max(3, sum(i in new for i in ranking[:6]))]
        best_other = [i for i in ranking if i not in new][: 6 - len(best_new)]
        assert items.split() == [item_id(i) for i in ranking if i in best_new + best_other], user
        checked += len(best_new) > sum(i in new for i in ranking[:6])  # lines where places were kept
    assert checked >= 2
    with pytest.raises(BehaviorflowError, match=r"new_items \(7\) must be between 0 and k \(6\)"):
        PredictConfig(k=6, new_items=7)


def test_new_item_boost_ranks_as_in_the_service(tmp_path):
    new = [4, 9, 13, 21]
    bundle = make_tiny_bundle(tmp_path / "bundle", n_items=N_ITEMS, dim=DIM, seed=0, new_items=new)
    source = tmp_path / "h.tsv"
    source.write_text(HISTORIES)
    table = embeddings(N_ITEMS, DIM, 0)
    changed = 0
    for boost in (0.0, 0.2):
        out = tmp_path / f"top{boost}.tsv"
        predict_file(bundle, source, out, PredictConfig(k=6, new_item_boost=boost, batch_size=2))
        for line in out.read_text().splitlines():
            user, _, items = line.partition("\t")
            history = [int(i[1:]) for i in KNOWN[user]]
            want = [item_id(i) for i in reference_top_k(table, history, 6, True, new=new, boost=boost)[0]] if history else reference_popular(tiny_users(N_ITEMS, 0), 6)[0]
            assert items.split() == want, (user, boost)
            changed += bool(history) and want != [item_id(i) for i in reference_top_k(table, history, 6, True)[0]]
    assert changed >= 1  # the boost moved a new item up for at least one user
    for bad in (-0.5, float("nan")):
        with pytest.raises(BehaviorflowError, match=r"new_item_boost \((-0.5|nan)\) must be between 0 and 100"):
            PredictConfig(new_item_boost=bad)


def test_malformed_line_names_file_and_line_and_writes_nothing(tmp_path, capsys, store):
    bad = tmp_path / "bad.tsv"
    bad.write_text("u1\ti001 i002\n\nu2 i003 i004\n")  # line 3 has a space where the tab belongs
    out = tmp_path / "top.tsv"
    code = main(["predict", "--model", f"{NAME}@champion", "--histories", str(bad), "--k", "3", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: {bad}, line 3: no tab") and err.count("\n") == 1
    assert not out.exists() and not list(tmp_path.glob(".*partial"))
    with pytest.raises(BehaviorflowError, match=r"line 1: empty user_id"):
        bad.write_text("\ti001\n")
        list(read_histories(bad))


@pytest.mark.parametrize(("model", "message"), [
    ("nope@champion", f"no registered model 'nope' in sqlite:///.*; registered models: {NAME}"),
    (f"{NAME}@staging", f"model '{NAME}' has no alias 'staging' in .*; its aliases: @challenger = version 2, @champion = version 1"),
    (f"{NAME}/9", f"model '{NAME}' has no version 9 in .*; its versions: 1, 2"),
    (NAME, f"model '{NAME}': expected NAME@ALIAS or NAME/VERSION"),
    (f"{NAME}/latest", "the version after '/' must be a number"),
])
def test_unknown_model_alias_or_version_is_one_line_naming_what_exists(store, tmp_path, capsys, model, message):
    root, _ = store
    code = main(["predict", "--model", model, "--histories", str(root / "histories.tsv"), "--out", str(tmp_path / "o.tsv")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: ") and re.search(message, err), err


def test_bad_k_and_missing_file_fail_before_the_registry(tmp_path, capsys):
    assert main(["predict", "--model", "m@champion", "--histories", str(tmp_path / "none.tsv"), "--out", "o.tsv"]) == 2
    assert f"histories file {tmp_path / 'none.tsv'}: no such file" in capsys.readouterr().err
    assert main(["predict", "--model", "m@champion", "--histories", "h.tsv", "--k", "0", "--out", "o.tsv"]) == 2
    assert "--k: k (0) must be between 1 and 100" in capsys.readouterr().err
    assert main(["predict", "--model", "m@champion", "--histories", "h.tsv", "--k", "5", "--new-items", "20", "--out", "o.tsv"]) == 2
    assert "--new-items: new_items (20) must be between 0 and k (5)" in capsys.readouterr().err
    assert main(["predict", "--model", "m@champion", "--histories", "h.tsv", "--new-item-boost", "-1", "--out", "o.tsv"]) == 2
    assert "--new-item-boost: new_item_boost (-1.0) must be between 0 and 100, e.g. 0.5" in capsys.readouterr().err


def test_an_out_that_cannot_be_a_file_is_refused_before_ranking(tmp_path):
    bundle = make_tiny_bundle(tmp_path / "bundle", n_items=N_ITEMS, dim=DIM)
    (tmp_path / "h.tsv").write_text("u1\t1 2\n")
    (tmp_path / "outdir").mkdir()
    with pytest.raises(BehaviorflowError, match=r"--out .*outdir is a folder: name the file to write, e\.g\. .*outdir/top10\.tsv"):
        predict_file(bundle, tmp_path / "h.tsv", tmp_path / "outdir")
    (tmp_path / "afile").write_text("")
    with pytest.raises(BehaviorflowError, match=r"afile is a file, not a folder"):
        predict_file(bundle, tmp_path / "h.tsv", tmp_path / "afile" / "o.tsv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "bundle", "h.tsv", "outdir"]  # nothing written
    with pytest.raises(BehaviorflowError, match=r"h\.tsv is the histories file: writing it would replace the input"):
        predict_file(bundle, tmp_path / "h.tsv", tmp_path / "." / "h.tsv")
    assert (tmp_path / "h.tsv").read_text() == "u1\t1 2\n"


def test_short_lists_repeated_users_a_byte_order_mark_and_padded_user_ids_are_handled(tmp_path):
    bundle = make_tiny_bundle(tmp_path / "bundle", n_items=N_ITEMS, dim=DIM)
    almost_all = " ".join(item_id(i) for i in range(1, N_ITEMS - 2))  # 3 items left to recommend
    (tmp_path / "h.tsv").write_bytes(("\ufeffu1\ti001 i002\n  u2 \t" + almost_all + "\nu1\ti003\n").encode("utf-8"))
    summary = predict_file(bundle, tmp_path / "h.tsv", tmp_path / "o.tsv", PredictConfig(k=5))
    users = [line.split("\t")[0] for line in (tmp_path / "o.tsv").read_text().splitlines()]
    assert users == ["u1", "u2", "u1"]  # no byte-order mark, no padding: ids that join
    assert (summary.short_lists, summary.repeated_users) == (1, 1)
    assert summary.line() == ("3 users, 0 unknown item ids skipped in 0 lines; 1 user got fewer than k items (too few left once the items "
                              "they have seen are left out); 1 line repeated an earlier line's user id (each got its own answer)")


def test_empty_input_gives_an_empty_output(tmp_path):
    bundle = make_tiny_bundle(tmp_path / "bundle", n_items=N_ITEMS, dim=DIM)
    (tmp_path / "h.tsv").write_text("")
    summary = predict_file(bundle, tmp_path / "h.tsv", tmp_path / "o.tsv")
    assert summary.users == 0 and (tmp_path / "o.tsv").read_text() == ""
    assert summary.line() == "0 users, 0 unknown item ids skipped in 0 lines"


def test_a_header_line_is_skipped_and_said_but_a_user_called_user_is_not(tmp_path):
    # pandas' to_csv(sep="\t") writes the column names first: they are not a user who wants the popular items.
    bundle = make_tiny_bundle(tmp_path / "bundle", n_items=N_ITEMS, dim=DIM)
    (tmp_path / "h.tsv").write_bytes("\ufeffuser_id\titem_ids\nu1\ti001 i002\n".encode("utf-8"))
    summary = predict_file(bundle, tmp_path / "h.tsv", tmp_path / "o.tsv", PredictConfig(k=3))
    assert [line.split("\t")[0] for line in (tmp_path / "o.tsv").read_text().splitlines()] == ["u1"]
    assert summary.users == 1 and summary.no_known_items == 0
    assert summary.line() == "header line 'user_id\\titem_ids' skipped; 1 user, 0 unknown item ids skipped in 0 lines"
    # A user named like a column whose history holds known items is a user; and only the first line can be a header.
    (tmp_path / "h.tsv").write_text("user\ti001 i002\nUser_Id\titem_ids\n")
    summary = predict_file(bundle, tmp_path / "h.tsv", tmp_path / "o.tsv", PredictConfig(k=3))
    assert [line.split("\t")[0] for line in (tmp_path / "o.tsv").read_text().splitlines()] == ["user", "User_Id"]
    assert summary.header is None and summary.no_known_items == 1

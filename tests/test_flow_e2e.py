"""The whole retraining flow on real components: Prefect (temporary API server), Great Expectations,
MLflow on a fresh SQLite store, ONNX Runtime, `bentoml build`, and a real `behaviorflow serve`
(bentoml serve) process called over HTTP. The tests run in file order: first run, corrupt input,
second run, gate failure — each asserting the registry state it leaves behind."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from prefect.testing.utilities import prefect_test_harness

from components import registry, settings
from components.data.sample import SampleConfig, write_sample
from components.data import load_dataset
from components.errors import GateFailed, ValidationFailed
from components.evaluation.bundle import bundle_topk
from components.evaluation.rankers import item_counts, popularity_topk
from serving.ranking import BundleRanker
from flows.cli import format_summary
from components.preparation.prepare import prepare
from flows.retrain import retrain
from tests.helpers import ROOT, free_port, running_server

pytestmark = pytest.mark.e2e
NAME = settings.REGISTERED_MODEL_NAME


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A temporary Prefect API, its own MLflow store and a small sample dataset."""
    root = tmp_path_factory.mktemp("e2e")
    events, items = write_sample(root / "data", SampleConfig(n_users=300, series_per_category=2))
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    config = {
        "data": {"events": str(events), "items": str(items)},
        "model": {"d_model": 32, "n_layers": 1, "n_heads": 1, "max_len": "auto"},
        "train": {"max_epochs": 6, "progress": False},
        # int8 is served where its quality holds, whatever its speed here: which precision is served must not
        # depend on the machine's load (add-items keeps the source's).
        "export": {"probe_size": 64, "int8_min_speedup": 0},
    }
    with prefect_test_harness(server_startup_timeout=120):
        yield {"root": root, "config": config, "events": events, "items": items, "client": MlflowClient(os.environ["MLFLOW_TRACKING_URI"]), "runs": {}}
    if previous is None:
        os.environ.pop("MLFLOW_TRACKING_URI")
    else:
        os.environ["MLFLOW_TRACKING_URI"] = previous


def latest_report(key: str = "retrain-summary") -> str:
    """The newest Markdown artifact `key` in the Prefect API: what the UI shows for the flow run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), sort=ArtifactSort.CREATED_DESC, limit=1)
    return found[0].data


def versions(client) -> list[str]:
    return sorted(str(v.version) for v in client.search_model_versions(f"name='{NAME}'"))


def alias(client, name) -> str:
    return str(client.get_model_version_by_alias(NAME, name).version)


def test_first_run_registers_a_champion_and_serves_it(world):
    summary = retrain(config=world["config"])
    world["runs"]["first"] = summary
    client = world["client"]

    # Registry: version 1, both aliases, tagged with its Bento and data fingerprint.
    assert summary["registry"]["version"] == "1" and summary["registry"]["aliases"] == ["challenger", "champion"]
    assert alias(client, "champion") == "1" and alias(client, "challenger") == "1"
    mv = client.get_model_version(NAME, "1")
    assert mv.tags["bento_tag"] == summary["registry"]["bento_tag"]
    assert mv.tags["data_fingerprint"] == summary["data_fingerprint"] and len(summary["data_fingerprint"]) == 16
    assert mv.tags["promoted"] == "true" and mv.tags["gate"].startswith("PASSED")
    assert mv.tags["registration"] == "complete"  # a killed registration would have left "in progress: PID …"
    assert mv.description.startswith("# behaviorflow retrain") and f"registered **{NAME} version 1**" in mv.description  # the MLflow UI's version page
    assert client.get_registered_model(NAME).description.startswith("Next-item recommender trained by behaviorflow")

    # The model learned the sequential structure: far above popularity on the held-out targets.
    m, pop = summary["metrics"]["model"], summary["metrics"]["popularity"]
    assert m["NDCG@10"] > 2 * pop["NDCG@10"], summary["metrics"]
    assert summary["gate"]["champion"] is None and "no champion yet" in summary["gate"]["reasons"][-1]
    assert summary["parity"]["identical_topk"] and summary["parity"]["cases"] >= 64

    # The run holds what a reviewer needs.
    run = client.get_run(summary["run_id"])
    assert run.data.tags["outcome"] == "registered" and run.data.params["train.max_epochs"] == "6"
    assert run.data.tags[registry.PROCESS_TAG] == registry.this_process()  # what the next start checks is alive (repair.py)
    assert run.data.params["model.max_len"] == "auto" and run.data.params["model.max_len_resolved"] == "50"  # short sample histories
    assert run.data.params["model.token_embeddings"] == "True" and run.data.params["model.token_vocab_resolved"] == "30522"  # all-MiniLM-L6-v2's
    assert run.data.metrics["NDCG_at_10"] == pytest.approx(m["NDCG@10"])
    slices = summary["slices"]["model"]  # by the test target's training popularity (components/evaluation/slices.py)
    assert slices["head"]["cases"] + slices["long_tail"]["cases"] == summary["cases"]
    assert slices["cold_start"]["cases"] + slices["warm"]["cases"] == summary["cases"] and slices["cold_start"]["cases"] > 0  # the sample's launches
    ratio = slices["cold_start"]["HR@10"] / slices["warm"]["HR@10"]
    assert f"cold start {slices['cold_start']['HR@10']:.4f} ({slices['cold_start']['cases']} cases) = {ratio:.2f}× warm" in format_summary(summary)
    assert run.data.metrics["head_HR_at_10"] == pytest.approx(slices["head"]["HR@10"]) and "popularity_long_tail_NDCG_at_10" in run.data.metrics
    # The id-only baseline (text off, same settings) is trained and reported next to the model.
    base = summary["metrics"]["id_only"]
    assert run.data.metrics["id_only_NDCG_at_10"] == pytest.approx(base["NDCG@10"]) and base["NDCG@10"] > pop["NDCG@10"]
    # Memory, per epoch and at its peak: in the run (for sizing work pools) and in the summary.
    rss = [point.value for point in client.get_metric_history(summary["run_id"], "train_rss_mb")]
    peak = summary["training"]["peak_rss_mb"]
    assert len(rss) == summary["training"]["epochs"] and 100 < max(rss) <= peak + 1 and run.data.metrics["train_peak_rss_mb"] == peak
    assert f"peak memory {peak / 1024:.1f} GB" in format_summary(summary) or f"peak memory {peak:.0f} MB" in format_summary(summary)
    curve = world["client"].get_metric_history(summary["run_id"], "id_only_val_NDCG_at_10")
    assert len(curve) == summary["baseline_training"]["epochs"] >= 1 and summary["slices"]["id_only"]["head"]["cases"] == slices["head"]["cases"]
    assert "id-only baseline NDCG@10" in format_summary(summary) and "text-aware vs id-only" in format_summary(summary)
    b = summary["baseline_training"]
    assert f"id-only baseline {b['epochs']} epoch{'s' if b['epochs'] != 1 else ''} in {b['wall_s']} s (best epoch {b['best_epoch']}; {b['stopped']})" in format_summary(summary)
    assert b["stopped"] and summary["training"]["cut_short"] in (True, False)
    # The Prefect UI holds the same summary as the flow run's Markdown artifact.
    report = latest_report()
    assert "registered **behaviorflow-recommender version 1** — aliases: challenger, champion" in report
    assert f"| model | {m['NDCG@10']:.4f} | {m['HR@10']:.4f} |" in report and f"| popularity | {pop['NDCG@10']:.4f} |" in report
    assert f"`{summary['run_id']}` in `sqlite:///" in report and "| train | " in report
    # Where the time went, per stage: in the summary and in the run.
    stages = summary["stage_s"]
    assert list(stages) == ["data", "text", "train", "id-only baseline", "evaluate", "export", "package and register"]
    assert all(seconds >= 0 for seconds in stages.values()) and sum(stages.values()) <= summary["wall_s"] + 0.5
    assert stages["train"] == pytest.approx(summary["training"]["wall_s"], abs=5)
    assert run.data.metrics["stage_s.train"] == stages["train"] and run.data.metrics["stage_s.package_and_register"] > 0
    assert " in the flow: data " in format_summary(summary) and "· package and register " in format_summary(summary)
    artifacts = {a.path for a in client.list_artifacts(summary["run_id"])} | {a.path for a in client.list_artifacts(summary["run_id"], "charts")}
    assert {"validation.json", "gate.json", "parity.json", "evaluation.json", "charts/learning_curve.png", "charts/test_metrics.png", "charts/test_slices.png", "bundle", "bento"} <= artifacts
    assert [a.path for a in client.list_artifacts(summary["run_id"], "bento")][0].endswith(".bento")
    assert os.path.exists(summary["data_docs"])

    # Serve the champion with the real CLI command and ask it over HTTP; it answers what ONNX answers.
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = world["root"] / "serve.log"
    command = [sys.executable, "-m", "flows.cli", "serve", "--alias", "champion", "--port", str(port)]
    bundle = world["root"] / "bundle"
    client.download_artifacts(summary["run_id"], "bundle", str(world["root"]))
    events = pd.read_csv(world["events"], dtype=str)
    with running_server(command, dict(os.environ), log, url, timeout=90):
        meta = httpx.get(f"{url}/metadata").json()
        assert meta["model_version"] == "1" and meta["manifest"]["data_fingerprint"] == summary["data_fingerprint"]
        assert meta["max_len"] == 50  # model.max_len "auto", resolved from the training histories
        history = events["item_id"].drop_duplicates().head(5).tolist()
        reply = httpx.post(f"{url}/recommend", json={"history": history, "k": 10}).json()
        expected = bundle_topk(bundle, [history], 10)[0]
        assert [r["item_id"] for r in reply["items"]] == expected
        assert not set(expected) & set(history) and all(r["title"] for r in reply["items"])
        user = events["user_id"].iloc[0]
        by_user = httpx.post(f"{url}/recommend", json={"user_id": user, "k": 5})
        assert by_user.status_code == 200 and len(by_user.json()["items"]) == 5
        bad = httpx.post(f"{url}/recommend", json={"history": ["no-such-item"], "k": 5})
        assert bad.status_code == 400 and "no-such-item" in bad.text
        # A new user (`history: []`): the popularity ranker's top 10 over the training sequences, each scored by
        # its share of the training interactions, marked as such.
        dataset = load_dataset(events=world["events"], items=world["items"])
        prepared = prepare(dataset.events, dataset.items)
        popular = httpx.post(f"{url}/recommend", json={"history": [], "k": 10}).json()
        want = popularity_topk(prepared.train, [np.zeros(0, np.int64)], prepared.n_items, 10, exclude_seen=False)[0]
        assert popular["source"] == "popularity" and [r["item_id"] for r in popular["items"]] == [prepared.item_ids[i - 1] for i in want]
        counts = item_counts(prepared.train, prepared.n_items)
        assert [r["score"] for r in popular["items"]] == pytest.approx((counts[want] / counts.sum()).tolist(), rel=1e-12)
        assert meta["n_popular_items"] == 100 and all(r["because"] == [] for r in popular["items"])

        # New items (no training interactions) are marked in the bundle, among them every catalog item that
        # occurs in no event; a request can keep places for them.
        catalog = pd.read_csv(world["items"], dtype=str)["item_id"]
        new = {row["item_id"] for row in json.loads((bundle / "items.json").read_text()) if row.get("new")}
        assert set(catalog) - set(events["item_id"]) <= new < set(catalog) and len(new) < len(catalog) / 4
        assert meta["n_new_items"] == len(new)
        reply = httpx.post(f"{url}/recommend", json={"history": history, "k": 10, "new_items": 3}).json()
        flagged = [r["item_id"] for r in reply["items"] if r["new"]]
        assert len(reply["items"]) == 10 and len(flagged) >= 3 and set(flagged) <= new
        # ... or raise their scores: a boost far above the score range puts every new item first, scored plus it.
        plain = {r["item_id"]: r["score"] for r in httpx.post(f"{url}/recommend", json={"history": history, "k": 100}).json()["items"]}
        boosted = httpx.post(f"{url}/recommend", json={"history": history, "k": 10, "new_item_boost": 100}).json()["items"]
        first = [r for r in boosted if r["new"]]
        assert len(first) == min(10, len(new - set(history))) and boosted[: len(first)] == first
        assert all(abs(r["score"] - 100 - plain[r["item_id"]]) < 1e-3 for r in first if r["item_id"] in plain)


def test_corrupt_input_stops_before_training_and_leaves_the_registry_unchanged(world):
    client = world["client"]
    before = versions(client)
    events = pd.read_csv(world["events"], dtype=str)
    events.loc[3, "event_type"] = "viewd"
    events.loc[7, "item_id"] = "ghost-item"
    corrupt = world["root"] / "corrupt-events.csv"
    events.to_csv(corrupt, index=False)
    config = {**world["config"], "data": {"events": str(corrupt), "items": world["config"]["data"]["items"]}}

    with pytest.raises(ValidationFailed) as failure:
        retrain(config=config)
    message = str(failure.value)
    assert "corrupt-events.csv: column 'event_type'" in message and "'viewd' (row 5)" in message  # header = line 1
    assert "ghost-item" in message and "row 9" in message
    assert "Data Docs:" in message

    assert versions(client) == before and alias(client, "champion") == "1"
    run = client.search_runs([client.get_experiment_by_name(settings.EXPERIMENT_NAME).experiment_id], order_by=["attributes.start_time DESC"], max_results=1)[0]
    assert run.info.status == "FAILED"
    assert "train_loss" not in run.data.metrics  # it stopped before training
    assert "validation.json" in {a.path for a in client.list_artifacts(run.info.run_id)}


def test_second_run_is_a_new_version_gated_against_the_champion(world):
    first = world["runs"]["first"]
    summary = retrain(config=world["config"])
    client = world["client"]
    assert summary["registry"]["version"] == "2"
    gate = summary["gate"]
    assert gate["champion_version"] == "1" and gate["passed"]
    # Same data, same config, same seed: the retrain reproduces the first model exactly.
    assert summary["metrics"]["model"]["NDCG@10"] == pytest.approx(first["metrics"]["model"]["NDCG@10"], abs=1e-9)
    assert summary["metrics"]["id_only"] == pytest.approx(first["metrics"]["id_only"], abs=1e-9)  # the baseline too
    # The champion was re-scored by ONNX Runtime on the same test cases: it matches its own first score.
    assert summary["metrics"]["champion"]["NDCG@10"] == pytest.approx(first["metrics"]["model"]["NDCG@10"], abs=0.01)
    assert any("vs champion v1" in r for r in gate["reasons"])
    assert alias(client, "champion") == "2" and alias(client, "challenger") == "2"
    assert client.get_model_version(NAME, "1").tags["replaced_by"] == "2"

    # A serving team's offline check: `behaviorflow predict` with version 1 on the same test histories scores
    # exactly what the gate saw for the champion (same bundle, same ONNX Runtime path, same exclusion rule).
    dataset = load_dataset(events=world["events"], items=world["items"])
    prepared = prepare(dataset.events, dataset.items)
    inputs, targets = prepared.test_split()
    histories, out = world["root"] / "test_histories.tsv", world["root"] / "test_top10.tsv"
    histories.write_text("".join(f"case{j}\t{' '.join(prepared.item_ids[i - 1] for i in h)}\n" for j, h in enumerate(inputs)))
    done = subprocess.run([sys.executable, "-m", "flows.cli", "predict", "--model", f"{NAME}/1", "--histories", str(histories), "--k", "10", "--out", str(out)],
                          cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = out.read_text().splitlines()
    assert [line.split("\t")[0] for line in lines] == [f"case{j}" for j in range(len(targets))] == [f"case{j}" for j in range(summary["cases"])]
    ranks = []  # 0-based place of each case's target in its top 10, None if absent
    for line, target in zip(lines, (prepared.item_ids[t - 1] for t in targets)):
        top = line.split("\t")[1].split()
        ranks.append(top.index(target) if target in top else None)
    hr = sum(r is not None for r in ranks) / len(ranks)
    ndcg = sum(1 / math.log2(r + 2) for r in ranks if r is not None) / len(ranks)
    assert hr == pytest.approx(summary["metrics"]["champion"]["HR@10"], abs=1e-12) and hr > 0
    assert ndcg == pytest.approx(summary["metrics"]["champion"]["NDCG@10"], abs=1e-9)


def test_a_failed_gate_registers_nothing(world):
    client = world["client"]
    before = versions(client)
    config = {**world["config"], "gate": {"min_lift": 1000.0}, "evaluate": {"id_only_baseline": False}}
    with pytest.raises(GateFailed, match="does not beat popularity") as failure:
        retrain(config=config)
    assert "nothing was exported or registered" in str(failure.value)
    summary = failure.value.summary
    assert "id_only" not in summary["metrics"] and summary["baseline_training"] is None
    evaluation = json.loads(Path(client.download_artifacts(summary["run_id"], "evaluation.json")).read_text())
    assert "id-only baseline: not trained (evaluate.id_only_baseline is false)" in evaluation["notes"]
    assert versions(client) == before and alias(client, "champion") == "2"
    run = client.get_run(failure.value.summary["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["outcome"] == "gate_failed" and run.data.tags["gate"] == "failed"
    assert "**gate failed**: nothing was exported or registered" in latest_report() and "does not beat popularity" in latest_report()


def new_items_file(world, rows: list[dict], name: str) -> str:
    path = world["root"] / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def test_add_items_registers_a_challenger_that_ranks_new_items_and_leaves_old_scores_alone(world):
    from components.catalog import CHECKPOINT_ARTIFACT
    from flows.add_items import add_items

    client = world["client"]
    catalog = pd.read_csv(world["items"], dtype=str)
    # Brand-new items: text like the catalog's (a further part of an existing series), ids never seen.
    template = catalog.iloc[:3]
    rows = [{"item_id": f"NEW-{i}", "title": t + " &ndash; new edition", "category": c, "brand": b, "description": d}
            for i, (t, c, b, d) in enumerate(zip(template["title"], template["category"], template["brand"], template["description"]))]
    summary = add_items(items=new_items_file(world, rows, "new-items.csv"))

    assert summary["registry"]["version"] == "3" and summary["registry"]["aliases"] == ["challenger"]
    assert alias(client, "champion") == "2" and alias(client, "challenger") == "3"  # no --promote: the champion stays
    assert summary["source_version"] == f"{NAME}/2" and summary["added_items"] == 3 and summary["catalog_items"] == len(catalog) + 3
    assert summary["parity"]["identical_topk"] and summary["item_texts_cleaned"] == 3  # their titles' "&ndash;"
    assert summary["notes"] == []  # the challenger it replaces was its source: nothing is lost
    # A second branch from v2 would replace challenger v3 and lose v3's new items: said before it registers.
    from flows.add_items import _items_it_would_drop

    notes = _items_it_would_drop(set(catalog["item_id"]) | {"NEW-7"}, "2", True, NAME, world["root"] / "replaced")
    assert notes == [f"@challenger was version 3, which serves 3 item(s) this version lacks (e.g. ['NEW-0', 'NEW-1', 'NEW-2']): as @challenger "
                     f"they are no longer recommended; to keep them, add items onto version 3 (--model {NAME}/3)"]
    report = latest_report("add-items-summary")
    assert f"registered **{NAME} version 3** — aliases: challenger" in report and f"3 new items added to version {NAME}/2 ({len(catalog) + 3} in the catalog now)" in report
    # Version 2 served int8 (the world's export settings): re-quantized, the added items leave its answers alone.
    assert summary["precision"]["source_precision"] == "int8" and summary["precision"]["precision"] == "int8", summary["precision"]
    assert summary["precision"]["changed_answers"] == 0 and summary["precision"]["cases"] >= 64
    mv = client.get_model_version(NAME, "3")
    assert mv.tags["registration"] == "complete" and client.get_run(mv.run_id).data.tags[registry.PROCESS_TAG] == registry.this_process()
    assert mv.description == report  # the run's summary on the version's page in the MLflow UI
    assert mv.tags["added_items_to"] == f"{NAME}/2" and mv.tags["gate"].startswith(f"3 items added to version {NAME}/2; the scores of its {len(catalog)} items did not move")
    assert mv.tags["data_fingerprint"] == world["runs"]["first"]["data_fingerprint"]  # trained on the same data
    artifacts = {a.path for a in client.list_artifacts(mv.run_id)}
    assert {"bundle", "bento", CHECKPOINT_ARTIFACT, "parity.json", "add_items.json", "validation.json", "item_text_cleaning.json"} <= artifacts

    v2, v3 = world["root"] / "v2", world["root"] / "v3"
    client.download_artifacts(client.get_model_version(NAME, "2").run_id, "bundle", str(v2))
    client.download_artifacts(mv.run_id, "bundle", str(v3))
    items3 = json.loads((v3 / "bundle" / "items.json").read_text())
    assert [r["item_id"] for r in items3[-3:]] == ["NEW-0", "NEW-1", "NEW-2"] and all(r.get("new") for r in items3[-3:])
    assert items3[:-3] == json.loads((v2 / "bundle" / "items.json").read_text())  # old items, old "new" marks
    manifest = json.loads((v3 / "bundle" / "manifest.json").read_text())
    assert manifest["added_items"]["count"] == 3 and manifest["n_items"] == len(catalog) + 3
    source_manifest = json.loads((v2 / "bundle" / "manifest.json").read_text())
    assert manifest["metrics"] == {} and manifest["source_metrics"] == source_manifest["metrics"]  # not evaluated: /metadata shows no metrics
    assert manifest["gate"] == f"not re-evaluated: 3 items added to version {NAME}/2 (source_metrics are its test metrics)"
    assert manifest["precision"] == json.loads((v2 / "bundle" / "manifest.json").read_text())["precision"] == "int8"
    # The source's popularity list, as it was: the added items have no interactions.
    assert manifest["popularity"] == source_manifest["popularity"] and len(manifest["popularity"]["items"]) == 100
    # What text the model learned from, for add-items to compare new items with: carried over as it was.
    from components.preparation.prepare import text_field_shares

    assert manifest["item_text_fields"] == source_manifest["item_text_fields"] == text_field_shares(catalog)
    assert source_manifest["item_text_fields"]["description"] > 0.5
    assert mv.tags["gate"].endswith(f"; served in {summary['precision']['reason']}")
    # Its checkpoint reads the new items' tokens too (token embeddings), so items can be added to it in turn.
    from components.catalog import CHECKPOINT_FILE, load_checkpoint

    client.download_artifacts(mv.run_id, CHECKPOINT_ARTIFACT, str(v3))
    extended, _ = load_checkpoint(v3 / CHECKPOINT_ARTIFACT / CHECKPOINT_FILE)
    assert extended.cfg.n_items == len(catalog) + 3 and extended.item_tokens.shape[0] == len(catalog) + 4
    assert all((extended.item_tokens[-i] != 0).sum() > 3 for i in (1, 2, 3))  # title, category, brand, description

    # Through ONNX Runtime: the new items are ranked, and with them left out the old order is the old model's.
    events = pd.read_csv(world["events"], dtype=str)
    histories = events.groupby("user_id")["item_id"].apply(list).head(40).tolist()
    old, new = bundle_topk(v2 / "bundle", histories, 100), bundle_topk(v3 / "bundle", histories, 100)
    added = {"NEW-0", "NEW-1", "NEW-2"}
    assert any(added & set(ranking[:20]) for ranking in new)
    for before, after in zip(old, new):
        kept = [i for i in after if i not in added]
        assert kept == before[: len(kept)]

    # The new version's Bento, served as a serving team would: `serve --alias challenger`, over HTTP.
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "flows.cli", "serve", "--alias", "challenger", "--port", str(port)]
    with running_server(command, dict(os.environ), world["root"] / "serve-v3.log", url, timeout=90):
        meta = httpx.get(f"{url}/metadata").json()
        assert meta["model_version"] == "3" and meta["n_items"] == len(catalog) + 3 and meta["manifest"]["added_items"]["count"] == 3
        # the history that ranks a brand-new item highest, asked for a list that reaches it
        position, user_history = min((ranking.index(i), h) for ranking, h in zip(new, histories) for i in added if i in ranking)
        k = max(10, position + 1)
        reply = httpx.post(f"{url}/recommend", json={"history": user_history, "k": k}).json()
        assert [r["item_id"] for r in reply["items"]] == BundleRanker(v3 / "bundle").topk([user_history], k)[0]
        picked = reply["items"][position]
        assert picked["item_id"] in added and picked["new"] and picked["title"].endswith(" \u2013 new edition")  # cleaned as the text the model reads
        popular = httpx.post(f"{url}/recommend", json={"history": [], "k": 5}).json()
        assert [r["item_id"] for r in popular["items"]] == [r["item_id"] for r in source_manifest["popularity"]["items"][:5]]


def test_add_items_refuses_known_ids_and_bad_rows_and_registers_nothing(world):
    from components.errors import BehaviorflowError
    from flows.add_items import add_items

    client = world["client"]
    before = versions(client)
    catalog = pd.read_csv(world["items"], dtype=str)
    known = new_items_file(world, [{"item_id": "NEW-9", "title": "a lamp"}, {"item_id": catalog["item_id"][4], "title": "a boot"}], "known.csv")
    with pytest.raises(BehaviorflowError, match=rf"known.csv: 1 of 2 item id\(s\) are already in version 3's catalog, e.g. '{catalog['item_id'][4]}' \(row 3\)"):
        add_items(items=known, model=f"{NAME}@challenger")
    untitled = new_items_file(world, [{"item_id": "NEW-9", "title": "a lamp"}, {"item_id": "NEW-9", "title": ""}], "untitled.csv")
    with pytest.raises(ValidationFailed, match=r"untitled.csv: column 'item_id'.*NEW-9") as failure:
        add_items(items=untitled)
    assert "title" in str(failure.value)
    experiment = client.get_experiment_by_name(settings.EXPERIMENT_NAME).experiment_id
    runs = len(client.search_runs([experiment]))
    with pytest.raises(BehaviorflowError, match=rf"model '{NAME}' has no version 99 in .*; its versions: 1, 2, 3"):
        add_items(items=known, model=f"{NAME}/99")
    assert len(client.search_runs([experiment])) == runs  # refused before any MLflow run was opened
    assert versions(client) == before and alias(client, "champion") == "2" and alias(client, "challenger") == "3"


def test_versions_lists_aliases_metrics_and_what_each_version_is(world, capsys):
    from flows.cli import main

    assert main(["versions", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["version"] for r in rows] == ["3", "2", "1"]
    v3, v2, v1 = rows
    assert v3["aliases"] == ["challenger"] and v3["added_items_to"] == f"{NAME}/2" and v3["NDCG@10"] is None
    assert v2["aliases"] == ["champion"] and v2["NDCG@10"] == pytest.approx(world["runs"]["first"]["metrics"]["model"]["NDCG@10"])
    assert v1["aliases"] == [] and v1["gate"].startswith("PASSED") and v1["bento_tag"].startswith(settings.BENTO_SERVICE_NAME)
    assert main(["versions"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[1].split() == ["version", "aliases", "created", "(UTC)", "NDCG@10", "HR@10", "record"]
    assert table[2].split()[:2] == ["3", "challenger"] and table[2].endswith(f"added items to {NAME}/2")
    assert main(["versions", "--model", "no-such-model"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no registered model 'no-such-model' in ") and err.rstrip().endswith(f"registered models: {NAME}")


def test_retrain_reads_an_amazon_2023_dump_through_the_data_settings(world, monkeypatch):
    """The sample as an Amazon Reviews 2023 pair (parent_asin, rating, millisecond timestamps, no event type; metadata with
    a categories list and store), retrained without rewriting it: the data settings do the reading. Its own MLflow store,
    so that it registers a first champion whatever the tests before it left (and runs alone with -k)."""
    from tests.helpers import AMAZON_EVENT_COLUMNS, AMAZON_ITEM_COLUMNS, write_amazon_like

    root = world["root"] / "amazon"
    paths = write_amazon_like(pd.read_csv(world["events"], dtype={"user_id": str, "item_id": str}),
                              pd.read_csv(world["items"], dtype=str, keep_default_na=False), root / "data")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    reading = {"event_columns": AMAZON_EVENT_COLUMNS, "item_columns": AMAZON_ITEM_COLUMNS, "event_type": "rating"}
    config = world["config"] | {"data": {"events": str(paths["reviews"]), "items": str(paths["meta"]), **reading},
                                "evaluate": {"id_only_baseline": False}}
    summary = retrain(config=config)
    assert summary["registry"]["version"] == "1" and "champion" in summary["registry"]["aliases"]
    # The same data as its contract-named equivalent: the same fingerprint (the cache key of everything computed from it).
    assert summary["data_fingerprint"] == load_dataset(paths["events"], paths["items"]).fingerprint()
    run = MlflowClient(os.environ["MLFLOW_TRACKING_URI"]).get_run(summary["run_id"])
    assert run.data.params["data.item_columns"] == str(AMAZON_ITEM_COLUMNS) and run.data.params["data.event_type"] == "rating"
    import mlflow

    validation = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/validation.json")
    assert validation["statistics"]["events"]["timestamp_unit"] == "ms (detected: every numeric value >= 1e11)"
    # and the summary says so where a user reads it, not only in a log line of the flow's start
    assert "  validation    passed; timestamps read as epoch ms (detected: every numeric value >= 1e11) — Data Docs" in format_summary(summary)

"""The retraining flow: behaviour log + item catalog in, a gated, packaged, registered recommender out.

    validate → prepare → tokenize → train (+ id-only baseline) → evaluate → GATE → export + parity → package → register

Every stage lives in `components/<stage>/`; this file only wires them, one task per stage. MLflow
records the whole run (params, metrics, validation result, data fingerprint, charts, model, Bento).

Run it:
    behaviorflow retrain                                    # bundled sample data, local defaults (CPU)
    behaviorflow retrain --events e.parquet --items i.csv   # your data
    behaviorflow retrain --movielens path/to/ml-1m          # a MovieLens-1M style folder
    behaviorflow retrain --events reviews.jsonl.gz --items meta.jsonl.gz --set data.event_type=rating \
        --set data.event_columns.item_id=parent_asin --set data.item_columns.item_id=parent_asin   # a dump as it comes
    behaviorflow retrain --set train.device=cuda            # GPU (also picked automatically when present)
    MLFLOW_TRACKING_URI=http://mlflow:5000 PREFECT_API_URL=http://prefect:4200/api behaviorflow retrain
    prefect --no-prompt deploy --prefect-file deploy/prefect.yaml --all   # scheduled runs on a work pool
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NONE

from components import reporting, settings
from components.config import DataConfig, RetrainConfig
from components.errors import GateFailed
from components.timing import Stages

log = logging.getLogger("behaviorflow")


# --- 1. validate: Great Expectations suites from expectations/; a failure stops before training ---
@task(name="load data", cache_policy=NONE)
def load_data(data: DataConfig):
    log.info("[1/9] load and validate data")
    from components.data.sample import load_configured

    return load_configured(data)


@task(name="validate", cache_policy=NONE)
def validate_data(dataset):
    from components.registry.tracking import log_json
    from components.validation import raise_for_failures, validate

    report = validate(dataset.events, dataset.items, events_source=dataset.events_source, items_source=dataset.items_source,
                      item_texts=dataset.item_texts)
    log_json("validation.json", report.to_dict())
    raise_for_failures(report)
    return report


# --- 2. prepare: dedup, chronological per-user sequences, leave-one-out or temporal split ---
@task(name="prepare", cache_policy=NONE)
def prepare_sequences(dataset, config: RetrainConfig):
    log.info("[2/9] prepare: sequences and %s split", config.prepare.split.replace("_", "-"))
    from components.preparation import prepare, repeat_target_note, tied_target_note
    from components.preparation.prepare import cleaning_note
    from components.registry.tracking import log_json

    prepared = prepare(dataset.events, dataset.items, config.prepare, texts=dataset.item_texts)  # cleaned once, for validation
    log_json("preparation.json", prepared.stats)
    if note := cleaning_note(prepared.stats, len(prepared.item_texts), "preparation.json"):
        log.info(note)
    for note in (repeat_target_note(prepared.stats, config.evaluate.exclude_seen), tied_target_note(prepared.stats)):
        if note:
            log.warning(note)
    return prepared


# --- 3. tokenize: item text through the pretrained LM (offline), cached by fingerprint ---
@task(name="tokenize", cache_policy=NONE)
def encode_item_text(texts: list[str], config: RetrainConfig) -> dict:
    """The items' LM embeddings and, for the model's token embeddings (model.token_embeddings), their token
    ids and the tokenizer's vocabulary size."""
    if not config.model.use_text:  # an id-only model reads no text: a large catalog's embedding would take minutes for nothing
        log.info("[3/9] model.use_text is false: the %d item texts are not embedded", len(texts))
        return {"embeddings": None, "tokens": None, "token_vocab": 0}
    log.info("[3/9] tokenize and embed %d item texts with the language model", len(texts))
    from components.tokenization import embed_items, item_tokens

    text = {"embeddings": embed_items(texts, config.text, settings.cache_dir()), "tokens": None, "token_vocab": 0}
    if config.model.token_embeddings:
        text["tokens"], text["token_vocab"] = item_tokens(texts, config.text, settings.cache_dir())
    return text


# --- 4. train: causal transformer over histories, full cross-entropy, early-stopped ---
@task(name="train", cache_policy=NONE)
def train(prepared, text: dict, config: RetrainConfig, run_dir: Path):
    log.info("[4/9] train")
    import mlflow

    from components.models.text_sasrec import resolve_max_len
    from components.registry.tracking import log_curve
    from components.training import new_model, train_model

    embeddings = text["embeddings"]
    text_dim = config.model.text_dim if embeddings is None else int(embeddings.shape[1])  # None: model.use_text is false
    model_cfg = replace(config.model, n_items=prepared.n_items, text_dim=text_dim, token_vocab=text["token_vocab"])
    model_cfg = resolve_max_len(model_cfg, map(len, prepared.train))
    if model_cfg.max_len != config.model.max_len:
        log.info("model.max_len auto: %d (the 90th percentile of training history lengths, within 50-200)", model_cfg.max_len)
        mlflow.log_param("model.max_len_resolved", model_cfg.max_len)
    if model_cfg.token_vocab:
        mlflow.log_param("model.token_vocab_resolved", model_cfg.token_vocab)  # the tokenizer's vocabulary (token_embeddings)
    model = new_model(model_cfg, embeddings, prepared.trained_items(model_cfg.max_len, config.train.all_steps), config.train.seed, text["tokens"])
    result = train_model(model, prepared.train, prepared.valid_split(), config.train, checkpoint_dir=run_dir / "checkpoints",
                         exclude_seen=config.evaluate.exclude_seen)  # validated as it is evaluated
    log_curve(result.curve)
    mlflow.log_metric("train_peak_rss_mb", result.peak_rss_mb)  # what a work pool's memory request must cover
    return result


def _baseline_skipped(config: RetrainConfig) -> str | None:
    """Why no id-only baseline is trained, or None when it is."""
    if not config.evaluate.id_only_baseline:
        return "evaluate.id_only_baseline is false"
    if not (config.model.use_text and config.model.use_id):
        return "the model is without text or without ids itself"
    return None


def _items_this_catalog_lacks(item_ids: list[str], champion, run_dir: Path) -> list[str]:
    """Warnings for items that the champion, or a challenger this version replaces, serves and this catalog lacks:
    e.g. items add-items gave them that the items file does not have yet (add-items makes a challenger, which a
    retrain replaces whether or not it was promoted)."""
    from components import registry

    catalog, notes = set(item_ids), []
    if champion:
        dropped = registry.items_lacking(champion.bundle_dir, catalog)
        if dropped:
            notes.append(f"champion v{champion.version} knows {len(dropped)} item(s) this catalog lacks (e.g. {dropped[:5]}); "
                         "promoted, this version would no longer recommend them: add them to the items file if they should stay")
    challenger = registry.version_by_alias(settings.CHALLENGER_ALIAS)
    if challenger is not None and (champion is None or str(challenger.version) != str(champion.version)):
        dropped = registry.items_lacking(registry.download_bundle(challenger, run_dir / "challenger"), catalog)
        if dropped:
            notes.append(f"challenger v{challenger.version} serves {len(dropped)} item(s) this catalog lacks (e.g. {dropped[:5]}); "
                         "registered, this version would replace it as challenger without them: add them to the items file if they should stay")
    return notes


# --- 4b. the id-only baseline: the same model without item text, for the report (the gate ignores it) ---
@task(name="train id-only baseline", cache_policy=NONE)
def train_baseline(prepared, model_cfg, config: RetrainConfig):
    log.info("[4b/9] train the id-only baseline: the same model without item text (evaluate.id_only_baseline)")
    from components.registry.tracking import log_curve
    from components.training import train_id_only_baseline

    result = train_id_only_baseline(model_cfg, prepared.train, prepared.valid_split(), prepared.trained_items(model_cfg.max_len, config.train.all_steps), config.train,
                                    config.evaluate.exclude_seen)
    log_curve(result.curve, prefix="id_only_")
    return result


# --- 5. evaluate: full ranking on the test targets (and per slice), next to popularity and the champion ---
@task(name="evaluate", cache_policy=NONE)
def evaluate(result, baseline, baseline_skipped: str | None, prepared, config: RetrainConfig, run_dir: Path):
    log.info("[5/9] evaluate: model, %spopularity and champion (if any) on the test cases", "id-only baseline, " if baseline is not None else "")
    from components.evaluation.evaluate import evaluate_rankers
    from components.evaluation.plots import learning_curve, metric_bars, slice_bars
    from components.registry import find_champion
    from components.registry.tracking import log_figure_files, log_json, log_metrics

    champion = find_champion(run_dir / "champion")
    report = evaluate_rankers(
        result.model,
        prepared,
        config.evaluate.list_len,
        config.evaluate.exclude_seen,
        champion.bundle_dir if champion else None,
        sampled=config.evaluate.sampled_negatives,
        seed=config.evaluate.sample_seed,
        baselines={"id_only": baseline.model} if baseline else None,
    )
    if baseline_skipped:
        report.notes.append(f"id-only baseline: not trained ({baseline_skipped})")
    for note in _items_this_catalog_lacks(prepared.item_ids, champion, run_dir):
        report.notes.append(note)
        log.warning(note)
    behind = report.text_behind_baseline()
    if behind:
        report.notes.append(behind)
        log.warning(behind)
    log_metrics("", report.flat_metrics())  # NDCG_at_10, popularity_NDCG_at_10, cold_start_HR_at_10, ...
    log_json("evaluation.json", report.to_dict() | {"champion_version": champion.version if champion else None})
    charts = [
        learning_curve(result.curve, run_dir / "learning_curve.png", report.results["popularity"]["NDCG@10"], {"id-only baseline": baseline.curve} if baseline else None),
        metric_bars(report.results, run_dir / "test_metrics.png", split=report.split),
        slice_bars(report.slices, run_dir / "test_slices.png"),
    ]
    log_figure_files(charts)
    return report, champion


# --- 6. gate: promote only a model that beats popularity and does not regress vs the champion
#        (and, with gate.beat_id_only, scores at least the id-only baseline).
#        First run: no champion, the popularity rule alone decides. A failed gate stops here. ---
@task(name="gate", cache_policy=NONE)
def gate(report, champion, config: RetrainConfig):
    log.info("[6/9] gate")
    import mlflow

    from components.gate import decide
    from components.registry.tracking import log_json

    decision = decide(
        report.results["model"], report.results["popularity"], report.results.get("champion"), champion.version if champion else None, config.gate,
        id_only=report.results.get("id_only"),
    )
    log_json("gate.json", decision.to_dict())
    mlflow.set_tag("gate", "passed" if decision.passed else "failed")
    return decision


# --- 7. export: ONNX inference graph; ONNX Runtime must match torch (a failure blocks promotion) ---
@task(name="export", cache_policy=NONE)
def export(result, prepared, dataset_fingerprint: str, decision, report, config: RetrainConfig, run_dir: Path):
    log.info("[7/9] export to ONNX and check parity with ONNX Runtime")
    import torch

    from components.evaluation.rankers import popularity_record
    from components.export import check_parity, export_onnx, known_user_histories, quantize_int8, write_bundle
    from components.registry import BUNDLE_ARTIFACT
    from components.registry.tracking import log_folder, log_json
    from serving.contract import POPULARITY_FIELD

    onnx_path = export_onnx(result.model, run_dir / "model.onnx", config.export)
    test_inputs, test_targets = prepared.test_split()
    parity = check_parity(result.model, onnx_path, test_inputs, config.export)
    log_json("parity.json", parity.to_dict())
    max_len = result.model.cfg.max_len
    quantization = None
    if config.export.try_int8:
        ex = config.export
        quantization = quantize_int8(onnx_path, run_dir / "model.int8.onnx", test_inputs, test_targets, max_len, ex.int8_max_ndcg_drop, ex.int8_min_top10_overlap, ex.int8_min_speedup)
        log_json("quantization.json", quantization.to_dict())
    served = run_dir / "model.int8.onnx" if quantization and quantization.accepted else onnx_path
    users = known_user_histories(prepared.user_ids, prepared.sequences, prepared.item_ids)  # whole: the service excludes all of it
    manifest = {
        "model_name": settings.REGISTERED_MODEL_NAME,
        "max_len": max_len,
        "n_items": prepared.n_items,
        "data_fingerprint": dataset_fingerprint,
        "metrics": report.results["model"],
        "gate": decision.summary(),
        "precision": "int8" if served != onnx_path else "fp32",
        "quantization": quantization.reason if quantization else "not tried",
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        POPULARITY_FIELD: popularity_record(prepared.train, prepared.item_ids),  # the answer for a history with no known item
        "item_text_fields": prepared.stats.get("item_text_fields", {}),  # share of items with each text field: add-items compares
    }
    with torch.no_grad():
        item_vectors = result.model.item_table().numpy()
    from components.catalog import log_checkpoint

    log_checkpoint(result.model, config.text, run_dir)  # the trained weights, for `behaviorflow add-items`
    new_items = (~result.model.has_id[1:].cpu()).tolist()  # catalog items without training interactions
    unscorable = result.model.unscorable[1:].cpu().tolist()  # items the graph masks (an id-only model's untrained ones)
    bundle = write_bundle(run_dir / "bundle", served, prepared.item_ids, prepared.titles, users, manifest, item_vectors, new_items, unscorable)
    log_folder(bundle, BUNDLE_ARTIFACT)
    return bundle, parity, quantization


# --- 8 + 9. package as a Bento and register: one all-or-nothing step (a failure leaves no version) ---
@task(name="package and register", cache_policy=NONE)
def package_and_register(bundle: Path, dataset_fingerprint: str, decision, config: RetrainConfig, run_dir: Path):
    log.info("[8/9] package the Bento and [9/9] register in MLflow")
    from components.packaging.publish import package_and_register as publish

    return publish(bundle, run_dir, dataset_fingerprint, {"gate": decision.summary()}, promote=decision.passed and config.promote,
                   gated_against=decision.champion_version)


@flow(name="behaviorflow-retrain", log_prints=True)
def retrain(config: dict | None = None) -> dict:
    """Run the whole lifecycle. `config` is the nested mapping of RetrainConfig (as in a YAML file)."""
    settings.apply_environment()
    reporting.send_logs_to_prefect()  # a deployed run starts in a Prefect worker, not through the CLI
    import mlflow

    from components import registry
    from components.registry.repair import prune_run_folders, repair_interrupted

    cfg = RetrainConfig.from_dict(config)
    experiment_id = registry.configure()
    repair_interrupted(experiment_id)  # what a killed retrain or add-items left (this host, or a host gone silent): a WARNING line each
    prune_run_folders()  # local run folders beyond the newest BEHAVIORFLOW_KEEP_RUN_FOLDERS (their MLflow runs keep the artifacts)
    started = time.perf_counter()
    # If this process is killed, the next start finds the run RUNNING with a dead PID (this host) or no heartbeat for
    # 15 minutes (another host: a new pod) and repairs what it left (components/registry/repair.py).
    with registry.tracked_run(datetime.now().strftime("retrain-%Y%m%d-%H%M%S")) as run:
        run_dir = settings.runs_dir() / run.info.run_id
        run_dir.mkdir(parents=True, exist_ok=True)
        mlflow.log_params(cfg.flat())
        log.info("MLflow run %s (experiment %s) in %s", run.info.run_id, experiment_id, settings.tracking_uri())
        stages = Stages()
        with stages("data"):
            dataset = load_data(cfg.data)
            fingerprint = dataset.fingerprint()
            mlflow.set_tags({"data_fingerprint": fingerprint, "events_source": dataset.events_source, "items_source": dataset.items_source})
            validation = validate_data(dataset)
            prepared = prepare_sequences(dataset, cfg)
        with stages("text"):
            text = encode_item_text(prepared.item_texts, cfg)
        with stages("train"):
            result = train(prepared, text, cfg, run_dir)
        skipped = _baseline_skipped(cfg)
        baseline = None
        if skipped is None:
            with stages("id-only baseline"):
                baseline = train_baseline(prepared, result.model.cfg, cfg)
        with stages("evaluate"):
            report, champion = evaluate(result, baseline, skipped, prepared, cfg, run_dir)
            decision = gate(report, champion, cfg)
        summary = {
            "run_id": run.info.run_id,
            "experiment_id": experiment_id,
            "tracking_uri": settings.tracking_uri(),
            "data_fingerprint": fingerprint,
            "data_docs": str(validation.data_docs),
            "validation": "passed",
            # how the reader took numeric timestamps, when not as epoch seconds (the summary's validation line says it)
            "timestamp_unit": validation.statistics.get("events", {}).get("timestamp_unit"),
            "preparation": prepared.stats,
            "training": {"epochs": len(result.curve), "best_epoch": result.best_epoch, "stopped": result.stopped_because, "cut_short": result.cut_short, "device": result.device, "wall_s": round(result.wall_s, 1), "peak_rss_mb": result.peak_rss_mb},
            "baseline_training": {"epochs": len(baseline.curve), "best_epoch": baseline.best_epoch, "stopped": baseline.stopped_because, "wall_s": round(baseline.wall_s, 1)} if baseline else None,
            "metrics": report.results,
            "slices": report.slices,
            "cases": report.cases,
            "exclude_seen": cfg.evaluate.exclude_seen,
            "text_behind_baseline": report.text_behind_baseline(),  # the warning the evaluate stage logged, or None
            "gate": decision.to_dict(),
            "run_dir": str(run_dir),
            "stage_s": stages.seconds,
        }
        if decision.passed:
            with stages("export"):
                bundle, parity, quantization = export(result, prepared, fingerprint, decision, report, cfg, run_dir)
            summary["parity"] = parity.to_dict()
            summary["quantization"] = quantization.to_dict() if quantization else None
            with stages("package and register"):
                summary["registry"] = package_and_register(bundle, fingerprint, decision, cfg, run_dir)
        # A failed gate is a normal outcome, not a crash: the run ends FINISHED, tagged gate_failed.
        mlflow.set_tag("outcome", "registered" if decision.passed else "gate_failed")
        summary["wall_s"] = round(time.perf_counter() - started, 1)
        mlflow.log_metrics({f"stage_s.{name.replace(' ', '_')}": seconds for name, seconds in stages.seconds.items()})
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    markdown = reporting.retrain_markdown(summary)
    reporting.publish(reporting.RETRAIN_ARTIFACT_KEY, markdown, "what this retrain decided: metrics, gate, registered version")
    if "registry" in summary:  # the same summary on the version's page in the MLflow UI
        registry.describe_version(summary["registry"]["version"], markdown)
    if not decision.passed:
        raise GateFailed(f"gate {decision.summary()} — nothing was exported or registered (MLflow run {run.info.run_id})", summary)
    return summary

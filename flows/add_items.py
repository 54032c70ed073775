"""The add-items flow: brand-new catalog items become recommendable by a registered model, without retraining.

    resolve the version → validate the new items (GE items suite; ids not in its catalog) → embed their text
    → extend the model's item table → check the old items' scores did not move → export + parity
    → the source's precision (int8 only where its answers stay the source's) → package → register a new version (alias challenger; champion with promote)

A new item is scored from its text (projected LM embedding + imputed id), the way the model already
scores catalog items that had no training interactions; every existing item keeps its scores, so the
only change for users is that new items can now compete for their top K. The stages live in
`components/` (catalog, validation, tokenization, export, packaging, registry); this file wires them.

    behaviorflow add-items --items new_items.csv                       # onto the champion, as challenger
    behaviorflow add-items --model behaviorflow-recommender/3 --items new.parquet --promote
    behaviorflow add-items --items new_meta.jsonl --set data.item_columns='{item_id: parent_asin, brand: store}'
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NONE

from components import reporting, settings
from components.errors import BehaviorflowError

log = logging.getLogger("behaviorflow")
_EXAMPLES = 5  # clashing item ids quoted in an error


@task(name="resolve version", cache_policy=NONE)
def resolve(model: str, scratch: Path):
    log.info("[1/6] resolve %s and download its bundle and torch checkpoint", model)
    from components import registry

    version = registry.resolve_version(registry.ModelRef.parse(model))
    registry.check_usable(version, "add-items")
    return version, registry.download_bundle(version, scratch / "source"), registry.download_checkpoint(version, scratch / "checkpoint")


@task(name="validate new items", cache_policy=NONE)
def validate_new_items(items_path: str, bundle, version: str, item_columns: dict[str, str]):
    log.info("[2/6] validate the new items (Great Expectations items suite)")
    from components import contract as c
    from components.data import DataConfig, load_items
    from components.registry.tracking import log_json
    from components.validation import raise_for_failures, validate

    items = load_items(items_path, DataConfig(item_columns=item_columns))
    report = validate(None, items, events_source="", items_source=str(items_path))
    log_json("validation.json", report.to_dict())
    raise_for_failures(report)
    clash = items[items[c.ITEM_ID].isin(bundle.index_of)]
    if len(clash):
        listed = ", ".join(f"{i!r} (row {r})" for i, r in zip(clash[c.ITEM_ID][:_EXAMPLES], clash[c.ROW][:_EXAMPLES]))
        raise BehaviorflowError(
            f"{items_path}: {len(clash)} of {len(items)} item id(s) are already in version {version}'s catalog, e.g. {listed}. "
            "add-items adds new items only: leave those rows out (to change an existing item's text, retrain)."
        )
    return items


@task(name="embed new items", cache_policy=NONE)
def embed(texts: list[str], text_config, with_tokens: bool):
    """The new items' LM embeddings, and their token ids when the model has token embeddings (else None)."""
    log.info("[3/6] embed %d new item texts with the model's language model", len(texts))
    from components.tokenization import embed_items, item_tokens

    return embed_items(texts, text_config, settings.cache_dir()), item_tokens(texts, text_config, settings.cache_dir())[0] if with_tokens else None


def record_cleaning(items, texts: list[str]) -> dict:
    """What the item text cleaning changed in the new items (`texts`: their item_texts), in the run's
    item_text_cleaning.json and one INFO line, as a retrain records it for its catalog (preparation.json)."""
    from components.preparation.prepare import cleaning_note, cleaning_stats
    from components.registry.tracking import log_json

    cleaning = cleaning_stats(items, texts)
    log_json("item_text_cleaning.json", cleaning)
    if note := cleaning_note(cleaning, len(items), "item_text_cleaning.json"):
        log.info(note)
    return cleaning


@task(name="extend and check", cache_policy=NONE)
def extend(model, embeddings, tokens, probes, source: str):
    log.info("[4/6] extend the item table and check that the old items' scores did not move")
    import mlflow

    from components.catalog import extend_catalog, unchanged_scores

    extended = extend_catalog(model, embeddings, tokens)
    moved = unchanged_scores(model, extended, probes)
    # Logged before the check, so that a failure has it too.
    mlflow.log_dict({"source_version": source, "added": len(embeddings), "max_abs_score_change_old_items": moved, "probe_histories": len(probes)}, "add_items.json")
    if moved > 1e-4:
        raise BehaviorflowError(f"adding items moved the scores of existing items by up to {moved:.2e} (tolerance 1e-4); nothing was registered. Report it with this run's add_items.json.")
    return extended, moved


@task(name="export", cache_policy=NONE)
def export(extended, bundle, items, probes, manifest_extra: dict, text_config, run_dir: Path, source: str):
    log.info("[5/6] export to ONNX, check parity with ONNX Runtime, and serve it in the source's precision")
    import torch

    from components import contract as c
    from components.catalog import log_checkpoint
    from components.export import ExportConfig, check_parity, export_onnx, keep_source_precision, write_bundle
    from components.preparation.prepare import display_titles
    from components.preparation.text_cleaning import clean_text  # the source's titles too (built before titles were cleaned)
    from components.registry import BUNDLE_ARTIFACT
    from components.registry.tracking import log_folder, log_json

    config = ExportConfig()
    onnx_path = export_onnx(extended, run_dir / "model.onnx", config)
    parity = check_parity(extended, onnx_path, probes, config)
    log_json("parity.json", parity.to_dict())
    # Its users' answers among the old items stay the source's only in the precision the source served.
    precision = keep_source_precision(bundle.model_path, str(bundle.manifest.get("precision", "fp32")), onnx_path, run_dir / "model.int8.onnx",
                                      probes, extended.cfg.max_len, len(bundle.item_ids), source, config.score_atol)
    log_json("precision.json", precision.to_dict())
    log.info("precision: %s", precision.reason)
    served = run_dir / "model.int8.onnx" if precision.precision == "int8" else onnx_path
    with torch.no_grad():
        item_vectors = extended.item_table().numpy()
    added = len(items)
    new_flags = [i + 1 in bundle.new_item_set for i in range(len(bundle.item_ids))] + [True] * added
    # Kept as the source's: among them its popularity list (serving.contract.POPULARITY_FIELD), which the added
    # items, without interactions, leave as it was.
    kept = {k: v for k, v in bundle.manifest.items() if k not in ("registry_version", "run_id", "metrics", "gate")}
    manifest = kept | {
        # Not evaluated (no new interactions): /metadata must not show the source's test metrics as this version's.
        # (empty, not null: BentoML keeps the manifest as model metadata, which takes no None)
        "metrics": {},
        "source_metrics": bundle.manifest.get("metrics") or bundle.manifest.get("source_metrics") or {},  # the last evaluated ancestor's
        "gate": f"not re-evaluated: {added} item{'s' if added != 1 else ''} added to version {source} (source_metrics are its test metrics)",
        "n_items": len(bundle.item_ids) + added,
        "precision": precision.precision,
        "quantization": f"{precision.reason} (no new interactions to evaluate int8 on)",
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    } | manifest_extra
    out = write_bundle(
        run_dir / "bundle", served, bundle.item_ids + items[c.ITEM_ID].tolist(), [clean_text(t) for t in bundle.titles] + display_titles(items),
        bundle.users, manifest, item_vectors, new_flags, extended.unscorable[1:].cpu().tolist(),
    )
    log_folder(out, BUNDLE_ARTIFACT)
    log_checkpoint(extended, text_config, run_dir)  # so items can be added to this version too
    return out, parity, precision


@task(name="package and register", cache_policy=NONE)
def publish(bundle_dir: Path, run_dir: Path, fingerprint: str, tags: dict, promote: bool, name: str):
    log.info("[6/6] package the Bento and register it")
    from components.packaging.publish import package_and_register

    return package_and_register(bundle_dir, run_dir, fingerprint, tags, promote, name=name)


@flow(name="behaviorflow-add-items", log_prints=True)
def add_items(items: str, model: str = f"{settings.REGISTERED_MODEL_NAME}@{settings.CHAMPION_ALIAS}", promote: bool = False,
              item_columns: dict[str, str] | None = None) -> dict:
    """Register a new version of `model` (NAME@ALIAS or NAME/VERSION) whose catalog also holds the items of
    the file `items` (the items contract: item_id, title[, category, brand, description]; `item_columns`: the
    file's names for them, as data.item_columns says)."""
    settings.apply_environment()
    reporting.send_logs_to_prefect()
    from components import registry

    started = time.perf_counter()
    if not Path(items).is_file():
        raise BehaviorflowError(f"items file {items}: no such file")
    from components.registry.repair import prune_run_folders, repair_interrupted

    repair_interrupted(registry.configure())  # what a killed retrain or add-items left (this host, or a host gone silent): a WARNING line each
    prune_run_folders()  # local run folders beyond the newest BEHAVIORFLOW_KEEP_RUN_FOLDERS (their MLflow runs keep the artifacts)
    with tempfile.TemporaryDirectory(prefix="behaviorflow-add-items-") as scratch:
        # A version that does not exist, or has no checkpoint, fails here: before any MLflow run is opened.
        version, bundle_dir, checkpoint = resolve(model, Path(scratch))
        summary = _add(items, version, bundle_dir, checkpoint, promote, dict(item_columns or {}))
    summary["wall_s"] = round(time.perf_counter() - started, 1)
    markdown = reporting.add_items_markdown(summary)
    reporting.publish(reporting.ADD_ITEMS_ARTIFACT_KEY, markdown, "what this add-items run registered")
    registry.describe_version(summary["registry"]["version"], markdown, summary["model_name"])  # the same on the version's page in the MLflow UI
    return summary


def _items_it_would_drop(catalog: set[str], source: str, promote: bool, name: str, scratch: Path) -> list[str]:
    """Warnings for items that the versions this one replaces as challenger (and champion, with `promote`)
    serve and this one lacks: a branch from an older version does not have what was added since."""
    from components import registry

    notes = []
    for alias in [settings.CHALLENGER_ALIAS] + [settings.CHAMPION_ALIAS] * promote:
        current = registry.version_by_alias(alias, name)
        if current is None or str(current.version) == source:
            continue
        lost = registry.items_lacking(registry.download_bundle(current, scratch / alias), catalog)
        if lost:
            note = (f"@{alias} was version {current.version}, which serves {len(lost)} item(s) this version lacks (e.g. {lost[:5]}): "
                    f"as @{alias} they are no longer recommended; to keep them, add items onto version {current.version} (--model {name}/{current.version})")
            log.warning(note)
            notes.append(note)
    return notes


def _add(items: str, version, bundle_dir: Path, checkpoint: Path, promote: bool, item_columns: dict[str, str]) -> dict:
    import mlflow
    import numpy as np

    from components import contract as c
    from components import registry
    from components.catalog import load_checkpoint
    from components.data.config import differs_from_recorded
    from components.export.onnx_export import probe_histories
    from components.preparation.prepare import item_texts, missing_text_fields
    from serving.contract import Bundle

    # If this process is killed, the next start finds the run RUNNING with a dead PID (this host) or no heartbeat for
    # 15 minutes (another host: a new pod) and repairs what it left (components/registry/repair.py).
    with registry.tracked_run(datetime.now().strftime("add-items-%Y%m%d-%H%M%S")) as run:
        run_dir = settings.runs_dir() / run.info.run_id
        run_dir.mkdir(parents=True, exist_ok=True)
        source = f"{version.name}/{version.version}"
        mlflow.set_tags({"flow": "add-items", "source_version": source, "items_source": str(items)})
        bundle = Bundle(bundle_dir)
        new = validate_new_items(items, bundle, str(version.version), item_columns)
        old_model, text_config = load_checkpoint(checkpoint)
        texts = item_texts(new)  # cleaned once, for the record and the language model
        cleaning = record_cleaning(new, texts)
        embeddings, tokens = embed(texts, text_config, old_model.token_emb is not None)
        # Probe histories: the known users' (as the service reads them), else each item alone.
        probes = [np.array([bundle.index_of[i] for i in h if i in bundle.index_of], dtype=np.int64) for h in bundle.users.values()]
        probes = [p for p in probes if len(p)] or [np.array([i], dtype=np.int64) for i in range(1, len(bundle.item_ids) + 1)]
        probes = probe_histories(probes, 1024)  # a fixed random subset, plus the shortest and longest
        extended, moved = extend(old_model, embeddings, tokens, probes, source)
        fingerprint = str(bundle.manifest.get("data_fingerprint", ""))
        extra = {"added_items": {"from_version": source, "count": len(new), "items_source": str(items)}}
        mlflow.log_params({"source_version": source, "added_items": len(new), "catalog_items": len(bundle.item_ids) + len(new),
                           "data.item_columns": item_columns})  # as retrain records it (its config's flat params)
        out, parity, precision = export(extended, bundle, new, probes, extra, text_config, run_dir, source)
        notes = _items_it_would_drop(set(bundle.item_ids) | set(new[c.ITEM_ID]), str(version.version), promote, version.name, run_dir / "replaced")
        if bundle.manifest.get("item_text_fields"):  # the text fields the model's catalog filled: compare what the new items fill
            note = missing_text_fields(bundle.manifest["item_text_fields"], new)
        else:  # a version from before that record: compare how the two files were read
            recorded = mlflow.get_run(version.run_id).data.params.get("data.item_columns") if version.run_id else None
            note = differs_from_recorded("item_columns", recorded, item_columns)
        if note is not None:
            log.warning(note)
            notes.insert(0, note)
        check = f"{len(new)} item{'s' if len(new) != 1 else ''} added to version {source}; the scores of its {len(bundle.item_ids)} items did not move (max |Δ| {moved:.1e} on {len(probes)} histories); not re-evaluated: no new interactions"
        record = f"{check}; served in {precision.reason}"
        registered = publish(out, run_dir, fingerprint, {"gate": record, "added_items_to": source}, promote, version.name)
        mlflow.set_tag("outcome", "registered")
        summary = {
            "run_id": run.info.run_id,
            "experiment_id": run.info.experiment_id,
            "tracking_uri": settings.tracking_uri(),
            "source_version": source,
            "model_name": version.name,  # the source's registered model, which the new version joins
            "added_items": len(new),
            "item_texts_cleaned": cleaning["item_texts_cleaned"],
            "catalog_items": len(bundle.item_ids) + len(new),
            "check": check,
            "parity": parity.to_dict(),
            "precision": precision.to_dict(),
            "registry": registered,
            "notes": notes,
        }
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary

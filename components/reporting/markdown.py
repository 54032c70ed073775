"""A flow's summary as Markdown: the flow run's artifact in the Prefect UI (keys `retrain-summary` and
`add-items-summary`), so an engineer who scheduled the nightly retrain sees what it decided without opening a
log or MLflow."""

from __future__ import annotations

import logging

from components import settings

log = logging.getLogger(__name__)

RETRAIN_ARTIFACT_KEY = "retrain-summary"  # Prefect artifact keys: lowercase letters, digits and dashes
ADD_ITEMS_ARTIFACT_KEY = "add-items-summary"


OUR_LOGGERS = ("behaviorflow", "components", "flows", "serving")


def send_logs_to_prefect() -> None:
    """Make the flow's own log lines (stages, epochs, the gate, the registered version, warnings) reach the flow
    run's logs in the Prefect UI. Prefect only sends its own loggers to its API, and a worker's flow run leaves
    ours at the root's WARNING: a deployed run's log held nothing but Prefect's lines. Idempotent; a level set
    before (the CLI's --debug) is kept. Lines outside a flow or task run are left to the other handlers."""
    from prefect.context import FlowRunContext, TaskRunContext
    from prefect.logging.handlers import APILogHandler

    class RunLogHandler(APILogHandler):
        def emit(self, record: logging.LogRecord) -> None:
            if FlowRunContext.get() or TaskRunContext.get():
                super().emit(record)

    for name in OUR_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)
        if not any(type(h).__name__ == "RunLogHandler" for h in logger.handlers):
            logger.addHandler(RunLogHandler())


def publish(key: str, markdown: str, description: str) -> None:
    """`markdown` as the current flow run's artifact `key`; a failure to write it is logged, never fatal (the
    version is registered, or the gate failed, either way)."""
    from prefect.artifacts import create_markdown_artifact

    try:
        create_markdown_artifact(markdown, key=key, description=description)
    except Exception as exc:
        log.warning("could not write the Prefect artifact %s: %s", key, exc)


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def run_link(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """The run as a link where the tracking URI is an MLflow server, else its id and store."""
    if tracking_uri.startswith(("http://", "https://")):
        return f"[{run_id}]({tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id})"
    return f"`{run_id}` in `{tracking_uri}`"


def retrain_markdown(s: dict) -> str:
    """`s` is the retrain flow's summary (flows/retrain.py)."""
    gate, metrics = s["gate"], s["metrics"]
    if "registry" in s:
        r = s["registry"]
        headline = f"registered **{settings.REGISTERED_MODEL_NAME} version {r['version']}** — aliases: {', '.join(r['aliases'])}"
        if r.get("not_promoted"):
            headline += f"  \n{r['not_promoted']}"
    else:
        headline = "**gate failed**: nothing was exported or registered"
    rows = [("model", metrics["model"])]
    if "id_only" in metrics:
        rows.append(("id-only baseline (text off)", metrics["id_only"]))
    rows.append(("popularity", metrics["popularity"]))
    if "champion" in metrics:
        rows.append((f"champion v{gate['champion_version']}", metrics["champion"]))
    lines = [
        "# behaviorflow retrain",
        "",
        headline,
        "",
        f"Test cases: {s['cases']} ({s['preparation']['users']} users), data fingerprint `{s['data_fingerprint']}`.",
        "",
        "| ranker | NDCG@10 | HR@10 |",
        "|---|---:|---:|",
        *(f"| {name} | {_fmt(m.get('NDCG@10'))} | {_fmt(m.get('HR@10'))} |" for name, m in rows),
        "",
        f"**Gate {'passed' if gate['passed'] else 'failed'}:** " + "; ".join(gate["reasons"]),
    ]
    slices = s.get("slices", {}).get("model", {})
    if slices:
        cut = next(key for key in next(iter(slices.values())) if key.startswith("HR@"))
        lines += ["", f"**Model {cut} by target:** " + " · ".join(f"{name.replace('_', ' ')} {_fmt(v[cut])} ({v['cases']} cases)" for name, v in slices.items())]
    t = s["training"]
    lines += ["", f"**Training:** {t['epochs']} epochs on {t['device']} in {t['wall_s']} s (best epoch {t['best_epoch']}; {t['stopped']}), "
                  f"peak memory {t.get('peak_rss_mb')} MB" + (" — still improving when the time budget ended it" if t.get("cut_short") else "")]
    if s.get("stage_s"):
        lines += ["", "| stage | seconds |", "|---|---:|", *(f"| {name} | {seconds} |" for name, seconds in s["stage_s"].items())]
        if "wall_s" in s:
            lines.append(f"| **the flow** | **{s['wall_s']}** |")
    lines += ["", f"**MLflow run:** {run_link(s['tracking_uri'], s['experiment_id'], s['run_id'])}"]
    if "registry" in s:
        lines.append(f"**Bento:** `{s['registry']['bento_tag']}` — serve it with `behaviorflow serve --alias {s['registry']['aliases'][-1]}`")
    return "\n".join(lines) + "\n"


def add_items_markdown(s: dict) -> str:
    """`s` is the add-items flow's summary (flows/add_items.py)."""
    r = s["registry"]
    return "\n".join([
        "# behaviorflow add-items",
        "",
        f"registered **{s.get('model_name', settings.REGISTERED_MODEL_NAME)} version {r['version']}** — aliases: {', '.join(r['aliases'])}",
        "",
        f"{s['added_items']} new item{'s' if s['added_items'] != 1 else ''} added to version {s['source_version']} ({s['catalog_items']} in the catalog now).",
        "",
        f"**Check:** {s['check']}",
        f"**Precision:** {s['precision']['reason']}",
        f"**MLflow run:** {run_link(s['tracking_uri'], s['experiment_id'], s['run_id'])}",
        f"**Bento:** `{r['bento_tag']}` — serve it with `behaviorflow serve --alias {r['aliases'][-1]}`",
        *(f"\n**Note:** {note}" for note in s.get("notes", [])),
    ]) + "\n"

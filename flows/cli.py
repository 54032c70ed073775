"""`behaviorflow`: the command line for MLOps engineers (retrain, validate) and serving teams (serve, predict).

Heavy libraries are imported only inside commands, so `behaviorflow --help` answers at once.
User mistakes print one line (`error: …`) and exit 2, a full disk one line and exit 4; `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import json
import logging
import os
import signal
import sys
import tempfile
import textwrap
from pathlib import Path

from components import settings
from components.errors import BehaviorflowError, ConfigFieldError, GateFailed, ValidationFailed, out_of_space

log = logging.getLogger("behaviorflow")

EXIT_USER_ERROR = 2
EXIT_GATE_FAILED = 3
EXIT_OUT_OF_SPACE = 4
EXIT_INTERRUPTED = 130  # Ctrl-C / SIGINT, as shells report it (128 + the signal: 143 for SIGTERM, 129 for SIGHUP)
STOPPED_LIKE_CTRL_C = ("retrain", "add-items")  # commands that SIGTERM and SIGHUP stop as Ctrl-C does, rollbacks included

EPILOG = """examples:
  behaviorflow retrain                                   # bundled sample data, embedded defaults
  behaviorflow retrain --events events.parquet --items items.csv --set train.max_minutes=30
  behaviorflow retrain --movielens ~/data/ml-1m --config my.yaml
  behaviorflow validate --events events.csv --items items.csv
  behaviorflow validate --events reviews.jsonl --items meta.jsonl --set data.event_type=rating \\
      --set data.event_columns.item_id=parent_asin --set data.item_columns.item_id=parent_asin   # a dump as it comes
  behaviorflow serve --alias champion --port 3000        # pulls the Bento from MLflow if it is not local
  behaviorflow bento pull --alias champion
  behaviorflow bento containerize --alias champion --context-only build/ctx
  behaviorflow predict --model behaviorflow-recommender@champion --histories h.tsv --k 10 --out top10.tsv
  behaviorflow add-items --items new_items.csv           # new catalog items, scored from their text; no retraining
  behaviorflow versions                                  # registered versions: aliases, test metrics, gate
  behaviorflow promote --model behaviorflow-recommender/2 --reason "v3 regressed"   # roll the champion back

state (MLflow SQLite store, Bento store, Prefect home, Data Docs) lives in $BEHAVIORFLOW_HOME
(default ./.behaviorflow). Use real servers with MLFLOW_TRACKING_URI and PREFECT_API_URL."""


# What `behaviorflow serve` answers (serving/service.py; BentoML adds the probes, /metrics and the API docs).
SERVE_ENDPOINTS = ("POST /recommend, POST /score; GET /metadata, /healthz and /livez (alive), /readyz (ready: model loaded, "
                   "checked and warmed up), /metrics (Prometheus), / (API docs; the OpenAPI spec at /docs.json)")
# The settings `behaviorflow serve --help` lists (serving/layout.py, serving/ranking.py; the README has their table).
SERVE_TUNING = """tuning, through the environment (README, "For serving teams", has the measurements):
  BEHAVIORFLOW_WORKERS=auto|N     processes answering requests; auto: one per usable CPU (a container's CPU
                                  quota where lower), one with --shadow; each holds its own copy of the model
  BEHAVIORFLOW_BATCHING=auto|1|0  1: a Ranker service batches requests; auto = 0: each request ranked alone
  BEHAVIORFLOW_ACCESS_LOG=1|0     a log line per request (default 1)
  BEHAVIORFLOW_TRACING=0|1        OpenTelemetry spans for /recommend and /score (default 0)
  BEHAVIORFLOW_ORT_THREADS=N      ONNX Runtime threads per session (default: 1 unbatched, every core batched)
  BEHAVIORFLOW_ORT_SPIN=1|0       idle ONNX Runtime threads spin (default 1; 0 in the batched Ranker)
  BEHAVIORFLOW_EVENT_LOOP=asyncio|uvloop
                                  the HTTP processes' event loop (default asyncio: under load, uvloop leaves
                                  new connections, health probes among them, unaccepted for seconds)
`serve` prints the layout the first two give (and uvloop if chosen) before it starts, and refuses a bad value of
those three in one line."""


def _data_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data (default: the bundled synthetic sample)")
    group.add_argument("--events", help="events file (.csv, .jsonl or .parquet; .csv.gz, .jsonl.gz …): user_id, item_id, event_type, timestamp[, value]; "
                       "other names: --set data.event_columns, data.event_type, data.timestamp_unit")
    group.add_argument("--items", help="item catalog (.csv, .jsonl or .parquet; .csv.gz, .jsonl.gz …): item_id, title[, category, brand, description]; "
                       "other names: --set data.item_columns")
    group.add_argument("--movielens", metavar="DIR", help="a MovieLens-1M style folder (ratings.dat, movies.dat)")


def _config_args(parser: argparse.ArgumentParser, set_help: str, uses: str = "") -> None:
    parser.add_argument("--config", metavar="YAML", help=f"a RetrainConfig file (sections: data, prepare, text, model, train, evaluate, gate, export; and promote){uses}")
    parser.add_argument("--set", metavar="SECTION.FIELD=VALUE", action="append", default=[], help=set_help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="behaviorflow",
        description="Train, gate, package and serve a language-model-aware next-item recommender.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and library logs")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    retrain = sub.add_parser("retrain", help="run the full retraining flow (validate … register)", description=(
        "Validate → prepare → tokenize → train → evaluate → gate → export (ONNX, parity-checked) → "
        "package (Bento) → register in MLflow (alias challenger; champion when the gate passes). "
        f"Exit codes: 0 registered, {EXIT_USER_ERROR} bad input or config, {EXIT_GATE_FAILED} gate failed (nothing registered), "
        f"{EXIT_OUT_OF_SPACE} out of disk space, {EXIT_INTERRUPTED} interrupted by Ctrl-C, 143 by SIGTERM, 129 by SIGHUP (a registration in progress is rolled back)."))
    _data_args(retrain)
    _config_args(retrain, "override one config field, e.g. train.max_epochs=5 (repeatable)")
    retrain.add_argument("--json", action="store_true", help="print the run summary as JSON instead of text")
    retrain.add_argument("--print-config", action="store_true", help="print the configuration this command would run with (defaults, --config and --set applied) as commented YAML, and exit; a starting point for --config")

    validate = sub.add_parser("validate", help="run the Great Expectations suites on a dataset (no training)", description=(
        "Run the events and items Great Expectations suites (expectations/) on a dataset, as retrain does "
        "before anything else, and write the Data Docs. Each failed expectation is named with its file, column "
        f"and example rows. Exit codes: 0 passed, {EXIT_USER_ERROR} a check failed or the input cannot be read."))
    _data_args(validate)
    _config_args(validate, "override one config field; the data section says how the files are read, e.g. "
                 "data.event_columns.item_id=parent_asin, data.event_type=rating, data.timestamp_unit=ms (repeatable)",
                 "; validate reads its data section")

    serve = sub.add_parser("serve", help="serve a registered model's Bento over HTTP (pulls it first if needed)", description=textwrap.fill(
        "Resolve a registry alias to its version, import that version's Bento from MLflow into the local "
        "Bento store if it is not there yet, and run `bentoml serve` on it (in the foreground; Ctrl-C stops it). "
        f"Endpoints: {SERVE_ENDPOINTS}.", 100), epilog=SERVE_TUNING, formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.add_argument("--model", default=settings.REGISTERED_MODEL_NAME, help=f"registered model name (default: {settings.REGISTERED_MODEL_NAME})")
    serve.add_argument("--alias", default=settings.CHAMPION_ALIAS, help="registry alias to serve (default: champion)")
    serve.add_argument("--shadow", metavar="ALIAS", help="also rank every request with this alias's model (e.g. challenger), off the response path, into a JSONL log")
    serve.add_argument("--shadow-log", metavar="FILE", help="where the shadow log goes (default: $BEHAVIORFLOW_HOME/shadow/…jsonl)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1; 0.0.0.0 for every interface)")
    serve.add_argument("--port", type=int, default=3000, help="port to listen on (default: 3000)")

    predict = sub.add_parser("predict", help="batch top-K for a file of user histories, with a registered model (ONNX Runtime)", description=(
        "Rank every history in a file with a registered model's bundle, exactly as the service would "
        "(ONNX Runtime, the model's last max_len items, seen items excluded). Input lines: "
        "user_id<TAB>item_id item_id … (oldest first); output lines: user_id<TAB>top-K item ids, best first. "
        "Unknown item ids are skipped and counted; a user with no known item gets the model's most popular "
        "training items (as `history: []` does in the service), and is counted."))
    predict.add_argument("--model", required=True, metavar="NAME@ALIAS|NAME/VERSION",
                         help=f"registered model version, e.g. {settings.REGISTERED_MODEL_NAME}@{settings.CHAMPION_ALIAS} or {settings.REGISTERED_MODEL_NAME}/3")
    predict.add_argument("--histories", required=True, metavar="FILE", help="user_id<TAB>space-separated item ids, one user per line")
    predict.add_argument("--k", type=int, default=10, help="items per user, 1 to 100 (default: 10)")
    predict.add_argument("--out", required=True, metavar="FILE", help="where to write user_id<TAB>top-K item ids")
    predict.add_argument("--keep-seen", action="store_true", help="allow items of the history in the answer (default: excluded)")
    predict.add_argument("--new-items", type=int, default=0, metavar="M", help="keep at least M of the K places for new items (no training interactions; default: 0)")
    predict.add_argument("--new-item-boost", type=float, default=0.0, metavar="B", help="add B to new items' scores before ranking (default: 0; "
                         "applied before --new-items)")

    add = sub.add_parser("add-items", help="make brand-new catalog items recommendable by a registered model, without retraining", description=(
        "Make brand-new catalog items recommendable without retraining: register a new version of a registered "
        "model whose catalog also holds the items of a file. A new item is "
        "scored from its text (projected language-model embedding + learned token embeddings + imputed id), as the model scores catalog items "
        "that had no training interactions; existing items keep their scores (checked), and the new version is served in the "
        "precision the source was (int8 only where its answers among the old items stay the source's). The file follows the items "
        "contract (item_id, title[, category, brand, description]) and is checked by the Great Expectations items "
        "suite; ids already in the catalog are refused. The new version gets the alias challenger (and champion "
        f"with --promote) and its own Bento. Exit codes: 0 registered, {EXIT_USER_ERROR} bad input, {EXIT_OUT_OF_SPACE} out of disk space, "
        f"{EXIT_INTERRUPTED} interrupted by Ctrl-C, 143 by SIGTERM, 129 by SIGHUP (a registration in progress is rolled back)."))
    add.add_argument("--items", required=True, metavar="FILE", help="the new items (.csv, .jsonl or .parquet; also .gz compressed)")
    add.add_argument("--model", default=f"{settings.REGISTERED_MODEL_NAME}@{settings.CHAMPION_ALIAS}", metavar="NAME@ALIAS|NAME/VERSION",
                     help=f"the version to add them to (default: {settings.REGISTERED_MODEL_NAME}@{settings.CHAMPION_ALIAS})")
    add.add_argument("--promote", action="store_true", help="also move the champion alias to the new version (default: challenger only)")
    _config_args(add, "read the items file with the config's data.item_columns, e.g. data.item_columns.item_id=parent_asin "
                 "(repeatable; the other fields do not apply to add-items)", "; add-items reads only its data.item_columns")
    add.add_argument("--json", action="store_true", help="print the summary as JSON")

    versions = sub.add_parser("versions", help="list a registered model's versions: aliases, test metrics, gate or add-items record, Bento", description=(
        "List every version of a registered model, newest first: its aliases (challenger, champion), when it was "
        "created, test NDCG@10 / HR@10 and the gate's decision (or, for add-items versions, the version they extend). "
        "A version whose registration did not complete (its process was killed) is marked INCOMPLETE. "
        "--json adds each version's Bento tag, data fingerprint, registration state and MLflow run id."))
    versions.add_argument("--model", default=settings.REGISTERED_MODEL_NAME, help=f"registered model name (default: {settings.REGISTERED_MODEL_NAME})")
    versions.add_argument("--json", action="store_true", help="print the versions as JSON")

    promote = sub.add_parser("promote", help="point champion (or challenger) at a registered version by hand: a roll-back, or a challenger that won its shadow test", description=(
        "Move a registry alias to a registered version by a person's decision: roll the champion back to an earlier "
        "version, or promote a challenger after its shadow test. Only a servable version (with its Bento) is accepted; "
        "the version is tagged with where the alias pointed before, when, and --reason (MLflow keeps no alias history), "
        "and a replaced champion with replaced_by. Services already running keep the version they started with: "
        f"restart them (serve resolves the alias when it starts). Exit codes: 0 moved or already there, {EXIT_USER_ERROR} bad reference."))
    promote.add_argument("--model", required=True, metavar="NAME@ALIAS|NAME/VERSION",
                         help=f"the version to point at, e.g. {settings.REGISTERED_MODEL_NAME}/2 or {settings.REGISTERED_MODEL_NAME}@{settings.CHALLENGER_ALIAS}")
    promote.add_argument("--alias", default=settings.CHAMPION_ALIAS, choices=[settings.CHAMPION_ALIAS, settings.CHALLENGER_ALIAS],
                         help=f"the alias to move (default: {settings.CHAMPION_ALIAS})")
    promote.add_argument("--reason", default="", help="why, recorded on the version's tag (default: none)")

    bento = sub.add_parser("bento", help="pull a registered version's Bento, or containerize it", description=(
        "pull: registry alias/version → the version's .bento archive in MLflow → the local Bento store. "
        "containerize: `bentoml containerize` when a Docker engine answers; otherwise (or with --context-only) "
        "write the exact Docker build context to a folder."))
    bento.add_argument("action", choices=["pull", "containerize"], help="pull: import the version's Bento into the local store; containerize: build its image (or its build context)")
    bento.add_argument("--model", default=settings.REGISTERED_MODEL_NAME, help=f"registered model name (default: {settings.REGISTERED_MODEL_NAME})")
    which = bento.add_mutually_exclusive_group()
    which.add_argument("--alias", default=settings.CHAMPION_ALIAS, help="registry alias (default: champion)")
    which.add_argument("--version", help="a registry version number instead of an alias")
    bento.add_argument("--image-tag", help="image name:tag for containerize (default: the Bento tag)")
    bento.add_argument("--context-only", metavar="DIR", help="containerize: only write the Docker build context to DIR")

    shadow = sub.add_parser("shadow-report", help="compare champion and challenger answers from a shadow log", description=(
        "Read the JSONL log that `behaviorflow serve --shadow ALIAS` writes (the served model's and the shadow "
        "model's top-K for each /recommend request) and report how much the two agree: requests compared, "
        "same top-1 item, mean top-K overlap, identical lists, and the shadow model's latency."))
    shadow.add_argument("--log", required=True, metavar="FILE", help="the JSONL file written by 'serve --shadow'")
    shadow.add_argument("--json", action="store_true", help="print the report as JSON")

    sample = sub.add_parser("sample-data", help="write the bundled synthetic sample dataset (events.csv, items.csv)", description=(
        "Write the synthetic shop that `retrain` uses when given no data (1,500 users browsing products in series; "
        "a few parts launched at the end of the log) as events.csv and items.csv: a template for your own files."))
    sample.add_argument("--out", default="sample-data", help="output folder (default: ./sample-data)")
    return parser


def _config_dict(args) -> dict:
    from components.config import RetrainConfig, merge_overrides

    raw: dict = {}
    if args.config:
        raw = RetrainConfig.from_yaml(args.config).to_dict()
    files = {k: getattr(args, k, None) for k in ("events", "items", "movielens")}
    data = {k: v for k, v in files.items() if v}
    if data and "events" in args:  # files on the command line replace the config's files; how to read them stays
        raw["data"] = {k: v for k, v in (raw.get("data") or {}).items() if k not in files} | data
    raw = merge_overrides(raw, args.set)
    RetrainConfig.from_dict(raw)  # fail here, before any server starts, on a bad field
    return raw


def _check_data_args(args) -> None:
    """Fail before any server starts on the mistakes a glance can find."""
    if args.movielens and (args.events or args.items):
        raise BehaviorflowError("give either --movielens or --events with --items, not both")
    if bool(args.events) != bool(args.items):
        raise BehaviorflowError("--events and --items go together: give both files (or --movielens DIR)")
    for flag, path in (("--events", args.events), ("--items", args.items), ("--movielens", args.movielens)):
        if path and not Path(path).exists():
            raise BehaviorflowError(f"{flag} {path}: no such file or folder")


def cmd_retrain(args) -> int:
    _check_data_args(args)
    raw = _config_dict(args)
    if args.print_config:
        from components.config import RetrainConfig

        print(RetrainConfig.from_dict(raw).to_yaml(), end="")
        return 0
    _check_histories(raw)
    from flows.retrain import retrain

    _announce_servers()
    try:
        summary = retrain(config=raw)
    except GateFailed as exc:
        print(format_summary(exc.summary), file=sys.stderr)
        raise
    print(json.dumps(summary, indent=2, default=str) if args.json else format_summary(summary))
    return 0


def _check_histories(raw: dict) -> None:
    """Read the data as the flow will and refuse, in a second, a log that leave-one-out cannot split (no user
    with prepare.min_sequence_length steps): the prepare stage says the same, but only after the servers have
    started (about 40 s on 2 cores). Everything else about the data is left to the flow's validation."""
    from components.config import RetrainConfig
    from components.data.readers import load_events
    from components.data.sample import load_configured
    from components.preparation import check_leave_one_out

    config = RetrainConfig.from_dict(raw)
    if config.prepare.split == "leave_one_out":
        # Quietly: the flow reads the files again and logs how (milliseconds detected …) once, where its run records it.
        readers = logging.getLogger("components.data.readers")
        level = readers.level
        readers.setLevel(logging.WARNING)
        try:
            # The events alone: the check needs no item, and a catalog with long descriptions is the larger file
            # (100,000 generated Amazon-like items: 110 MB, a quarter of the check's reading time).
            events = load_events(config.data.events, config.data) if config.data.events else load_configured(config.data).events
        finally:
            readers.setLevel(level)
        check_leave_one_out(events, config.prepare)


def cmd_validate(args) -> int:
    _check_data_args(args)
    from components.config import RetrainConfig
    from components.data.sample import load_configured
    from components.validation import raise_for_failures, validate

    dataset = load_configured(RetrainConfig.from_dict(_config_dict(args)).data)
    report = validate(dataset.events, dataset.items, events_source=dataset.events_source, items_source=dataset.items_source)
    raise_for_failures(report)
    print("\n".join(["validation passed", *map(_validated_file, report.statistics.items()), f"Data Docs: {report.data_docs}"]))
    return 0


def _validated_file(entry: tuple[str, dict]) -> str:
    """One file's line of `validate`'s answer: its rows and expectations, and how it was read where that was not as
    the contract names it (the file's columns, millisecond timestamps)."""
    name, stats = entry
    line = f"  {name:<7} {stats['source']}: {stats['rows']} rows, {stats['expectations']} expectations met"
    if stats.get("columns"):
        line += "; columns " + ", ".join(f"{field} from '{column}'" for field, column in stats["columns"].items())
    if stats.get("timestamp_unit"):
        line += f"; timestamps read as epoch {stats['timestamp_unit']}"
    return line


def cmd_serve(args) -> int:
    from components.packaging import pull_bento
    from serving.contract import MODEL_ALIAS_ENV
    from serving.layout import Layout
    from serving.shadow import SHADOW_BUNDLE_ENV

    try:  # the layout `bentoml serve` will run: a bad value is one line here, before anything is pulled or started
        layout = Layout.from_environment(os.environ | ({SHADOW_BUNDLE_ENV: "--shadow"} if args.shadow else {}))
    except ValueError as exc:
        raise BehaviorflowError(f"{exc}; nothing was started") from None
    pulled = pull_bento(f"{args.model}@{args.alias}", "serve")  # a no-op when the Bento is already local
    # A Bento served from the local store does not apply its recorded environment (BentoML does that
    # only in containers), so name its model explicitly; otherwise the newest model in the store loads.
    env = os.environ | {settings.MODEL_TAG_ENV: pulled.bento_model_tag, MODEL_ALIAS_ENV: args.alias}
    shadow_note = ""
    if args.shadow:
        from components import registry
        from serving.shadow import SHADOW_LOG_ENV

        shadow = registry.resolve_version(registry.ModelRef.parse(f"{args.model}@{args.shadow}"))
        registry.check_usable(shadow, "serve --shadow")
        bundle = registry.download_bundle(shadow, settings.home() / "shadow" / f"v{shadow.version}")
        log_path = Path(args.shadow_log or settings.home() / "shadow" / f"shadow-v{pulled.version}-vs-v{shadow.version}.jsonl").resolve()
        _check_shadow(bundle, log_path)  # here, once: inside `bentoml serve` a failure restarts the worker forever
        env |= {SHADOW_BUNDLE_ENV: str(bundle), SHADOW_LOG_ENV: str(log_path)}
        same = "  (the same version as the served one: every line will agree)" if shadow.version == pulled.version else ""
        shadow_note = (f"shadow: @{args.shadow} = version {shadow.version} ranks every /recommend request off the response path → {log_path}{same}\n"
                       f"        compare with: behaviorflow shadow-report --log {log_path}")
    print(f"serving {pulled.model} = version {pulled.version} = Bento {pulled.bento_tag} on http://{args.host}:{args.port}", flush=True)
    print(f"layout: {layout.describe()}", flush=True)
    if shadow_note:
        print(shadow_note, flush=True)
    # `bentoml serve` runs as the child of a small supervisor that replaces this process (same pid, a fraction of
    # its memory): the server and its workers stop when this pid dies, even by kill -9 (components/lifetime.py);
    # with a Prometheus folder of its own, so that another server under this BentoML home neither adds to its
    # /metrics nor wipes them (components/bentoml_serve.py).
    # Both run as files in isolated mode (-I): from any working folder, whatever it holds (a folder named components, say).
    from components import bentoml_serve, lifetime

    supervised = [sys.executable, "-I", lifetime.__file__, sys.executable, "-I", bentoml_serve.__file__,
                  "serve", pulled.bento_tag, "--host", args.host, "--port", str(args.port)]
    os.execve(sys.executable, supervised, env)
    return 0  # not reached


def _check_shadow(bundle: Path, log_path: Path) -> None:
    """The challenger's bundle loads and ranks, and its log can be appended to: one-line errors before serving."""
    from serving.ranking import BundleRanker

    try:
        ranker = BundleRanker(bundle)
        ranker.topk([ranker.bundle.item_ids[:1]], 1, True)
    except Exception as exc:
        raise BehaviorflowError(f"shadow: the challenger's bundle {bundle} cannot rank ({type(exc).__name__}: {exc}); nothing was started") from exc
    if log_path.is_dir():
        raise BehaviorflowError(f"--shadow-log {log_path}: is a folder; name the JSONL file to append to")
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise BehaviorflowError(f"--shadow-log {log_path}: cannot be written ({exc.strerror or exc}); pick another file") from None


def cmd_bento(args) -> int:
    from components.packaging import docker_available, pull_bento, write_container_context

    reference = f"{args.model}/{args.version}" if args.version else f"{args.model}@{args.alias}"
    pulled = pull_bento(reference, f"bento {args.action}")
    state = "already in" if pulled.already_local else "imported into"
    print(f"{reference} = version {pulled.version} = Bento {pulled.bento_tag} ({state} the local Bento store {os.environ.get('BENTOML_HOME')})")
    if args.action == "pull":
        return 0
    if args.context_only or not docker_available():
        out = Path(args.context_only or f"bento-context-{pulled.bento_tag.replace(':', '-')}")
        write_container_context(pulled.bento_tag, out)
        why = "" if args.context_only else " (no Docker engine answers here)"
        print(f"wrote the Docker build context to {out}{why}; build it with:\n  docker build -t {args.image_tag or pulled.bento_tag} -f {out}/env/docker/Dockerfile {out}")
        return 0
    import subprocess

    bentoml = str(Path(sys.executable).with_name("bentoml"))
    command = [bentoml, "containerize", pulled.bento_tag] + (["--image-tag", args.image_tag] if args.image_tag else [])
    return subprocess.run(command).returncode


def cmd_add_items(args) -> int:
    from components.registry import ModelRef

    ModelRef.parse(args.model)  # a malformed reference fails before any server starts
    if not Path(args.items).is_file():
        raise BehaviorflowError(f"--items {args.items}: no such file")
    from components.config import RetrainConfig
    from components.data import DataConfig, load_items

    # Only how the items file is read applies here; the same --config file as retrain's can be given.
    item_columns = RetrainConfig.from_dict(_config_dict(args)).data.item_columns
    load_items(args.items, DataConfig(item_columns=item_columns))  # an unreadable file or a missing column fails in a second, before any server starts
    from components import registry

    registry.check_usable(registry.resolve_version(ModelRef.parse(args.model)), "add-items", warn=False)  # so does a version that cannot be used
    from flows.add_items import add_items

    _announce_servers()
    s = add_items(items=args.items, model=args.model, promote=args.promote, item_columns=item_columns)
    if args.json:
        print(json.dumps(s, indent=2, default=str))
        return 0
    r, p = s["registry"], s["parity"]
    print("\n".join([
        "",
        "behaviorflow add-items — summary",
        f"  added         {_count(s['added_items'], 'item')} to {s['source_version']} ({s['catalog_items']} in the catalog now)",
        f"  check         {s['check']}",
        f"  ONNX parity   {p['cases']} histories, top-K identical: {p['identical_topk']}, max |Δscore| {p['max_abs_score_diff']:.1e}",
        f"  precision     {s['precision']['reason']}",
        f"  registered    version {r['version']} — aliases: {', '.join(r['aliases'])}",
        f"  Bento         {r['bento_tag']}",
        f"  MLflow run    {s['run_id']} in {s['tracking_uri']}",
        f"  serve it      {_command('behaviorflow')} serve --alias {r['aliases'][-1]}",
        *(f"  note          {note}" for note in s.get("notes", [])),
    ]))
    return 0


def cmd_versions(args) -> int:
    from components.registry import list_versions

    rows = list_versions(args.model)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{args.model} in {settings.tracking_uri()}")
    print(f"{'version':>7}  {'aliases':<20} {'created (UTC)':<20} {'NDCG@10':>8} {'HR@10':>7}  record")
    def metric(value: float | None) -> str:
        return "—" if value is None else f"{value:.4f}"

    for r in rows:
        record = f"added items to {r['added_items_to']}" if r["added_items_to"] else r["gate"]
        record += "".join(f" · @{alias} set by hand {note}" for alias, note in r["set_by_hand"].items())
        if not r["complete"]:  # what a killed registration left: predict, serve, promote … refuse it unless it has its Bento
            record = f"INCOMPLETE: registration {r['registration']}" + (f" · {record}" if record else "")
        print(f"{r['version']:>7}  {', '.join(r['aliases']) or '—':<20} {r['created_at'][:19].replace('T', ' '):<20} {metric(r['NDCG@10']):>8} {metric(r['HR@10']):>7}  {record}")
    return 0


def cmd_promote(args) -> int:
    from components.registry import ModelRef, set_alias_by_hand

    move = set_alias_by_hand(ModelRef.parse(args.model), args.alias, args.reason)
    if not move.changed:
        print(f"{move.name}: @{move.alias} already points to version {move.version}; nothing changed")
        return 0
    before = f"version {move.previous}" if move.previous else "no version"
    print(f"{move.name}: @{move.alias} moved from {before} to version {move.version}\n"
          f"  serve it  {_command('behaviorflow')} serve --alias {move.alias}   (a running service keeps its version until it restarts)")
    return 0


def cmd_predict(args) -> int:
    from components.prediction import PredictConfig, predict_with_registered_model

    try:
        config = PredictConfig(k=args.k, exclude_seen=not args.keep_seen, new_items=args.new_items, new_item_boost=args.new_item_boost)
    except ConfigFieldError as exc:
        raise BehaviorflowError(f"--{exc.field.replace('_', '-')}: {exc}") from None
    version, summary = predict_with_registered_model(args.model, Path(args.histories), Path(args.out), config, progress=sys.stderr.isatty())
    print(f"{args.model} (version {version}): {summary.line()}; wrote {args.out}")
    return 0


def cmd_shadow_report(args) -> int:
    from components.evaluation.shadow import compare_shadow_log

    report = compare_shadow_log(args.log)
    print(json.dumps(report.to_dict(), indent=2) if args.json else "\n".join(report.lines()))
    return 0


def cmd_sample(args) -> int:
    from components.data.sample import SampleConfig, write_sample

    events, items = write_sample(Path(args.out), SampleConfig())
    print(f"wrote {events} and {items}")
    return 0


def _announce_servers() -> None:
    """Name what the first, silent seconds of a flow are spent on: without PREFECT_API_URL, Prefect starts a
    temporary API server for the run (40 s measured on the 2-core development machine under load), and a new
    MLflow database creates its tables. That server is started here, out of the reach of the terminal's Ctrl-C
    (flows/prefect_server.py): an interrupted run still records its end through it, and exits 130 at once."""
    from prefect.settings import get_current_settings

    from flows.prefect_server import start_outside_ctrl_c

    url = get_current_settings().api.url
    prefect = f"Prefect API {url}" if url else "starting a temporary local Prefect API server for this run (PREFECT_API_URL names a running one)"
    log.info("%s; MLflow tracking %s", prefect, settings.tracking_uri())
    start_outside_ctrl_c()


def _command(name: str) -> str:
    """How to run this installation's `name` from where the user is: the script beside this Python
    (relative when it is under the current folder), with BEHAVIORFLOW_HOME when the state is not the
    default ./.behaviorflow, so a copied line finds the same registry."""
    script = Path(sys.executable).with_name(name)
    try:
        shown = str(script.relative_to(Path.cwd()))
    except ValueError:
        shown = str(script)
    home = settings.home()
    if home != (Path.cwd() / ".behaviorflow").resolve() and name == "behaviorflow":
        shown = f"BEHAVIORFLOW_HOME={home} {shown}"
    return shown


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _mb(mb: float | None) -> str:
    """Memory for people: 812 MB, 1.4 GB."""
    if mb is None:
        return "unknown"
    return f"{mb / 1024:.1f} GB" if mb >= 1024 else f"{mb:.0f} MB"


def _data_notes(s: dict) -> list[str]:
    """The data line's notes: test targets already in their history, or tied with the step before."""
    from components.preparation import repeat_target_note, tied_target_note

    notes = (repeat_target_note(s["preparation"], s.get("exclude_seen", True), short=True), tied_target_note(s["preparation"], short=True))
    return [note for note in notes if note]


def _timestamp_note(s: dict) -> str:
    """'; timestamps read as epoch ms (…)' when the reader took numeric timestamps as milliseconds, else ''."""
    unit = s.get("timestamp_unit")  # the validation statistics' "ms (detected: …)" or "ms (data.timestamp_unit)"
    return f"; timestamps read as epoch {unit}" if unit else ""


def format_summary(s: dict) -> str:
    m, pop = s["metrics"]["model"], s["metrics"]["popularity"]
    lines = [
        "",
        "behaviorflow retrain — summary",
        f"  data          fingerprint {s['data_fingerprint']}; {s['preparation']['users']} users, {s['cases']} test cases",
        *(f"                {note}" for note in _data_notes(s)),
        f"  validation    passed{_timestamp_note(s)} — Data Docs: {s['data_docs']}",
        f"  training      {_count(s['training']['epochs'], 'epoch')} on {s['training']['device']} in {s['training']['wall_s']} s, peak memory {_mb(s['training'].get('peak_rss_mb'))} (best epoch {s['training']['best_epoch']}; {s['training']['stopped']})"
        + (f"; id-only baseline {_count(b['epochs'], 'epoch')} in {b['wall_s']} s (best epoch {b['best_epoch']}; {b.get('stopped', '')})" if (b := s.get("baseline_training")) else "")
        + ("\n                still improving when the budget ended it: a larger train.max_minutes may give a better model" if s["training"].get("cut_short") else ""),
        f"  test metrics  model NDCG@10 {m['NDCG@10']:.4f}  HR@10 {m['HR@10']:.4f}   |   popularity NDCG@10 {pop['NDCG@10']:.4f}  HR@10 {pop['HR@10']:.4f}",
    ]
    base = s["metrics"].get("id_only")
    if base:
        lift = f"text-aware vs id-only: {m['NDCG@10'] / base['NDCG@10'] - 1:+.1%} NDCG@10" if base["NDCG@10"] > 0 else "the id-only baseline scores 0"
        lines.append(f"                id-only baseline NDCG@10 {base['NDCG@10']:.4f}  HR@10 {base['HR@10']:.4f}   ({lift})")
        if s.get("text_behind_baseline"):
            lines.append("                the baseline is above the model's 95 % interval: the item text does not help on this data yet (see the warning)")
    if "champion" in s["metrics"]:
        c = s["metrics"]["champion"]
        lines.append(f"                champion v{s['gate']['champion_version']} NDCG@10 {c['NDCG@10']:.4f}  HR@10 {c['HR@10']:.4f}")
    for ranker, label in (("model", "model"), ("id_only", "id-only")):
        slices = s.get("slices", {}).get(ranker, {})
        if slices:
            cut = next(key for key in next(iter(slices.values())) if key.startswith("HR@"))
            parts = [f"{name.replace('_', ' ')} {values[cut]:.4f} ({values['cases']} cases)" for name, values in slices.items()]
            if "cold_start" in slices and slices.get("warm", {}).get(cut):
                parts[0] += f" = {slices['cold_start'][cut] / slices['warm'][cut]:.2f}× warm"
            lines.append(f"  {'by target' if ranker == 'model' else '':<13} {label} {cut}: " + " · ".join(parts))
    g = s["gate"]
    lines.append(f"  gate          {'PASSED' if g['passed'] else 'FAILED'}: " + "; ".join(g["reasons"]))
    if s.get("stage_s"):
        from components.progress import format_duration

        stages = " · ".join(f"{name} {format_duration(seconds)}" for name, seconds in s["stage_s"].items())
        lines.append(f"  time          {format_duration(s['wall_s'])} in the flow: {stages}")
    lines.append(f"  MLflow run    {s['run_id']} in {s['tracking_uri']}")
    if "registry" in s:
        r, p = s["registry"], s["parity"]
        lines += [
            f"  ONNX parity   {p['cases']} histories, top-K identical: {p['identical_topk']}, max |Δscore| {p['max_abs_score_diff']:.1e}",
            f"  precision     {s['quantization']['reason'] if s.get('quantization') else 'fp32 (int8 not tried)'}",
            f"  registered    {settings.REGISTERED_MODEL_NAME} version {r['version']} — aliases: {', '.join(r['aliases'])}"
            + (f"\n                {r['not_promoted']}" if r.get("not_promoted") else ""),
            f"  Bento         {r['bento_tag']}  (archive: {r['bento_archive']})",
            f"  serve it      {_command('behaviorflow')} serve --alias {r['aliases'][-1]}   (then POST http://127.0.0.1:3000/recommend)",
        ]
    else:
        lines.append("  registered    nothing (the gate stopped the flow before export)")
    uri = s["tracking_uri"]
    browse = uri if uri.startswith("http") else f"{_command('mlflow')} ui --backend-store-uri {uri}"
    lines.append(f"  browse runs   {browse}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Registered before MLflow, Prefect and the rest register theirs, so that it runs after every other exit handler
    # (Prefect flushing its logs and stopping its temporary server, MLflow ending its runs): the interpreter's last
    # garbage collections then leave alone what the command built, which they walked for 3.4-3.7 s after a retrain's
    # summary (benchmarks/results/exit_latency.json). It skips no flush: objects are still freed, not collected.
    atexit.register(gc.freeze)
    from components.interrupts import keep_interrupts, stopped_like_ctrl_c

    keep_interrupts()  # a Ctrl-C that lands in a weakref callback is not lost (components/interrupts.py)
    # SIGTERM (Kubernetes, docker stop, a Prefect worker's cancel) and SIGHUP stop it as Ctrl-C does, and one whose
    # interrupt some library swallowed still stops it before it registers; undone when the command returns.
    with stopped_like_ctrl_c() if args.command in STOPPED_LIKE_CTRL_C else contextlib.nullcontext():
        return _run_command(args)


def _run_command(args: argparse.Namespace) -> int:
    """`args.command`, its errors turned into one line and an exit code."""
    from components.interrupts import stopped_by

    if not args.debug:
        # Our own one-line errors replace the tracebacks Prefect logs for a failed task, and MLflow's
        # database-migration notices; --debug (or setting these variables) brings them back.
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "CRITICAL")
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    settings.apply_environment()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)-7s %(message)s", datefmt="%H:%M:%S")
    for name in ("components", "flows", "behaviorflow"):
        logging.getLogger(name).setLevel(logging.DEBUG if args.debug else logging.INFO)
    commands = {"retrain": cmd_retrain, "validate": cmd_validate, "serve": cmd_serve, "bento": cmd_bento, "predict": cmd_predict, "add-items": cmd_add_items, "versions": cmd_versions, "promote": cmd_promote, "shadow-report": cmd_shadow_report, "sample-data": cmd_sample}
    registered_before = len(_registration_outcomes())
    try:
        return commands[args.command](args)
    except GateFailed as exc:
        print(exc, file=sys.stderr)  # "gate FAILED: <reasons> — nothing was exported or registered (MLflow run …)"
        return EXIT_GATE_FAILED
    except ValidationFailed as exc:
        stage = {"add-items": " — the flow stopped before adding anything", "retrain": " — the flow stopped before training"}.get(args.command, "")
        print(f"error: data validation failed{stage}.\n{exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BehaviorflowError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as exc:
        full = out_of_space(exc)
        if full is None or args.debug:
            raise
        print(out_of_space_message(args.command, full), file=sys.stderr)
        return EXIT_OUT_OF_SPACE
    except BaseException as exc:  # Ctrl-C; SIGTERM or SIGHUP (components/interrupts.py: KeyboardInterrupt, or Prefect's TerminationSignal)
        if (signum := stopped_by(exc)) is None or args.debug:
            raise
        print(interrupted_line(args.command, signum, _registration_outcomes()[registered_before:]), file=sys.stderr)
        # The interpreter's last garbage collections walk everything the run had built: 8-10 s after Ctrl-C in the
        # training stage (the sample, 2 loaded cores), 3-7 s in the data and text stages. Frozen objects are left to the exit.
        gc.freeze()
        return 128 + signum  # as shells report a process that the signal ended: 130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP


def _registration_outcomes() -> list[tuple[str, str, str]]:
    """This process's registrations so far (components/registry/registry.py: OUTCOMES); none if it never loaded the registry."""
    module = sys.modules.get("components.registry.registry")
    return list(module.OUTCOMES) if module is not None else []


def interrupted_line(command: str, signum: int, outcomes: list[tuple[str, str, str]]) -> str:
    """The one line a stopped command ends with: what stopped it, and what became of the registrations it started
    (`outcomes`: (name, version, "registered" | "rolled back"), oldest first)."""
    from components.interrupts import describe

    by = "" if signum == signal.SIGINT else f" by {describe(signum)}"
    if not outcomes:  # only the commands that register say so: `serve` or `predict` never would
        nothing = " before registering anything (nothing was registered)" if command in STOPPED_LIKE_CTRL_C else ""
        return f"interrupted: {command} stopped{by}{nothing}"
    done = [f"{name} version {version}" for name, version, what in outcomes if what == "registered"]
    undone = [f"{name} version {version}" for name, version, what in outcomes if what == "rolled back"]
    said = []
    if undone:
        said.append(f"the registration of {', '.join(undone)} was rolled back (nothing half-registered)")
    if done:
        said.append(f"{', '.join(done)} {'was' if len(done) == 1 else 'were'} registered completely before the stop and stay{'s' if len(done) == 1 else ''} registered")
    return f"interrupted: {command} stopped{by}; " + "; ".join(said)


def out_of_space_message(command: str, full: BaseException) -> str:
    where = os.environ.get("BEHAVIORFLOW_HOME") or ".behaviorflow"
    reason = str(full).strip().splitlines()[0] if str(full).strip() else type(full).__name__
    return (f"error: out of disk space (or over a file-size limit): {command} stopped ({reason[:300]}). Free space where behaviorflow writes — the state "
            f"folder {where} (runs/, cache/, mlflow.db, bentoml/) and the temporary folder {tempfile.gettempdir()} — or set "
            f"BEHAVIORFLOW_HOME (and TMPDIR) to a larger disk, then run it again; `behaviorflow versions` shows what is registered.")


if __name__ == "__main__":
    sys.exit(main())

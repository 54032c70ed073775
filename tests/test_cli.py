"""The command line: fast help, one-line errors for user mistakes (no traceback), config checks."""

from __future__ import annotations

import gzip
import re
import subprocess
import sys
import time

import pandas as pd
import pytest

from components.config import RetrainConfig, merge_overrides
from components.errors import BehaviorflowError
from tests.helpers import ROOT


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_help_is_fast_and_lists_commands():
    started = time.monotonic()
    out = cli("--help")
    assert out.returncode == 0
    assert time.monotonic() - started < 10  # no torch / GE / prefect import for --help
    for command in ("retrain", "validate", "serve", "predict", "add-items", "sample-data"):
        assert command in out.stdout
    retrain = cli("retrain", "--help").stdout
    assert "--events" in retrain and "--movielens" in retrain and "--set" in retrain and "Exit codes" in retrain
    codes = " ".join(retrain.split())
    for code in ("0 registered", "2 bad input", "3 gate failed", "4 out of disk space", "130 interrupted", "143 by SIGTERM", "129 by SIGHUP"):  # README: every exit code
        assert code in codes, code
    added = " ".join(cli("add-items", "--help").stdout.split())
    assert "0 registered, 2 bad input, 4 out of disk space, 130 interrupted by Ctrl-C, 143 by SIGTERM, 129 by SIGHUP" in added
    predict = " ".join(cli("predict", "--help").stdout.split())
    assert "items per user, 1 to 100 (default: 10)" in predict  # the range predict enforces (the graph's top 100)


def test_every_command_and_option_explains_itself():
    import argparse

    from flows.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(commands.choices) == {"retrain", "validate", "serve", "predict", "add-items", "versions", "promote", "bento", "shadow-report", "sample-data"}
    undocumented = []
    for name, sub in commands.choices.items():
        if not (sub.description or "").strip():
            undocumented.append(f"{name}: no description")
        for action in sub._actions:
            if not isinstance(action, argparse._HelpAction) and not (action.help or "").strip():
                undocumented.append(f"{name} {'/'.join(action.option_strings) or action.dest}: no help")
            elif action.default not in (None, False, [], argparse.SUPPRESS) and action.option_strings and "default" not in action.help:
                undocumented.append(f"{name} {'/'.join(action.option_strings)}: default {action.default!r} not shown")
    assert undocumented == []
    serve = " ".join(cli("serve", "--help").stdout.split())
    assert "port to listen on (default: 3000)" in serve and "(default: 127.0.0.1;" in serve and "POST /recommend" in serve
    for path in ("/recommend", "/score", "/metadata", "/healthz", "/livez", "/readyz", "/metrics", "/docs.json"):
        assert f" {path}" in serve, path  # each answers on a real server: test_serving.py::test_server_answers_every_endpoint_serve_help_lists
    # Every tuning variable of the README's table for `bentoml serve`, under its name in the code, is in `serve --help`
    # (all but those `serve` sets itself).
    from serving import contract, ranking

    readme = (ROOT / "README.md").read_text()
    table = set(re.findall(r"^\| `(BEHAVIORFLOW_[A-Z_]+)`", readme, re.M))
    names = {contract.BATCHING_ENV, contract.WORKERS_ENV, contract.ACCESS_LOG_ENV, contract.TRACING_ENV, ranking.ORT_THREADS_ENV, ranking.ORT_SPIN_ENV,
             contract.EVENT_LOOP_ENV}
    assert names <= table, names - table
    assert {name for name in names if f"{name}=" not in serve} == set()


def test_help_examples_are_commands_a_shell_can_copy():
    """Each example under `behaviorflow --help` is a command line the parser accepts; one split over lines ends
    them with a backslash, as a shell continues it (a bare backslash in the source joined them into one line)."""
    import shlex

    from flows.cli import EPILOG, build_parser

    BACKSLASH = chr(92)
    lines = EPILOG.split("examples:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert all(len(line) <= 120 for line in lines), max(lines, key=len)
    commands, current = [], ""
    for line in lines:
        code = line.split("  #", 1)[0].strip()
        continued = code.endswith(BACKSLASH)
        current = f"{current} {code.removesuffix(BACKSLASH).strip()}".strip()
        if not continued:
            commands.append(current)
            current = ""
    assert len(commands) >= 10 and current == ""
    for command in commands:
        words = shlex.split(command)
        assert words[0] == "behaviorflow", command
        build_parser().parse_args(words[1:])  # argparse exits (SystemExit) on anything it does not take


def test_missing_file_is_one_line_without_traceback(tmp_path):
    out = cli("retrain", "--events", str(tmp_path / "nope.csv"), "--items", str(tmp_path / "items.csv"))
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert out.stderr.startswith("error: ") and "nope.csv" in out.stderr


def test_bad_config_override_is_named():
    out = cli("retrain", "--set", "train.max_epoch=3")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "config.train: unknown field(s) ['max_epoch']" in out.stderr and "max_epochs" in out.stderr


def test_add_items_refuses_a_missing_file_or_a_bad_model_reference_before_any_server(tmp_path):
    helptext = cli("add-items", "--help").stdout
    assert "--items" in helptext and "--promote" in helptext and "without retraining" in " ".join(helptext.split())
    out = cli("add-items", "--items", str(tmp_path / "new.csv"))
    assert out.returncode == 2 and out.stderr == f"error: --items {tmp_path / 'new.csv'}: no such file\n"
    (tmp_path / "new.csv").write_text("item_id,title\nN1,a lamp\n")
    out = cli("add-items", "--items", str(tmp_path / "new.csv"), "--model", "behaviorflow-recommender")
    assert out.returncode == 2 and "expected NAME@ALIAS or NAME/VERSION" in out.stderr and "Traceback" not in out.stderr


def test_serve_refuses_a_bad_layout_setting_before_anything_starts(tmp_path):
    """A bad BEHAVIORFLOW_WORKERS or BEHAVIORFLOW_BATCHING is one line from `behaviorflow serve`, before any model is
    looked up (this home has no registry at all), not a traceback from inside `bentoml serve`."""
    import os

    env = os.environ | {"BEHAVIORFLOW_HOME": str(tmp_path / "home"), "BEHAVIORFLOW_WORKERS": "two"}
    out = subprocess.run([sys.executable, "-m", "flows.cli", "serve"], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 2 and out.stderr == (
        "error: BEHAVIORFLOW_WORKERS='two': expected auto or a whole number of processes (1 or more); nothing was started\n"), out.stderr
    out = subprocess.run([sys.executable, "-m", "flows.cli", "serve", "--shadow", "challenger"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env=env | {"BEHAVIORFLOW_WORKERS": "2"})
    assert out.returncode == 2 and "BEHAVIORFLOW_WORKERS='2': shadow mode (BEHAVIORFLOW_SHADOW_BUNDLE) runs in one process" in out.stderr, out.stderr
    assert not (tmp_path / "home").exists() or not any((tmp_path / "home").rglob("*.db"))  # no registry was opened


def test_events_without_items_is_refused():
    out = cli("retrain", "--events", "e.csv")
    assert out.returncode == 2 and "--events and --items go together" in out.stderr


def test_sample_data_and_validate(tmp_path):
    out = cli("sample-data", "--out", str(tmp_path))
    assert out.returncode == 0 and (tmp_path / "events.csv").exists()
    events = pd.read_csv(tmp_path / "events.csv", dtype=str)
    events.loc[9, "event_type"] = "viewed"  # data row 10 = line 11 (the header is line 1)
    events.to_csv(tmp_path / "events.csv", index=False)
    out = cli("validate", "--events", str(tmp_path / "events.csv"), "--items", str(tmp_path / "items.csv"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "column 'event_type'" in out.stderr and "'viewed' (row 11)" in out.stderr
    assert out.stderr.startswith("error: data validation failed.\n")  # validate runs no flow: nothing "stopped before training"


def test_validate_reads_json_lines_compressed_or_not(tmp_path):
    assert cli("sample-data", "--out", str(tmp_path)).returncode == 0
    events = pd.read_csv(tmp_path / "events.csv", dtype={"user_id": str, "item_id": str})
    (tmp_path / "x.jsonl.gz").write_bytes(gzip.compress(events.to_json(orient="records", lines=True).encode()))
    pd.read_csv(tmp_path / "items.csv", dtype=str).to_json(tmp_path / "y.jsonl", orient="records", lines=True)
    out = cli("validate", "--events", str(tmp_path / "x.jsonl.gz"), "--items", str(tmp_path / "y.jsonl"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("validation passed\n")
    assert f"  events  {tmp_path / 'x.jsonl.gz'}: {len(events)} rows, " in out.stdout and "expectations met\n" in out.stdout
    assert "columns" not in out.stdout and "timestamps" not in out.stdout  # read as the contract names it


def test_retrain_summary_says_when_timestamps_were_read_as_milliseconds():
    from flows.cli import format_summary

    summary = {
        "metrics": {"model": {"NDCG@10": 0.2, "HR@10": 0.3}, "popularity": {"NDCG@10": 0.02, "HR@10": 0.04}},
        "data_fingerprint": "f", "preparation": {"users": 100}, "cases": 100, "data_docs": "d",
        "training": {"epochs": 1, "device": "cpu", "wall_s": 1.0, "best_epoch": 1, "stopped": "max_epochs"},
        "gate": {"passed": True, "reasons": ["ok"]}, "run_id": "r", "tracking_uri": "sqlite:///m.db",
    }
    assert "  validation    passed — Data Docs: d\n" in format_summary(summary | {"timestamp_unit": None})
    unit = "ms (detected: every numeric value >= 1e11)"
    assert f"  validation    passed; timestamps read as epoch {unit} — Data Docs: d\n" in format_summary(summary | {"timestamp_unit": unit})


def test_retrain_s_early_history_check_reads_quietly(tmp_path, caplog):
    """retrain reads the files twice (its early check, then the flow): the line that says millisecond timestamps
    were detected comes once, from the flow, not twice."""
    import logging

    from flows.cli import _check_histories
    from tests.helpers import AMAZON_SETS, write_amazon_like

    assert cli("sample-data", "--out", str(tmp_path)).returncode == 0
    events = pd.read_csv(tmp_path / "events.csv", dtype={"user_id": str, "item_id": str})
    paths = write_amazon_like(events, pd.read_csv(tmp_path / "items.csv", dtype=str, keep_default_na=False), tmp_path / "amazon")
    raw = merge_overrides({"data": {"events": str(paths["reviews"]), "items": str(paths["meta"])}}, list(AMAZON_SETS))
    readers = logging.getLogger("components.data.readers")
    readers.setLevel(logging.INFO)
    with caplog.at_level(logging.INFO):
        _check_histories(raw)
    assert "read as epoch milliseconds" not in caplog.text
    assert readers.level == logging.INFO  # left as it was, for the flow's read
    from components.config import RetrainConfig
    from components.data.sample import load_configured

    with caplog.at_level(logging.INFO):
        load_configured(RetrainConfig.from_dict(raw).data)
    assert "read as epoch milliseconds" in caplog.text  # the reading itself still says it
    readers.setLevel(logging.NOTSET)


def test_a_failed_gate_is_said_once_with_exit_code_3(monkeypatch, capsys):
    import flows.cli
    from components.errors import GateFailed

    def failed_gate(args):
        raise GateFailed("gate FAILED: NDCG@10 0.5 regresses against champion v3 — nothing was exported or registered (MLflow run r)", {})

    monkeypatch.setattr(flows.cli, "cmd_retrain", failed_gate)
    assert flows.cli.main(["retrain"]) == 3
    # the reason once, as the flow words it (it read "gate failed: gate FAILED: …")
    assert capsys.readouterr().err == "gate FAILED: NDCG@10 0.5 regresses against champion v3 — nothing was exported or registered (MLflow run r)\n"


def test_print_config_is_commented_yaml_that_reads_back(tmp_path):
    out = cli("retrain", "--print-config", "--set", "train.lr=0.003", "--set", "prepare.event_types=[purchase]")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "train:\n" in text and "  lr: 0.003\n" in text and "  event_types: [purchase]\n" in text
    # each field under the comment written beside it in its dataclass, multi-line comments whole
    assert "  # Adam; higher rates diverge on small catalogs\n  lr: 0.003" in text
    between = text.split("  list_len: 20\n")[1].split("  sampled_negatives: null")[0]  # a block comment above its field
    assert between.startswith("  # Also rank each test target") and "None = full ranking only" in between
    path = tmp_path / "c.yaml"
    path.write_text(text)
    expected = RetrainConfig.from_dict(merge_overrides({}, ["train.lr=0.003", "prepare.event_types=[purchase]"]))
    assert RetrainConfig.from_yaml(path) == expected
    assert cli("retrain", "--print-config", "--set", "train.lr=fast").returncode == 2


def test_print_config_comments_every_field():
    """Every field --print-config prints has its comment above it; the cold-item settings say which
    cold_imputation they belong to (the default, mlp, uses neither cold_neighbors nor neighbor_temperature)."""
    lines = RetrainConfig().to_yaml().splitlines()
    fields = [i for i, line in enumerate(lines) if line.startswith("  ") and not line.lstrip().startswith("#")]
    assert fields and [lines[i] for i in fields if not lines[i - 1].lstrip().startswith("#")] == []

    def comment(name: str) -> str:
        end = lines.index(next(line for line in lines if line.startswith(f"  {name}: ")))
        start = end
        while lines[start - 1].lstrip().startswith("#"):
            start -= 1
        return " ".join(line.strip().removeprefix("# ") for line in lines[start:end])

    assert "replaces this share of item ids by the imputation (cold_imputation)" in comment("id_dropout")
    assert comment("cold_neighbors").startswith('cold_imputation "neighbors" only') and "0 = no imputed id" in comment("cold_neighbors")
    assert comment("neighbor_temperature").startswith('cold_imputation "neighbors" only: softmax temperature')


def test_config_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  max_epochs: 4\nmodel:\n  d_model: 32\n  n_heads: 1\n")
    cfg = RetrainConfig.from_yaml(path)
    assert (cfg.train.max_epochs, cfg.model.d_model) == (4, 32)
    merged = RetrainConfig.from_dict(merge_overrides(cfg.to_dict(), ["train.lr=0.003", "prepare.event_types=[purchase]"]))
    assert merged.train.lr == 0.003 and merged.prepare.event_types == ("purchase",) and merged.train.max_epochs == 4
    with pytest.raises(BehaviorflowError, match=r"config.train.lr: expected a number, got 'fast'"):
        RetrainConfig.from_dict({"train": {"lr": "fast"}})
    with pytest.raises(BehaviorflowError, match=r"config.model: d_model \(30\) is not a multiple of n_heads \(4\)"):
        RetrainConfig.from_dict({"model": {"d_model": 30, "n_heads": 4}})
    assert RetrainConfig().model.max_len == 50
    assert RetrainConfig.from_dict(merge_overrides({}, ["model.max_len=auto"])).model.max_len == "auto"
    assert RetrainConfig.from_dict(merge_overrides({}, ["model.max_len=120"])).model.max_len == 120
    for bad in ("long", 0, True, 1.5, [1]):
        with pytest.raises(BehaviorflowError, match=rf"config.model: max_len \({re.escape(repr(bad))}\) must be a positive number of history steps, e.g. 50, or \"auto\""):
            RetrainConfig.from_dict({"model": {"max_len": bad}})


@pytest.mark.parametrize("override, message", [
    ("gate.metric=NDCG@50", "config: gate.metric 'NDCG@50' is not a metric the evaluation reports with evaluate.list_len = 20; choose one of NDCG@1, HR@1"),
    ("evaluate.list_len=5", "config.evaluate: list_len (5) must be at least 10"),
    ("train.device=gpu", "config.train: device 'gpu' is not one of auto, cpu, cuda, cuda:N"),
    ("text.device=gpu", "config.text: device 'gpu' is not one of auto, cpu, cuda, cuda:N"),
    ("model.dropout=1.5", "config.model: dropout (1.5) must be in [0, 1)"),
    ("model.n_heads=0", "config.model: n_heads (0) must be at least 1"),
    ("model.d_model=0", "config.model: d_model (0) must be at least 1"),
    ("train.batch_size=0", "config.train: batch_size (0) must be at least 1"),
    ("train.patience=-1", "config.train: patience (-1) must be at least 1 (a large number, e.g. 1000, trains for the whole budget)"),
    ("train.lr=-1", "config.train: lr (-1.0) and max_minutes (60.0) must be positive"),
    ("train.lr=nan", "config.train.lr: expected a number, got nan"),
    ("text.max_tokens=0", "config.text: max_tokens (0) and batch_size (128) must be at least 1"),
    ("gate.max_regression=-1", "config.gate: max_regression (-1.0) must be in [0, 1), e.g. 0.02 for a 2 % relative drop"),
    ("gate.min_lift=-0.5", "config.gate: min_lift (-0.5) must be >= 0, e.g. 0.1 for 10 % above popularity"),
    ("export.k=0", "config.export: probe_size (256) must be at least 1 and k (0) in 1..100"),
    ("prepare.event_types=[]", "config.prepare: event_types is an empty list"),
    ("prepare.event_types=[cart", "--set 'prepare.event_types=[cart': the value is not valid YAML (expected ',' or ']', but got '<stream end>'); quote it"),
])
def test_config_values_out_of_range_are_refused_before_anything_runs(override, message):
    """Each used to pass --print-config and fail later: after validation and training (gate.metric,
    list_len), in torch (device, dropout), with a ZeroDivisionError (n_heads, batch_size) or a YAML traceback."""
    with pytest.raises(BehaviorflowError) as caught:
        RetrainConfig.from_dict(merge_overrides({}, [override]))
    assert str(caught.value).startswith(message)


def test_config_reads_exponent_numbers_and_refuses_unreadable_files(tmp_path):
    # YAML 1.1 reads 1e-3 (no dot) as a string: the README's own default has to be accepted as a number.
    assert RetrainConfig.from_dict(merge_overrides({}, ["train.lr=1e-3"])).train.lr == 0.001
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 3e-3\ngate:\n  metric: HR@20\n")
    cfg = RetrainConfig.from_yaml(path)
    assert (cfg.train.lr, cfg.gate.metric) == (0.003, "HR@20")
    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    with pytest.raises(BehaviorflowError, match="is not a file"):
        RetrainConfig.from_yaml(folder)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"train:\n  max_epochs: \xff\n")
    with pytest.raises(BehaviorflowError, match=r"is not UTF-8 text \(byte 21\): save it as UTF-8"):
        RetrainConfig.from_yaml(latin)
    out = cli("retrain", "--print-config", "--set", "model.n_heads=0")
    assert out.returncode == 2 and out.stderr == "error: config.model: n_heads (0) must be at least 1\n"


def test_a_flow_first_says_which_prefect_and_mlflow_it_is_about_to_use(caplog, monkeypatch, tmp_path):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.cli import _announce_servers

    monkeypatch.setenv("BEHAVIORFLOW_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with caplog.at_level("INFO", logger="behaviorflow"):
        with temporary_settings(updates={PREFECT_API_URL: None}):
            _announce_servers()  # the silent 20-40 s before [1/9] on 2 cores
        monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
        with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:4200/api"}):
            _announce_servers()
    assert caplog.messages == [
        f"starting a temporary local Prefect API server for this run (PREFECT_API_URL names a running one); MLflow tracking sqlite:///{tmp_path}/mlflow.db",
        "Prefect API http://127.0.0.1:4200/api; MLflow tracking http://127.0.0.1:5000",
    ]


def test_empty_state_variables_count_as_unset(monkeypatch, tmp_path):
    """A work pool's empty job variable means "the worker's own"; it must not put state in the working directory."""
    import os

    from components import settings

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(os, "environ", {"BEHAVIORFLOW_HOME": "", "BENTOML_HOME": "", "MLFLOW_TRACKING_URI": "", "PREFECT_HOME": ""})
    root = settings.apply_environment()
    assert root == tmp_path / ".behaviorflow"
    assert os.environ["BENTOML_HOME"] == str(root / "bentoml") and os.environ["PREFECT_HOME"] == str(root / "prefect")
    assert os.environ["MLFLOW_TRACKING_URI"] == f"sqlite:///{root}/mlflow.db" and os.environ["DO_NOT_TRACK"] == "true"


def test_a_command_run_in_process_leaves_the_signal_handlers_and_the_wakeup_fd_as_they_were(tmp_path, capsys, monkeypatch):
    """retrain and add-items make SIGTERM and SIGHUP stop them and watch for stop signals through the interpreter's
    wakeup fd. Left in place after main() returned, a later signal to the same process (the test session) was taken
    for the finished command's stop request: the next registration in that process raised KeyboardInterrupt."""
    import signal

    import flows.cli
    from components import interrupts

    monkeypatch.setattr(flows.cli, "_announce_servers", lambda: None)
    (tmp_path / "new.csv").write_text("item_id,name\nN1,Tent\n")
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGHUP)}
    assert flows.cli.main(["add-items", "--items", str(tmp_path / "new.csv")]) == 2
    assert {signum: signal.getsignal(signum) for signum in handlers} == handlers
    assert signal.set_wakeup_fd(-1) == -1  # none left behind
    caught = []
    previous = signal.signal(signal.SIGTERM, lambda *_: caught.append("SIGTERM"))
    try:
        signal.raise_signal(signal.SIGTERM)
        time.sleep(0.2)  # what a watcher thread would need to note it
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert caught == ["SIGTERM"]
    interrupts.raise_if_stopped()  # the finished command left no watch: nothing to raise
    assert "missing required column(s) ['title']" in capsys.readouterr().err


def test_add_items_refuses_an_unreadable_file_before_any_server_starts(tmp_path, capsys, monkeypatch):
    import flows.cli
    from flows.cli import main

    def no_server():
        raise AssertionError("the Prefect server would start (43-190 s before this error, on the audit's machine)")

    monkeypatch.setattr(flows.cli, "_announce_servers", no_server)
    (tmp_path / "new.csv").write_text("item_id,name\nN1,Tent\n")
    assert main(["add-items", "--items", str(tmp_path / "new.csv")]) == 2
    assert "missing required column(s) ['title']" in capsys.readouterr().err


def test_a_log_leave_one_out_cannot_split_fails_before_any_server_starts(tmp_path):
    """No user with prepare.min_sequence_length steps: the prepare stage's error, from a read of the files before
    the Prefect server and the MLflow store start (before: the same line, 33 s later on 2 cores, after both had)."""
    import os

    from components.data import load_dataset
    from components.preparation import PrepareConfig, prepare

    (tmp_path / "items.csv").write_text("item_id,title\n" + "".join(f"I{i},item {i}\n" for i in range(10)))
    rows = [f"u{u},I{(u + step) % 10},view,{1_700_000_000 + 100 * u + step}\n" for u in range(20) for step in range(2)]
    (tmp_path / "events.csv").write_text("user_id,item_id,event_type,timestamp\n" + "".join(rows))
    home = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PREFECT_HOME", "BENTOML_HOME")} | {"BEHAVIORFLOW_HOME": str(home)}
    out = subprocess.run([sys.executable, "-m", "flows.cli", "retrain", "--events", str(tmp_path / "events.csv"), "--items", str(tmp_path / "items.csv")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    dataset = load_dataset(tmp_path / "events.csv", tmp_path / "items.csv")
    with pytest.raises(BehaviorflowError) as stage:
        prepare(dataset.events, dataset.items, PrepareConfig())
    assert out.returncode == 2 and out.stderr == f"error: {stage.value}\n"
    assert "20 users, the longest with 2 steps" in out.stderr
    assert not (home / "mlflow.db").exists() and not (home / "prefect").exists()  # no MLflow store opened, no Prefect server started


def test_out_of_space_is_found_in_whatever_wraps_it():
    import errno
    import sqlite3

    from components.errors import out_of_space

    def chained(inner: BaseException, outer: BaseException) -> BaseException:
        try:
            try:
                raise inner
            except BaseException as exc:
                raise outer from exc
        except BaseException as exc:
            return exc

    full = OSError(errno.ENOSPC, "No space left on device")
    assert out_of_space(full) is full
    sqlite = sqlite3.OperationalError("database or disk is full")
    assert out_of_space(chained(sqlite, RuntimeError("(sqlite3.OperationalError) while committing"))) is sqlite  # as SQLAlchemy/MLflow wrap it
    torch_write = RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0 ... PytorchStreamWriter failed writing file data/0: file write failed")
    assert out_of_space(torch_write) is torch_write
    # torch.save under ulimit -f, as a retrain's checkpoint met it: the stream error, then the zip writer's check
    stream = RuntimeError("basic_ios::clear: iostream error")
    position = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 923072 vs 923008")
    assert out_of_space(stream) is stream and out_of_space(chained(stream, position)) is position
    assert out_of_space(chained(OSError(errno.EACCES, "Permission denied"), ValueError("could not save"))) is None
    assert out_of_space(None) is None


def test_a_full_disk_is_one_line_with_what_to_do_and_leaves_no_half_file(tmp_path):
    import resource

    def small_files():  # ulimit -f 64: a write past 64 KiB fails with EFBIG, as a full disk fails with ENOSPC
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))

    out = subprocess.run([sys.executable, "-m", "flows.cli", "sample-data", "--out", str(tmp_path / "s")], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, preexec_fn=small_files)
    assert out.returncode == 4, out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert out.stderr.startswith("error: out of disk space (or over a file-size limit): sample-data stopped ([Errno 27] File too large). "
                                 "Free space where behaviorflow writes")
    assert "set BEHAVIORFLOW_HOME (and TMPDIR) to a larger disk" in out.stderr
    assert list((tmp_path / "s").iterdir()) == []  # the sample is written next to its name and renamed: no partial file left


# --- A dump read as it is: data.event_columns / item_columns / event_type / timestamp_unit, from --set and from YAML ---

@pytest.mark.parametrize("override, message", [
    ("data.event_columns={itemid: parent_asin}", "config.data: event_columns: unknown contract field(s) ['itemid']; valid ones are "
     "['user_id', 'item_id', 'event_type', 'timestamp', 'value'] (contract name: the file's column name)"),
    ("data.item_columns.store=store", "config.data: item_columns: unknown contract field(s) ['store']; valid ones are "
     "['item_id', 'title', 'category', 'brand', 'description'] (contract name: the file's column name)"),
    ("data.item_columns={title: name, description: name}", "config.data: item_columns: the file's column 'name' is mapped to 2 contract "
     "fields (title, description); a column stands for one field: map each field to its own column"),
    ("data.event_columns=parent_asin", "config.data.event_columns: expected a mapping, e.g. {item_id: parent_asin}, got 'parent_asin'"),
    ("data.event_columns.item_id=", "config.data.event_columns.item_id: must not be empty"),
    ("data.event_type=review", "config.data: event_type 'review' is not one of the contract's event types ['view', 'click', 'cart', 'purchase', 'rating']"),
    ("data.timestamp_unit=us", "config.data: timestamp_unit 'us': choose one of auto, s, ms"),
])
def test_reading_options_that_cannot_work_are_refused_before_anything_runs(override, message):
    with pytest.raises(BehaviorflowError) as caught:
        RetrainConfig.from_dict(merge_overrides({}, [override]))
    assert str(caught.value) == message


def test_a_constant_event_type_beside_a_mapped_event_type_column_or_a_movielens_folder_is_refused():
    with pytest.raises(BehaviorflowError) as caught:
        RetrainConfig.from_dict(merge_overrides({}, ["data.event_type=rating", "data.event_columns.event_type=kind"]))
    assert str(caught.value) == ("config.data: event_type 'rating' gives every row one type, and event_columns maps event_type to the "
                                 "file's column 'kind': keep one of the two")
    with pytest.raises(BehaviorflowError, match="a MovieLens folder is read in its own fixed format"):
        RetrainConfig.from_dict({"data": {"movielens": "ml-1m", "timestamp_unit": "ms"}})


def test_validate_reads_an_amazon_2023_dump_with_set_or_config_and_without_them_says_what_to_set(tmp_path):
    from tests.helpers import AMAZON_SETS, write_amazon_like

    assert cli("sample-data", "--out", str(tmp_path)).returncode == 0
    events = pd.read_csv(tmp_path / "events.csv", dtype={"user_id": str, "item_id": str})
    paths = write_amazon_like(events, pd.read_csv(tmp_path / "items.csv", dtype=str, keep_default_na=False), tmp_path / "amazon")
    files = ("--events", str(paths["reviews"]), "--items", str(paths["meta"]))
    out = cli("validate", *files, *(arg for line in AMAZON_SETS for arg in ("--set", line)))
    assert out.returncode == 0, out.stderr
    # one line per file, how it was read in words (not a Python dict)
    assert f"  events  {paths['reviews']}: {len(events)} rows, " in out.stdout and "{" not in out.stdout
    assert "; columns item_id from 'parent_asin', value from 'rating'; timestamps read as epoch ms (detected: every numeric value >= 1e11)\n" in out.stdout
    assert "every numeric timestamp is >= 1e+11, so they are read as epoch milliseconds" in out.stderr  # the one line that says so
    # The same from a YAML file, the files still on the command line: they replace the config's files, not how to read them.
    (config := tmp_path / "amazon.yaml").write_text(
        "data:\n  events: elsewhere.csv\n  event_columns: {item_id: parent_asin, value: rating}\n  event_type: rating\n"
        "  timestamp_unit: ms\n  item_columns:\n    item_id: parent_asin\n    category: categories\n    brand: store\n")
    out = cli("validate", *files, "--config", str(config))
    assert out.returncode == 0, out.stderr
    assert "timestamps read as epoch ms (data.timestamp_unit)\n" in out.stdout and "read as epoch milliseconds" not in out.stderr
    out = cli("validate", *files)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith(f"error: {paths['reviews']}: missing required column(s) ['item_id', 'event_type']; found ['rating', ")
    assert "name the file's columns for them in data.event_columns (e.g. --set data.event_columns.item_id=<the file's name for it>)" in out.stderr


def test_add_items_reads_its_file_with_data_item_columns_from_set(tmp_path, capsys, monkeypatch):
    import flows.cli
    from flows.cli import main

    def no_server():
        raise AssertionError("the Prefect server would start")

    monkeypatch.setattr(flows.cli, "_announce_servers", no_server)
    (tmp_path / "meta.jsonl").write_text('{"parent_asin": "N1", "title": "Tent", "store": "Alpenrock"}\n')
    mapping = ["--set", "data.item_columns={item_id: parent_asin, brand: store}"]
    assert main(["add-items", "--items", str(tmp_path / "meta.jsonl")]) == 2
    assert "missing required column(s) ['item_id']" in capsys.readouterr().err
    assert main(["add-items", "--items", str(tmp_path / "meta.jsonl"), "--set", "data.item_columns.item_id=asin"]) == 2
    assert capsys.readouterr().err == (f"error: {tmp_path / 'meta.jsonl'}: no column 'asin' (for item_id, data.item_columns.item_id); the file has "
                                       "['parent_asin', 'title', 'store']. Correct the name in data.item_columns (names are case-sensitive) and re-run.\n")
    # Read: the next check is the model's (none is registered in this test's store), before any server starts.
    assert main(["add-items", "--items", str(tmp_path / "meta.jsonl"), *mapping]) == 2
    err = capsys.readouterr().err
    assert "behaviorflow-recommender" in err and "parent_asin" not in err and "column" not in err


def test_retrain_s_early_history_check_reads_the_events_file_alone(tmp_path, monkeypatch):
    """The early check needs the events only: the items file (the larger one, with long descriptions) is read by
    the flow, once."""
    from components.data import readers
    from flows.cli import _check_histories

    assert cli("sample-data", "--out", str(tmp_path)).returncode == 0
    read = []
    load_items = readers.load_items
    monkeypatch.setattr(readers, "load_items", lambda *a, **k: read.append(a) or load_items(*a, **k))
    _check_histories({"data": {"events": str(tmp_path / "events.csv"), "items": str(tmp_path / "items.csv")}})
    assert read == []
    with pytest.raises(BehaviorflowError, match="no user has 3 or more steps"):  # and it still checks
        pd.DataFrame({"user_id": ["u1", "u1"], "item_id": ["1", "2"], "event_type": "view", "timestamp": [1, 2]}).to_csv(tmp_path / "short.csv", index=False)
        _check_histories({"data": {"events": str(tmp_path / "short.csv"), "items": str(tmp_path / "items.csv")}})

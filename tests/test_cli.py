"""The command line: fast help, one-line errors for user mistakes (no traceback), config checks."""

from __future__ import annotations

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


def test_every_command_and_option_explains_itself():
    import argparse

    from flows.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(commands.choices) == {"retrain", "validate", "serve", "predict", "add-items", "versions", "bento", "shadow-report", "sample-data"}
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
    for bad in ("long", 0, True):
        with pytest.raises(BehaviorflowError, match=rf"config.model: max_len \({bad!r}\) must be a positive number of history steps, e.g. 50, or \"auto\""):
            RetrainConfig.from_dict({"model": {"max_len": bad}})

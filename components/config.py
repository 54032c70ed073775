"""The retraining configuration: typed, frozen dataclasses inside; YAML / flags only at the edge.

`RetrainConfig.from_dict` accepts the same nested structure as a YAML file, e.g.

    data: {events: my/events.parquet, items: my/items.csv}
    model: {d_model: 64, n_layers: 2}
    train: {max_minutes: 30}
    gate: {max_regression: 0.01}

and names any unknown section or field with the valid choices.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path

from components.data.config import DataConfig
from components.errors import BehaviorflowError
from components.export import ExportConfig
from components.gate import GateConfig
from components.models.text_sasrec import TextSASRecConfig
from components.preparation import PrepareConfig
from components.tokenization import TextEncoderConfig
from components.training import TrainConfig


@dataclass(frozen=True)
class EvalConfig:
    exclude_seen: bool = True  # items of the input history are not ranked (the published protocol); a seen target is a miss
    list_len: int = 20  # top-K list length; metrics are reported at 1, 5, 10, 20 up to this
    # Also rank each test target among this many uniformly sampled negatives (never its input items or
    # itself), reported as sampled_HR@10 … next to the full-ranking metrics (which the gate keeps
    # reading); None = full ranking only. Sampled metrics flatter every model: compare them only with each other.
    sampled_negatives: int | None = None
    sample_seed: int = 0  # which negatives are drawn (the same ones for every ranker)
    id_only_baseline: bool = True  # also train the id-only variant of the model (text off: plain SASRec, same
    #   size, same training settings) and rank the test cases with it, next to popularity: shows whether the
    #   item text pays off on this data. Doubles the training time; the gate does not read it

    def __post_init__(self):
        if self.list_len < 10:
            raise ValueError(f"list_len ({self.list_len}) must be at least 10, e.g. 20: the gate, the summary and the champion comparison read HR@10 and NDCG@10")
        if self.sampled_negatives is not None and self.sampled_negatives < 1:
            raise ValueError(f"sampled_negatives ({self.sampled_negatives}) must be at least 1 (e.g. 100), or null for full ranking only")


@dataclass(frozen=True)
class RetrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    model: TextSASRecConfig = field(default_factory=TextSASRecConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    promote: bool = True  # move `champion` when the gate passes (False: register as challenger only)

    def __post_init__(self):
        metrics = gate_metrics(self.evaluate.list_len)
        if self.gate.metric not in metrics:
            raise ValueError(f"gate.metric {self.gate.metric!r} is not a metric the evaluation reports with evaluate.list_len = "
                             f"{self.evaluate.list_len}; choose one of {', '.join(metrics)}")
        if self.gate.beat_id_only and not self.evaluate.id_only_baseline:
            raise ValueError("gate.beat_id_only compares with the id-only baseline, which evaluate.id_only_baseline = false does not "
                             "train: set one of them differently")

    @classmethod
    def from_dict(cls, raw: dict | None) -> "RetrainConfig":
        return _build(cls, raw or {}, "config")

    @classmethod
    def from_yaml(cls, path: str | Path) -> "RetrainConfig":
        import yaml

        path = Path(path)
        if not path.exists():
            raise BehaviorflowError(f"config file {path} does not exist")
        if not path.is_file():
            raise BehaviorflowError(f"config file {path} is not a file (a folder?): pass the YAML file itself")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as exc:
            raise BehaviorflowError(f"config file {path} is not UTF-8 text (byte {exc.start}): save it as UTF-8") from exc
        except OSError as exc:
            raise BehaviorflowError(f"config file {path} cannot be read: {exc.strerror or exc}") from exc
        except yaml.YAMLError as exc:
            raise BehaviorflowError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(raw, dict):
            raise BehaviorflowError(f"config file {path}: expected a mapping of sections at the top, got {type(raw).__name__}")
        return _build(cls, raw, str(path))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        """This configuration as a YAML file that `from_yaml` reads back, every field under its section with
        the comment from its definition: what `behaviorflow retrain --print-config` prints."""
        lines = ["# behaviorflow retrain configuration: use it with --config FILE; --set SECTION.FIELD=VALUE overrides one field"]
        for section in dataclasses.fields(self):
            value = getattr(self, section.name)
            if not dataclasses.is_dataclass(value):
                lines += ["", *_comment_lines(field_comments(type(self)).get(section.name, ""), ""), f"{section.name}: {_yaml_scalar(value)}"]
                continue
            comments = field_comments(type(value))
            lines += ["", f"{section.name}:"]
            for item in dataclasses.fields(value):
                lines += [*_comment_lines(comments.get(item.name, ""), "  "), f"  {item.name}: {_yaml_scalar(getattr(value, item.name))}"]
        return "\n".join(lines) + "\n"

    def flat(self) -> dict[str, object]:
        """section.field -> value, for MLflow params."""
        return {f"{section}.{key}": value for section, values in self.to_dict().items() if isinstance(values, dict) for key, value in values.items()} | {"promote": self.promote}


def gate_metrics(list_len: int) -> list[str]:
    """The metrics the gate can compare: those evaluation reports for the model, popularity and the champion."""
    from components.evaluation.metrics import KS

    return [f"{name}@{k}" for k in KS if k <= list_len for name in ("NDCG", "HR")] + [f"MRR@{list_len}"]


def field_comments(kind) -> dict[str, str]:
    """field name -> the comment written beside it (and on the `#` lines right after it) in the source of
    the dataclass `kind`; {} where the source cannot be read."""
    import inspect
    import re

    try:
        source = inspect.getsource(kind).splitlines()
    except (OSError, TypeError):
        return {}
    comments: dict[str, str] = {}
    current, leading = None, []  # the field being commented; a block comment that belongs to the next field
    for line in source:
        stripped = line.strip()
        match = re.match(r"^    (\w+): [^#]*?(?:#\s?(.*))?$", line)
        if match and not stripped.startswith("def "):
            current = match.group(1)
            comments[current] = " ".join([*leading, (match.group(2) or "").strip()]).strip()
            leading = []
        elif current and re.match(r"^\s+#\s{2,}", line):  # "#   …": continues the field above
            comments[current] = (comments[current] + " " + stripped.lstrip("#").strip()).strip()
        elif re.match(r"^    #", line):  # "# …" on its own: about the field below
            leading.append(stripped.lstrip("#").strip())
        else:
            current, leading = None, []
    return {name: text for name, text in comments.items() if text}


def _comment_lines(text: str, indent: str, width: int = 100) -> list[str]:
    import textwrap

    return [f"{indent}# {line}" for line in textwrap.wrap(text, width - len(indent) - 2)] if text else []


def _yaml_scalar(value) -> str:
    import yaml

    value = list(value) if isinstance(value, tuple) else value
    return yaml.safe_dump(value, default_flow_style=True, width=1_000_000).strip().removesuffix("\n...").strip()


def _build(kind, raw: dict, where: str):
    hints = typing.get_type_hints(kind)
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise BehaviorflowError(f"{where}: unknown field(s) {unknown}; valid fields are {sorted(known)}")
    values = {}
    for name, value in raw.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise BehaviorflowError(f"{where}.{name}: expected a mapping of fields, got {value!r}")
            values[name] = _build(hint, value, f"{where}.{name}")
        else:
            values[name] = _coerce(hint, value, f"{where}.{name}")
    try:
        return kind(**values)
    except (TypeError, ValueError, ArithmeticError) as exc:
        raise BehaviorflowError(f"{where}: {exc}") from exc


def _coerce(hint, value, where: str):
    """Check scalars against the annotation; tuples arrive from YAML as lists."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if value is None:
        if type(None) in args:
            return None
        raise BehaviorflowError(f"{where}: must not be empty")
    if origin in (typing.Union, getattr(__import__("types"), "UnionType")):
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _coerce(options[0], value, where)
        for option in options:  # e.g. int | str: the first that takes the value as it is
            try:
                return _coerce(option, value, where)
            except BehaviorflowError:
                continue
        return value  # none does: the dataclass's own check names what the field takes (max_len: a number or "auto")
    if origin is dict:  # a mapping of names (data.event_columns): YAML's {a: b}, or --set data.event_columns.a=b
        if not isinstance(value, dict):
            raise BehaviorflowError(f"{where}: expected a mapping, e.g. {{item_id: parent_asin}}, got {value!r}")
        key_hint, value_hint = args
        return {_coerce(key_hint, key, f"{where} key {key!r}"): _coerce(value_hint, item, f"{where}.{key}") for key, item in value.items()}
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise BehaviorflowError(f"{where}: expected a list, got {value!r}")
        return tuple(value)
    if hint is bool and not isinstance(value, bool):
        raise BehaviorflowError(f"{where}: expected true or false, got {value!r}")
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise BehaviorflowError(f"{where}: expected a number, got {value!r}")
    if hint in (int, str) and not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise BehaviorflowError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value


def parse_override(text: str) -> tuple[list[str], object]:
    """'train.max_epochs=5' -> (['train', 'max_epochs'], 5), the value parsed as YAML."""
    import yaml

    if "=" not in text:
        raise BehaviorflowError(f"--set {text!r}: expected SECTION.FIELD=VALUE, e.g. train.max_epochs=5")
    key, value = text.split("=", 1)
    try:
        return key.strip().split("."), yaml.safe_load(value)
    except yaml.YAMLError as exc:
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise BehaviorflowError(f"--set {text!r}: the value is not valid YAML ({problem}); quote it, e.g. "
                                f"--set 'prepare.event_types=[cart, purchase]'") from exc


def merge_overrides(raw: dict, overrides: list[str]) -> dict:
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for text in overrides:
        path, value = parse_override(text)
        target = merged
        for part in path[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise BehaviorflowError(f"--set {text!r}: '{part}' is not a section")
        target[path[-1]] = value
    return merged

"""Compare champion and challenger from a shadow log (serving/shadow.py): how often and how much the
challenger would have answered differently to live requests."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from components.errors import BehaviorflowError


@dataclass
class ShadowReport:
    requests: int
    top1_agreement: float  # share of requests with the same first item
    mean_overlap_at_k: float  # mean |champion ∩ challenger| / k over the returned lists
    mean_jaccard: float
    identical_lists: float  # share of requests with exactly the same list in the same order
    challenger_p50_ms: float
    challenger_p95_ms: float
    challenger_models: list[str]
    notes: list[str] = field(default_factory=list)  # what the numbers leave out or mix

    def to_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        return [
            f"shadow log: {self.requests} requests, challenger {', '.join(self.challenger_models)}",
            f"  same top-1 item         {self.top1_agreement:.1%}",
            f"  mean overlap of top-k   {self.mean_overlap_at_k:.1%}   (Jaccard {self.mean_jaccard:.3f})",
            f"  identical lists         {self.identical_lists:.1%}",
            f"  challenger latency      p50 {self.challenger_p50_ms:.2f} ms, p95 {self.challenger_p95_ms:.2f} ms (off the response path)",
            *(f"  note: {note}" for note in self.notes),
        ]


def compare_shadow_log(path: str | Path) -> ShadowReport:
    import numpy as np

    path = Path(path)
    if path.is_dir():
        raise BehaviorflowError(f"shadow log {path} is a folder: name the JSONL file 'serve --shadow' wrote")
    if not path.is_file():
        raise BehaviorflowError(f"shadow log {path} does not exist: serve with '--shadow challenger' first")
    rows, notes, pairs = [], [], set()
    content = path.read_text(encoding="utf-8")
    lines = content.splitlines()
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
            champion, challenger = list(row["champion"]), list(row["challenger"])
        except (ValueError, KeyError, TypeError) as exc:
            if number == len(lines) and not content.endswith("\n"):  # what a stopped writer or a full disk leaves
                notes.append(f"line {number}, the last, is incomplete (the writer stopped mid-line) and was left out")
                continue
            raise BehaviorflowError(f"{path}, line {number}: not a shadow record ({exc}); expected JSON with 'champion' and 'challenger' lists") from exc
        rows.append((champion, challenger, float(row.get("challenger_ms", 0.0)), row.get("challenger_model", "?")))
        pairs.add((row.get("champion_model", "?"), row.get("challenger_model", "?")))
    if not rows:
        raise BehaviorflowError(f"shadow log {path} is empty: no request has been recorded yet")
    models = sorted({m for *_, m in rows})
    if len(pairs) > 1:
        listed = ", ".join(f"{a} vs {b}" for a, b in sorted(pairs))
        notes.append(f"the log mixes {len(pairs)} model pairs ({listed}): these numbers pool them; give each shadow run its own --shadow-log")
    overlap = [len(set(a) & set(b)) / max(len(a), 1) for a, b, _, _ in rows]
    jaccard = [len(set(a) & set(b)) / max(len(set(a) | set(b)), 1) for a, b, _, _ in rows]
    latency = np.array([ms for _, _, ms, _ in rows])
    return ShadowReport(
        requests=len(rows),
        top1_agreement=float(np.mean([bool(a) and bool(b) and a[0] == b[0] for a, b, _, _ in rows])),
        mean_overlap_at_k=float(np.mean(overlap)),
        mean_jaccard=float(np.mean(jaccard)),
        identical_lists=float(np.mean([a == b for a, b, _, _ in rows])),
        challenger_p50_ms=float(np.percentile(latency, 50)),
        challenger_p95_ms=float(np.percentile(latency, 95)),
        challenger_models=models,
        notes=notes,
    )

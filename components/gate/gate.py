"""Decide whether a candidate model may be promoted to champion.

Rules (all on the same held-out test cases, full ranking):
1. It must beat the popularity baseline: candidate[metric] > popularity[metric] × (1 + min_lift).
2. Once a champion exists, it must not regress beyond a tolerance:
   candidate[metric] ≥ champion[metric] × (1 − max_regression).
   First run (no champion yet): rule 2 does not apply; rule 1 alone decides, and the passing
   candidate becomes the first champion.
3. Only with `beat_id_only` (off by default): it must score at least the id-only baseline of the same run
   (the same model trained without item text): candidate[metric] >= id_only[metric]. For catalogs whose text
   may not help, where serving the text model should wait until it does.
A failed gate stops the flow before export: nothing is packaged or registered.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class GateConfig:
    metric: str = "NDCG@10"  # the metric every rule compares
    min_lift: float = 0.0  # relative lift over popularity required (0.1 = must be 10 % better)
    max_regression: float = 0.02  # relative drop vs the champion tolerated (noise between retrains)
    beat_id_only: bool = False  # also require at least the id-only baseline's score (needs evaluate.id_only_baseline)

    def __post_init__(self):
        if self.min_lift < 0:
            raise ValueError(f"min_lift ({self.min_lift}) must be >= 0, e.g. 0.1 for 10 % above popularity")
        if not 0 <= self.max_regression < 1:
            raise ValueError(f"max_regression ({self.max_regression}) must be in [0, 1), e.g. 0.02 for a 2 % relative drop")


@dataclass
class GateDecision:
    passed: bool
    metric: str
    candidate: float
    popularity: float
    champion: float | None
    champion_version: str | None
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return ("PASSED: " if self.passed else "FAILED: ") + "; ".join(self.reasons)


def decide(candidate: dict, popularity: dict, champion: dict | None = None, champion_version: str | None = None, config: GateConfig = GateConfig(),
           id_only: dict | None = None) -> GateDecision:
    m = config.metric
    for name, metrics in (("candidate", candidate), ("popularity", popularity), ("champion", champion or {m: 0.0})):
        if m not in metrics:
            raise ValueError(f"gate metric '{m}' missing from the {name} metrics (have: {sorted(metrics)})")
    cand, pop = candidate[m], popularity[m]
    reasons, passed = [], True
    need = pop * (1 + config.min_lift)
    if cand > need:
        reasons.append(f"{m} {cand:.4f} beats popularity {pop:.4f}" + (f" by more than {config.min_lift:.0%}" if config.min_lift else ""))
    else:
        passed = False
        reasons.append(f"{m} {cand:.4f} does not beat popularity {pop:.4f}" + (f" by {config.min_lift:.0%}" if config.min_lift else "") + f" (needs > {need:.4f})")
    champ = None
    if champion is None:
        reasons.append("no champion yet: first promotion is decided by the popularity rule alone")
    else:
        champ = champion[m]
        floor = champ * (1 - config.max_regression)
        if cand > champ:
            lift = f" by {cand / champ - 1:.1%}" if champ > 0 else ""
            reasons.append(f"{m} {cand:.4f} vs champion v{champion_version} {champ:.4f}: better{lift}")
        elif cand >= floor:
            reasons.append(f"{m} {cand:.4f} vs champion v{champion_version} {champ:.4f}: within the {config.max_regression:.0%} regression tolerance (floor {floor:.4f})")
        else:
            passed = False
            reasons.append(f"{m} {cand:.4f} regresses against champion v{champion_version} {champ:.4f} by more than {config.max_regression:.0%} (floor {floor:.4f})")
    if config.beat_id_only:
        if id_only is None:
            raise ValueError("gate.beat_id_only needs the id-only baseline's metrics: set evaluate.id_only_baseline to true")
        base = id_only[m]
        if cand >= base:
            reasons.append(f"{m} {cand:.4f} is at least the id-only baseline's {base:.4f} (gate.beat_id_only)")
        else:
            passed = False
            reasons.append(f"{m} {cand:.4f} is below the id-only baseline's {base:.4f}: the item text does not help yet (gate.beat_id_only)")
    return GateDecision(passed, m, cand, pop, champ, champion_version, reasons)

"""Which code and machine a benchmark result came from: every script in benchmarks/ records it the same way.
Also what the side-by-side (A/B) scripts share: alternating rounds, their timing summary, the result file."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]


def git_state() -> tuple[str, bool]:
    """(HEAD commit, whether tracked files differ from it): the code a run starts with. The commit is
    "" outside a git checkout."""
    def git(*argv: str) -> str:
        return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    return git("rev-parse", "HEAD"), bool(git("status", "--porcelain", "--untracked-files=no"))


def load_average() -> list[float]:
    """The machine's 1-, 5- and 15-minute load averages: how shared it was while a benchmark ran."""
    return [round(x, 2) for x in os.getloadavg()]


def cpu_model() -> str:
    """The CPU's name as /proc/cpuinfo gives it ("" where there is none). Sessions here have run on different
    machines (an Intel CPU with AMX one day, a 2.6 GHz AMD EPYC another), and the same benchmark differed by up to
    3x between them: a result without it cannot be compared with another."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def machine(load_at_start: list[float]) -> dict:
    """The result's "machine" entry: CPU, cores and the load average at the start (given) and now, at the end."""
    return {"cpu": cpu_model(), "cpus": os.cpu_count(), "load_average_at_start": load_at_start, "load_average_at_end": load_average()}


def alternating(ways: tuple[str, str], rounds: int) -> Iterator[tuple[int, str]]:
    """(round, way) for `rounds` rounds of both ways, the order swapped every round, so that neither way always
    runs first (on a warm cache, or a machine whose load changes)."""
    for round_ in range(rounds):
        for way in ways if round_ % 2 == 0 else ways[::-1]:
            yield round_, way


def timing_summary(times: dict[str, list[float]], slower: str, faster: str, digits: int) -> dict:
    """seconds of each run, the median of each way, and the speedup of `faster` over `slower` (medians)."""
    median = {way: statistics.median(t) for way, t in times.items()}
    return {
        "seconds": {way: [round(t, digits) for t in ts] for way, ts in times.items()},
        "median_s": {way: round(t, digits) for way, t in median.items()},
        "speedup": round(median[slower] / median[faster], 2),
    }


def write_result(report: dict, out: Path) -> None:
    """Write `report` as the JSON result file `out` and print it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


def serving_benchmark():
    """benchmarks/serving.py as a module of its own name ('serving' is the repository's package): its
    Scenario, Server, run_hey and wait_ready for the other serving benchmarks."""
    import importlib.util
    import sys

    name = "serving_benchmark"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent / "serving.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module

"""Which code a benchmark result came from: every script in benchmarks/ records it the same way."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def git_state() -> tuple[str, bool]:
    """(HEAD commit, whether tracked files differ from it): the code a run starts with. The commit is
    "" outside a git checkout."""
    def git(*argv: str) -> str:
        return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    return git("rev-parse", "HEAD"), bool(git("status", "--porcelain", "--untracked-files=no"))

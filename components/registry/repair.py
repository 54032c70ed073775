"""Repair what a process killed outright left: kill -9, the out-of-memory killer or a lost machine run no
rollback, so its MLflow run stays RUNNING, the version it was registering stays `registration = in progress`,
and the Bento model (and maybe Bento) it had put into the local Bento store stays there — the store's newest
model, which `bentoml serve` without a model tag loads.

Every MLflow run the flows start (`tracked_run`) is tagged `behaviorflow.process = PID@HOST`
(registry.PROCESS_TAG) and, while its process lives, `behaviorflow.heartbeat` = the time, rewritten every
HEARTBEAT_S seconds by a thread of that process. At the start of each retrain and add-items,
`repair_interrupted` looks for RUNNING runs of the experiment that are over:
- a run whose process ran on this host and is no longer alive (known at once);
- a run of another host whose heartbeat is older than STALE_AFTER_S (a Kubernetes pod or a worker machine
  that was killed or lost: the next retrain runs on another host, which cannot ask whether the PID lives,
  but sees that nothing has beaten for that long). Hosts' clocks must agree to within a few minutes.
For each one it:

- marks the run FAILED, with the tag `interrupted` saying what was found;
- tags its versions whose registration did not finish `registration = interrupted: …` (they stay listed,
  INCOMPLETE, and are refused by predict, serve, bento pull, promote and add-items unless they have a Bento);
- removes from the local Bento store the Bentos and Bento models labelled with that run's id, except the
  Bento and model of a version of the run that does have its Bento (tag and archive: it is served, with a warning).

One WARNING line per repaired run says all of it. A run whose process is alive (another retrain beside this
one, or a PID the system has given to a new process) is never touched, nor a run of another host that is
still beating or that has no heartbeat (started by a version from before the heartbeat: which process may be
gone can only be known on the host it ran on).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from components import settings
from components.registry.registry import PROCESS_TAG, REGISTRATION_TAG, _client, _utc_now, has_bento, registration_state, this_process

log = logging.getLogger(__name__)

HEARTBEAT_TAG = "behaviorflow.heartbeat"  # on every MLflow run the flows start: UTC time of its process's last beat
HEARTBEAT_S = 60.0  # how often a live run's process rewrites HEARTBEAT_TAG
STALE_AFTER_S = 15 * 60.0  # a run of another host that has not beaten for this long is taken for dead: 15 missed
#   beats, and room for hosts' clocks to differ by minutes


@contextmanager
def tracked_run(run_name: str, heartbeat_s: float = HEARTBEAT_S) -> Iterator:
    """`mlflow.start_run(run_name)` tagged with this process (PROCESS_TAG) and kept beating (HEARTBEAT_TAG) for as
    long as the block runs, so that a retrain on another host can tell, if this process is killed, that the run
    is over (module docstring). Yields the active run."""
    import mlflow

    with mlflow.start_run(run_name=run_name, tags={PROCESS_TAG: this_process(), HEARTBEAT_TAG: _utc_now()}) as run:
        stop = threading.Event()
        beating = threading.Thread(target=_beat, args=(run.info.run_id, heartbeat_s, stop), name="behaviorflow-heartbeat", daemon=True)
        beating.start()
        try:
            yield run
        finally:
            stop.set()
            beating.join(timeout=10)


def _beat(run_id: str, every_s: float, stop: threading.Event) -> None:
    client, failing = _client(), False
    while not stop.wait(every_s):
        try:
            client.set_tag(run_id, HEARTBEAT_TAG, _utc_now())
            failing = False
        except Exception as exc:  # noqa: BLE001 - the run goes on; said once per stretch of failures
            if not failing:
                log.warning("could not record the heartbeat of MLflow run %s (%s); if this lasts %d minutes, a retrain on "
                            "another host will take this run for dead", run_id, exc, STALE_AFTER_S // 60)
            failing = True


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this host and is not a zombie (killed, waiting for its parent to reap it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # it ended just now (Linux), or there is no /proc to ask: os.kill found it
        return not Path("/proc").is_dir()
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def dead_owner(tags: dict, host: str | None = None) -> int | None:
    """The PID named by a run's PROCESS_TAG when it ran on this host and is no longer alive, else None."""
    pid, _, where = tags.get(PROCESS_TAG, "").partition("@")
    if where != (host or socket.gethostname()) or not pid.isdigit() or int(pid) == os.getpid():
        return None
    return None if pid_alive(int(pid)) else int(pid)


def stopped_beating(tags: dict, host: str | None = None, now: datetime | None = None, stale_after_s: float = STALE_AFTER_S) -> str | None:
    """Why a run of another host counts as over — its process's heartbeat is older than `stale_after_s` —
    else None (a run of this host, one still beating, or one with no heartbeat tag)."""
    pid, _, where = tags.get(PROCESS_TAG, "").partition("@")
    beat = tags.get(HEARTBEAT_TAG)
    if not where or where == (host or socket.gethostname()) or not beat:
        return None
    try:
        last = datetime.fromisoformat(beat)
    except ValueError:
        return None
    if last.tzinfo is None:  # written by hand without its offset: the tag holds UTC
        last = last.replace(tzinfo=timezone.utc)
    silent = ((now or datetime.now(timezone.utc)) - last).total_seconds()
    if silent <= stale_after_s:
        return None
    return f"process {pid} on {where} stopped beating at {beat}, {silent / 60:.0f} minutes before this check"


def repair_interrupted(experiment_id: str, stale_after_s: float = STALE_AFTER_S) -> list[str]:
    """Repair what every dead process of this host, and every process of another host that stopped beating
    `stale_after_s` ago, left in experiment `experiment_id` (module docstring); returns the WARNING lines it
    logged. A repair that fails is logged and skipped: it must not stop the run that found it."""
    client = _client()
    host = socket.gethostname()
    lines = []
    for run in _running_runs(client, experiment_id):
        pid = dead_owner(run.data.tags, host)
        what = f"process {pid} on {host} ended" if pid is not None else stopped_beating(run.data.tags, host, stale_after_s=stale_after_s)
        if what is None:
            continue
        try:
            lines.append(_repair_run(client, run.info.run_id, what))
        except Exception as exc:  # noqa: BLE001 - best effort, named
            log.warning("could not repair MLflow run %s (%s): %s", run.info.run_id, what, exc)
    return lines


def _running_runs(client, experiment_id: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def _repair_run(client, run_id: str, what: str) -> str:
    why = f"{what} without finishing this run (found at {_utc_now()} by process {this_process()})"
    marked, keep = [], set()
    for mv in client.search_model_versions(f"run_id = '{run_id}'"):
        state, finished = registration_state(mv.tags)
        if not finished and not state.startswith("interrupted"):
            client.set_model_version_tag(mv.name, mv.version, REGISTRATION_TAG, f"interrupted: {why}; it was {state}")
            marked.append(f"{mv.name}/{mv.version}")
        if finished or has_bento(client, mv):  # its Bento is served: keep it
            keep |= {mv.tags.get("bento_tag"), mv.tags.get("bento_model_tag")}
    removed = remove_from_store(run_id, keep)
    client.set_tag(run_id, "interrupted", why)
    client.set_terminated(run_id, status="FAILED")
    line = (f"repaired what an interrupted run left: MLflow run {run_id} marked FAILED ({why}); "
            f"{'versions marked registration=interrupted: ' + ', '.join(marked) if marked else 'no unfinished version'}; "
            f"{'removed from the local Bento store: ' + ', '.join(removed) if removed else 'nothing of it in the local Bento store'}")
    log.warning(line)
    return line


def remove_from_store(run_id: str, keep: set) -> list[str]:
    """Delete behaviorflow's Bentos (first) and Bento models in the local store that are labelled with `run_id`,
    except the tags in `keep`; returns what was removed. Nothing else in the store is touched."""
    import bentoml
    from bentoml.exceptions import NotFound

    removed = []
    for kind, store, name in (("Bento", bentoml.bentos, settings.BENTO_SERVICE_NAME), ("Bento model", bentoml.models, settings.BENTO_MODEL_NAME)):
        try:
            stored = store.list(name)
        except NotFound:  # none of that name
            continue
        for item in stored:
            tag = str(item.tag)
            if item.info.labels.get("run_id") == run_id and tag not in keep:
                store.delete(tag)
                removed.append(f"{kind} {tag}")
    return removed

"""Repair what a process killed outright left: kill -9, the out-of-memory killer or a lost machine run no
rollback, so its MLflow run stays RUNNING, the version it was registering stays `registration = in progress`,
and the Bento model (and maybe Bento) it had put into the local Bento store stays there — the store's newest
model, which `bentoml serve` without a model tag loads.

Every MLflow run the flows start (`tracked_run`) is tagged `behaviorflow.process = PID@HOST`
(registry.PROCESS_TAG) and, while its process lives, `behaviorflow.heartbeat` = the time, rewritten every
HEARTBEAT_S seconds by a thread of that process. At the start of each retrain and add-items,
`repair_interrupted` looks for RUNNING runs of the experiment that are over:
- a run whose process ran on this host and is no longer alive, or whose PID is another process's now (known
  at once). `behaviorflow.process_start` records the process's boot, PID namespace and start time (Linux), so
  that this holds only where the PID means the same process;
- a run of another host whose heartbeat is older than STALE_AFTER_S (a Kubernetes pod or a worker machine
  that was killed or lost: the next retrain runs on another host, which cannot ask whether the PID lives,
  but sees that nothing has beaten for that long), and likewise a run of this hostname from another boot or
  PID namespace (a container restarted under the same hostname — a pod's container after an out-of-memory
  kill, `docker restart` — whose new processes may well get the killed one's PID, or another container that
  shares the hostname). Hosts' clocks must agree to within a few minutes.
For each one it:

- marks the run FAILED, with the tag `interrupted` saying what was found;
- tags its versions whose registration did not finish `registration = interrupted: …` (they stay listed,
  INCOMPLETE, and are refused by predict, serve, bento pull, promote and add-items unless they have a Bento);
- removes from the local Bento store the Bentos and Bento models labelled with that run's id, except the
  Bento and model of a version of the run that does have its Bento (tag and archive: it is served, with a warning).

A run that has ended (KILLED, FAILED, even FINISHED) while a version it registered still says `in progress` had
its rollback cut short (a kill -9 during it or between it and the run's end): its versions
and Bento store entries are repaired the same way; the run keeps its status.

One WARNING line per repaired run says all of it. A run whose process is alive (another retrain beside this
one; or, for a run without `behaviorflow.process_start`, a PID the system has given to a new process) is never
touched, nor a run of another host that is still beating or that has no heartbeat (started by a version from
before the heartbeat: which process may be gone can only be known on the host it ran on).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from components import settings
from components.interrupts import describe, stopped_by
from components.registry.registry import INTERRUPTED_TAG, PROCESS_TAG, REGISTRATION_TAG, _client, _utc_now, has_bento, registration_state, this_process

log = logging.getLogger(__name__)

HEARTBEAT_TAG = "behaviorflow.heartbeat"  # on every MLflow run the flows start: UTC time of its process's last beat
PROCESS_START_TAG = "behaviorflow.process_start"  # "BOOT_ID/TICKS": the boot of its host, and when in it the process started
HEARTBEAT_S = 60.0  # how often a live run's process rewrites HEARTBEAT_TAG
STALE_AFTER_S = 15 * 60.0  # a run of another host that has not beaten for this long is taken for dead: 15 missed
#   beats, and room for hosts' clocks to differ by minutes


@contextmanager
def tracked_run(run_name: str, heartbeat_s: float = HEARTBEAT_S) -> Iterator:
    """`mlflow.start_run(run_name)` tagged with this process (PROCESS_TAG) and kept beating (HEARTBEAT_TAG) for as
    long as the block runs, so that a retrain on another host can tell, if this process is killed, that the run
    is over (module docstring). Yields the active run. Interrupted (Ctrl-C; SIGTERM or SIGHUP, as raised by
    components/interrupts.py or by Prefect's handler in a flow), the run ends KILLED with the tag `interrupted` saying
    by which signal and when; any other exception ends it FAILED, as mlflow.start_run does."""
    import mlflow

    tags = {PROCESS_TAG: this_process(), HEARTBEAT_TAG: _utc_now()}
    if (started := process_start()) is not None:
        tags[PROCESS_START_TAG] = started
    with mlflow.start_run(run_name=run_name, tags=tags) as run:
        stop = threading.Event()
        beating = threading.Thread(target=_beat, args=(run.info.run_id, heartbeat_s, stop), name="behaviorflow-heartbeat", daemon=True)
        beating.start()
        try:
            yield run
        except BaseException as exc:
            if (signum := stopped_by(exc)) is None:
                raise
            stop.set()  # first: the heartbeat must not read the tag below as a repair's (taken for dead)
            mlflow.set_tag(INTERRUPTED_TAG, f"by {describe(signum)} at {_utc_now()}")
            mlflow.end_run(status="KILLED")
            raise
        finally:
            stop.set()
            beating.join(timeout=10)
    client = _client()  # mlflow ended it FINISHED; a run taken for dead meanwhile stays FAILED, as the repair left it
    if client.get_run(run.info.run_id).data.tags.get(INTERRUPTED_TAG) is not None:
        client.set_terminated(run.info.run_id, status="FAILED")


def _beat(run_id: str, every_s: float, stop: threading.Event) -> None:
    client, failing = _client(), False
    while not stop.wait(every_s):
        try:
            if (why := client.get_run(run_id).data.tags.get(INTERRUPTED_TAG)) is not None:
                log.warning("MLflow run %s was taken for dead by another process while this one was paused or cut off (%s): it is "
                            "marked FAILED and will register nothing; stop it and run again", run_id, why)
                return  # said once; the registration refuses (registry.refuse_if_taken_for_dead)
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
    fields = _stat_fields(pid)
    if fields is None:  # it ended just now (Linux), or there is no /proc to ask: os.kill found it
        return not Path("/proc").is_dir()
    return fields[:1] != ["Z"]


def _stat_fields(pid: int | str) -> list[str] | None:
    """/proc/PID/stat from its third field (the state) on — what follows the command name's ')' —, or None where it
    cannot be read (the process has ended, or there is no /proc)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def _pid_space() -> str | None:
    """Where this process's PIDs mean something: "BOOT_ID/pid:[INODE]", its host's boot and its PID namespace (a
    container's own); None without /proc (not Linux)."""
    try:
        return f"{Path('/proc/sys/kernel/random/boot_id').read_text().strip()}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return None


def _start_ticks(pid: int | str) -> str | None:
    """When process `pid` started, in clock ticks since the boot (/proc/PID/stat field 22); None if it cannot be read."""
    fields = _stat_fields(pid)
    return fields[19] if fields is not None and len(fields) > 19 else None


def process_start(pid: int | str = "self") -> str | None:
    """PROCESS_START_TAG's value: which process `pid` (of this PID space) is, whatever gets its PID later —
    "BOOT_ID/pid:[INODE]/TICKS"; None where /proc cannot tell."""
    space, ticks = _pid_space(), _start_ticks(pid)
    return None if space is None or ticks is None else f"{space}/{ticks}"


def _pid_checkable(tags: dict, host: str | None = None) -> bool:
    """Whether the PID of a run's PROCESS_TAG can be looked up here: it ran on this host and, where the run records
    it (PROCESS_START_TAG), in this boot and PID namespace — not in a container since restarted under the same
    hostname, nor in another container that shares it, whose PIDs mean nothing here."""
    pid, _, where = tags.get(PROCESS_TAG, "").partition("@")
    if where != (host or socket.gethostname()) or not pid.isdigit():
        return False
    recorded = tags.get(PROCESS_START_TAG)
    return not recorded or recorded.rpartition("/")[0] == _pid_space()


def dead_owner(tags: dict, host: str | None = None) -> int | None:
    """The PID named by a run's PROCESS_TAG when it can be looked up here (`_pid_checkable`) and its process is no
    longer alive, or is another process now (its start differs from PROCESS_START_TAG's), else None."""
    if not _pid_checkable(tags, host):
        return None
    pid, recorded = int(tags[PROCESS_TAG].partition("@")[0]), tags.get(PROCESS_START_TAG)
    if recorded and (ticks := _start_ticks(pid)) is not None and ticks != recorded.rpartition("/")[2]:
        return pid  # the PID was given to a new process
    if pid == os.getpid():
        return None
    return None if pid_alive(pid) else pid


def stopped_beating(tags: dict, host: str | None = None, now: datetime | None = None, stale_after_s: float = STALE_AFTER_S) -> str | None:
    """Why a run whose PID cannot be looked up here (another host's; or this hostname's, from another boot or PID
    namespace) counts as over — its process's heartbeat is older than `stale_after_s` — else None (a run whose
    PID is checked instead, one still beating, or one with no heartbeat tag)."""
    pid, _, where = tags.get(PROCESS_TAG, "").partition("@")
    beat = tags.get(HEARTBEAT_TAG)
    if not where or _pid_checkable(tags, host) or not beat:
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
    for run_id, status in _ended_with_registration_open(client, experiment_id):
        what = f"it ended {status} while a registration of it was in progress (its rollback cut short)"
        try:
            lines.append(_repair_run(client, run_id, what, ended=True))
        except Exception as exc:  # noqa: BLE001 - best effort, named
            log.warning("could not repair the versions of MLflow run %s (%s): %s", run_id, what, exc)
    return lines


def _ended_with_registration_open(client, experiment_id: str) -> list[tuple[str, str]]:
    """(run id, status) of the runs of `experiment_id` that have ended while a version they registered still says
    `registration = in progress`. The run ends only after its registration finished or was rolled back
    (`registry.pending_version` inside `tracked_run`), so such a version is what a rollback cut short left: a
    kill -9 during it or between it and the run's end (a second Ctrl-C or SIGTERM is held until it has finished:
    `interrupts.held_signals`). Without this, the version kept
    its state for ever (the runs repaired above are RUNNING ones) and was listed as in progress."""
    try:
        versions = client.search_model_versions(f"tags.{REGISTRATION_TAG} LIKE 'in progress%'")
    except Exception as exc:  # noqa: BLE001 - a registry that cannot filter on tags: named, skipped
        log.warning("could not look for versions whose registration was left in progress: %s", exc)
        return []
    found = {}
    for mv in versions:
        run_id = mv.run_id or mv.tags.get("run_id")
        if not run_id or run_id in found:
            continue
        try:
            run = client.get_run(run_id)
        except Exception:  # noqa: BLE001 - a run this store no longer has: nothing to say which experiment it was
            continue
        if run.info.experiment_id == experiment_id and run.info.status != "RUNNING":
            found[run_id] = run.info.status
    return list(found.items())


def _running_runs(client, experiment_id: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def _repair_run(client, run_id: str, what: str, ended: bool = False) -> str:
    """Mark the unfinished versions of `run_id` interrupted and remove what it left in the local Bento store; then
    mark the run FAILED, unless it has `ended` already (its status and tags are then left as they are)."""
    why = (f"{what}{'' if ended else ' without finishing this run'} (found at {_utc_now()} by process {this_process()})")
    marked, keep = [], set()
    for mv in client.search_model_versions(f"run_id = '{run_id}'"):
        state, finished = registration_state(mv.tags)
        if not finished and not state.startswith("interrupted"):
            client.set_model_version_tag(mv.name, mv.version, REGISTRATION_TAG, f"interrupted: {why}; it was {state}")
            # a rollback cut short after finalize_version gave it aliases (searches do not return them)
            held = sorted(client.get_model_version(mv.name, mv.version).aliases or [])
            marked.append(f"{mv.name}/{mv.version}" + (f" (still holds {', '.join(held)}: point {'them' if len(held) > 1 else 'it'} at a "
                                                       f"servable version with `behaviorflow promote --alias`)" if held else ""))
        if finished or has_bento(client, mv):  # its Bento is served: keep it
            keep |= {mv.tags.get("bento_tag"), mv.tags.get("bento_model_tag")}
    removed = remove_from_store(run_id, keep)
    if not ended:
        client.set_tag(run_id, INTERRUPTED_TAG, why)
        client.set_terminated(run_id, status="FAILED")
    line = (f"repaired what an interrupted run left: MLflow run {run_id} {'' if ended else 'marked FAILED '}({why}); "
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


KEEP_RUN_FOLDERS_ENV = "BEHAVIORFLOW_KEEP_RUN_FOLDERS"  # local run folders kept (settings.runs_dir()); 0 = all
KEEP_RUN_FOLDERS_DEFAULT = 20


def keep_run_folders() -> int:
    """How many local run folders a new run leaves (KEEP_RUN_FOLDERS_ENV, else KEEP_RUN_FOLDERS_DEFAULT)."""
    return settings.count_from_env(KEEP_RUN_FOLDERS_ENV, KEEP_RUN_FOLDERS_DEFAULT, "run folders to keep (0 = keep all)")


def prune_run_folders(keep: int | None = None) -> list[str]:
    """Delete the local folders (settings.runs_dir() / RUN_ID) of all but the newest `keep` runs (keep_run_folders();
    0: none deleted), newest by the folder's last change; returns the run ids whose folders went. Each retrain left
    one for ever (the bundle, ONNX graphs, checkpoints and the .bento archive: ~20 MB on the sample, more on a real
    catalog), a copy of what its MLflow run's artifacts and the Bento store hold. Only folders of runs that this
    tracking store knows as ended are deleted: a run still RUNNING (another retrain beside this one), or one this
    store does not know (written with another MLFLOW_TRACKING_URI), keeps its folder. Best effort: never fatal."""
    keep = keep_run_folders() if keep is None else keep
    folders = sorted((p for p in settings.runs_dir().iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
    if keep <= 0 or len(folders) <= keep:
        return []
    client, removed = _client(), []
    for folder in folders[keep:]:
        try:
            if client.get_run(folder.name).info.status == "RUNNING":
                continue
        except Exception:  # noqa: BLE001 - not a run of this store (or the store cannot say): left alone
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder.name)
    if removed:
        log.info("removed %d local run folder%s beyond the newest %d (%s; their MLflow runs keep the artifacts): %s", len(removed),
                 "" if len(removed) == 1 else "s", keep, KEEP_RUN_FOLDERS_ENV, ", ".join(removed[:5]) + (" …" if len(removed) > 5 else ""))
    return removed

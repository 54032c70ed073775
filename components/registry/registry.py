"""MLflow registry operations for behaviorflow.

Every registered version carries the alias `challenger` when it is registered and `champion` once the
gate has passed (promotion = moving an alias; MLflow keeps no history of where an alias pointed, so
each version is tagged with what happened to it). Registration is all-or-nothing: if tagging or
aliasing fails, the new version is deleted and the aliases are put back where they were.

A process killed outright (kill -9, out of memory, a lost machine) runs no rollback: the version is
created with the tag `registration` = `in progress: PID … on HOST since …` and only `finalize_version`'s
last step sets it to `complete`, so what such a process left is visible (`behaviorflow versions`:
INCOMPLETE) and refused by the commands that use a version (`check_usable`); `components/registry/repair.py`
marks it `interrupted` on the next retrain or add-items.
"""

from __future__ import annotations

import logging
import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from components import settings
from components.errors import BehaviorflowError
from components.interrupts import held_signals, raise_if_stopped
from serving import contract

log = logging.getLogger(__name__)

BUNDLE_ARTIFACT = "bundle"  # the run artifact folder that holds the model bundle (flows/retrain.py logs it)
BENTO_ARTIFACT = "bento"  # the run artifact folder that holds the version's `.bento` archive (components/packaging/publish.py)
REGISTRATION_TAG = "registration"  # on every version: "in progress: PID … on HOST since …", then "complete" (or "interrupted: …")
REGISTRATION_COMPLETE = "complete"
PROCESS_TAG = "behaviorflow.process"  # on every MLflow run the flows start: "PID@HOST", what repair.py checks is alive
INTERRUPTED_TAG = "interrupted"  # on a run repair.py took for dead (marked FAILED: what it found, when, by whom), or
#   stopped by Ctrl-C, SIGTERM or SIGHUP (KILLED: by which signal, when)
OUTCOMES: list[tuple[str, str, str]] = []  # what this process's registrations came to, oldest first: (name, version,
#   "registered" | "rolled back"); the CLI's line for a stopped command says which (flows/cli.py: interrupted_line)


def this_process() -> str:
    """`PID@HOST` of this process: the value of PROCESS_TAG."""
    return f"{os.getpid()}@{socket.gethostname()}"


def _utc_now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def registration_in_progress() -> str:
    """The `registration` tag a version gets when it is created: who is registering it, where, since when."""
    return f"in progress: PID {os.getpid()} on {socket.gethostname()} since {_utc_now()}"


def refuse_if_taken_for_dead(client, run_id: str, version_tags: dict | None = None) -> None:
    """Raise if another process's repair (repair.py) has taken this run for dead — marked it FAILED and its unfinished
    version `interrupted` — while it ran: a process paused (SIGSTOP, a suspended VM or laptop) or cut off from the
    tracking server for longer than the heartbeat allows, then resumed. Its registration must not go on: the repair
    may have removed its Bento from the store, and serve and pull refuse an interrupted version. `version_tags`: the
    tags of the version it is registering, if any."""
    why = client.get_run(run_id).data.tags.get(INTERRUPTED_TAG)
    if why is None and version_tags is not None:
        state = version_tags.get(REGISTRATION_TAG, "")
        why = state.removeprefix("interrupted: ") if state.startswith("interrupted") else None
    if why is not None:
        raise BehaviorflowError(
            f"MLflow run {run_id} was taken for dead while it ran, so it registers nothing: {why}. A run whose heartbeat "
            "stops for 15 minutes (a paused process, a suspended machine, no contact with the tracking server) is taken "
            "for dead by the next retrain or add-items. Run it again.")


def registration_state(tags: dict) -> tuple[str, bool]:
    """(what the version's `registration` tag says, whether its registration finished). A version registered
    before the tag existed has none: it counts as finished when it has its `bento_tag` (the last thing the
    registration of those days wrote before the aliases)."""
    state = tags.get(REGISTRATION_TAG)
    if state is None:
        if tags.get("bento_tag"):
            return "complete (registered before registration states were recorded)", True
        return "not recorded (registered before registration states were), and no bento_tag", False
    return state, state == REGISTRATION_COMPLETE


@dataclass
class ChampionInfo:
    version: str
    run_id: str
    bundle_dir: Path  # the champion's model bundle, downloaded (serving/contract.py layout)
    tags: dict


_REACHED: set[str] = set()  # tracking servers this process has reached


def check_reachable(uri: str | None = None, timeout_s: float = 10.0) -> None:
    """Fail at once, in one line, when the MLflow tracking server cannot be reached: MLflow itself retries
    a refused connection for minutes and then ends in a traceback. Local stores (sqlite:, file:) pass."""
    import ssl
    import urllib.error
    import urllib.request

    uri = uri or settings.tracking_uri()
    if not uri.startswith(("http://", "https://")) or uri in _REACHED:
        return
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s).close()
    except urllib.error.HTTPError:
        pass  # it answered: a proxy or an older server without /health; MLflow's own calls decide
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, ssl.SSLError):  # it answered, with TLS this probe does not share (MLflow's CA and
            return  # MLFLOW_TRACKING_INSECURE_TLS settings): MLflow's own calls decide
        raise BehaviorflowError(
            f"cannot reach the MLflow tracking server at {uri} ({reason}): start it, or point MLFLOW_TRACKING_URI at "
            f"one that runs (unset, behaviorflow uses a local SQLite store in {settings.home()})"
        ) from None
    _REACHED.add(uri)


def configure(experiment: str = settings.EXPERIMENT_NAME) -> str:
    """Point MLflow at the tracking URI and make sure the experiment exists; return its id."""
    import mlflow

    check_reachable()
    mlflow.set_tracking_uri(settings.tracking_uri())
    found = mlflow.get_experiment_by_name(experiment)
    if found is not None:
        experiment_id = found.experiment_id
    elif settings.tracking_uri().startswith("sqlite:"):
        # A local SQLite store keeps artifacts in the state folder; a server uses its own artifact root.
        experiment_id = mlflow.create_experiment(experiment, artifact_location=settings.artifact_root())
    else:
        experiment_id = mlflow.create_experiment(experiment)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def _client():
    from mlflow import MlflowClient

    check_reachable()
    return MlflowClient(tracking_uri=settings.tracking_uri())


def _alias_version(client, alias: str, name: str = settings.REGISTERED_MODEL_NAME) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def find_champion(download_to: Path, name: str = settings.REGISTERED_MODEL_NAME) -> ChampionInfo | None:
    """The current champion and its bundle, or None on the first run."""
    client = _client()
    version = _alias_version(client, settings.CHAMPION_ALIAS, name)
    if version is None:
        return None
    mv = client.get_model_version(name, version)
    return ChampionInfo(version=str(version), run_id=mv.run_id, bundle_dir=download_bundle(mv, download_to), tags=dict(mv.tags))


@dataclass(frozen=True)
class ModelRef:
    """A registered model version, named the way people write it: `NAME@ALIAS` or `NAME/VERSION`."""

    name: str  # the registered model's name
    alias: str | None = None  # e.g. "champion"; exactly one of alias and version is set
    version: str | None = None  # e.g. "3"

    @classmethod
    def parse(cls, text: str) -> "ModelRef":
        example = f"e.g. {settings.REGISTERED_MODEL_NAME}@{settings.CHAMPION_ALIAS} or {settings.REGISTERED_MODEL_NAME}/1"
        name, sep, rest = text.rpartition("@") if "@" in text else text.rpartition("/")
        if not sep or not name or not rest:
            raise BehaviorflowError(f"model {text!r}: expected NAME@ALIAS or NAME/VERSION ({example})")
        if sep == "@":
            return cls(name=name, alias=rest)
        if not rest.isdigit():
            raise BehaviorflowError(f"model {text!r}: the version after '/' must be a number ({example})")
        return cls(name=name, version=rest)

    def __str__(self) -> str:
        return f"{self.name}@{self.alias}" if self.alias is not None else f"{self.name}/{self.version}"


def _registered_model(client, name: str):
    """The RegisteredModel `name`; a BehaviorflowError listing the registered ones when there is none."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException:
        names = sorted(m.name for m in client.search_registered_models(max_results=1000))
        listed = ", ".join(names) if names else "none — run 'behaviorflow retrain' first"
        raise BehaviorflowError(f"no registered model '{name}' in {settings.tracking_uri()}; registered models: {listed}") from None


def resolve_version(ref: ModelRef):
    """The ModelVersion `ref` names; a BehaviorflowError naming what exists when there is none."""
    from mlflow.exceptions import MlflowException

    client = _client()
    where = settings.tracking_uri()
    model = _registered_model(client, ref.name)
    if ref.alias is not None:
        aliases = dict(model.aliases or {})
        if ref.alias not in aliases:
            listed = ", ".join(f"@{a} = version {v}" for a, v in sorted(aliases.items())) or "none"
            raise BehaviorflowError(f"model '{ref.name}' has no alias '{ref.alias}' in {where}; its aliases: {listed}")
        version = str(aliases[ref.alias])
    else:
        version = str(ref.version)
    try:
        return client.get_model_version(ref.name, version)
    except MlflowException:
        versions = sorted((str(v.version) for v in client.search_model_versions(f"name='{ref.name}'")), key=int)
        raise BehaviorflowError(
            f"model '{ref.name}' has no version {version} in {where}; its versions: {', '.join(versions) or 'none'}"
        ) from None


def _where(model_version) -> str:
    return f"model '{model_version.name}' version {model_version.version} (MLflow run {model_version.run_id})"


def _download(model_version, artifact_path: str, download_to: Path) -> Path:
    """One artifact of `model_version`'s run, downloaded; MlflowException or OSError when it cannot be."""
    import mlflow

    return Path(mlflow.artifacts.download_artifacts(
        run_id=model_version.run_id, artifact_path=artifact_path, dst_path=str(download_to), tracking_uri=settings.tracking_uri()
    ))


def items_lacking(bundle_dir: Path, catalog: set[str]) -> list[str]:
    """The item ids the bundle in `bundle_dir` serves and `catalog` lacks, sorted: what a version with that catalog
    would no longer recommend once it replaces the bundle's version (retrain and add-items warn of them)."""
    return sorted(set(contract.Bundle(bundle_dir, load_users=False).item_ids) - catalog)


def download_bundle(model_version, download_to: Path) -> Path:
    """Download the model bundle (serving/contract.py layout) that `model_version`'s run logged as `bundle/`,
    and record in the downloaded manifest which registered version it is (`model_name`, `registry_version`,
    `run_id`, as packaging records them in the Bento model): the run logs the bundle before the version
    exists, so the artifact's own manifest cannot name it. The shadow log names a challenger bundle by these
    (NAME/VERSION), not by the folder it was downloaded to."""
    import json

    from mlflow.exceptions import MlflowException

    where = _where(model_version)
    try:
        path = _download(model_version, BUNDLE_ARTIFACT, download_to)
    except (MlflowException, OSError) as exc:
        raise BehaviorflowError(f"{where}: cannot download its '{BUNDLE_ARTIFACT}' artifact ({exc}); was it registered by 'behaviorflow retrain'?") from exc
    if not (path / contract.MANIFEST_FILE).is_file():
        raise BehaviorflowError(f"{where}: its '{BUNDLE_ARTIFACT}' artifact has no {contract.MANIFEST_FILE}; was it registered by 'behaviorflow retrain'?")
    manifest_path = path / contract.MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text())
    manifest |= {"model_name": model_version.name, "registry_version": str(model_version.version), "run_id": model_version.run_id}
    manifest_path.write_text(json.dumps(manifest, indent=2))
    return path


def download_checkpoint(model_version, download_to: Path) -> Path:
    """Download the torch checkpoint (`torch/model.pt`) that `model_version`'s run logged: the trained weights
    that `behaviorflow add-items` extends with new items."""
    from mlflow.exceptions import MlflowException

    from components.catalog import CHECKPOINT_ARTIFACT, CHECKPOINT_FILE

    try:
        return _download(model_version, f"{CHECKPOINT_ARTIFACT}/{CHECKPOINT_FILE}", download_to)
    except (MlflowException, OSError):
        raise BehaviorflowError(
            f"{_where(model_version)} has no torch checkpoint ({CHECKPOINT_ARTIFACT}/{CHECKPOINT_FILE}): it was registered before "
            "checkpoints were kept with each run. Retrain once ('behaviorflow retrain'), then add items to that version."
        ) from None


@contextmanager
def pending_version(model_uri: str, run_id: str, name: str = settings.REGISTERED_MODEL_NAME) -> Iterator[str]:
    """Register `model_uri` as a new version for the duration of the block; if the block raises, the
    version is deleted and the aliases it had taken are put back, so a failed packaging step leaves no trace.
    Only aliases that still point at this version are touched: a run beside this one (another deployment)
    may have moved them meanwhile, and its promotion stands."""
    import mlflow

    client = _client()
    raise_if_stopped()  # a stop signal whose interrupt was swallowed on the way here registers nothing (components/interrupts.py)
    refuse_if_taken_for_dead(client, run_id)
    previous = {alias: _alias_version(client, alias, name) for alias in (settings.CHALLENGER_ALIAS, settings.CHAMPION_ALIAS)}
    # The version and its `registration` tag are written in one transaction: no moment without the tag.
    version = str(mlflow.register_model(model_uri, name, tags={"run_id": run_id, REGISTRATION_TAG: registration_in_progress()}).version)
    try:
        yield version
    except BaseException:
        log.error("registration of version %s did not complete; removing it and restoring the aliases", version)
        with held_signals("the registration's rollback"):  # a second Ctrl-C must not cut it short
            taken = [alias for alias in previous if _alias_version(client, alias, name) == version]
            client.delete_model_version(name, version)  # MLflow drops the aliases that pointed at it
            for alias in taken:
                if previous[alias] is not None:
                    client.set_registered_model_alias(name, alias, previous[alias])
            OUTCOMES.append((name, version, "rolled back"))
        raise
    OUTCOMES.append((name, version, "registered"))


ANY_CHAMPION = object()  # finalize_version's gated_against when the promotion does not rest on a comparison


def finalize_version(version: str, tags: dict[str, str], promote: bool, name: str = settings.REGISTERED_MODEL_NAME,
                     gated_against: object = ANY_CHAMPION) -> tuple[list[str], str | None]:
    """Tag the version, give it `challenger`, and `champion` if `promote` — and, when `gated_against` names
    the champion version the gate compared with (None: there was none), only if that is still the champion:
    a retrain that ran beside another one must not replace a champion it was never compared with. The last
    step sets its `registration` tag to `complete`. Returns (the aliases set, why `champion` was not moved or None)."""
    client = _client()
    raise_if_stopped()  # inside pending_version: the version is rolled back
    registering = client.get_model_version(name, version)
    refuse_if_taken_for_dead(client, registering.run_id, registering.tags)
    previous_champion = _alias_version(client, settings.CHAMPION_ALIAS, name)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value))
    client.set_registered_model_alias(name, settings.CHALLENGER_ALIAS, version)
    aliases = [settings.CHALLENGER_ALIAS]
    held = None
    if promote and gated_against is not ANY_CHAMPION and previous_champion != gated_against:
        was = f"v{gated_against}" if gated_against else "no champion"
        held = (f"not promoted: the gate compared with {was}, but the champion is now v{previous_champion} (another run "
                f"promoted it meanwhile); re-run to gate against it, or move the alias by hand")
        client.set_model_version_tag(name, version, "not_promoted", held)
        log.warning("version %s %s", version, held)
        promote = False
    if promote:
        client.set_registered_model_alias(name, settings.CHAMPION_ALIAS, version)
        client.set_model_version_tag(name, version, "promoted", "true")
        if previous_champion and previous_champion != version:
            client.set_model_version_tag(name, previous_champion, "replaced_by", version)
        aliases.append(settings.CHAMPION_ALIAS)
    client.set_model_version_tag(name, version, REGISTRATION_TAG, REGISTRATION_COMPLETE)  # last: everything above is done
    return aliases, held


MODEL_DESCRIPTION = (  # the registered model's own description, written with its first version's (describe_version)
    "Next-item recommender trained by behaviorflow (a text-aware transformer over each user's history).\n\n"
    "- `@champion`: the version served by default (`behaviorflow serve`, `behaviorflow bento pull`): a retrain's whose gate "
    "passed, or one promoted by hand (`behaviorflow promote`, `add-items --promote`).\n"
    "- `@challenger`: the newest registered version (a retrain's, or `add-items`').\n\n"
    "Each version's description is its run's summary: test metrics against the id-only baseline, popularity and the "
    "champion, the gate's reasons, the Bento. Its tags: `registration` (complete, in progress, interrupted), `gate`, "
    "`data_fingerprint`, `bento_tag`.")


def describe_version(version: str, description: str, name: str = settings.REGISTERED_MODEL_NAME) -> None:
    """Write `description` (Markdown: the run's summary) as the version's description, which the MLflow UI shows on
    the version's page, and MODEL_DESCRIPTION as the registered model's where it has none; a failure to write it is logged, never fatal (the version is registered)."""
    try:
        client = _client()
        client.update_model_version(name, version, description=description)
        if not client.get_registered_model(name).description:
            client.update_registered_model(name, description=MODEL_DESCRIPTION)
    except Exception as exc:  # noqa: BLE001 - a description is not worth a failed run
        log.warning("could not write the description of %s version %s: %s", name, version, exc)


def bento_archives(client, model_version) -> list[str]:
    """The `.bento` archives `model_version`'s run logged (exactly one for a completely registered version)."""
    return [a.path for a in client.list_artifacts(model_version.run_id, BENTO_ARTIFACT) if a.path.endswith(".bento")]


def has_bento(client, model_version) -> bool:
    """The version can be served: its `bento_tag` tag and exactly one `.bento` archive with its run."""
    from mlflow.exceptions import MlflowException

    if not model_version.tags.get("bento_tag"):
        return False
    try:
        return len(bento_archives(client, model_version)) == 1
    except (MlflowException, OSError):
        return False


def check_usable(model_version, command: str, warn: bool = True) -> None:
    """Refuse, in one line, a version whose registration did not complete and that has no Bento (what a
    process killed while registering leaves: a version with no model the service could load); let one that
    does have its Bento through, with a warning (unless `warn` is false: a pre-check the flow repeats). `command`
    names what was refused (e.g. "predict")."""
    state, finished = registration_state(model_version.tags)
    if finished:
        return
    where = f"model '{model_version.name}' version {model_version.version}"
    if has_bento(_client(), model_version):
        if warn:
            log.warning("%s: its registration did not complete (%s), but its Bento %s is there: %s uses it", where, state,
                        model_version.tags["bento_tag"], command)
        return
    raise BehaviorflowError(
        f"{where} is INCOMPLETE (registration {state}) and has no Bento: {command} refused; pick another version "
        f"('behaviorflow versions' lists them) or run 'behaviorflow retrain', which marks and cleans up what an interrupted run left "
        f"and registers a new version"
    )


@dataclass(frozen=True)
class AliasMove:
    name: str  # the registered model
    alias: str  # the alias moved (champion or challenger)
    version: str  # where it points now
    previous: str | None  # where it pointed before (None: nowhere)

    @property
    def changed(self) -> bool:
        return self.previous != self.version


def set_alias_by_hand(ref: ModelRef, alias: str = settings.CHAMPION_ALIAS, reason: str = "") -> AliasMove:
    """Point `alias` at the version `ref` names, by a person's decision: a roll-back to an earlier champion, or
    a challenger that won its shadow test. The version must be servable (its Bento tag and `.bento` archive,
    which `serve` and `bento pull` fetch), else nothing moves. The version is tagged with who moved what from
    where (`<alias>_set_by_hand`: MLflow keeps no history of an alias), and a replaced champion with
    `replaced_by`, as the gate's promotions are."""
    from datetime import datetime, timezone

    if alias not in (settings.CHAMPION_ALIAS, settings.CHALLENGER_ALIAS):
        raise BehaviorflowError(f"alias {alias!r}: behaviorflow moves '{settings.CHAMPION_ALIAS}' or '{settings.CHALLENGER_ALIAS}'")
    mv = resolve_version(ref)
    name, version = mv.name, str(mv.version)
    client = _client()
    check_usable(mv, f"promote to @{alias}")
    if not has_bento(client, mv):
        raise BehaviorflowError(f"{_where(mv)} is not servable: it has no Bento (tag 'bento_tag' and one .bento archive under "
                                f"'{BENTO_ARTIFACT}/'), so '{alias}' was not moved; pick a version that 'behaviorflow versions' lists with a Bento")
    previous = _alias_version(client, alias, name)
    if previous == version:
        return AliasMove(name, alias, version, previous)
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    record = f"{'from version ' + previous if previous else 'first'} at {when}" + (f": {reason}" if reason else "")
    client.set_registered_model_alias(name, alias, version)
    client.set_model_version_tag(name, version, f"{alias}_set_by_hand", record)
    if alias == settings.CHAMPION_ALIAS:
        client.set_model_version_tag(name, version, "promoted", "true")
        if previous:
            client.set_model_version_tag(name, previous, "replaced_by", version)
    log.info("%s: @%s moved from %s to version %s", name, alias, f"version {previous}" if previous else "nowhere", version)
    return AliasMove(name, alias, version, previous)


def list_versions(name: str = settings.REGISTERED_MODEL_NAME) -> list[dict]:
    """Every registered version of `name`, newest first: aliases, when, test NDCG@10 / HR@10 of its run
    (None for versions that were not evaluated, e.g. items added without retraining), the gate or
    add-items record, the data fingerprint, the Bento tag and the registration state (`complete`: whether it finished)."""
    from datetime import datetime, timezone

    from mlflow.exceptions import MlflowException

    client = _client()
    model = _registered_model(client, name)
    aliases: dict[str, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        aliases.setdefault(str(version), []).append(alias)
    rows = []
    for mv in sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: -int(v.version)):
        try:
            metrics = client.get_run(mv.run_id).data.metrics
        except MlflowException:  # the run was deleted: the version still serves
            metrics = {}
        state, finished = registration_state(mv.tags)
        rows.append({
            "version": str(mv.version),
            "aliases": sorted(aliases.get(str(mv.version), [])),
            "created_at": datetime.fromtimestamp(mv.creation_timestamp / 1000, timezone.utc).isoformat(timespec="seconds"),
            "NDCG@10": metrics.get("NDCG_at_10"),
            "HR@10": metrics.get("HR_at_10"),
            "gate": mv.tags.get("gate", ""),
            "added_items_to": mv.tags.get("added_items_to"),
            "data_fingerprint": mv.tags.get("data_fingerprint"),
            "bento_tag": mv.tags.get("bento_tag"),
            "set_by_hand": {a: mv.tags[f"{a}_set_by_hand"] for a in (settings.CHAMPION_ALIAS, settings.CHALLENGER_ALIAS) if f"{a}_set_by_hand" in mv.tags},
            "run_id": mv.run_id,
            "registration": state,
            "complete": finished,
        })
    return rows


def version_by_alias(alias: str, name: str = settings.REGISTERED_MODEL_NAME):
    """The ModelVersion that `alias` points to, or None."""
    client = _client()
    version = _alias_version(client, alias, name)
    return None if version is None else client.get_model_version(name, version)

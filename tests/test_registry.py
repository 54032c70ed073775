"""All-or-nothing registration against a real MLflow SQLite store."""

from __future__ import annotations

import json
import os

import mlflow
import pytest
from mlflow import MlflowClient

from components import registry, settings
from components.registry.tracking import log_onnx_model
from tests.tiny_bundle import make_tiny_bundle

NAME = "registry-test-model"


@pytest.fixture()
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    registry.configure(experiment="registry-test")
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    bundle = make_tiny_bundle(tmp_path / "bundle", n_items=5, dim=4)
    with mlflow.start_run() as run:
        uri = log_onnx_model(bundle / "model.onnx", {})
    return client, uri, run.info.run_id


def test_pending_version_then_finalize_sets_tags_and_aliases(store):
    client, uri, run_id = store
    with registry.pending_version(uri, run_id, name=NAME) as v1:
        aliases, held = registry.finalize_version(v1, {"bento_tag": "b:1"}, promote=True, name=NAME)
    assert (aliases, held) == (["challenger", "champion"], None)
    with registry.pending_version(uri, run_id, name=NAME) as v2:
        registry.finalize_version(v2, {"bento_tag": "b:2"}, promote=False, name=NAME)
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == v1 == "1"
    assert str(client.get_model_version_by_alias(NAME, "challenger").version) == v2 == "2"
    assert client.get_model_version(NAME, v2).tags["bento_tag"] == "b:2"
    assert registry.version_by_alias("champion", name=NAME).tags["promoted"] == "true"


def test_a_failure_inside_the_block_deletes_the_version_and_restores_aliases(store):
    client, uri, run_id = store
    with registry.pending_version(uri, run_id, name=NAME) as v1:
        registry.finalize_version(v1, {}, promote=True, name=NAME)
    with pytest.raises(RuntimeError, match="bento build failed"):
        with registry.pending_version(uri, run_id, name=NAME) as v2:
            registry.finalize_version(v2, {}, promote=True, name=NAME)  # aliases already moved to v2 ...
            raise RuntimeError("bento build failed")  # ... then packaging fails
    assert [str(v.version) for v in client.search_model_versions(f"name='{NAME}'")] == ["1"]
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
    assert str(client.get_model_version_by_alias(NAME, "challenger").version) == "1"


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_a_second_interrupt_during_the_rollback_waits_for_it(store, monkeypatch, capfd, signum):
    """The first Ctrl-C starts the rollback; a second one during it (or the SIGTERM of a pod being deleted) cut it
    short, leaving the version `in progress` and the aliases on it. Now it is held until the rollback is done."""
    import signal

    client, uri, run_id = store
    with registry.pending_version(uri, run_id, name=NAME) as v1:
        registry.finalize_version(v1, {}, promote=True, name=NAME)
    real_delete, seen = MlflowClient.delete_model_version, []

    def delete_after_a_signal(self, name, version):
        seen.append(version)
        signal.raise_signal(getattr(signal, signum))  # arrives in the middle of the rollback
        return real_delete(self, name, version)

    monkeypatch.setattr(MlflowClient, "delete_model_version", delete_after_a_signal)
    caught = []

    def on_sigterm(*_):  # what a retrain does on SIGTERM: end as interrupted
        caught.append("SIGTERM")
        raise SystemExit(143)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        with pytest.raises(KeyboardInterrupt if signum == "SIGINT" else SystemExit):
            with registry.pending_version(uri, run_id, name=NAME) as v2:
                registry.finalize_version(v2, {}, promote=True, name=NAME)
                raise KeyboardInterrupt  # the first Ctrl-C
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert seen == ["2"] and caught == ([] if signum == "SIGINT" else ["SIGTERM"])  # delivered once, after the rollback
    assert [str(v.version) for v in client.search_model_versions(f"name='{NAME}'")] == ["1"]
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
    assert str(client.get_model_version_by_alias(NAME, "challenger").version) == "1"
    assert capfd.readouterr().err.count(f"{signum} held until the registration's rollback has finished") == 1


def test_each_registration_records_what_it_came_to_for_the_stop_line(store):
    """A stopped command's last line says what became of its registrations (flows/cli.py: interrupted_line): before,
    it said "a registration in progress was rolled back" also when the stop came before any, or after one completed."""
    from components.registry.registry import OUTCOMES
    from flows.cli import interrupted_line

    client, uri, run_id = store
    mark = len(OUTCOMES)
    with registry.pending_version(uri, run_id, name=NAME) as v1:
        registry.finalize_version(v1, {}, promote=True, name=NAME)
    with pytest.raises(KeyboardInterrupt):
        with registry.pending_version(uri, run_id, name=NAME) as v2:
            raise KeyboardInterrupt
    assert OUTCOMES[mark:] == [(NAME, "1", "registered"), (NAME, "2", "rolled back")] and v2 == "2"
    assert [str(v.version) for v in client.search_model_versions(f"name='{NAME}'")] == ["1"]
    import signal

    assert interrupted_line("retrain", signal.SIGTERM, OUTCOMES[mark:]) == (
        f"interrupted: retrain stopped by SIGTERM; the registration of {NAME} version 2 was rolled back (nothing "
        f"half-registered); {NAME} version 1 was registered completely before the stop and stays registered")
    assert interrupted_line("add-items", signal.SIGINT, OUTCOMES[mark:mark + 1]) == (
        f"interrupted: add-items stopped; {NAME} version 1 was registered completely before the stop and stays registered")
    assert interrupted_line("retrain", signal.SIGHUP, []) == "interrupted: retrain stopped by SIGHUP before registering anything (nothing was registered)"
    assert interrupted_line("predict", signal.SIGINT, []) == "interrupted: predict stopped"  # Ctrl-C; it never registers


def test_a_failed_registration_leaves_aliases_another_run_moved_meanwhile(store):
    client, uri, run_id = store
    with registry.pending_version(uri, run_id, name=NAME) as v1:
        registry.finalize_version(v1, {}, promote=True, name=NAME)
    # Two deployments' runs overlap: A opens v2; B registers v3 and promotes it; then A's packaging fails.
    with pytest.raises(RuntimeError, match="packaging of A failed"):
        with registry.pending_version(uri, run_id, name=NAME) as v2:
            with registry.pending_version(uri, run_id, name=NAME) as v3:
                registry.finalize_version(v3, {}, promote=True, name=NAME, gated_against="1")
            raise RuntimeError("packaging of A failed")
    assert sorted(str(v.version) for v in client.search_model_versions(f"name='{NAME}'")) == ["1", "3"] and v2 == "2"
    assert alias_of(client, "champion") == alias_of(client, "challenger") == "3"  # B's promotion stands


def test_a_failed_first_registration_leaves_no_alias(store):
    client, uri, run_id = store
    with pytest.raises(RuntimeError):
        with registry.pending_version(uri, run_id, name=NAME) as v1:
            registry.finalize_version(v1, {}, promote=True, name=NAME)
            raise RuntimeError("bento build failed")
    assert not client.search_model_versions(f"name='{NAME}'") and client.get_registered_model(NAME).aliases == {}


def alias_of(client, name: str) -> str:
    return str(client.get_model_version_by_alias(NAME, name).version)


def test_no_champion_on_first_run(store, tmp_path):
    assert registry.find_champion(tmp_path, name=NAME) is None
    assert registry.version_by_alias(settings.CHAMPION_ALIAS, name=NAME) is None


def test_a_run_promotes_only_over_the_champion_its_gate_compared_with(store):
    """Two retrains side by side: both gated against v1; the first to register replaces v1, the second
    must not replace that one (it was never compared with it): it stays challenger, and says why."""
    client, uri, run_id = store
    with registry.pending_version(uri, run_id, name=NAME) as v1:
        registry.finalize_version(v1, {}, promote=True, name=NAME, gated_against=None)  # first run: no champion
    with registry.pending_version(uri, run_id, name=NAME) as v2:
        assert registry.finalize_version(v2, {}, promote=True, name=NAME, gated_against=v1) == (["challenger", "champion"], None)
    with registry.pending_version(uri, run_id, name=NAME) as v3:
        aliases, held = registry.finalize_version(v3, {}, promote=True, name=NAME, gated_against=v1)
    assert aliases == ["challenger"] and held.startswith("not promoted: the gate compared with v1, but the champion is now v2")
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == v2 == "2"
    assert client.get_model_version(NAME, v3).tags["not_promoted"] == held
    assert "replaced_by" not in client.get_model_version(NAME, v2).tags


def test_an_unreachable_tracking_server_is_one_line_at_once(monkeypatch):
    import socket
    import time

    from components.errors import BehaviorflowError

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    started = time.monotonic()
    with pytest.raises(BehaviorflowError, match=rf"cannot reach the MLflow tracking server at {uri} \(.*refused.*\): start it"):
        registry.list_versions(NAME)
    assert time.monotonic() - started < 10  # MLflow's own retries took minutes


def test_a_failed_registration_also_leaves_nothing_in_the_bento_store(store, tmp_path, monkeypatch):
    """Rolled back, the version is gone from the registry and its Bento model from the local store (left
    there, an unregistered model would be the newest, which `bentoml serve` without a tag loads)."""
    import bentoml

    from components.packaging import package, publish

    client, uri, run_id = store
    bundle = make_tiny_bundle(tmp_path / "bundle2", n_items=5, dim=4)
    saved, save = [], package.save_bundle_to_store

    def save_then_remember(*args, **kwargs):
        saved.append(save(*args, **kwargs))
        return saved[-1]

    def failing_build(*args, **kwargs):
        raise RuntimeError("bento build failed")

    monkeypatch.setattr(package, "save_bundle_to_store", save_then_remember)
    monkeypatch.setattr(package, "build_bento", failing_build)
    with mlflow.start_run(run_id=run_id), pytest.raises(RuntimeError, match="bento build failed"):
        publish.package_and_register(bundle, tmp_path, "fp", {}, promote=True, name=NAME)
    assert saved and saved[0] not in {str(m.tag) for m in bentoml.models.list()}
    assert client.search_model_versions(f"name='{NAME}'") == []


def test_promote_by_hand_moves_an_alias_only_to_a_servable_version_and_records_it(store, tmp_path, capsys):
    from flows.cli import main

    client, uri, run_id = store
    archive = tmp_path / "model.bento"
    archive.write_bytes(b"an archive")  # promote checks that the version has one; pulling it is tests/test_pull.py
    with mlflow.start_run() as servable:
        mlflow.log_artifact(str(archive), artifact_path=registry.BENTO_ARTIFACT)
        servable_uri = log_onnx_model(make_tiny_bundle(tmp_path / "b2", n_items=5, dim=4) / "model.onnx", {})
    for promote in (True, False):  # v1 champion, v2 challenger: both with their Bento
        with registry.pending_version(servable_uri, servable.info.run_id, name=NAME) as version:
            registry.finalize_version(version, {"bento_tag": f"b:{version}"}, promote=promote, name=NAME)
    with registry.pending_version(uri, run_id, name=NAME) as v3:  # v3: tagged, but its run has no archive
        registry.finalize_version(v3, {"bento_tag": "b:3"}, promote=False, name=NAME)

    def promote(*args: str) -> tuple[int, str, str]:
        code = main(["promote", *args])
        out = capsys.readouterr()
        return code, out.out, out.err

    def champion() -> str:
        return str(client.get_model_version_by_alias(NAME, "champion").version)

    code, _, err = promote("--model", f"{NAME}/3")
    assert code == 2 and "version 3 (MLflow run" in err and "is not servable: it has no Bento" in err and champion() == "1"
    code, _, err = promote("--model", f"{NAME}/9")
    assert code == 2 and "has no version 9" in err and "its versions: 1, 2, 3" in err

    code, out, err = promote("--model", f"{NAME}/2", "--alias", "challenger")  # the challenger back on a servable version
    assert code == 0 and out.startswith(f"{NAME}: @challenger moved from version 3 to version 2\n"), err
    code, out, err = promote("--model", f"{NAME}@challenger", "--reason", "won its shadow test")
    assert code == 0 and out.startswith(f"{NAME}: @champion moved from version 1 to version 2\n") and champion() == "2", err
    record = client.get_model_version(NAME, "2").tags["champion_set_by_hand"]
    assert record.startswith("from version 1 at 20") and record.endswith(": won its shadow test")
    assert client.get_model_version(NAME, "1").tags["replaced_by"] == "2" and client.get_model_version(NAME, "2").tags["promoted"] == "true"
    code, out, _ = promote("--model", f"{NAME}@champion")
    assert code == 0 and out.strip() == f"{NAME}: @champion already points to version 2; nothing changed"

    code, out, _ = promote("--model", f"{NAME}/1")  # the roll-back
    assert code == 0 and "moved from version 2 to version 1" in out and champion() == "1"
    assert str(client.get_model_version_by_alias(NAME, "challenger").version) == "2"  # only the named alias moved
    assert main(["versions", "--model", NAME]) == 0
    listed = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:]}
    assert "@champion set by hand from version 2 at" in listed["1"] and "@champion set by hand from version 1 at" in listed["2"]


def test_a_downloaded_bundle_names_its_registered_version_and_the_shadow_log_uses_it(store, tmp_path, monkeypatch):
    """The run logs its bundle before the version exists (flows/retrain.py), so the artifact's manifest
    cannot say which version it is; download_bundle records it, and a challenger given as a registry
    reference is named NAME/VERSION in the shadow log, not by the folder it was downloaded to."""
    import json

    from components.registry.tracking import log_folder
    from serving import contract
    from serving.shadow import SHADOW_BUNDLE_ENV, SHADOW_LOG_ENV

    client, uri, run_id = store
    bundle = make_tiny_bundle(tmp_path / "logged", n_items=5, dim=4)
    manifest = json.loads((bundle / contract.MANIFEST_FILE).read_text())
    for key in ("registry_version", "run_id"):  # as the flow logs it: before registration
        manifest.pop(key, None)
    (bundle / contract.MANIFEST_FILE).write_text(json.dumps(manifest))
    with mlflow.start_run(run_id=run_id):
        log_folder(bundle, registry.BUNDLE_ARTIFACT)
    with registry.pending_version(uri, run_id, name=NAME) as version:
        registry.finalize_version(version, {}, promote=False, name=NAME)
    mv = registry.resolve_version(registry.ModelRef.parse(f"{NAME}@challenger"))
    path = registry.download_bundle(mv, tmp_path / "downloaded")
    recorded = json.loads((path / contract.MANIFEST_FILE).read_text())
    assert {k: recorded[k] for k in ("model_name", "registry_version", "run_id")} == {"model_name": NAME, "registry_version": version, "run_id": run_id}
    assert recorded["max_len"] == manifest["max_len"]  # the rest of the manifest is untouched

    from serving.service import _shadow_recorder

    log = tmp_path / "shadow.jsonl"
    monkeypatch.setenv(SHADOW_BUNDLE_ENV, str(path))
    monkeypatch.setenv(SHADOW_LOG_ENV, str(log))
    monkeypatch.setattr("serving.shadow.atexit.register", lambda *args: None)
    recorder = _shadow_recorder("champion-model/1")
    recorder.submit(["i001", "i002"], 2, True, ["i003", "i004"])
    recorder.close(drain_s=10)
    line = json.loads(log.read_text().splitlines()[0])
    assert line["challenger_model"] == f"{NAME}/{version}" and line["champion_model"] == "champion-model/1"


# --- crash consistency: what a process killed with SIGKILL in the middle of a registration leaves ---

def kill_midway(tmp_path, stage: str, experiment: str = "registry-test") -> dict:
    """Run tests/killed_registration.py (the real publish.package_and_register, real MLflow store and Bento store)
    until it stops inside `stage` ("build": the Bento build, "export": the archive export), then SIGKILL it.
    Returns what it had done: pid, run_id, version, bento_model_tag (and bento_tag when it stopped in "export")."""
    import signal
    import subprocess
    import sys
    import time

    from tests.helpers import ROOT

    bundle = make_tiny_bundle(tmp_path / f"killed-{stage}", n_items=5, dim=4)
    report = tmp_path / f"killed-{stage}.json"
    child = subprocess.Popen([sys.executable, str(ROOT / "tests" / "killed_registration.py"), NAME, experiment, str(bundle), str(report), stage],
                             cwd=ROOT, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not report.exists():
            assert child.poll() is None, f"the registration ended before it was killed:\n{child.stderr.read()}"
            assert time.monotonic() < deadline, "the registration did not reach the Bento build in 240 s"
            time.sleep(0.2)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    return json.loads(report.read_text())


def cli_run(capsys, *args: str) -> tuple[int, str, str]:
    from flows.cli import main

    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_registration_killed_midway_is_listed_incomplete_and_refused(store, tmp_path, capsys, caplog):
    """The audit's case: kill -9 during the Bento build left version 2 without aliases or Bento, and predict used it
    silently. Now the version says it is INCOMPLETE, and every command that would use it refuses it in one line."""
    import socket

    import bentoml

    client, uri, run_id = store
    with registry.pending_version(uri, run_id, name=NAME) as v1:
        assert client.get_model_version(NAME, v1).tags["registration"].startswith(f"in progress: PID {os.getpid()} on {socket.gethostname()} since 20")
        registry.finalize_version(v1, {"bento_tag": "b:1"}, promote=True, name=NAME)
    assert client.get_model_version(NAME, v1).tags["registration"] == "complete"
    killed = kill_midway(tmp_path, "build")
    assert killed["version"] == "2" and killed["bento_model_tag"] in {str(m.tag) for m in bentoml.models.list()}  # the orphan model
    v2 = client.get_model_version(NAME, "2")
    state = v2.tags["registration"]
    assert state.startswith(f"in progress: PID {killed['pid']} on {socket.gethostname()} since 20") and "bento_tag" not in v2.tags
    assert client.get_run(killed["run_id"]).info.status == "RUNNING" and alias_of(client, "champion") == "1"

    code, out, _ = cli_run(capsys, "versions", "--model", NAME)
    listed = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert code == 0 and listed["2"].split()[1:2] == ["—"] and listed["2"].endswith(f"INCOMPLETE: registration {state}")
    assert "INCOMPLETE" not in listed["1"]
    code, out, _ = cli_run(capsys, "versions", "--model", NAME, "--json")
    assert [(r["version"], r["complete"], r["registration"]) for r in json.loads(out)] == [("2", False, state), ("1", True, "complete")]

    histories, items = tmp_path / "h.tsv", tmp_path / "new.csv"
    histories.write_text("u1\ti001\n")
    items.write_text("item_id,title\nNEW1,a new item\n")
    client.set_registered_model_alias(NAME, "staging", "2")  # e.g. set by hand in the MLflow UI: serve resolves aliases
    refused = f"error: model '{NAME}' version 2 is INCOMPLETE (registration {state}) and has no Bento: "
    advice = "refused; pick another version ('behaviorflow versions' lists them) or run 'behaviorflow retrain'"
    for command, args in [
        ("predict", ["predict", "--model", f"{NAME}/2", "--histories", str(histories), "--out", str(tmp_path / "top.tsv")]),
        ("bento pull", ["bento", "pull", "--model", NAME, "--version", "2"]),
        ("serve", ["serve", "--model", NAME, "--alias", "staging"]),
        ("promote to @champion", ["promote", "--model", f"{NAME}/2"]),
        ("add-items", ["add-items", "--model", f"{NAME}/2", "--items", str(items)]),
    ]:
        code, _, err = cli_run(capsys, *args)
        assert code == 2 and err.startswith(refused + command + " " + advice) and err.count("\n") == 1, (command, err)
    assert alias_of(client, "champion") == "1" and not (tmp_path / "top.tsv").exists()

    # Killed a moment later, inside finalize_version (tagged with its Bento and archive, aliases not yet all set):
    # that version can be served, and is, with a warning.
    archive = tmp_path / "v2.bento"
    archive.write_bytes(b"an archive")
    client.log_artifact(killed["run_id"], str(archive), artifact_path=registry.BENTO_ARTIFACT)
    client.set_model_version_tag(NAME, "2", "bento_tag", "b:2")
    with caplog.at_level("WARNING", logger="components"):
        code, out, err = cli_run(capsys, "promote", "--model", f"{NAME}/2")
    assert code == 0 and "@champion moved from version 1 to version 2" in out, err
    assert any(f"version 2: its registration did not complete ({state}), but its Bento b:2 is there: promote to @champion uses it" in r.getMessage()
               for r in caplog.records)
    bentoml.models.delete(killed["bento_model_tag"])  # this test's orphan (the next one has repair remove them)


def test_registration_state_of_versions_from_before_the_tag():
    assert registry.registration_state({"bento_tag": "b:1"}) == ("complete (registered before registration states were recorded)", True)
    assert registry.registration_state({})[1] is False
    assert registry.registration_state({"registration": "interrupted: process 1 on h ended", "bento_tag": "b:1"}) == ("interrupted: process 1 on h ended", False)


def test_what_a_killed_process_left_is_marked_on_the_next_start_and_its_bentos_removed(store, tmp_path, caplog, capsys):
    import socket

    import bentoml

    from components.packaging import save_bundle_to_store
    from components.registry.repair import repair_interrupted

    client, uri, run_id = store
    experiment_id = client.get_experiment_by_name("registry-test").experiment_id
    with registry.pending_version(uri, run_id, name=NAME) as v1:
        registry.finalize_version(v1, {"bento_tag": "b:1"}, promote=True, name=NAME)
    host = socket.gethostname()
    # Left alone: a model of another run in the store; a RUNNING run of a live process (this one: a retrain beside
    # it) and one of a process on another host (which cannot be checked from here).
    other_model = save_bundle_to_store(make_tiny_bundle(tmp_path / "other", n_items=5, dim=4), labels={"run_id": "another-run"})
    live = client.create_run(experiment_id, tags={registry.PROCESS_TAG: registry.this_process()}).info.run_id
    elsewhere = client.create_run(experiment_id, tags={registry.PROCESS_TAG: f"{2**22 + 1}@another-host"}).info.run_id

    killed = kill_midway(tmp_path, "export")  # the Bento is built and stored too, its archive not yet logged
    stored = {str(m.tag) for m in bentoml.models.list()} | {str(b.tag) for b in bentoml.bentos.list()}
    assert {killed["bento_model_tag"], killed["bento_tag"], other_model} <= stored

    with caplog.at_level("WARNING", logger="components"):
        lines = repair_interrupted(experiment_id)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and r.name.startswith("components")]
    assert warnings == lines and len(lines) == 1
    assert lines[0].startswith(f"repaired what an interrupted run left: MLflow run {killed['run_id']} marked FAILED (process {killed['pid']} on {host} "
                               "ended without finishing this run (found at 20")
    assert lines[0].endswith(f"versions marked registration=interrupted: {NAME}/2; removed from the local Bento store: "
                             f"Bento {killed['bento_tag']}, Bento model {killed['bento_model_tag']}")

    run = client.get_run(killed["run_id"])
    assert run.info.status == "FAILED" and run.data.tags["interrupted"].startswith(f"process {killed['pid']} on {host} ended")
    state = client.get_model_version(NAME, "2").tags["registration"]
    assert state.startswith(f"interrupted: process {killed['pid']} on {host} ended") and f"it was in progress: PID {killed['pid']} on {host}" in state
    assert client.get_model_version(NAME, "1").tags["registration"] == "complete"
    stored = {str(m.tag) for m in bentoml.models.list()} | {str(b.tag) for b in bentoml.bentos.list()}
    assert killed["bento_model_tag"] not in stored and killed["bento_tag"] not in stored and other_model in stored
    assert client.get_run(live).info.status == client.get_run(elsewhere).info.status == "RUNNING"

    code, out, _ = cli_run(capsys, "versions", "--model", NAME)
    assert code == 0 and f"INCOMPLETE: registration {state}" in out
    code, _, err = cli_run(capsys, "promote", "--model", f"{NAME}/2")
    assert code == 2 and f"version 2 is INCOMPLETE (registration interrupted: process {killed['pid']}" in err
    caplog.clear()
    with caplog.at_level("WARNING", logger="components"):
        assert repair_interrupted(experiment_id) == []  # repaired once
    assert not [r for r in caplog.records if r.levelname == "WARNING" and r.name.startswith("components")]
    for run_id in (live, elsewhere):
        client.set_terminated(run_id)
    bentoml.models.delete(other_model)


def test_a_retrain_warns_of_items_the_champion_or_the_challenger_it_replaces_serves_and_its_catalog_lacks(tmp_path, monkeypatch):
    """add-items makes a challenger with items the items file lacks; a retrain before it is promoted replaces it
    as challenger. It said nothing of the challenger's items (only of the champion's)."""
    from types import SimpleNamespace

    from flows.retrain import _items_this_catalog_lacks
    from tests.tiny_bundle import item_id

    champion = SimpleNamespace(version="1", bundle_dir=make_tiny_bundle(tmp_path / "v1", n_items=30))
    extended = make_tiny_bundle(tmp_path / "v2", n_items=32)  # v1 plus i031, i032 from add-items
    versions = {"challenger": SimpleNamespace(version="2"), "champion": SimpleNamespace(version="1")}
    monkeypatch.setattr(registry, "version_by_alias", lambda alias, name=settings.REGISTERED_MODEL_NAME: versions.get(alias))
    monkeypatch.setattr(registry, "download_bundle", lambda version, to: extended)
    catalog = [item_id(i) for i in range(1, 31)]  # the items file: v1's catalog, without what add-items gave v2
    notes = _items_this_catalog_lacks(catalog, champion, tmp_path / "run")
    assert notes == ["challenger v2 serves 2 item(s) this catalog lacks (e.g. ['i031', 'i032']); registered, this version would "
                     "replace it as challenger without them: add them to the items file if they should stay"]
    assert _items_this_catalog_lacks(catalog + ["i031", "i032"], champion, tmp_path / "run") == []
    versions["challenger"] = versions["champion"]  # the champion is also the challenger: told once, as champion
    champion.bundle_dir = extended
    assert [note.split(" ", 2)[:2] for note in _items_this_catalog_lacks(catalog, champion, tmp_path / "run")] == [["champion", "v1"]]


def test_a_run_of_another_host_that_stopped_beating_is_repaired_and_one_still_beating_is_not(store):
    """A retrain killed in a Kubernetes pod is found by the next retrain, which runs in another pod: it cannot ask
    whether the PID lives, but the run's heartbeat has been silent for longer than STALE_AFTER_S."""
    from datetime import datetime, timedelta, timezone

    from components.registry.repair import HEARTBEAT_TAG, STALE_AFTER_S, repair_interrupted

    client, uri, _ = store
    experiment_id = client.get_experiment_by_name("registry-test").experiment_id

    def run_of(host: str, silent_s: float | None) -> str:
        tags = {registry.PROCESS_TAG: f"{2**22 + 7}@{host}"}
        if silent_s is not None:
            tags[HEARTBEAT_TAG] = (datetime.now(timezone.utc) - timedelta(seconds=silent_s)).isoformat(timespec="seconds")
        return client.create_run(experiment_id, tags=tags).info.run_id

    killed = run_of("pod-a", STALE_AFTER_S + 120)
    beating = run_of("pod-b", STALE_AFTER_S - 120)
    from_before = run_of("pod-c", None)  # no heartbeat tag: left alone, as before
    # The killed pod was registering: its version stays in progress until the repair.
    client.create_registered_model(NAME)
    version = client.create_model_version(NAME, uri, run_id=killed, tags={registry.REGISTRATION_TAG: "in progress: PID 4194311 on pod-a since 2026"}).version

    lines = repair_interrupted(experiment_id)
    assert len(lines) == 1 and lines[0].startswith(f"repaired what an interrupted run left: MLflow run {killed} marked FAILED "
                                                   f"(process {2**22 + 7} on pod-a stopped beating at 20")
    assert f"{(STALE_AFTER_S + 120) / 60:.0f} minutes before this check without finishing this run" in lines[0]
    assert lines[0].endswith(f"versions marked registration=interrupted: {NAME}/{version}; nothing of it in the local Bento store")
    assert client.get_run(killed).info.status == "FAILED"
    assert client.get_model_version(NAME, version).tags["registration"].startswith("interrupted: process 4194311 on pod-a stopped beating")
    assert client.get_run(beating).info.status == client.get_run(from_before).info.status == "RUNNING"
    assert repair_interrupted(experiment_id) == []  # repaired once
    for run_id in (beating, from_before):
        client.set_terminated(run_id)


def test_a_tracked_run_beats_while_it_runs_and_stops_when_it_ends(store):
    import time

    from components.registry.repair import HEARTBEAT_TAG, tracked_run

    client, _, _ = store

    def beat_of(run_id):
        return client.get_run(run_id).data.tags[HEARTBEAT_TAG]

    with tracked_run("beating", heartbeat_s=0.2) as run:
        run_id = run.info.run_id
        tags = client.get_run(run_id).data.tags
        assert tags[registry.PROCESS_TAG] == registry.this_process()
        first = beat_of(run_id)
        deadline = time.monotonic() + 30
        while beat_of(run_id) == first and time.monotonic() < deadline:  # the tag holds seconds: a new second, a new value
            time.sleep(0.2)
        assert beat_of(run_id) > first
    assert client.get_run(run_id).info.status == "FINISHED"
    last = beat_of(run_id)
    time.sleep(1.5)
    assert beat_of(run_id) == last  # the thread ended with the run
    assert not [t for t in __import__("threading").enumerate() if t.name == "behaviorflow-heartbeat"]


def test_a_version_is_described_by_its_run_summary_and_the_model_once_without_overwriting_a_users_text(store):
    client, uri, run_id = store
    with registry.pending_version(uri, run_id, name=NAME) as v1:
        registry.finalize_version(v1, {"bento_tag": "b:1"}, promote=True, name=NAME)
    registry.describe_version(v1, "# behaviorflow retrain\n\nregistered v1", name=NAME)
    assert client.get_model_version(NAME, v1).description == "# behaviorflow retrain\n\nregistered v1"
    assert client.get_registered_model(NAME).description == registry.MODEL_DESCRIPTION
    client.update_registered_model(NAME, description="ours: the shop's recommender")
    registry.describe_version(v1, "again", name=NAME)
    assert client.get_registered_model(NAME).description == "ours: the shop's recommender"
    registry.describe_version("99", "no such version", name=NAME)  # logged, not raised: the version stands


def test_a_run_whose_pid_is_now_another_process_or_means_nothing_here_is_told_apart(store):
    """A container restarted under the same hostname (a pod's container after an out-of-memory kill, docker restart)
    starts its processes afresh: the next retrain may get the killed one's PID, or another process may have it. The
    run's PID@HOST then named a live process (or this one) and the run was left RUNNING for ever; its process_start
    tells a new process by its start, and a PID of another boot or PID namespace by those (the heartbeat decides)."""
    from datetime import datetime, timedelta, timezone

    from components.registry.repair import HEARTBEAT_TAG, PROCESS_START_TAG, STALE_AFTER_S, process_start, repair_interrupted, tracked_run

    client, _, _ = store
    experiment_id = client.get_experiment_by_name("registry-test").experiment_id
    me = process_start()
    assert me is not None and me == process_start(os.getpid())
    space, _, ticks = me.rpartition("/")
    boot = space.partition("/")[0]
    stale = (datetime.now(timezone.utc) - timedelta(seconds=STALE_AFTER_S + 120)).isoformat(timespec="seconds")

    def run_of(start: str | None, beat: str | None = None) -> str:
        tags = {registry.PROCESS_TAG: registry.this_process()} | ({PROCESS_START_TAG: start} if start else {}) | ({HEARTBEAT_TAG: beat} if beat else {})
        return client.create_run(experiment_id, tags=tags).info.run_id

    reused = run_of(f"{space}/{int(ticks) - 1}")  # this PID, of a process that started before this one
    ours = run_of(me, stale)  # this very process (its PID and start): alive, however old its heartbeat
    older = run_of(None)  # no process_start: as before
    restarted = run_of(f"{boot}/pid:[1]/{ticks}", stale)  # this hostname and PID, another PID namespace, silent
    beside = run_of(f"{boot}/pid:[1]/{ticks}", datetime.now(timezone.utc).isoformat(timespec="seconds"))  # still beating

    lines = repair_interrupted(experiment_id)
    assert len(lines) == 2
    assert f"MLflow run {reused} marked FAILED (process {os.getpid()} on {registry.this_process().partition('@')[2]} ended" in lines[0] + lines[1]
    assert f"MLflow run {restarted} marked FAILED (process {os.getpid()} on " in lines[0] + lines[1] and "stopped beating" in lines[0] + lines[1]
    assert client.get_run(reused).info.status == client.get_run(restarted).info.status == "FAILED"
    assert {client.get_run(r).info.status for r in (ours, older, beside)} == {"RUNNING"}
    for run_id in (ours, older, beside):
        client.set_terminated(run_id)
    with tracked_run("tagged", heartbeat_s=60) as run:
        assert client.get_run(run.info.run_id).data.tags[PROCESS_START_TAG] == me


def test_a_heartbeat_written_without_its_offset_is_read_as_utc_not_a_crash(store):
    """The tag can be edited by hand (the MLflow UI): a time without offset made repair_interrupted, which runs at
    the start of every retrain and add-items, raise TypeError (naive minus aware datetime)."""
    from datetime import datetime, timedelta, timezone

    from components.registry.repair import HEARTBEAT_TAG, STALE_AFTER_S, repair_interrupted, stopped_beating

    client, _, _ = store
    experiment_id = client.get_experiment_by_name("registry-test").experiment_id
    naive = (datetime.now(timezone.utc) - timedelta(seconds=STALE_AFTER_S + 120)).replace(tzinfo=None).isoformat(timespec="seconds")
    assert stopped_beating({registry.PROCESS_TAG: "7@pod-x", HEARTBEAT_TAG: naive}, host="here") is not None
    fresh = datetime.now(timezone.utc).replace(tzinfo=None).isoformat(timespec="seconds")
    assert stopped_beating({registry.PROCESS_TAG: "7@pod-x", HEARTBEAT_TAG: fresh}, host="here") is None
    run_id = client.create_run(experiment_id, tags={registry.PROCESS_TAG: "7@pod-x", HEARTBEAT_TAG: naive}).info.run_id
    assert len(repair_interrupted(experiment_id)) == 1 and client.get_run(run_id).info.status == "FAILED"


def test_a_run_taken_for_dead_while_paused_registers_nothing_when_it_resumes(store, tmp_path):
    """A retrain paused for longer than the heartbeat allows (SIGSTOP, a suspended VM) is repaired by the next retrain
    on another host: marked FAILED, its unfinished version `interrupted`, its Bentos removed from the store. When it
    resumes, its registration must stop there — before it starts, or before it moves an alias — and leave nothing."""
    from components.errors import BehaviorflowError
    from components.registry.repair import _repair_run

    client, uri, run_id = store
    with registry.pending_version(uri, run_id, name=NAME) as v1:
        registry.finalize_version(v1, {}, promote=True, name=NAME)
    with mlflow.start_run() as run:  # the paused retrain's run, with its own model
        uri, paused = log_onnx_model(tmp_path / "bundle" / "model.onnx", {}), run.info.run_id
    client.update_run(paused, status="RUNNING")  # its process is still in the run (paused)
    # Taken for dead in the middle of its registration: the version exists, no alias has moved yet.
    with pytest.raises(BehaviorflowError, match=f"MLflow run {paused} was taken for dead while it ran, so it registers nothing: "
                                                "process 7 on pod-a stopped beating at 2026-12-02T10:00:00"):
        with registry.pending_version(uri, paused, name=NAME) as v2:
            _repair_run(client, paused, "process 7 on pod-a stopped beating at 2026-12-02T10:00:00, 16 minutes before this check")
            assert client.get_model_version(NAME, v2).tags["registration"].startswith("interrupted: process 7 on pod-a")
            registry.finalize_version(v2, {"bento_tag": "b:2"}, promote=True, name=NAME)
    assert [str(v.version) for v in client.search_model_versions(f"name='{NAME}'")] == [v1]
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == v1
    assert str(client.get_model_version_by_alias(NAME, "challenger").version) == v1
    # Taken for dead before it registered: no version is created at all.
    with pytest.raises(BehaviorflowError, match="Run it again"):
        with registry.pending_version(uri, paused, name=NAME):
            pass
    assert [str(v.version) for v in client.search_model_versions(f"name='{NAME}'")] == [v1]
    assert client.get_run(paused).info.status == "FAILED"


def test_a_beating_run_taken_for_dead_says_so_once_and_stops_beating(store, caplog):
    import time

    from components.registry.repair import HEARTBEAT_TAG, _repair_run, tracked_run

    client, _, _ = store
    with caplog.at_level("WARNING", logger="components.registry.repair"), tracked_run("paused", heartbeat_s=0.2) as run:
        run_id = run.info.run_id
        _repair_run(client, run_id, "process 7 on pod-a stopped beating at 2026-12-02T10:00:00, 16 minutes before this check")
        deadline = time.monotonic() + 30
        while "will register nothing" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.2)
        beat = client.get_run(run_id).data.tags[HEARTBEAT_TAG]
        time.sleep(1.5)
        assert client.get_run(run_id).data.tags[HEARTBEAT_TAG] == beat  # no longer beating into a FAILED run
    assert client.get_run(run_id).info.status == "FAILED"  # not FINISHED over the repair's FAILED
    said = [r.getMessage() for r in caplog.records if "taken for dead" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith(f"MLflow run {run_id} was taken for dead by another process") and "process 7 on pod-a" in said[0]


def test_a_new_run_leaves_the_newest_local_run_folders_and_never_a_running_or_unknown_runs(store, tmp_path, monkeypatch):
    from components.errors import BehaviorflowError
    from components.registry.repair import KEEP_RUN_FOLDERS_DEFAULT, KEEP_RUN_FOLDERS_ENV, keep_run_folders, prune_run_folders

    client, _, _ = store
    monkeypatch.setenv("BEHAVIORFLOW_HOME", str(tmp_path / "home"))
    experiment_id = client.get_experiment_by_name("registry-test").experiment_id
    runs = {}
    for age, name in enumerate(["newest", "newer", "old_finished", "old_running", "old_failed", "older_finished"]):
        run_id = client.create_run(experiment_id).info.run_id
        if not name.endswith("running"):
            client.set_terminated(run_id, status="FAILED" if name.endswith("failed") else "FINISHED")
        folder = settings.runs_dir() / run_id
        (folder / "bundle").mkdir(parents=True)
        (folder / "model.onnx").write_bytes(b"x" * 10)
        os.utime(folder, (1e9 - age * 3600, 1e9 - age * 3600))  # older folder = changed longer ago
        runs[name] = run_id
    stranger = settings.runs_dir() / "0123456789abcdef0123456789abcdef"  # a run of another tracking store
    stranger.mkdir()
    os.utime(stranger, (1e8, 1e8))
    removed = prune_run_folders(keep=2)
    assert sorted(removed) == sorted(runs[n] for n in ("old_finished", "old_failed", "older_finished"))
    left = {p.name for p in settings.runs_dir().iterdir()}
    assert left == {runs["newest"], runs["newer"], runs["old_running"], stranger.name}
    assert prune_run_folders(keep=0) == []  # 0 keeps all
    monkeypatch.setenv(KEEP_RUN_FOLDERS_ENV, "all")
    with pytest.raises(BehaviorflowError, match="BEHAVIORFLOW_KEEP_RUN_FOLDERS='all': expected a whole number of run folders to keep"):
        keep_run_folders()
    monkeypatch.delenv(KEEP_RUN_FOLDERS_ENV)
    assert keep_run_folders() == KEEP_RUN_FOLDERS_DEFAULT == 20
    client.set_terminated(runs["old_running"])


def test_a_version_left_in_progress_by_a_run_that_ended_is_repaired_and_its_alias_named(store, caplog):
    """A kill -9 during a registration's rollback (or between the rollback and the run's end) left the version
    `in progress` while its run ended KILLED; the repair looked only at RUNNING runs, so it stayed so for
    ever. Now the next start marks it interrupted, names the alias it still holds, and leaves the run's status."""
    from components.registry.registry import INTERRUPTED_TAG, registration_in_progress
    from components.registry.repair import repair_interrupted

    client, uri, run_id = store
    experiment_id = client.get_experiment_by_name("registry-test").experiment_id
    with registry.pending_version(uri, run_id, name=NAME) as v1:
        registry.finalize_version(v1, {"bento_tag": "b:1"}, promote=True, name=NAME)
    cut = client.create_run(experiment_id, tags={registry.PROCESS_TAG: registry.this_process()}).info.run_id
    left = client.create_model_version(NAME, uri, run_id=cut, tags={"run_id": cut, "registration": registration_in_progress()})
    client.set_registered_model_alias(NAME, "challenger", left.version)  # finalize had moved it before the first Ctrl-C
    client.set_tag(cut, INTERRUPTED_TAG, "by SIGINT (Ctrl-C) at 2026-12-02T10:00:00Z")
    client.set_terminated(cut, status="KILLED")
    beside = client.create_run(experiment_id, tags={registry.PROCESS_TAG: registry.this_process()}).info.run_id  # a live retrain
    registering = client.create_model_version(NAME, uri, run_id=beside, tags={"run_id": beside, "registration": registration_in_progress()})

    with caplog.at_level("WARNING", logger="components"):
        lines = repair_interrupted(experiment_id)
    assert len(lines) == 1 and lines[0].startswith(f"repaired what an interrupted run left: MLflow run {cut} (it ended KILLED while a registration "
                                                   "of it was in progress (its rollback cut short) (found at 20")
    assert lines[0].endswith(f"versions marked registration=interrupted: {NAME}/{left.version} (still holds challenger: point it at a servable "
                             "version with `behaviorflow promote --alias`); nothing of it in the local Bento store")
    state = client.get_model_version(NAME, left.version).tags["registration"]
    assert state.startswith("interrupted: it ended KILLED while a registration of it was in progress") and "; it was in progress: PID" in state
    run = client.get_run(cut)
    assert run.info.status == "KILLED" and run.data.tags[INTERRUPTED_TAG] == "by SIGINT (Ctrl-C) at 2026-12-02T10:00:00Z"
    assert client.get_model_version(NAME, registering.version).tags["registration"].startswith("in progress")  # its run lives
    assert client.get_model_version(NAME, "1").tags["registration"] == "complete"
    assert repair_interrupted(experiment_id) == []  # repaired once
    client.set_terminated(beside)

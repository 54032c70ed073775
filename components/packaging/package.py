"""Turn an exported model bundle into a Bento that a serving team can run, archive or containerize.

    save_bundle_to_store(bundle folder) -> Bento model "behaviorflow-recommender:<v>"
    build_bento(model tag)              -> Bento "behaviorflow_recommender:<v>" (serving/ + that model)
    export_bento(Bento tag, path)       -> a self-contained .bento archive (code, requirements, model)

The Bento holds `serving/*.py` and `serving/*.json` only, and requires onnxruntime, numpy and pydantic
(plus bentoml itself, and uvloop and httptools for its HTTP server) — never the training stack. The store is `$BENTOML_HOME`
(`components.settings.apply_environment()` points it into the state folder).

bentoml is imported inside the functions: it reads BENTOML_HOME when first used, and importing this
module (e.g. from the flow's CLI) stays cheap.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from components.errors import BehaviorflowError
from serving import contract
from serving.contract import BATCHING_ENV, BENTO_MODEL_NAME, BENTO_SERVICE_NAME, MODEL_TAG_ENV

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICE = "serving.service:Recommender"
SERVICE_MODULE = SERVICE.partition(":")[0]
INCLUDE = ["serving/*.py", "serving/*.json"]  # the service, the contract, the sample request
# What the service imports besides bentoml (which the build adds, pinned to the building version), and what its
# server runs on. onnxruntime carries the same pin as pyproject.toml: the Bento runs the runtime the parity tests
# ran; so do httptools, which uvicorn parses HTTP with when installed (else h11), and uvloop, which the service
# runs on only with BEHAVIORFLOW_EVENT_LOOP=uvloop (serving/layout.py, event_loop_from).
SERVING_REQUIREMENTS = ["onnxruntime==1.32.0", "numpy", "pydantic", "uvloop==0.23.0; sys_platform != 'win32'", "httptools==0.9.0"]
_REQUIRED_FILES = (contract.MODEL_FILE, contract.ITEMS_FILE, contract.MANIFEST_FILE)


def save_bundle_to_store(
    bundle_dir: Path, *, labels: dict[str, str] | None = None, metadata: dict | None = None
) -> str:
    """Copy a model bundle folder into the Bento model store; return the new model's exact tag."""
    import bentoml

    bundle_dir = Path(bundle_dir)
    missing = [name for name in _REQUIRED_FILES if not (bundle_dir / name).is_file()]
    if missing:
        raise BehaviorflowError(
            f"model bundle {bundle_dir}: missing {missing}; a bundle holds "
            f"{[*_REQUIRED_FILES, contract.USERS_FILE]} as written by the export stage: re-run the export"
        )
    with bentoml.models.create(BENTO_MODEL_NAME, labels=labels, metadata=metadata) as model:
        # The whole folder, so ONNX external-data files (model.onnx.data) travel with the graph.
        shutil.copytree(bundle_dir, model.path, dirs_exist_ok=True)
    return str(model.tag)


def build_bento(model_tag: str, *, labels: dict[str, str] | None = None, version: str | None = None, source: Path | None = None) -> str:
    """Build a Bento of `serving.service:Recommender` serving exactly `model_tag`; return its tag.
    `source`: the serving/ folder to package (default: this checkout's; benchmarks/serving_ab.py builds
    another commit's)."""
    import bentoml

    exact_tag = str(bentoml.models.get(model_tag).tag)  # resolves "name:latest"; NotFound names the tag
    # The service picks its model from MODEL_TAG_ENV when its module is imported, and the build records
    # the model it picked. An earlier import in this process (tests, a flow serving in-process) would be
    # reused as is, so hide it during the build and put it back afterwards.
    # The Bento must also record the Ranker service whatever machine builds it: `bentoml serve` of a Bento
    # can only start services the build recorded, and BEHAVIORFLOW_BATCHING is read on the machine that
    # serves. Built with batching on, either layout serves.
    overrides = {MODEL_TAG_ENV: exact_tag, BATCHING_ENV: "1"}
    previous = {name: os.environ.get(name) for name in overrides}
    previous_module = sys.modules.pop(SERVICE_MODULE, None)
    os.environ.update(overrides)
    # Build from a folder holding only serving/: BentoML walks the whole build context (a .venv in the
    # repository root adds seconds per build), although it copies only what INCLUDE matches.
    context = Path(tempfile.mkdtemp(prefix="bento-build-"))
    shutil.copytree(source or REPO_ROOT / "serving", context / "serving", ignore=shutil.ignore_patterns("__pycache__"))
    try:
        bento = bentoml.bentos.build(
            SERVICE,
            name=BENTO_SERVICE_NAME,
            labels=labels,
            version=version,
            build_ctx=str(context),
            include=INCLUDE,
            # lock_packages would resolve the full dependency tree against the package index (network).
            python={"packages": SERVING_REQUIREMENTS, "lock_packages": False},
        )
    finally:
        shutil.rmtree(context, ignore_errors=True)
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if previous_module is not None:
            sys.modules[SERVICE_MODULE] = previous_module
    recorded = sorted(str(m.tag) for m in bento.info.all_models)
    if recorded != [exact_tag]:
        raise BehaviorflowError(
            f"Bento {bento.tag}: records models {recorded}, expected exactly [{exact_tag!r}]; "
            f"check the model reference in {SERVICE}"
        )
    return str(bento.tag)


def export_bento(bento_tag: str, out_path: Path) -> Path:
    """Write the Bento (code, requirements and its model) to a self-contained archive, e.g. `x.bento`."""
    import bentoml

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # BentoML picks the format from the suffix (.bento, .tar.gz, .zip) and adds ".bento" when there is
    # none: return the path it actually wrote.
    return Path(bentoml.bentos.export_bento(bento_tag, str(out_path)))


def bento_requirements(bento_tag: str) -> list[str]:
    """The Python requirements the Bento installs (one specifier a line, pip options left out)."""
    import bentoml

    bento = bentoml.bentos.get(bento_tag)
    path = Path(bento.path) / "env" / "python" / "requirements.txt"
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("-")]


def import_bento(archive: Path) -> str:
    """Import a `.bento` archive into the local Bento store (a no-op if that tag is already there)."""
    import bentoml
    from bentoml.exceptions import BentoMLException, NotFound

    archive = Path(archive)
    if not archive.is_file():
        raise BehaviorflowError(f"Bento archive {archive} does not exist")
    try:
        return str(bentoml.bentos.import_bento(str(archive)).tag)
    except BentoMLException as exc:
        if "already exists" not in str(exc):
            raise BehaviorflowError(f"cannot import {archive}: {exc}") from exc
    # Already in the store: find it by reading the archive's own tag.
    import tarfile

    import yaml

    with tarfile.open(archive) as tar:
        info = yaml.safe_load(tar.extractfile("bento.yaml"))
    tag = f"{info['name']}:{info['version']}"
    try:
        bentoml.bentos.get(tag)
    except NotFound as exc:  # pragma: no cover - inconsistent store
        raise BehaviorflowError(f"{archive}: BentoML says {tag} exists but cannot find it: {exc}") from exc
    return tag


def docker_available() -> bool:
    """True when a Docker engine answers (the client alone is not enough to build an image)."""
    docker = shutil.which("docker")
    if docker is None:
        return False
    import subprocess

    return subprocess.run([docker, "info"], capture_output=True, timeout=20).returncode == 0


def write_container_context(bento_tag: str, out_dir: Path) -> Path:
    """Write the exact Docker build context `bentoml containerize` would build (Dockerfile + Bento + model).

    For machines without a Docker engine (CI, this project's dev boxes): the folder can be built
    elsewhere with `docker build -f env/docker/Dockerfile .`. Uses BentoML's own generator
    (bentoml._internal.container.construct_containerfile, BentoML 1.4.x; internal API — re-check on upgrade).
    """
    import bentoml
    from bentoml._internal.container import construct_containerfile

    bento = bentoml.bentos.get(bento_tag)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise BehaviorflowError(f"{out_dir} is not empty: give a new folder for the build context")
    with construct_containerfile(bento, enable_buildkit=True) as (context, dockerfile_path):
        shutil.copytree(context, out_dir, dirs_exist_ok=True)
    return out_dir

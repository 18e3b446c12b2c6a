"""Structure of the deployment files: docker-compose.yml, deploy/docker/*, deploy/k8s/*.

No Docker engine is needed. The compose file is also checked by `docker-compose config`
(deploy/check-compose.sh) where that CLI is installed, and the k8s manifests against the
Kubernetes schemas where the `kubernetes-validate` package is installed.
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.config import Settings
from workers.threads import GPU_WORKER_THREADS

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
API_DOCKERFILE = ROOT / "deploy" / "docker" / "api.Dockerfile"
WORKER_DOCKERFILE = ROOT / "deploy" / "docker" / "worker.Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
K8S_DIR = ROOT / "deploy" / "k8s"
CHECK_COMPOSE = ROOT / "deploy" / "check-compose.sh"

APP_SERVICES = ("api", "worker-gpu", "worker-cpu", "beat")
WORKER_SERVICES = ("worker-gpu", "worker-cpu")
REQUIRED_SERVICES = {*APP_SERVICES, "migrate", "redis", "postgres", "minio", "minio-init"}
MIGRATE_COMMAND = ["python", "-m", "shared.cli", "migrate"]
MIN_GPU_GRACE_S = 120  # time for a training loop to checkpoint after SIGTERM
MIN_STEP_ROOM_S = 60  # the rest of a training step, on top of the upload's retry deadline and the last write
K8S_SCHEMA_VERSION = "1.30.0"  # oldest Kubernetes the manifests are meant for


# --- helpers -------------------------------------------------------------------------------


def _argv(command: str | list[str] | None) -> list[str]:
    if command is None:
        return []
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def _has_flag(argv: list[str], flag: str, value: str) -> bool:
    return any(a == flag and b == value for a, b in itertools.pairwise(argv))


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def _depends_on(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def _duration_s(value: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", value)
    assert parts and "".join(n + u for n, u in parts) == value, f"unparsable duration {value!r}"
    return sum(float(n) * units[u] for n, u in parts)


def _nvidia_devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    return [d for d in devices if d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", [])]


def _dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    return instructions


def _pip_installs(instructions: list[tuple[str, str]]) -> list[tuple[int, str]]:
    return [(i, args) for i, (kw, args) in enumerate(instructions) if kw == "RUN" and "pip install" in args]


def _env_instructions(instructions: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for kw, args in instructions:
        if kw == "ENV":
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _requirement_name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower()


def _k8s_docs() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        docs += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    return docs


def _k8s(kind: str, name: str) -> dict[str, Any]:
    matches = [doc for _, doc in _k8s_docs() if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected exactly one {kind}/{name} in deploy/k8s, found {len(matches)}"
    return matches[0]


def _pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def _containers_argv(workload: dict[str, Any]) -> list[list[str]]:
    return [_argv(c.get("command", [])) + _argv(c.get("args", [])) for c in _pod_spec(workload)["containers"]]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose["services"]
    return result


# --- docker-compose.yml ----------------------------------------------------------------------


def test_compose_defines_the_required_services(services: dict[str, dict[str, Any]]) -> None:
    assert services.keys() >= REQUIRED_SERVICES, f"missing: {REQUIRED_SERVICES - services.keys()}"


def test_every_gpu_queue_worker_reserves_its_own_nvidia_gpu(services: dict[str, dict[str, Any]]) -> None:
    gpu_workers = {name: s for name, s in services.items() if _has_flag(_argv(s.get("command")), "-Q", "gpu")}
    assert "worker-gpu" in gpu_workers

    claimed: dict[str, str] = {}
    for name, service in gpu_workers.items():
        argv = _argv(service.get("command"))
        assert _has_flag(argv, "--concurrency", "1"), f"{name}: one worker process per GPU"
        assert "CUDA_VISIBLE_DEVICES" in _env(service), f"{name}: CUDA_VISIBLE_DEVICES unset"
        assert _duration_s(str(service.get("stop_grace_period", "10s"))) >= MIN_GPU_GRACE_S, name
        devices = _nvidia_devices(service)
        assert len(devices) == 1, f"{name}: needs exactly one nvidia device reservation with [gpu]"
        device = devices[0]
        # Docker maps `count: N` to GPUs 0..N-1, so two `count: 1` services would share GPU 0.
        gpu_ids = [str(i) for i in device["device_ids"]] if "device_ids" in device else ["0"] * device["count"]
        assert len(gpu_ids) == 1, f"{name}: reserve exactly one GPU"
        assert gpu_ids[0] not in claimed, f"{name} and {claimed.get(gpu_ids[0])} both reserve GPU {gpu_ids[0]}"
        claimed[gpu_ids[0]] = name


def test_redis_persists_with_aof_and_never_evicts(services: dict[str, dict[str, Any]]) -> None:
    redis = services["redis"]
    argv = _argv(redis.get("command"))
    assert _has_flag(argv, "--appendonly", "yes")
    assert _has_flag(argv, "--maxmemory-policy", "noeviction")
    assert any(str(v).endswith(":/data") for v in redis.get("volumes", [])), "AOF must live on a volume"


def test_postgres_and_minio_keep_data_on_named_volumes(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    named = set(compose.get("volumes") or {})
    for name, target in (("postgres", "/var/lib/postgresql/data"), ("minio", "/data")):
        mounts = [str(v).split(":") for v in services[name].get("volumes", [])]
        assert any(m[0] in named and m[1] == target for m in mounts), f"{name}: no named volume at {target}"
    assert services["postgres"]["image"].startswith("postgres:16")
    assert "--console-address" in _argv(services["minio"].get("command"))


def test_every_health_condition_points_at_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for dep, condition in _depends_on(service).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            if condition == "service_healthy":
                assert services[dep].get("healthcheck", {}).get("test"), f"{dep} has no healthcheck for {name}"


def test_migrate_is_a_one_shot_from_the_api_image(services: dict[str, dict[str, Any]]) -> None:
    migrate = services["migrate"]
    assert _argv(migrate.get("command")) == MIGRATE_COMMAND
    assert migrate.get("restart", "no") == "no"
    assert migrate["build"]["dockerfile"] == services["api"]["build"]["dockerfile"]
    assert migrate["image"] == services["api"]["image"]
    assert _depends_on(migrate).get("postgres") == "service_healthy"


def test_app_services_wait_for_migrations_and_healthy_backends(services: dict[str, dict[str, Any]]) -> None:
    for name in APP_SERVICES:
        deps = _depends_on(services[name])
        assert deps.get("migrate") == "service_completed_successfully", name
        assert deps.get("redis") == "service_healthy", name
        assert deps.get("minio") == "service_healthy", name
        assert deps.get("minio-init") == "service_completed_successfully", name


def test_minio_init_creates_the_configured_bucket(services: dict[str, dict[str, Any]]) -> None:
    init = services["minio-init"]
    assert init["image"].startswith("minio/mc")
    assert _depends_on(init).get("minio") == "service_healthy"
    assert "mc mb" in " ".join(_argv(init.get("command")))
    assert _env(init)["BUCKET"] == _env(services["api"])["ATELIER_S3_BUCKET"]


def test_images_and_commands(services: dict[str, dict[str, Any]]) -> None:
    for name in ("api", "beat"):
        assert services[name]["build"]["dockerfile"] == "deploy/docker/api.Dockerfile", name
    for name in WORKER_SERVICES:
        assert services[name]["build"]["dockerfile"] == "deploy/docker/worker.Dockerfile", name
        assert "entrypoint" not in services[name], f"{name} must keep the image's tini entrypoint"
    assert _has_flag(_argv(services["worker-cpu"]["command"]), "-Q", "cpu")
    beat = _argv(services["beat"]["command"])
    assert "beat" in beat and "--schedule" in beat
    assert services["beat"].get("deploy", {}).get("replicas", 1) == 1, "exactly one beat"


def test_compose_workers_set_their_torch_threads(services: dict[str, dict[str, Any]]) -> None:
    # Each container has its own /dev/shm, so the worker registry (workers/threads.py) cannot see
    # the other containers' workers: the process count is known here, so the threads are set here.
    for name in WORKER_SERVICES:
        threads = Settings(torch_threads=int(_env(services[name])["ATELIER_TORCH_THREADS"])).torch_threads
        assert threads is not None, name
    assert int(_env(services["worker-gpu"])["ATELIER_TORCH_THREADS"]) <= GPU_WORKER_THREADS
    assert _env(services["worker-cpu"])["ATELIER_TORCH_THREADS"] == "1"


def test_app_settings_are_known_and_consistent(services: dict[str, dict[str, Any]]) -> None:
    known = {f"ATELIER_{field.upper()}" for field in Settings.model_fields}
    reference = _env(services["api"])
    for name in (*APP_SERVICES, "migrate"):
        env = _env(services[name])
        # Settings ignores unknown ATELIER_* keys, so a typo would pass silently.
        assert {k for k in env if k.startswith("ATELIER_")} <= known, name
        assert {k: env.get(k) for k in reference} == reference, f"{name} drifts from the api's settings"
    minio, postgres = _env(services["minio"]), _env(services["postgres"])
    assert reference["ATELIER_S3_ACCESS_KEY"] == minio["MINIO_ROOT_USER"]
    assert reference["ATELIER_S3_SECRET_KEY"] == minio["MINIO_ROOT_PASSWORD"]
    assert f":{postgres['POSTGRES_PASSWORD']}@postgres:5432/" in reference["ATELIER_DATABASE_URL"]


def test_secrets_come_from_the_environment_with_dev_only_defaults(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for key, value in _env(service).items():
            if re.search(r"PASSWORD|SECRET", key):
                match = re.fullmatch(r"\$\{(\w+):-([^}]*)\}", value)
                assert match, f"{name}.{key} must be ${{VAR:-default}}, got {value!r}"
                assert "dev" in match.group(2), f"{name}.{key}: default must say it is dev-only"
                assert match.group(2) != "minioadmin", "production settings refuse the stock MinIO key"


def test_flower_is_an_opt_in_profile_on_the_workers_broker(services: dict[str, dict[str, Any]]) -> None:
    flower = services["flower"]
    assert flower.get("profiles") == ["flower"], "a plain `docker compose up` must not start flower"
    assert re.fullmatch(r"mher/flower:\d+\.\d+\.\d+", flower["image"]), f"pin a release tag: {flower['image']}"
    broker = _env(flower)["CELERY_BROKER_URL"]
    for name in (*WORKER_SERVICES, "beat", "api"):
        assert _env(services[name])["ATELIER_REDIS_URL"] == broker, f"flower watches another broker than {name}"
    assert _depends_on(flower).get("redis") == "service_healthy"
    # No default login: unset, it is empty and the container refuses to start (test below).
    assert re.fullmatch(r"\$\{FLOWER_BASIC_AUTH(:?-)?\}", _env(flower)["FLOWER_BASIC_AUTH"])
    assert all(str(p).startswith("127.0.0.1:") and str(p).endswith(":5555") for p in flower["ports"]), "loopback only"


@pytest.mark.parametrize("auth", [None, "", "admin", "admin:", ":password"])
def test_flower_refuses_to_start_without_basic_auth(
    services: dict[str, dict[str, Any]], tmp_path: Path, auth: str | None
) -> None:
    result = _run_flower_command(services["flower"], tmp_path, auth)
    assert result.returncode != 0 and "FLOWER_BASIC_AUTH=user:password" in result.stderr
    assert not result.stdout, "celery must not start"


def test_flower_starts_on_the_broker_with_auth_and_without_persistence(
    services: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    result = _run_flower_command(services["flower"], tmp_path, "ops:a-long-passphrase,viewer:another-one")
    assert result.returncode == 0, result.stderr
    broker = _env(services["worker-gpu"])["ATELIER_REDIS_URL"]
    assert result.stdout.splitlines() == [f"--broker={broker}", "flower", "--port=5555", "--persistent=False"]


def _run_flower_command(flower: dict[str, Any], tmp_path: Path, auth: str | None) -> subprocess.CompletedProcess[str]:
    """The flower container's entrypoint + command under sh, with a stand-in `celery` that prints its argv."""
    assert _argv(flower["entrypoint"]) == ["/bin/sh", "-c"]
    fake = tmp_path / "celery"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "CELERY_BROKER_URL": _env(flower)["CELERY_BROKER_URL"]}
    if auth is not None:
        env["FLOWER_BASIC_AUTH"] = auth
    script = str(_argv(flower["command"])[0]).replace("$$", "$")  # compose's escape for a literal $
    return subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=10)


# --- Dockerfiles and build context ------------------------------------------------------------


def test_api_image_never_installs_torch() -> None:
    instructions = _dockerfile(API_DOCKERFILE)
    assert instructions[0] == ("FROM", "python:3.11-slim")
    installs = _pip_installs(instructions)
    assert any('".[api]"' in args for _, args in installs)
    for _, args in installs:
        assert not re.search(r"\btorch|\[[^\]]*\bworker\b", args), f"API image installs torch: {args}"
    check = [i for i, (kw, args) in enumerate(instructions) if kw == "RUN" and "find_spec('torch')" in args]
    assert check and check[-1] > installs[-1][0], "the no-torch check must run after the last pip install"


def test_api_install_set_excludes_torch() -> None:
    project = _pyproject()["project"]
    requirements = project["dependencies"] + project.get("optional-dependencies", {}).get("api", [])
    assert {"torch", "torchvision"}.isdisjoint(map(_requirement_name, requirements))


def test_worker_image_installs_the_worker_extra_and_bakes_vgg19() -> None:
    instructions = _dockerfile(WORKER_DOCKERFILE)
    assert instructions[0] == ("FROM", "python:3.11-slim")
    installs = _pip_installs(instructions)
    assert any('".[worker]"' in args for _, args in installs)
    env = _env_instructions(instructions)
    # torch caches into $TORCH_HOME/hub/checkpoints; the worker reads <ATELIER_TORCH_HOME>/checkpoints.
    assert env["ATELIER_TORCH_HOME"] == env["TORCH_HOME"] + "/hub", "weights must be baked where the worker looks"
    bake = [i for i, (kw, args) in enumerate(instructions) if "VGG19_Weights.IMAGENET1K_V1.get_state_dict" in args]
    assert len(bake) == 1 and instructions[bake[0]][0] == "RUN"
    first_torchvision = min(i for i, args in installs if "torchvision" in args)
    assert bake[0] > first_torchvision, "weights are fetched after torchvision is installed"


def test_worker_image_signals_the_whole_process_group() -> None:
    # SIGTERM reaches PID 1 only; the pool child running the job must see it to checkpoint.
    entrypoints = [args for kw, args in _dockerfile(WORKER_DOCKERFILE) if kw == "ENTRYPOINT"]
    assert entrypoints and _argv(json.loads(entrypoints[-1]))[:3] == ["/usr/bin/tini", "-g", "--"]


def test_worker_image_torch_pins_match_pyproject() -> None:
    pins: dict[str, str] = {}
    for requirement in _pyproject()["project"]["optional-dependencies"]["worker"]:
        pin = re.fullmatch(r"(torch|torchvision)==(\S+)", requirement.replace(" ", ""))
        if pin:
            pins[pin[1]] = pin[2]
    args = dict(a.split("=", 1) for kw, a in _dockerfile(WORKER_DOCKERFILE) if kw == "ARG" and "=" in a)
    assert args["TORCH_VERSION"] == pins["torch"]
    assert args["TORCHVISION_VERSION"] == pins["torchvision"]


def test_images_run_as_non_root() -> None:
    for path in (API_DOCKERFILE, WORKER_DOCKERFILE):
        users = [args for kw, args in _dockerfile(path) if kw == "USER"]
        assert users and users[-1] not in ("root", "0"), path.name


def test_dockerignore_keeps_local_state_out_and_sources_in() -> None:
    patterns = {line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip()[:1] not in ("", "#")}
    assert {".git", ".venv", ".atelier"} <= patterns
    needed = {"pyproject.toml", "README.md", "services", "shared", "workers"}
    assert not needed & patterns, f"build context would lack {needed & patterns}"


# --- deploy/k8s --------------------------------------------------------------------------------


def test_every_k8s_manifest_parses_and_is_namespace_free() -> None:
    docs = _k8s_docs()
    assert docs, "no manifests in deploy/k8s"
    for filename, doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= doc.keys(), filename
        assert doc["metadata"].get("name"), filename
        assert "namespace" not in doc["metadata"], f"{filename}: manifests are namespace-free"


def test_k8s_selectors_match_their_pods() -> None:
    deployments = [doc for _, doc in _k8s_docs() if doc["kind"] == "Deployment"]
    for deployment in deployments:
        selector = deployment["spec"]["selector"]["matchLabels"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), deployment["metadata"]["name"]
    service = _k8s("Service", "atelier-api")
    api_labels = _k8s("Deployment", "atelier-api")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= api_labels.items()


def test_k8s_config_refs_resolve_and_name_known_settings() -> None:
    defined = {(doc["kind"], doc["metadata"]["name"]): doc for _, doc in _k8s_docs()}
    known = {f"ATELIER_{field.upper()}" for field in Settings.model_fields}
    for (kind, name), doc in defined.items():
        if kind not in ("Deployment", "Job"):
            continue
        for container in _pod_spec(doc)["containers"]:
            assert {e["name"] for e in container.get("env", [])} <= known, name
            for source in container.get("envFrom", []):
                ref_kind = "ConfigMap" if "configMapRef" in source else "Secret"
                ref = source["configMapRef"] if "configMapRef" in source else source["secretRef"]
                target = defined.get((ref_kind, ref["name"]))
                assert target, f"{name} references missing {ref_kind}/{ref['name']}"
                keys = (target.get("data") or {}) | (target.get("stringData") or {})
                assert set(keys) <= known, f"{ref_kind}/{ref['name']} has unknown settings"


def test_k8s_gpu_worker_is_one_process_per_gpu_with_time_to_checkpoint() -> None:
    worker = _k8s("Deployment", "atelier-worker-gpu")
    (container,) = _pod_spec(worker)["containers"]
    assert str(container["resources"]["limits"]["nvidia.com/gpu"]) == "1"
    (argv,) = _containers_argv(worker)
    assert _has_flag(argv, "-Q", "gpu") and _has_flag(argv, "--concurrency", "1")
    assert _pod_spec(worker)["terminationGracePeriodSeconds"] >= MIN_GPU_GRACE_S


def test_k8s_workers_set_torch_threads_within_their_cpu_request() -> None:
    for name in ("atelier-worker-gpu", "atelier-worker-cpu"):
        workload = _k8s("Deployment", name)
        (container,) = _pod_spec(workload)["containers"]
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        threads = Settings(torch_threads=int(env["ATELIER_TORCH_THREADS"])).torch_threads
        assert threads is not None, name
        (argv,) = _containers_argv(workload)
        processes = int(argv[argv.index("--concurrency") + 1])
        assert threads * processes <= max(int(container["resources"]["requests"]["cpu"]), processes), name
    gpu_env = _pod_spec(_k8s("Deployment", "atelier-worker-gpu"))["containers"][0]["env"]
    assert int({e["name"]: e["value"] for e in gpu_env}["ATELIER_TORCH_THREADS"]) <= GPU_WORKER_THREADS


def test_k8s_workers_keep_the_image_entrypoint() -> None:
    for name in ("atelier-worker-gpu", "atelier-worker-cpu"):
        for container in _pod_spec(_k8s("Deployment", name))["containers"]:
            assert "command" not in container, f"{name}: `command` replaces tini; use `args`"


def test_k8s_beat_is_a_singleton() -> None:
    beat = _k8s("Deployment", "atelier-beat")
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"]["type"] == "Recreate"
    assert "beat" in _containers_argv(beat)[0]
    api_image = _pod_spec(_k8s("Deployment", "atelier-api"))["containers"][0]["image"]
    assert _pod_spec(beat)["containers"][0]["image"] == api_image, "beat needs no torch"


def test_k8s_migrate_job_runs_the_migration_once() -> None:
    job = _k8s("Job", "atelier-migrate")
    assert _containers_argv(job) == [MIGRATE_COMMAND]
    assert _pod_spec(job)["restartPolicy"] in ("Never", "OnFailure")
    api_image = _pod_spec(_k8s("Deployment", "atelier-api"))["containers"][0]["image"]
    assert _pod_spec(job)["containers"][0]["image"] == api_image


KEDA_QUERY = "SELECT count(*) FROM jobs WHERE queue = 'gpu' AND state IN ('queued', 'running')"


def test_keda_scales_the_gpu_worker_on_queued_plus_running_jobs_in_postgres() -> None:
    (scaled,) = [doc for _, doc in _k8s_docs() if doc["kind"] == "ScaledObject"]
    assert scaled["apiVersion"].startswith("keda.sh/")
    target = scaled["spec"]["scaleTargetRef"]
    assert target.get("kind", "Deployment") == "Deployment"
    assert target["name"] == _k8s("Deployment", "atelier-worker-gpu")["metadata"]["name"]
    # One trigger: Postgres' count of the gpu queue's queued and running jobs (no Redis list: it hides running
    # and prefetched work), one worker per job; tests/integration/test_keda_query.py runs this very query
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "postgresql"
    assert trigger["metadata"]["query"] == KEDA_QUERY
    assert trigger["metadata"]["targetQueryValue"] == "1"
    # Its connection comes from a TriggerAuthentication that reads a Secret the example defines
    auth = _k8s("TriggerAuthentication", trigger["authenticationRef"]["name"])
    (ref,) = auth["spec"]["secretTargetRef"]
    assert ref["parameter"] == "connection"
    secret = _k8s("Secret", ref["name"])
    assert secret["stringData"][ref["key"]].startswith("postgresql://")


def test_scale_down_leaves_a_training_pod_time_to_checkpoint_and_hand_back() -> None:
    # The grace must cover the checkpoint upload's whole retry deadline and the final fenced write, with room
    # for a training step (deploy/README.md's arithmetic), at the default settings
    defaults = Settings()
    grace = _pod_spec(_k8s("Deployment", "atelier-worker-gpu"))["terminationGracePeriodSeconds"]
    assert grace >= defaults.storage_retry_deadline_s + defaults.lease_s / 3 + MIN_STEP_ROOM_S


def test_k8s_manifests_match_the_kubernetes_schemas() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    for filename, doc in _k8s_docs():
        if doc["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: no schema ships with kubernetes-validate
        try:
            kubernetes_validate.validate(doc, K8S_SCHEMA_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{filename}: {error.message}")


# --- docker-compose config (deploy/check-compose.sh) -------------------------------------------

needs_compose = pytest.mark.skipif(
    shutil.which("docker-compose") is None,
    reason="docker-compose CLI not installed (apt-get install -y docker-compose)",
)


def _check_compose(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(CHECK_COMPOSE), *args], capture_output=True, text=True, timeout=120)


@needs_compose
def test_compose_file_passes_docker_compose_config() -> None:
    result = _check_compose()
    assert result.returncode == 0, result.stderr


@needs_compose
def test_check_compose_rejects_an_invalid_file(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text("services:\n  api:\n    image: atelier-api\n    restrat: always\n")
    result = _check_compose(str(broken))
    assert result.returncode != 0
    assert "restrat" in result.stderr

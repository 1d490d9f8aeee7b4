"""Static checks of the container files: Dockerfile.api, Dockerfile.worker, the script they
install the dependencies with, docker-compose.yml, docker/nginx.conf, .env.example and
.dockerignore. No Docker engine is needed; hadolint and check-jsonschema come with the dev
extra, nginx (for `nginx -t`) from the system.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from fnmatch import fnmatchcase
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REQUIRE_SERVICES

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILES = {"api": ROOT / "Dockerfile.api", "worker": ROOT / "Dockerfile.worker"}
KINDS = sorted(DOCKERFILES)
REQUIREMENTS_SCRIPT = "docker/requirements_from_pyproject.py"
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
PYPROJECT = ROOT / "pyproject.toml"
NGINX_CONF = ROOT / "docker" / "nginx.conf"

# Services that run the application, with the Dockerfile each one builds from.
APP_SERVICES = {"api": "api", "worker": "worker", "worker-gpu": "worker"}
# Services that `docker compose up --scale NAME=N` may start several of.
SCALED_SERVICES = sorted(APP_SERVICES)
# The directories both sides share: settings variable -> named volume. The model registry is
# on the object store (MinIO), not on a volume.
SHARED_DIRS = {"CXR_DATA_DIR": "data", "CXR_STATE_DIR": "state"}
MODELS_URI, S3_ENDPOINT = "s3://cxr-models/models", "http://minio:9000"
BROKER_URL = "redis://redis:6379/0"
# A value read from .env (or the shell) that compose refuses to start without.
REQUIRED_VARIABLE = re.compile(r"\$\{([A-Z][A-Z0-9_]*):\?[^}]+\}")
EXPECTED_CMD = {"api": ["cxr", "serve"], "worker": ["cxr", "worker"]}


def tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.exists():
        pytest.skip(f"{name} is not installed next to {sys.executable} (pip install -e '.[dev]')")
    return str(path)


def run(args: list[Any], cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    args, env = [str(a) for a in args], {**os.environ, **env}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


HEREDOC = re.compile(r"<<-?(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\1")


@cache
def dockerfile(kind: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction, continuation lines joined (Docker skips empty and
    comment lines inside them) and the bodies of its here-documents appended, one line each."""
    lines = iter(DOCKERFILES[kind].read_text().splitlines())
    instructions = []
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        while line.endswith("\\"):
            if (following := next(lines).strip()) and not following.startswith("#"):
                line = line[:-1].rstrip() + " " + following
        for match in HEREDOC.finditer(line):
            line += "".join(f"\n{body}" for body in iter(lines.__next__, match[2]))
        keyword, _, args = line.strip().partition(" ")
        instructions.append((keyword.upper(), args))
    return instructions


def values(kind: str, keyword: str) -> dict[str, str]:
    """Variables set by the ENV or ARG instructions of a Dockerfile."""
    found = {}
    for args in all_of(kind, keyword):
        for key, value in re.findall(r'([A-Za-z_]\w*)=("[^"]*"|\S*)', args):
            found[key] = value.strip('"')
    return found


def all_of(kind: str, keyword: str) -> list[str]:
    return [args for word, args in dockerfile(kind) if word == keyword]


def step(kind: str, needle: str) -> int:
    """Index of the first instruction whose text ("RUN pip install ...") contains ``needle``."""
    found = [n for n, (word, args) in enumerate(dockerfile(kind)) if needle in f"{word} {args}"]
    assert found, f"Dockerfile.{kind} has no {needle!r}"
    return found[0]


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def service(name: str) -> dict[str, Any]:
    return compose()["services"][name]


def environment(svc: dict[str, Any]) -> dict[str, str]:
    return {key: "" if value is None else str(value)
            for key, value in svc.get("environment", {}).items()}


def volume_mounts(svc: dict[str, Any]) -> dict[str, str]:
    """Container path -> source of each (short syntax) mount."""
    return {target: source for source, target, *_ in (v.split(":") for v in svc["volumes"])}


def seconds(duration: str) -> float:
    """A compose duration ("2m", "1m30s", "90s") in seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s)", duration)
    assert "".join(n + u for n, u in parts) == duration, f"bad duration {duration!r}"
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1, "ms": 1e-3}[u] for n, u in parts)


# === hadolint ===================================================================================
def hadolint(path: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # A hadolint.yaml in the user's config directory must not change the outcome.
    args = [tool("hadolint"), "--format", "json", "--failure-threshold", "warning", path]
    return run(args, HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path))


@pytest.mark.parametrize("kind", KINDS)
def test_hadolint_passes(kind: str, tmp_path: Path) -> None:
    result = hadolint(DOCKERFILES[kind], tmp_path)
    findings = json.loads(result.stdout or "[]")
    report = "\n".join(f"{f['line']}: {f['code']} ({f['level']}) {f['message']}" for f in findings)
    assert result.returncode == 0 and not findings, f"Dockerfile.{kind}:\n{report}{result.stderr}"


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    """The lint above is not vacuous: the same invocation rejects common mistakes."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\nUSER root\nCMD cxr serve\n")
    result = hadolint(bad, tmp_path)
    assert result.returncode != 0
    assert {"DL3007", "DL3013", "DL3002"} <= {f["code"] for f in json.loads(result.stdout)}


# === Dockerfiles ================================================================================
@pytest.mark.parametrize("kind", KINDS)
def test_base_user_environment_and_cmd(kind: str) -> None:
    # The same pinned base, and the same numeric non-root user (Kubernetes' runAsNonRoot can
    # verify it) in both images: they write to the same volumes.
    (base,) = all_of(kind, "FROM")
    assert base == all_of("api", "FROM")[0]
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", base), base
    assert all_of(kind, "USER")[-1] == "10001:10001"
    setup = "\n".join(all_of(kind, "RUN"))
    assert re.search(r"groupadd --system --gid 10001 cxr\b", setup)
    assert re.search(r"useradd --system --uid 10001 --gid cxr\b", setup)
    env = values(kind, "ENV")
    assert env["PYTHONDONTWRITEBYTECODE"] == env["PYTHONUNBUFFERED"] == "1"
    assert env["PIP_NO_CACHE_DIR"] == "1"
    assert all("--no-cache-dir" in cmd for cmd in re.findall(r"pip install[^\n&;]*", setup))
    assert json.loads(all_of(kind, "CMD")[-1]) == EXPECTED_CMD[kind]
    assert not all_of(kind, "ENTRYPOINT")


@pytest.mark.parametrize("kind", KINDS)
def test_dependencies_are_installed_before_the_code_is_copied(kind: str) -> None:
    instructions = dockerfile(kind)
    copies = [n for n, (word, _) in enumerate(instructions) if word == "COPY"]
    assert all_of(kind, "COPY") == [f"pyproject.toml {REQUIREMENTS_SCRIPT} ./", ". ."]
    deps = step(kind, "RUN python requirements_from_pyproject.py")
    assert re.fullmatch(
        r'python requirements_from_pyproject\.py "\$PROJECT_EXTRAS" > (\S+)'
        r" && pip install --no-cache-dir --requirement \1 && rm \1",
        instructions[deps][1],
    ), instructions[deps]
    project = step(kind, "RUN pip install --no-cache-dir --no-deps .")
    assert copies[0] < deps < copies[1] < project
    assert values(kind, "ARG")["PROJECT_EXTRAS"] == kind


@pytest.mark.parametrize("variable", sorted(SHARED_DIRS))
def test_settings_paths_are_shared_volumes_owned_by_the_user(variable: str) -> None:
    volume, path = SHARED_DIRS[variable], values("api", "ENV")[variable]
    assert volume in compose()["volumes"]
    for kind in KINDS:
        assert values(kind, "ENV")[variable] == path
        # Created in the image (owned by the user) so that a fresh named volume inherits it.
        setup = "\n".join(all_of(kind, "RUN"))
        assert re.search(rf"mkdir -p [^\n&]*{re.escape(path)}\b", setup), path
        assert re.search(rf"chown -R cxr:cxr {re.escape(str(Path(path).parent))}\b", setup)
    for name in APP_SERVICES:
        assert environment(service(name))[variable] == path, name
        assert volume_mounts(service(name)).get(path) == volume, name


def test_api_port_and_healthchecks() -> None:
    assert all_of("api", "EXPOSE") == ["8000"]
    env = values("api", "ENV")
    assert env["CXR_PORT"] == "8000" and env["CXR_HOST"] == "0.0.0.0"
    api = service("api")
    assert environment(api)["CXR_PORT"] == "8000"
    # No host port: replicas would collide on it; clients come through the load balancer.
    assert "ports" not in api
    (check,) = all_of("api", "HEALTHCHECK")
    options, _, command = check.partition("CMD ")
    assert re.search(r"--start-period=\d+s", options), "TensorFlow needs time to start"
    for probe in (json.loads(command), api["healthcheck"]["test"][1:]):
        # Liveness: /healthz (/readyz stays 503 until a model is published).
        assert probe[:2] == ["python", "-c"] and "/healthz" in probe[2], probe
        compile(probe[2], "healthcheck", "exec")


def test_worker_image_bakes_in_imagenet_weights_before_the_code() -> None:
    fetch = step("worker", "$FETCH_IMAGENET_WEIGHTS")
    assert values("worker", "ARG")["FETCH_IMAGENET_WEIGHTS"] == "true"
    assert values("worker", "ENV")["KERAS_HOME"] == "/opt/keras"
    body = dockerfile("worker")[fetch][1].removeprefix("<<EOF\n")
    assert body.startswith("set -eu\n"), "without set -e a failing step still produces an image"
    assert 'case "$FETCH_IMAGENET_WEIGHTS" in' in body and "exit 1" in body
    assert "VGG16(include_top=False, weights='imagenet')" in body
    # Keras ignores a KERAS_HOME the running user cannot write to (and downloads again).
    assert 'chown -R cxr:cxr "$KERAS_HOME"' in body
    assert fetch < step("worker", "COPY . .")


# === docker/requirements_from_pyproject.py ======================================================
def requirements(*groups: str, cwd: Path = ROOT, tf: str = "") -> list[str]:
    result = run([sys.executable, ROOT / REQUIREMENTS_SCRIPT, *groups], cwd, TENSORFLOW_EXTRAS=tf)
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    return result.stdout.splitlines()


@pytest.mark.parametrize("kind", KINDS)
def test_requirements_of_the_real_pyproject(kind: str) -> None:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    expected = [*project["dependencies"], *project["optional-dependencies"][kind]]
    assert requirements(kind) == expected
    (tensorflow,) = [line for line in expected if re.match(r"tensorflow(?![\w.-])", line)]
    cuda = tensorflow.replace("tensorflow", "tensorflow[and-cuda]", 1)
    assert "[" not in tensorflow
    assert requirements(kind, tf="and-cuda") == [cuda if r == tensorflow else r for r in expected]


def test_requirements_several_groups_and_errors(tmp_path: Path) -> None:
    base, api, worker = requirements(), requirements("api"), requirements("worker")
    assert requirements("api,worker") == requirements("api", "worker") == api + worker[len(base) :]
    with pytest.raises(RuntimeError, match="no optional-dependencies group 'wrker'"):
        requirements("api", "wrker")
    (tmp_path / "pyproject.toml").write_text('[project]\ndependencies = ["numpy"]\n')
    with pytest.raises(RuntimeError, match="tensorflow is not a dependency"):
        requirements(cwd=tmp_path, tf="and-cuda")


# === docker-compose.yml =========================================================================
def test_compose_matches_the_compose_spec(tmp_path: Path) -> None:
    checker = tool("check-jsonschema")
    result = run([checker, "--builtin-schema", "vendor.compose-spec", COMPOSE_FILE])
    assert result.returncode == 0, result.stdout + result.stderr
    # ... and the validator does reject a misspelt key.
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE_FILE.read_text().replace("depends_on:", "depend_on:", 1))
    assert run([checker, "--builtin-schema", "vendor.compose-spec", broken]).returncode != 0


def test_compose_services_and_gpu_opt_in() -> None:
    assert "version" not in compose()
    services = {"redis", "minio", "minio-init", "lb", "flower", *APP_SERVICES}
    assert set(compose()["services"]) == services
    assert service("redis")["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert volume_mounts(service("redis")) == {"/data": "redis"}
    gpu = service("worker-gpu")
    assert gpu["profiles"] == ["gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device == {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}
    assert gpu["build"]["args"]["TENSORFLOW_EXTRAS"] == "and-cuda"
    assert service("flower")["profiles"] == ["ops"]
    # Everything else starts, on a host without a GPU, with a plain `docker compose up`.
    for name in services - {"worker-gpu", "flower"}:
        assert "profiles" not in service(name) and "deploy" not in service(name), name


def test_compose_scales() -> None:
    """`docker compose up --scale api=3 --scale worker=2` (and worker-gpu) works as written:
    nothing a replica would have to own alone, and every published port is someone's."""
    published = []
    for name, svc in compose()["services"].items():
        assert "container_name" not in svc, f"{name}: a fixed name allows one container"
        published += [port.rsplit(":", 1)[0] for port in svc.get("ports", [])]
    assert len(published) == len(set(published)), published
    for name in SCALED_SERVICES:
        svc = service(name)
        # A host port would collide; a fixed hostname would give two workers one Celery
        # node name (and the healthcheck pings celery@$HOSTNAME).
        assert "ports" not in svc and "hostname" not in svc, name


@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_app_services_use_the_object_store(name: str) -> None:
    svc, env = service(name), environment(service(name))
    assert env["CXR_MODELS_URI"] == MODELS_URI and env["CXR_S3_ENDPOINT_URL"] == S3_ENDPOINT
    assert env["CXR_LOG_FORMAT"] == "json"
    # boto3's standard variables, from the same required variables as MinIO's root user.
    minio = environment(service("minio"))
    assert env["AWS_ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"]
    assert env["AWS_SECRET_ACCESS_KEY"] == minio["MINIO_ROOT_PASSWORD"]
    assert REQUIRED_VARIABLE.fullmatch(env["AWS_SECRET_ACCESS_KEY"])
    # No registry volume any more, and the cache of verified copies is the container's own:
    # each API process evicts the versions it no longer serves from its cache.
    assert "models" not in compose()["volumes"]
    cache = Path(env["CXR_MODEL_CACHE_DIR"])
    assert cache.is_absolute()
    assert not [m for m in volume_mounts(svc) if cache.is_relative_to(m)], volume_mounts(svc)
    assert svc["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"


def test_minio_and_its_bucket() -> None:
    minio, init = service("minio"), service("minio-init")
    release = r"quay\.io/minio/{}:RELEASE\.\d{{4}}-\d\d-\d\dT\d\d-\d\d-\d\dZ"
    assert re.fullmatch(release.format("minio"), minio["image"]), minio["image"]
    assert re.fullmatch(release.format("mc"), init["image"]), init["image"]
    assert minio["healthcheck"]["test"] == ["CMD", "mc", "ready", "local"]
    assert volume_mounts(minio) == {"/data": "minio"} and "ports" not in minio
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"
    assert "restart" not in init  # one-shot
    # The bucket CXR_MODELS_URI names, made by the credentials as shell variables ($$).
    bucket = MODELS_URI.removeprefix("s3://").split("/")[0]
    (script,) = init["command"]
    assert re.search(rf"^mc mb --ignore-existing (\w+)/{bucket}$", script, re.M), script
    assert '"$$MINIO_ROOT_USER" "$$MINIO_ROOT_PASSWORD"' in script
    assert init["entrypoint"][:2] == ["/bin/sh", "-euc"]
    assert environment(init)["MINIO_ROOT_PASSWORD"] == environment(minio)["MINIO_ROOT_PASSWORD"]


def test_no_secret_is_written_in_the_compose_file() -> None:
    """Every credential comes from a required variable that .env.example leaves empty."""
    secret = re.compile(r"PASSWORD|SECRET|ACCESS_KEY|AUTH|TOKEN|API_KEYS")
    for name, svc in compose()["services"].items():
        for key, value in environment(svc).items():
            if secret.search(key):
                assert REQUIRED_VARIABLE.fullmatch(value), f"{name}: {key}={value}"
    required = set(REQUIRED_VARIABLE.findall(COMPOSE_FILE.read_text()))
    assert required == {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "FLOWER_BASIC_AUTH"}
    placeholders = env_example()
    for variable in required:
        assert placeholders.get(variable) == "", f".env.example must list {variable}= (empty)"
    assert "minioadmin" not in COMPOSE_FILE.read_text()


@pytest.mark.parametrize("name", ["worker", "worker-gpu"])
def test_worker_metrics_on_the_compose_network(name: str) -> None:
    worker, env = service(name), environment(service(name))
    assert env["CXR_WORKER_METRICS_HOST"] == "0.0.0.0"
    assert env["CXR_WORKER_METRICS_PORT"] == "9101"
    assert worker["expose"] == [env["CXR_WORKER_METRICS_PORT"]] and "ports" not in worker


def test_flower_behind_basic_auth_on_loopback() -> None:
    flower, env = service("flower"), environment(service("flower"))
    assert re.fullmatch(r"mher/flower:\d+\.\d+\.\d+", flower["image"]), flower["image"]
    assert flower["profiles"] == ["ops"]
    match = REQUIRED_VARIABLE.fullmatch(env["FLOWER_BASIC_AUTH"])
    assert match and match[1] == "FLOWER_BASIC_AUTH"
    assert flower["ports"] == [f"127.0.0.1:{env['FLOWER_PORT']}:{env['FLOWER_PORT']}"]
    # Celery's own options come before the `flower` subcommand.
    assert flower["command"] == ["celery", f"--broker={BROKER_URL}", "flower"]
    assert flower["depends_on"]["redis"]["condition"] == "service_healthy"
    assert flower["healthcheck"]["test"][:2] == ["CMD", "python"]


@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_app_services_build_their_dockerfile(name: str) -> None:
    svc, kind = service(name), APP_SERVICES[name]
    assert ROOT / svc["build"].get("context", ".") / svc["build"]["dockerfile"] == DOCKERFILES[kind]
    assert set(svc["build"].get("args", {})) <= set(values(kind, "ARG"))
    assert svc["command"] == EXPECTED_CMD[kind]
    assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
    assert environment(svc)["CXR_BROKER_URL"] == BROKER_URL
    # A fresh clone without .env must still come up.
    assert all(entry["required"] is False for entry in svc.get("env_file", []))


@pytest.mark.parametrize("name", ["worker", "worker-gpu"])
def test_worker_healthcheck_and_grace_period(name: str) -> None:
    worker = service(name)
    kind, test = worker["healthcheck"]["test"]
    # Only this container's node; $$ is Compose's escape for a literal $.
    ping = r'celery -A worker\.celery_app inspect ping --timeout (\d+) -d "celery@\$\$HOSTNAME"'
    assert kind == "CMD-SHELL" and (match := re.fullmatch(ping, test)), test
    assert seconds(worker["healthcheck"]["timeout"]) > int(match[1])
    assert seconds(worker["stop_grace_period"]) >= 60


# === the load balancer: service lb, docker/nginx.conf ==========================================
@cache
def nginx_conf() -> str:
    """docker/nginx.conf without its comments (none of its strings holds a #)."""
    return re.sub(r"#[^\n]*", "", NGINX_CONF.read_text())


def directive(name: str) -> list[str]:
    """The arguments of every ``name ...;`` in docker/nginx.conf, in order."""
    return [" ".join(args.split()) for args in
            re.findall(rf"^\s*{re.escape(name)}\s+([^;{{]*);", nginx_conf(), re.M)]


def nginx_size(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([kKmMgG]?)", value).groups()  # type: ignore[union-attr]
    return int(number) * 1024 ** " kmg".index(unit.lower() or " ")


def nginx_seconds(value: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(ms|s|m|h)?", value).groups()  # type: ignore[union-attr]
    return int(number) * {"ms": 1e-3, "s": 1, "m": 60, "h": 3600}[unit or "s"]


def test_load_balancer_service() -> None:
    lb = service("lb")
    assert re.fullmatch(r"nginx:\d+\.\d+(\.\d+)?-alpine", lb["image"]), lb["image"]
    (port,) = lb["ports"]
    host_port, _, container_port = port.partition(":")
    # The host's port 8000, where the API used to be, onto the server nginx listens with.
    assert host_port == "8000" and container_port in directive("listen"), port
    assert lb["volumes"] == [f"./{NGINX_CONF.relative_to(ROOT)}:/etc/nginx/nginx.conf:ro"]
    assert NGINX_CONF.is_file()
    assert lb["depends_on"]["api"]["condition"] == "service_healthy"
    # nginx's own liveness, on a loopback-only listener of the config.
    check = lb["healthcheck"]["test"]
    (health,) = re.findall(r"http://(127\.0\.0\.1:\d+)/", " ".join(check))
    assert health in directive("listen"), health


def test_nginx_finds_every_api_replica() -> None:
    """Docker's DNS asked at request time (cached briefly), through a proxy_pass variable,
    so replicas started later by --scale get requests too."""
    (resolver,) = directive("resolver")
    match = re.fullmatch(r"127\.0\.0\.11 valid=(\d+)s( ipv6=off)?", resolver)
    assert match and int(match[1]) <= 10, resolver
    (proxy_pass,) = directive("proxy_pass")
    variable = re.fullmatch(r"\$(\w+)", proxy_pass)
    assert variable, f"proxy_pass {proxy_pass}: a literal host is resolved once, at start"
    api_port = environment(service("api"))["CXR_PORT"]
    assert f"${variable[1]} http://api:{api_port}" in directive("set")
    assert not directive("upstream")


def test_nginx_passes_uploads_and_request_ids() -> None:
    from shared.config import Settings

    (body,) = directive("client_max_body_size")
    limit = max(Settings.model_fields["max_upload_bytes"].default,
                int(env_example()["CXR_MAX_UPLOAD_BYTES"]))
    assert nginx_size(body) >= limit >= 512 * 1024**2
    assert directive("proxy_request_buffering") == ["off"]
    assert directive("proxy_http_version") == ["1.1"]  # streams chunked bodies too
    (read,) = directive("proxy_read_timeout")
    (send,) = directive("proxy_send_timeout")
    assert nginx_seconds(read) >= 120 and nginx_seconds(send) >= 120
    # The client's X-Request-ID, or a fresh $request_id when it sent none or one the API would
    # not accept (then the API logs the id nginx logs).
    from shared.logs import REQUEST_ID

    match = re.search(r"map \$http_x_request_id \$(\w+) \{(.*?)\n\s*\}", nginx_conf(), re.S)
    assert match and re.search(r"default\s+\$request_id;", match[2]), match
    accepted = re.findall(r'"~([^"]+)"\s+\$http_x_request_id;', match[2])
    assert accepted == [REQUEST_ID.pattern], accepted
    headers = dict(h.split(" ", 1) for h in directive("proxy_set_header"))
    assert headers["X-Request-ID"] == f"${match[1]}"
    assert headers["X-Forwarded-For"] in ("$remote_addr", "$proxy_add_x_forwarded_for")
    assert headers["X-Forwarded-Proto"] == "$scheme"
    assert f"X-Request-ID ${match[1]} always" in directive("add_header")


def nginx_binary() -> str | None:
    # Debian puts it in /usr/sbin, which a user's PATH may lack.
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def nginx_test(config: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    binary = nginx_binary()
    if binary is None:
        message = "no nginx binary (apt-get install nginx) to check docker/nginx.conf"
        if REQUIRE_SERVICES:  # CI: .ci/run installs it
            pytest.fail(message)
        pytest.skip(message)
    # Prefix, startup log and pid file under tmp_path: no root needed, nothing touched.
    args = [binary, "-t", "-p", tmp_path, "-e", "stderr", "-g", f"pid {tmp_path}/nginx.pid;",
            "-c", config]
    return run(args, cwd=tmp_path)


def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    """`nginx -t` passes without resolving `api` (no such host here): a literal proxy_pass
    host would fail it, as it would fail nginx's start before the first replica is up."""
    config = tmp_path / "nginx.conf"
    shutil.copyfile(NGINX_CONF, config)
    result = nginx_test(config, tmp_path)
    assert result.returncode == 0, result.stderr
    broken = tmp_path / "broken.conf"
    broken.write_text(NGINX_CONF.read_text().replace("client_max_body_size", "client_max_body"))
    assert nginx_test(broken, tmp_path).returncode != 0


# === settings names and values ==================================================================
def env_example() -> dict[str, str]:
    """The active (not commented-out) lines of .env.example: KEY=VALUE, unquoted, no comment
    after the value (what both env_file and Settings read the same way)."""
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            assert re.fullmatch(r"[A-Z][A-Z0-9_]*", key) and key not in values, line
            assert value == value.strip() and "#" not in value, line
            assert not value.startswith(("'", '"')), line
            values[key] = value
    return values


def test_cxr_variables_are_the_settings() -> None:
    from shared.config import Settings

    # The variable names Settings reads: its prefix + field name, or a field's own alias.
    prefix, fields = Settings.model_config.get("env_prefix", ""), Settings.model_fields
    known = {
        (f.validation_alias if isinstance(f.validation_alias, str) else prefix + name).upper()
        for name, f in fields.items()
    }
    for path in (COMPOSE_FILE, ENV_EXAMPLE, *DOCKERFILES.values()):
        unknown = set(re.findall(r"\bCXR_[A-Z0-9_]+\b", path.read_text())) - known
        assert not unknown, f"{path.name} uses {sorted(unknown)}, not settings of shared.config"
    # .env.example documents each one (commented out where the default or compose applies).
    documented = set(re.findall(r"^#?\s*(CXR_[A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), re.M))
    missing = known - documented
    assert not missing, f".env.example does not document {sorted(missing)}"


@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_container_settings_are_valid(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a container gets (.env.example, then compose's environment) passes validation."""
    from shared.config import Settings

    for key in [k for k in os.environ if k.startswith("CXR_")]:
        monkeypatch.delenv(key)
    for key, value in {**env_example(), **environment(service(name))}.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.models_uri == MODELS_URI and settings.s3_endpoint_url == S3_ENDPOINT
    assert settings.log_format == "json"
    assert str(settings.effective_model_cache_dir) == "/home/cxr/.cache/cxr-models"
    assert settings.uses_redis
    if APP_SERVICES[name] == "worker":
        assert settings.worker_metrics_port == 9101


# === .dockerignore ==============================================================================
def _match(pattern: list[str], parts: list[str]) -> bool:
    """Docker's matching, segment by segment: `*`, `?`, `[...]` within one, `**` any number."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_match(pattern[1:], parts[n:]) for n in range(len(parts) + 1))
    return bool(parts) and fnmatchcase(parts[0], pattern[0]) and _match(pattern[1:], parts[1:])


def ignored(path: str) -> bool:
    """Whether Docker leaves ``path`` out of the build context: the last pattern matching it or
    a directory above it decides (a `!` pattern takes it back in)."""
    parts, excluded = path.split("/"), False
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        if (line := line.strip()) and not line.startswith("#"):
            pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/").split("/")
            if any(_match(pattern, parts[:n]) for n in range(1, len(parts) + 1)):
                excluded = not line.startswith("!")
    return excluded


def test_dockerignore() -> None:
    """Out: local state, caches, secrets, tests. In: the requirements script and everything the
    package build reads."""
    for path in (".venv/bin/python", ".git/HEAD", ".env", "models/v1/model.keras", "tests/x.py"):
        assert ignored(path), path
    assert ignored("api/__pycache__/main.cpython-311.pyc") and ignored("cxr.egg-info/PKG-INFO")
    setuptools = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]
    needed = [REQUIREMENTS_SCRIPT, "pyproject.toml", "README.md", "api/models.py"]
    needed += [f"{module}.py" for module in setuptools["py-modules"]]
    for package in setuptools["packages"]:
        folder = ROOT / package.replace(".", "/")
        needed += [p.relative_to(ROOT).as_posix() for p in folder.glob("*.py")]
    for package, patterns in setuptools.get("package-data", {}).items():
        needed += [f"{package.replace('.', '/')}/{pattern}" for pattern in patterns]
    assert not [path for path in needed if ignored(path)]

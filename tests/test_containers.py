"""Static checks of the container files: Dockerfile.api, Dockerfile.worker, the lock they
install the dependencies from, docker-compose.yml, docker/nginx.conf, .env.example and
.dockerignore, and the package's licence. No Docker engine is needed; hadolint and
check-jsonschema come with the dev extra, nginx (for `nginx -t`) from the system.
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

from tests.helpers.env import REQUIRE_SERVICES

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILES = {"api": ROOT / "Dockerfile.api", "worker": ROOT / "Dockerfile.worker"}
KINDS = sorted(DOCKERFILES)
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


# === the lock: uv.lock ==========================================================================
def uv() -> str:
    return tool("uv")


def exported(*extras: str) -> dict[str, str]:
    """Name -> pinned version of what the Dockerfiles' dependency step installs for ``extras``,
    each with its hashes."""
    flags = [arg for extra in extras for arg in ("--extra", extra)]
    result = run([uv(), "export", "--frozen", "--no-emit-project", "--no-header", *flags])
    assert result.returncode == 0, result.stderr
    pins = re.findall(r"^([A-Za-z0-9][\w.-]*)==([^ ;\\]+)", result.stdout, re.M)
    assert pins and result.stdout.count("--hash=sha256:") >= len(pins), result.stdout[:500]
    return {canonical(name): version for name, version in pins}


def canonical(requirement: str) -> str:
    """A requirement's project name as the lock spells it (PEP 503)."""
    name = re.match(r"[A-Za-z0-9][\w.-]*", requirement)
    assert name, requirement
    return re.sub(r"[-_.]+", "-", name[0]).lower()


def test_the_lock_is_current_with_pyproject() -> None:
    # --offline: the check needs no index, only what uv.lock and its cache hold
    result = run([uv(), "lock", "--check", "--offline"])
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("kind", KINDS)
def test_each_image_installs_its_extras_from_the_lock(kind: str) -> None:
    (arg,) = [a for a in all_of(kind, "ARG") if a.startswith("PROJECT_EXTRAS=")]
    assert arg == f"PROJECT_EXTRAS={kind}"
    assert values(kind, "ARG")["UV_VERSION"] == make_variable("UV_VERSION")
    install = dockerfile(kind)[step(kind, "--require-hashes")][1]
    assert "uv export --frozen --no-emit-project" in install and "$PROJECT_EXTRAS" in install
    assert "--no-deps --require-hashes" in install
    assert step(kind, "COPY pyproject.toml uv.lock") < step(kind, "--require-hashes")
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    direct = [*project["dependencies"], *project["optional-dependencies"][kind]]
    pins = exported(kind)
    assert {canonical(r) for r in direct} <= set(pins), {canonical(r) for r in direct} - set(pins)
    if kind == "worker":  # what the INT8 copy needs beyond onnxruntime's own requirements
        assert "sympy" in pins
    # ... and nothing of the other image's or the test tools
    foreign = {"api": {"matplotlib", "scikit-learn", "tf2onnx"}, "worker": {"uvicorn"}}[kind]
    assert not (foreign | {"pytest", "playwright"}) & set(pins)


def test_the_gpu_worker_adds_cuda_from_the_lock() -> None:
    assert service("worker-gpu")["build"]["args"]["PROJECT_EXTRAS"] == "worker gpu"
    cpu, gpu = exported("worker"), exported("worker", "gpu")
    assert gpu["tensorflow"] == cpu["tensorflow"]
    assert not [name for name in cpu if name.startswith("nvidia-")]
    assert "nvidia-cudnn-cu12" in gpu


def make_variable(name: str) -> str:
    (value,) = re.findall(rf"^{name} :?= *(\S+)$", (ROOT / "Makefile").read_text(), re.M)
    return value


# === docker-compose.yml =========================================================================
def test_the_api_healthchecks_are_python_that_compiles() -> None:
    # Liveness: /healthz (/readyz stays 503 until a model is published).
    (check,) = all_of("api", "HEALTHCHECK")
    compose_probe = service("api")["healthcheck"]["test"][1:]
    for probe in (json.loads(check.partition("CMD ")[2]), compose_probe):
        assert probe[:2] == ["python", "-c"] and "/healthz" in probe[2], probe
        compile(probe[2], "healthcheck", "exec")


def test_compose_matches_the_compose_spec(tmp_path: Path) -> None:
    checker = tool("check-jsonschema")
    result = run([checker, "--builtin-schema", "vendor.compose-spec", COMPOSE_FILE])
    assert result.returncode == 0, result.stdout + result.stderr
    # ... and the validator does reject a misspelt key.
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE_FILE.read_text().replace("depends_on:", "depend_on:", 1))
    assert run([checker, "--builtin-schema", "vendor.compose-spec", broken]).returncode != 0


def test_no_secret_is_written_in_the_compose_file() -> None:
    """Every credential comes from a required variable that .env.example leaves empty."""
    secret = re.compile(r"PASSWORD|SECRET|ACCESS_KEY|AUTH|TOKEN|API_KEYS")
    for name, svc in compose()["services"].items():
        for key, value in environment(svc).items():
            if secret.search(key):
                assert REQUIRED_VARIABLE.fullmatch(value), f"{name}: {key}={value}"
    required = set(REQUIRED_VARIABLE.findall(COMPOSE_FILE.read_text()))
    assert required == {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "FLOWER_BASIC_AUTH",
                        "CXR_API_KEYS"}
    placeholders = env_example()
    for variable in required:
        assert placeholders.get(variable) == "", f".env.example must list {variable}= (empty)"
    assert "minioadmin" not in COMPOSE_FILE.read_text()


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


# What the required variables hold in a filled-in .env: an admin key as `cxr key` makes one.
FILLED = {"CXR_API_KEYS": json.dumps([{"name": "admin", "sha256": "0" * 64, "role": "admin"}])}


def interpolated(env: dict[str, str], dotenv: dict[str, str]) -> dict[str, str]:
    """Compose's environment with the required variables taken from .env, as compose does."""
    return {key: REQUIRED_VARIABLE.sub(lambda m: dotenv.get(m[1], "set"), value)
            for key, value in env.items()}


def container_env(name: str, dotenv: dict[str, str]) -> dict[str, str]:
    """What a container of service ``name`` gets: .env (env_file), then its environment."""
    return {**dotenv, **interpolated(environment(service(name)), dotenv)}


@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_container_settings_are_valid(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a container gets (.env.example filled in, then compose's environment) passes
    validation."""
    from shared.config import Settings

    for key in [k for k in os.environ if k.startswith("CXR_")]:
        monkeypatch.delenv(key)
    for key, value in container_env(name, {**env_example(), **FILLED}).items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.models_uri == MODELS_URI and settings.s3_endpoint_url == S3_ENDPOINT
    assert settings.log_format == "json"
    assert str(settings.effective_model_cache_dir) == "/home/cxr/.cache/cxr-models"
    assert settings.uses_redis
    if APP_SERVICES[name] == "worker":
        assert settings.worker_metrics_port == 9101


# === the admin key: CXR_API_KEYS ===============================================================
def compose_dotenv(text: str) -> dict[str, str]:
    """A .env file read as compose reads it (compose-go's dotenv): ``export`` dropped, a
    single-quoted value taken as it is, an unquoted one cut at ``#``."""
    values = {}
    for line in text.splitlines():
        line = line.strip().removeprefix("export ").strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        if value.startswith("'"):
            assert value.endswith("'") and len(value) > 1, line
            value = value[1:-1]
        else:
            assert not value.startswith('"') and "$" not in value, line  # expanded by compose
            value = value.split("#")[0].rstrip()
        values[key.strip()] = value
    return values


def test_compose_gives_every_app_container_the_keys_from_env() -> None:
    """Without CXR_API_KEYS compose refuses to start (a stack with no admin key could never
    be given a model), and the api and the workers all get it (the workers read .env too,
    where the empty placeholder would not parse)."""
    for name in APP_SERVICES:
        assert environment(service(name))["CXR_API_KEYS"].startswith(
            "${CXR_API_KEYS:?set CXR_API_KEYS in .env"), name
    assert env_example()["CXR_API_KEYS"] == ""
    assert "cxr key" in ENV_EXAMPLE.read_text()


def test_the_line_cxr_key_prints_pasted_into_env_gives_the_api_an_admin_key(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.config import Settings

    printed = run([sys.executable, "-m", "cxr_cli", "key"])
    assert printed.returncode == 0, printed.stderr
    (line,) = [x for x in printed.stdout.splitlines() if x.startswith("CXR_API_KEYS=")]
    filled = ENV_EXAMPLE.read_text().replace("\nCXR_API_KEYS=\n", f"\n{line}\n")
    assert filled != ENV_EXAMPLE.read_text()
    for key in [k for k in os.environ if k.startswith("CXR_")]:
        monkeypatch.delenv(key)
    for key, value in container_env("api", compose_dotenv(filled)).items():
        monkeypatch.setenv(key, value)
    (admin,) = Settings().api_keys
    assert admin.role == "admin" and admin.sha256 in line


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
    """Out: local state, caches, secrets, tests. In: the lock and everything the package build
    reads."""
    for path in (".venv/bin/python", ".git/HEAD", ".env", "models/v1/model.keras", "tests/x.py"):
        assert ignored(path), path
    assert ignored("api/__pycache__/main.cpython-311.pyc") and ignored("cxr.egg-info/PKG-INFO")
    setuptools = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]
    needed = ["uv.lock", "pyproject.toml", "README.md", "LICENSE", "api/models.py"]
    needed += [f"{module}.py" for module in setuptools.get("py-modules", [])]
    for package in setuptools["packages"]:
        folder = ROOT / package.replace(".", "/")
        needed += [p.relative_to(ROOT).as_posix() for p in folder.glob("*.py")]
    for package, patterns in setuptools.get("package-data", {}).items():
        needed += [f"{package.replace('.', '/')}/{pattern}" for pattern in patterns]
    assert not [path for path in needed if ignored(path)]


def test_the_licence_is_an_spdx_expression_with_its_file() -> None:
    from packaging.licenses import canonicalize_license_expression

    project = tomllib.loads(PYPROJECT.read_text())["project"]
    # a table ({text = ...}) is the deprecated form setuptools warns about on every install
    assert isinstance(project["license"], str)
    assert canonicalize_license_expression(project["license"]) == "MIT"
    assert project["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")

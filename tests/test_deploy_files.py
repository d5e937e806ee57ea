"""The deployment files, checked without Docker.

Dockerfile, docker-compose.yml, gunicorn.conf.py and .dockerignore are read as text/YAML and
held to what the service needs: the processes of CONTRACT.md "Running it", start-up order
behind healthy PostgreSQL and Redis and a finished migration, only environment variables the
settings actually read, a non-root image that never contains `.env`. The production settings
are loaded in subprocesses with the Dockerfile's build-time values and with the compose file's.
"""

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
APP_SERVICES = ("migrate", "web", "worker", "beat")  # built from this repository's image
LONG_RUNNING = ("web", "worker", "beat")
REQUIRED_IN_PRODUCTION = (
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    "SIGNING_SECRET_ENCRYPTION_KEYS",
)
# `env.str("NAME"`, `env.db_url("NAME"`, ...: every variable the settings read goes through `env`.
ENV_READ = re.compile(r'\benv(?:\.\w+)?\(\s*"([A-Z][A-Z0-9_]*)"')


# Read from the environment by what reads it itself, not through the settings: prometheus_client
# (and the files that set it up for it) looks for PROMETHEUS_MULTIPROC_DIR.
OS_ENVIRON_READ = re.compile(r'os\.environ\.get\(\s*"([A-Z][A-Z0-9_]*)"')


def settings_env_names() -> set[str]:
    # base.py reads nearly everything; production.py adds its security toggles.
    names: set[str] = set()
    for name in ("base.py", "production.py"):
        names |= set(ENV_READ.findall((ROOT / "config" / "settings" / name).read_text()))
    for path in ("gunicorn.conf.py", "api/metrics.py"):
        names |= set(OS_ENVIRON_READ.findall((ROOT / path).read_text()))
    return names


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment minus anything the settings read, plus `extra`."""
    drop = settings_env_names() | {"DJANGO_SETTINGS_MODULE"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(extra)
    return env


# --- docker-compose.yml ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def test_compose_has_every_process_and_backing_service(services):
    assert set(services) == {*APP_SERVICES, "postgres", "redis"}
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["redis"]["image"].startswith("redis:7")
    images = {services[name].get("image") for name in APP_SERVICES}
    assert len(images) == 1, f"app services should share one image, got {images}"
    for name in APP_SERVICES:
        assert services[name].get("build") in (".", {"context": "."}), name


def test_compose_commands(services):
    web = services["web"]["command"]
    assert web[0] == "gunicorn" and web[-1] == "config.wsgi"
    assert any(arg.endswith("gunicorn.conf.py") for arg in web), web
    assert services["worker"]["command"][:4] == ["celery", "-A", "config", "worker"]
    beat = services["beat"]["command"]
    assert beat[:4] == ["celery", "-A", "config", "beat"]
    # The code directory is not writable by the app user: beat's state file must live elsewhere.
    assert beat[beat.index("--schedule") + 1].startswith("/tmp/")
    assert services["migrate"]["command"][:3] == ["python", "manage.py", "migrate"]
    assert "--noinput" in services["migrate"]["command"]
    assert services["migrate"].get("restart") == "no"


def test_backing_services_have_health_checks(services):
    pg = services["postgres"]["healthcheck"]["test"]
    assert pg[0] == "CMD-SHELL" and "pg_isready" in pg[1]
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_processes_start_after_healthy_backends_and_migrations(services, name):
    assert services[name]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"},
    }


def test_migrate_waits_for_a_healthy_database(services):
    depends_on = services["migrate"]["depends_on"]
    assert depends_on["postgres"] == {"condition": "service_healthy"}
    assert "migrate" not in depends_on


def test_every_healthy_condition_has_a_health_check(services):
    for name, service in services.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} -> {dependency}"


def test_compose_sets_only_variables_the_settings_read(services):
    read = settings_env_names()
    assert {"DATABASE_URL", "CELERY_BROKER_URL", *REQUIRED_IN_PRODUCTION} <= read  # grep works
    environments = [services[name]["environment"] for name in APP_SERVICES]
    assert all(env == environments[0] for env in environments), "app services differ in env"
    env = environments[0]
    assert {"DATABASE_URL", "CELERY_BROKER_URL", *REQUIRED_IN_PRODUCTION} <= set(env)
    assert set(env) <= read, f"not read by the settings: {sorted(set(env) - read)}"
    assert env["DATABASE_URL"].startswith("postgres://") and "@postgres:" in env["DATABASE_URL"]
    assert env["CELERY_BROKER_URL"].startswith("redis://redis:")
    # The database password in DATABASE_URL is the one the postgres container is created with.
    password = services["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert f":{password}@" in env["DATABASE_URL"]


def test_web_health_check(services):
    test = services["web"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    code = test[3]
    compile(code, "<web healthcheck>", "exec")
    assert "/readyz" in code
    assert "X-Forwarded-Proto" in code  # or production's https redirect answers instead
    host_header = re.search(r"'Host': '([^']+)'", code)
    assert host_header, code
    host = host_header.group(1)
    assert host in services["web"]["environment"]["ALLOWED_HOSTS"].split(",")
    assert services["web"]["ports"] == ["8000:8000"]


def in_the_web_service(services, script: str) -> subprocess.CompletedProcess:
    """Runs `script` in a Python of the web service's environment (production settings)."""
    env = clean_env(
        DJANGO_SETTINGS_MODULE="config.settings.production",
        **{k: str(v) for k, v in services["web"]["environment"].items()},
    )
    # The container mounts a volume there; here a temporary folder stands in for it.
    env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="kinetic-metrics-")
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result


def test_compose_environment_loads_the_production_settings(services):
    """The placeholders are well-formed: the URLs parse, the Fernet key is one."""
    script = (
        "import json, django; django.setup();"
        "from django.conf import settings as s; from core.encryption import box; box();"
        "print(json.dumps([s.DATABASES['default']['ENGINE'], s.DATABASES['default']['HOST'],"
        " s.CELERY_BROKER_URL, len(s.SECRET_KEY), s.ALLOWED_HOSTS]))"
    )
    result = in_the_web_service(services, script)
    engine, host, broker, key_length, allowed = json.loads(result.stdout.splitlines()[-1])
    assert engine == "django.db.backends.postgresql" and host == "postgres"
    assert broker.startswith("redis://redis:")
    assert key_length >= 50 and "localhost" in allowed


def test_production_redirects_plain_http_to_https_but_not_probes_or_the_scrape(services):
    """Behind the TLS proxy every request comes with X-Forwarded-Proto; probes and Prometheus
    reach the container directly, over plain http."""
    script = (
        "import django; django.setup();"
        "from django.http import HttpResponse; from django.test import RequestFactory;"
        "from django.middleware.security import SecurityMiddleware as M;"
        "m = M(lambda r: HttpResponse());"
        "print(*[getattr(m.process_request(RequestFactory().get(p, HTTP_HOST='localhost')),"
        " 'status_code', 200) for p in ('/healthz', '/readyz', '/metrics', '/v1/events',"
        " '/admin/', '/portal/endpoints/')])"
    )
    result = in_the_web_service(services, script)
    assert result.stdout.split() == ["200", "200", "200", "301", "301", "301"]


# --- Dockerfile -----------------------------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """[(INSTRUCTION, arguments), ...] per stage; continuations joined, comments dropped."""
    logical, current = [], ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.strip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        if current.strip():
            instruction, _, args = current.strip().partition(" ")
            logical.append((instruction.upper(), args.strip()))
        current = ""
    stages: list[list[tuple[str, str]]] = []
    for instruction, args in logical:
        if instruction == "FROM":
            stages.append([])
        stages[-1].append((instruction, args))
    return stages


def test_dockerfile_is_multi_stage_from_python_311_slim():
    stages = dockerfile_stages()
    assert len(stages) >= 2
    builder, final = stages[0], stages[-1]
    assert builder[0][1].startswith("python:3.11-slim")
    assert final[0][1].split()[0] == "python:3.11-slim"
    assert any(i == "RUN" and "requirements" in a and "pip install" in a for i, a in builder)
    copies = [a for i, a in final if i == "COPY"]
    assert any(a.startswith("--from=") for a in copies), "the venv comes from the builder"
    assert not any(i == "RUN" and "pip install" in a for i, a in final), "install in builder"


def test_dockerfile_final_stage_settings_user_port_and_command():
    final = dockerfile_stages()[-1]
    env_args = " ".join(a for i, a in final if i == "ENV")
    assert "DJANGO_SETTINGS_MODULE=config.settings.production" in env_args
    users = [a for i, a in final if i == "USER"]
    assert users, "the final stage must set USER"
    assert users[-1].split(":")[0] not in ("root", "0")
    assert [a for i, a in final if i == "EXPOSE"] == ["8000"]
    cmd = json.loads(next(a for i, a in reversed(final) if i == "CMD"))  # exec form
    assert cmd[0] == "gunicorn" and cmd[-1] == "config.wsgi"
    config = cmd[cmd.index("--config") + 1]
    workdir = next(a for i, a in reversed(final) if i == "WORKDIR")
    assert config in ("gunicorn.conf.py", f"{workdir}/gunicorn.conf.py")


def test_the_metrics_folder_exists_for_the_app_in_every_service(services):
    """Every process writes its metrics as Django loads (prometheus_client's multiprocess
    mode); a service that mounts no volume there (migrate, beat) needs the image's own folder,
    writable by the app's user, or it dies at start."""
    final = dockerfile_stages()[-1]
    user = [a for i, a in final if i == "USER"][-1].split(":")[0]
    made = " ".join(a for i, a in final[: final.index(("USER", f"{user}:{user}"))] if i == "RUN")
    for name in ("migrate", "web", "worker", "beat"):
        folder = services[name]["environment"]["PROMETHEUS_MULTIPROC_DIR"]
        mounted = [v.split(":")[1] for v in services[name].get("volumes", [])]
        if folder not in mounted:
            assert re.search(rf"install -d -o {user} -g {user} {re.escape(folder)}\b", made), name


def test_dockerfile_copies_no_env_file_and_bakes_in_no_secret():
    stages = dockerfile_stages()
    for instruction, args in (step for stage in stages for step in stage):
        if instruction in ("COPY", "ADD"):
            assert ".env" not in args, args
        if instruction in ("ENV", "ARG"):  # both would outlive the build step
            assert not any(name in args for name in REQUIRED_IN_PRODUCTION), args
    # `COPY . .` copies whatever .dockerignore lets through.
    assert dockerignored(".env") and dockerignored(".env.production")


def collectstatic_env() -> dict[str, str]:
    """The throwaway NAME=value pairs the Dockerfile gives its collectstatic step."""
    run = next(a for i, a in dockerfile_stages()[-1] if i == "RUN" and "collectstatic" in a)
    values = {}
    for token in shlex.split(run):
        name, sep, value = token.partition("=")
        if not sep or not re.fullmatch(r"[A-Z][A-Z0-9_]*", name):
            break
        values[name] = value
    return values


def test_collectstatic_gets_exactly_the_required_values():
    assert set(collectstatic_env()) == set(REQUIRED_IN_PRODUCTION)


@pytest.fixture(scope="module")
def deploy_check() -> subprocess.CompletedProcess:
    env = clean_env(DJANGO_SETTINGS_MODULE="config.settings.production", **collectstatic_env())
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )


def test_production_settings_pass_check_deploy(deploy_check):
    """With the Dockerfile's throwaway values: `check --deploy --fail-level WARNING` is clean
    (Django's security checks, and drf-spectacular's schema check, which runs with --deploy)."""
    output = deploy_check.stdout + deploy_check.stderr
    assert deploy_check.returncode == 0, output
    assert "no issues" in output, output


# --- .dockerignore --------------------------------------------------------------------------


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def dockerignored(path: str) -> bool:
    """Docker's rules, as far as this file uses them: the last matching pattern wins, and a
    pattern that matches a directory excludes everything under it."""
    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    ignored = False
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        regex = _glob_regex(line.lstrip("!").strip().strip("/"))
        if any(regex.match(candidate) for candidate in candidates):
            ignored = not negate
    return ignored


@pytest.mark.parametrize(
    "path",
    [
        ".env",
        ".env.local",
        ".git/HEAD",
        ".venv/bin/python",
        "var/kinetic.sqlite3",
        "var/broker/message.msg",
        "staticfiles/admin/css/base.css",
        "__pycache__/x.cpython-311.pyc",
        "webhooks/__pycache__/models.cpython-311.pyc",
        "webhooks/models.pyc",
        "test-output/junit.xml",
        ".pytest_cache/v/cache/lastfailed",
        ".hypothesis/examples/0a1b/2c3d",
        ".ruff_cache/CACHEDIR.TAG",
    ],
)
def test_dockerignore_excludes(path):
    assert dockerignored(path)


@pytest.mark.parametrize(
    "path",
    [
        "manage.py",
        "gunicorn.conf.py",
        "requirements/base.txt",
        "config/settings/production.py",
        "config/wsgi.py",
        "webhooks/models.py",
        "templates",
    ],
)
def test_dockerignore_keeps_what_the_image_needs(path):
    assert not dockerignored(path)


def test_dockerfile_copy_sources_are_in_the_build_context():
    for stage in dockerfile_stages():
        for instruction, args in stage:
            if instruction == "COPY" and not args.startswith("--from="):
                *sources, _ = [a for a in args.split() if not a.startswith("--")]
                for source in sources:
                    if source != ".":
                        assert (ROOT / source).exists() and not dockerignored(source), source


# --- gunicorn.conf.py -----------------------------------------------------------------------


def load_gunicorn_conf(monkeypatch, **env: str):
    for name in ("PORT", "WEB_CONCURRENCY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    spec = importlib.util.spec_from_file_location("gunicorn_conf", ROOT / "gunicorn.conf.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gunicorn_conf_reads_port_and_web_concurrency(monkeypatch):
    conf = load_gunicorn_conf(monkeypatch, PORT="9123", WEB_CONCURRENCY="3")
    assert conf.bind == "0.0.0.0:9123"
    assert conf.workers == 3


def test_gunicorn_conf_defaults(monkeypatch):
    conf = load_gunicorn_conf(monkeypatch, PORT="", WEB_CONCURRENCY="")  # empty = unset
    assert conf.bind == "0.0.0.0:8000"
    assert 3 <= conf.workers <= 8
    assert conf.worker_class == "sync"  # chosen by measurement (bench/, docs/benchmarks.md)
    assert conf.max_requests > 0 and 0 < conf.max_requests_jitter < conf.max_requests
    assert conf.accesslog == "-"
    assert conf.graceful_timeout <= conf.timeout


def test_gunicorn_conf_names_only_real_settings(monkeypatch):
    """gunicorn silently ignores unknown names in a config file: catch typos here."""
    from gunicorn.config import Config

    conf = load_gunicorn_conf(monkeypatch)
    cfg = Config()
    for name, value in vars(conf).items():
        if name.startswith("_") or callable(value) or name == "os":
            continue
        assert name in cfg.settings, f"{name} is not a gunicorn setting"
        cfg.set(name, value)  # runs gunicorn's validator

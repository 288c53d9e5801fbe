""".railway/railway.py: Railway infrastructure as code, evaluated the way the Railway CLI does.

Current CLIs (railwayapp/cli, src/iac/eval.rs with EvalContext) run `python3 -c <script>
<absolute path>` in the directory they were started from, once per persistent environment, with
RAILWAY_IAC_CONTEXT set to {command, projectId, projectName, environmentId, environment,
environmentName}. The script loads the file with importlib under a module name of its own, takes
`main` (or `Railway` / `default`), calls it with a context when it takes a parameter (the SDK's
context if railway_sdk imports, else a dict carrying the same keys plus `.environment`) and
with nothing when it takes none, as older CLIs always did; turns a result with `to_graph()`
into a dict, and prints `json.dumps({"partial": ..., "project": ...})`. Then it rewrites only
`start` and a string `build`, and its compiler (src/iac/compiler.rs) reads a fixed set of keys:
anything else is dropped without a word. So the graph is checked as Railway will read it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from app.config import ConfigError, Settings, load_settings
from app.profiles import ProfileSet, load_profiles
from app.workload.settings import BulkSettings

REPO = Path(__file__).resolve().parents[2]
RAILWAY_PY = REPO / ".railway" / "railway.py"
LAUNCH_ARGV = ["python", "-m", "app.launch"]

# The CLI's evaluation steps, written out here (same order, same lookups, same output).
EVAL_SCRIPT = """
import importlib.util, inspect, json, os, sys
payload = json.loads(os.environ.get("RAILWAY_IAC_CONTEXT") or "{}")

class Context(dict):
    def __init__(self, payload):
        super().__init__(payload)
        self.environment = payload.get("environment") or payload.get("environmentName")

spec = importlib.util.spec_from_file_location("railway_sdk_user", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
partial = getattr(module, "PARTIAL", None) or getattr(module, "Partial", None) \\
    or getattr(module, "partial", None)
entry = getattr(module, "main", None) or getattr(module, "Railway", None) \\
    or getattr(module, "default", None)
if callable(entry):
    takes_context = bool(inspect.signature(entry).parameters)
    project = entry(Context(payload)) if takes_context else entry()
else:
    project = entry
if hasattr(project, "to_graph"):
    project = project.to_graph()
print(json.dumps({"partial": partial, "project": project}, default=str))
"""
# Older CLIs called main() with no argument and set no context.
LEGACY_PRELUDE = "import inspect; inspect.signature = lambda f: inspect.Signature()\n"


def context(environment: str) -> dict[str, Any]:
    return {
        "command": "plan",
        "projectId": "00000000-0000-0000-0000-000000000001",
        "projectName": "lean-memory-service",
        "environmentId": f"env-{environment}",
        "environment": environment,
        "environmentName": environment,
    }


CONTEXT = context("production")
# The persistent environments a fork typically has; the CLI evaluates the file in each.
ENVIRONMENTS = ("production", "staging", "pr-42")

# Resource keys the CLI's compiler passes on to Railway (src/iac/compiler.rs,
# project_definition_to_graph and service_to_environment_config).
COMPILER_KEYS = {
    "address",
    "type",
    "kind",
    "name",
    "source",
    "build",
    "deploy",
    "variables",
    "networking",
    "volumeAttachments",
    "volumeMounts",
    "configFile",
    "parentServiceId",
    "groupId",
    "clusterRole",
    "replicaConfig",
    "clusterDisplay",
}
# Railway's environment config fields, as typed by the TypeScript SDK (npm `railway` 3.11.0,
# dist types BuildConfig and DeployConfig).
BUILD_KEYS = {
    "builder",
    "watchPatterns",
    "buildCommand",
    "buildEnvironment",
    "dockerfilePath",
    "nixpacksConfigPath",
    "nixpacksPlan",
    "nixpacksVersion",
    "railpackVersion",
}
DEPLOY_KEYS = {
    "startCommand",
    "preDeployCommand",
    "numReplicas",
    "healthcheckPath",
    "healthcheckTimeout",
    "sleepApplication",
    "runtime",
    "registryCredentials",
    "restartPolicyType",
    "restartPolicyMaxRetries",
    "cronSchedule",
    "region",
    "multiRegionConfig",
    "limitOverride",
    "requiredMountPath",
    "overlapSeconds",
    "drainingSeconds",
    "useLegacyStacker",
    "ipv6EgressEnabled",
}
RESTART_POLICIES = {"ON_FAILURE", "ALWAYS", "NEVER"}
SECRETS = {"ADMIN_TOKEN"}
SETTINGS = {*Settings.model_fields, *BulkSettings.model_fields}  # the frame's and the workload's
# A Railway Postgres node as the SDKs' postgres(name) emit it (railwayapp/cli src/iac/tests.rs).
DATABASE_KEYS = {
    "address", "type", "kind", "engine", "name", "image", "output", "defaultMountPath", "source"
}


def evaluate(
    python: list[str],
    cwd: Path,
    file: Path = RAILWAY_PY,
    prelude: str = "",
    ctx: dict[str, Any] | None = CONTEXT,
) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("RAILWAY_IAC_CONTEXT", None)
    if ctx is not None:
        env["RAILWAY_IAC_CONTEXT"] = json.dumps(ctx)
    return subprocess.run(
        [*python, "-c", prelude + EVAL_SCRIPT, str(file.resolve())],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def python3() -> list[str]:
    """The CLI's interpreter: whatever `python3` is first on PATH."""
    found = shutil.which("python3")
    if found is None:
        pytest.skip("no python3 on PATH")
    version = subprocess.run(
        [found, "-c", "import sys; print(sys.version_info >= (3, 11))"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if version.stdout.strip() != "True":
        pytest.skip(f"{found} is older than 3.11, which railway.py needs (tomllib)")
    return [found]


@pytest.fixture(scope="module")
def payload() -> dict[str, Any]:
    done = evaluate(python3(), REPO)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def profiles() -> ProfileSet:
    return load_profiles()


@pytest.fixture(scope="module")
def toml() -> dict[str, Any]:
    return tomllib.loads((REPO / "railway" / "legacy" / "railway.toml").read_text())


@pytest.fixture(scope="module")
def railway_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("railway_iac_under_test", RAILWAY_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cli_normalised(project: dict[str, Any]) -> dict[str, Any]:
    """What the CLI's own normalisation (eval.rs normalize_project) makes of a project."""
    out = json.loads(json.dumps(project))
    for resource in out.get("resources", []):
        kind = resource.get("type", "service")
        resource.setdefault("address", f"{kind}.{resource.get('name', 'web')}")
        if kind == "service":
            resource.setdefault("kind", "empty")
        if "start" in resource:
            resource.setdefault("deploy", {}).setdefault("startCommand", resource["start"])
        if isinstance(resource.get("build"), str):
            resource["build"] = {"buildCommand": resource["build"]}
    out.setdefault("name", "app")
    return out


def graph_problems(project: Any, profiles: ProfileSet, toml: dict[str, Any]) -> list[str]:
    """Everything Railway would read differently from what this service needs."""
    if not isinstance(project, dict) or not isinstance(project.get("resources"), list):
        return [f"project must be a dict with a resources list, got {project!r}"]
    found: list[str] = []
    if cli_normalised(project) != project:
        found.append("the CLI would rewrite the graph: emit address, kind and deploy yourself")
    services = [r for r in project["resources"] if r.get("type") == "service"]
    if [s.get("name") for s in services] != ["web"]:
        return [*found, f"expected one service named web, got {[s.get('name') for s in services]}"]
    web = services[0]
    found += [f"{k}: the CLI's compiler drops this key" for k in sorted(set(web) - COMPILER_KEYS)]
    build, deploy = web.get("build", {}), web.get("deploy", {})
    found += [f"build.{k}: not a Railway build field" for k in sorted(set(build) - BUILD_KEYS)]
    found += [f"deploy.{k}: not a Railway deploy field" for k in sorted(set(deploy) - DEPLOY_KEYS)]
    if build != toml["build"]:
        found.append(f"build {build} differs from railway.toml [build] {toml['build']}")
    for key, value in toml["deploy"].items():
        if deploy.get(key) != value:
            found.append(f"deploy.{key}={deploy.get(key)!r} differs from railway.toml ({value!r})")
    if deploy.get("healthcheckPath") != "/healthz":
        found.append(
            f"deploy.healthcheckPath must be /healthz, got {deploy.get('healthcheckPath')!r}"
        )
    if shlex.split(str(deploy.get("startCommand", ""))) != LAUNCH_ARGV:
        found.append(
            f"deploy.startCommand must run the launcher, got {deploy.get('startCommand')!r}"
        )
    replicas = deploy.get("numReplicas")
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 1:
        found.append(f"deploy.numReplicas must be a positive integer, got {replicas!r}")
    timeout = deploy.get("healthcheckTimeout")
    if not isinstance(timeout, int) or not 1 <= timeout <= 300:
        found.append(f"deploy.healthcheckTimeout must be 1..300 s, got {timeout!r}")
    if deploy.get("restartPolicyType") not in RESTART_POLICIES:
        found.append(f"deploy.restartPolicyType {deploy.get('restartPolicyType')!r} not allowed")
    databases = {r.get("address"): r for r in project["resources"] if r.get("type") == "database"}
    for database in databases.values():
        found += [f"database: unexpected key {k}" for k in sorted(set(database) - DATABASE_KEYS)]
        if database.get("engine") != "postgres" or database.get("output") != "DATABASE_URL":
            found.append(f"database {database.get('name')!r} must be a Railway Postgres")
    found += variable_problems(web.get("variables"), deploy, profiles, databases)
    return found


def variable_problems(
    variables: Any,
    deploy: dict[str, Any],
    profiles: ProfileSet,
    databases: dict[str, Any] | None = None,
) -> list[str]:
    if not isinstance(variables, dict):
        return [f"variables must be a dict in SDK form, got {variables!r}"]
    found: list[str] = []
    literals: dict[str, str] = {}
    for name, value in variables.items():
        if value == {"type": "preserve"}:
            continue
        if isinstance(value, dict) and value.get("type") == "reference":
            target = (databases or {}).get(value.get("resource"))
            if target is None or value.get("output") != target.get("output"):
                found.append(f"variables.{name}: a reference to no database in the graph")
            if name != "DATABASE_URL":
                found.append(f"variables.{name}: only DATABASE_URL comes from the database")
            continue
        if not (
            isinstance(value, dict)
            and value.get("type") == "literal"
            and isinstance(value.get("value"), str)
            and len(value) == 2
        ):
            found.append(
                f"variables.{name}: must be {{'type': 'literal', 'value': str}}, got {value!r}"
            )
        elif name in SECRETS:
            found.append(f"variables.{name}: a secret must be preserved, not written in the file")
        else:
            literals[name] = value["value"]
        if name.lower() not in SETTINGS:
            found.append(f"variables.{name}: not a setting of the service (app/config.py)")
    profile = profiles.profiles.get(literals.get("MEMORY_PROFILE", ""))
    if profile is None or not profile.deploy:
        found.append(
            f"MEMORY_PROFILE={literals.get('MEMORY_PROFILE')!r} is not a deployable profile"
        )
    default_grace = Settings.model_fields["shutdown_grace_seconds"].default
    grace = float(literals.get("SHUTDOWN_GRACE_SECONDS", default_grace))
    draining = deploy.get("drainingSeconds")
    if not isinstance(draining, int) or draining <= grace:
        found.append(f"deploy.drainingSeconds={draining!r} must exceed the {grace:g} s grace")
    if not found:
        try:
            load_settings(**{name.lower(): value for name, value in literals.items()})
        except ConfigError as exc:
            found += exc.lines
    return found


def test_graph_is_what_this_service_needs(
    payload: dict[str, Any], profiles: ProfileSet, toml: dict[str, Any]
) -> None:
    assert graph_problems(payload["project"], profiles, toml) == []


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_every_environment_gets_the_same_graph(
    environment: str, payload: dict[str, Any], tmp_path: Path
) -> None:
    """The CLI evaluates once per environment; a resource only some have is an error to it."""
    done = evaluate(python3(), tmp_path, ctx=context(environment))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == payload


def test_main_takes_the_context_current_clis_pass(railway_module: ModuleType) -> None:
    import inspect

    assert list(inspect.signature(railway_module.main).parameters) == ["ctx"]
    assert railway_module.main(context("staging")) == railway_module.main()


def test_older_clis_without_a_context_get_the_same_graph(
    payload: dict[str, Any], tmp_path: Path
) -> None:
    done = evaluate(python3(), tmp_path, prelude=LEGACY_PRELUDE, ctx=None)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == payload


def test_build_is_the_dockerfile_in_the_form_the_cli_diffs(payload: dict[str, Any]) -> None:
    """The CLI's own diff reads {"builder": "DOCKERFILE"} as the root Dockerfile (no drift)."""
    web = payload["project"]["resources"][0]
    assert web["build"] == {"builder": "DOCKERFILE", "dockerfilePath": "Dockerfile"}
    assert (REPO / "Dockerfile").is_file()


def test_file_owns_the_whole_project(payload: dict[str, Any]) -> None:
    """No named partial: Railway's docs keep those for split repositories."""
    assert payload["partial"] is None


def compiled_variable(value: dict[str, Any], project: dict[str, Any]) -> str:
    """What the CLI's compiler (src/iac/compiler.rs, variable_to_config) makes of a variable."""
    if value.get("type") == "reference":
        names = {r["address"]: r["name"] for r in project["resources"]}
        name = names.get(value["resource"], value["resource"])
        return "${{" + f"{name}.{value['output']}" + "}}"
    return str(value.get("value"))


def test_results_go_to_a_railway_postgres_by_reference(
    payload: dict[str, Any], railway_module: ModuleType
) -> None:
    project = payload["project"]
    web, database = project["resources"]
    assert database["type"] == "database" and database["engine"] == "postgres"
    assert database["name"] == railway_module.DATABASE == "Postgres"
    assert database["source"] == {"type": "image", "image": database["image"]}
    reference = web["variables"]["DATABASE_URL"]
    assert compiled_variable(reference, project) == "${{Postgres.DATABASE_URL}}"


def test_without_a_database_the_service_keeps_its_sqlite_file(railway_module: ModuleType) -> None:
    web = railway_module.service_graph(database=None)
    assert "DATABASE_URL" not in web["variables"]


def test_profile_is_the_one_named_at_the_top(
    payload: dict[str, Any], railway_module: ModuleType
) -> None:
    web = payload["project"]["resources"][0]
    assert web["variables"]["MEMORY_PROFILE"] == {
        "type": "literal",
        "value": railway_module.PROFILE,
    }


@pytest.mark.parametrize("where", ["root", ".railway", "elsewhere"])
def test_evaluates_the_same_from_any_directory(
    where: str, payload: dict[str, Any], tmp_path: Path
) -> None:
    """`railway config plan` walks up to the file, and `--file` works from anywhere."""
    cwd = {"root": REPO, ".railway": RAILWAY_PY.parent, "elsewhere": tmp_path}[where]
    done = evaluate(python3(), cwd)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == payload


def test_needs_nothing_but_the_standard_library(payload: dict[str, Any], tmp_path: Path) -> None:
    """`-S` leaves site-packages off sys.path: no SDK, no pydantic, nothing installed."""
    done = evaluate([sys.executable, "-S"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == payload


def test_old_python_gets_one_line(tmp_path: Path) -> None:
    """Before Python 3.11 there is no tomllib: say so, rather than a traceback."""
    done = evaluate([sys.executable], tmp_path, prelude="import sys; sys.modules['tomllib'] = None")
    assert done.returncode != 0
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs python3 >= 3.11" in lines[0], done.stderr


def copy_with_profile(tmp_path: Path, profile: str) -> Path:
    """railway.py in a copy of the tree it reads, with another PROFILE."""
    for part in ("app/profiles.py", "profiles/profiles.toml"):
        (tmp_path / part).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / part, tmp_path / part)
    text = RAILWAY_PY.read_text()
    assert 'PROFILE = "' in text
    start = text.index('PROFILE = "')
    end = text.index("\n", start)
    target = tmp_path / ".railway" / "railway.py"
    target.parent.mkdir()
    target.write_text(f'{text[:start]}PROFILE = "{profile}"{text[end:]}')
    return target


@pytest.mark.parametrize("profile", ["baseline", "tcmalloc", "hoard"])
def test_bad_profile_stops_the_plan(profile: str, tmp_path: Path) -> None:
    done = evaluate(python3(), tmp_path, copy_with_profile(tmp_path, profile))
    assert done.returncode != 0
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"railway.py: PROFILE={profile!r} is not a deployable profile; "
        "allowed: glibc, glibc-tuned, jemalloc, jemalloc-nopymalloc"
    ]


def test_every_deployable_profile_evaluates(
    profiles: ProfileSet, toml: dict[str, Any], tmp_path: Path
) -> None:
    for name in (p.name for p in profiles.profiles.values() if p.deploy):
        done = evaluate(python3(), tmp_path, copy_with_profile(tmp_path / name, name))
        assert done.returncode == 0, done.stderr
        assert graph_problems(json.loads(done.stdout)["project"], profiles, toml) == []


def shorthand(**fields: Any) -> dict[str, Any]:
    """A plain-dict project written in the SDK's authoring keywords instead of its output."""
    return {"name": "p", "resources": [{"type": "service", "name": "web", **fields}]}


def edited(payload: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    project = json.loads(json.dumps(payload["project"]))
    *parents, last = path.split(".")
    node = project["resources"][0]
    for key in parents:
        node = node[key]
    node[last] = value
    return project


BAD_GRAPHS = {
    "authoring-keywords": (
        lambda p: shorthand(
            start="python -m app.launch",
            healthcheck="/healthz",
            replicas=1,
            env={"MEMORY_PROFILE": "jemalloc"},
        ),
        "the CLI would rewrite",
    ),
    "literal-secret": (
        lambda p: edited(p, "variables.ADMIN_TOKEN", {"type": "literal", "value": "x" * 20}),
        "preserved",
    ),
    "plain-string-variable": (lambda p: edited(p, "variables.MEMORY_CLEANUP", "1"), "literal"),
    "baseline": (
        lambda p: edited(p, "variables.MEMORY_PROFILE", {"type": "literal", "value": "baseline"}),
        "deployable",
    ),
    "typo-in-variable": (
        lambda p: edited(
            p, "variables.MEMORY_CLEANUP_INTERVALS", {"type": "literal", "value": "5"}
        ),
        "not a setting",
    ),
    "bad-setting-value": (
        lambda p: edited(
            p, "variables.MEMORY_CLEANUP_INTERVAL", {"type": "literal", "value": "-1"}
        ),
        "MEMORY_CLEANUP_INTERVAL",
    ),
    "draining-below-grace": (lambda p: edited(p, "deploy.drainingSeconds", 10), "grace"),
    "no-replicas": (lambda p: edited(p, "deploy.numReplicas", 0), "numReplicas"),
    "healthcheck": (lambda p: edited(p, "deploy.healthcheckPath", "/"), "healthcheckPath"),
    "snake-case-deploy-key": (
        lambda p: edited(p, "deploy.healthcheck_timeout", 60),
        "healthcheck_timeout",
    ),
    "other-start": (lambda p: edited(p, "deploy.startCommand", "uvicorn app.main:app"), "launcher"),
    "reference-to-nothing": (
        lambda p: edited(
            p,
            "variables.DATABASE_URL",
            {"type": "reference", "resource": "database.Nope", "output": "DATABASE_URL"},
        ),
        "no database",
    ),
}


@pytest.mark.parametrize(("make", "expected"), BAD_GRAPHS.values(), ids=BAD_GRAPHS.keys())
def test_bad_graph_is_rejected(
    make: Any, expected: str, payload: dict[str, Any], profiles: ProfileSet, toml: dict[str, Any]
) -> None:
    found = graph_problems(make(payload), profiles, toml)
    assert any(expected in problem for problem in found), found


def sdk_service(sdk: ModuleType, module: ModuleType, **overrides: Any) -> dict[str, Any]:
    """The same service written with Railway's Python SDK, from railway.py's own settings."""
    options: dict[str, Any] = {
        "build": {"builder": "DOCKERFILE", "dockerfilePath": "Dockerfile"},
        "start": module.LAUNCH_COMMAND,
        "healthcheck": module.HEALTHCHECK_PATH,
        "healthcheckTimeout": module.HEALTHCHECK_TIMEOUT_SECONDS,
        "replicas": module.REPLICAS,
        "deploy": {
            "restartPolicyType": "ON_FAILURE",
            "restartPolicyMaxRetries": module.RESTART_MAX_RETRIES,
            "drainingSeconds": module.DRAINING_SECONDS,
        },
        "env": {
            "MEMORY_PROFILE": module.PROFILE,
            **module.CLEANUP_ENV,
            "SHUTDOWN_GRACE_SECONDS": str(module.SHUTDOWN_GRACE_SECONDS),
            **{name: sdk.preserve() for name in module.PRESERVED},
        },
    }
    if module.DATABASE is not None:  # as Railway's docs write it: db.env.DATABASE_URL
        options["env"]["DATABASE_URL"] = sdk.postgres(module.DATABASE).env.DATABASE_URL
    if overrides.get("github_repo"):
        options["source"] = sdk.github(overrides["github_repo"], branch=module.GITHUB_BRANCH)
    if overrides.get("memory_limit_mb"):
        options["deploy"]["limitOverride"] = {
            "containers": {"memoryBytes": overrides["memory_limit_mb"] * 1024 * 1024}
        }
    return sdk.service(module.SERVICE, **options).to_graph()


@pytest.mark.parametrize(
    "overrides",
    [{}, {"github_repo": "owner/fork", "memory_limit_mb": 512}],
    ids=["default", "options"],
)
def test_matches_what_railway_sdk_emits(
    overrides: dict[str, Any], railway_module: ModuleType
) -> None:
    sdk = pytest.importorskip(
        "railway_sdk", reason="railway-sdk is not installed (pip install railway-sdk to compare)"
    )
    assert railway_module.service_graph(**overrides) == sdk_service(
        sdk, railway_module, **overrides
    )
    if not overrides:
        resources = [sdk_service(sdk, railway_module), sdk.postgres(railway_module.DATABASE)]
        expected = sdk.project(railway_module.PROJECT, resources=resources)
        assert railway_module.main() == expected.to_graph()

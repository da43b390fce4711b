"""The deployment files say what the daemons actually accept.

For every container that runs a Quaver daemon, in deploy/compose/compose.yaml and in the
rendered kustomization (kubectl kustomize deploy/k8s), every environment variable it gets must
be one of that daemon's configuration keys (QUAVER_<KEY> or a seeds' alias such as
DATABASE_URL), with a value the daemon accepts. The daemons themselves are the judge: each one
is run with `--print-config` and the variable set, and must report a key whose source is that
variable. Plus the structure a cluster relies on: resource limits on every Deployment, the
gateway's readiness and liveness probes, the headless broker Service the workers resolve.

Binaries: $QUAVER_BIN, default <repo>/build/bin. Needs PyYAML (Debian: python3-yaml).
Run: /usr/bin/python3 -m pytest tests/test_deploy.py
"""
import base64
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML missing (Debian package python3-yaml)")

REPO = Path(__file__).resolve().parents[1]
BIN = Path(os.environ.get("QUAVER_BIN", REPO / "build" / "bin"))
COMPOSE = REPO / "deploy" / "compose" / "compose.yaml"
K8S = REPO / "deploy" / "k8s"
PROMETHEUS = REPO / "deploy" / "prometheus"
DAEMONS = ("gateway", "dbopt", "cache", "stream", "monitor")
WORKERS = ("dbopt", "cache", "stream", "monitor")


# ---- helpers ---------------------------------------------------------------------------------

def daemon_of(command):
    """'quaver-dbopt' (first word of command/args) -> 'dbopt'; None for other images."""
    if not command:
        return None
    words = command if isinstance(command, list) else str(command).split()
    m = re.fullmatch(r"(?:.*/)?quaver-([a-z]+)", words[0])
    return m.group(1) if m else None


def binary(daemon):
    return BIN / f"quaver-{daemon}"


def need_binaries():
    missing = [d for d in DAEMONS if not os.access(binary(d), os.X_OK)]
    if missing:
        pytest.skip(f"daemon binaries not built in {BIN} (missing {', '.join(missing)}); "
                    "build first or set QUAVER_BIN")


def print_config(daemon, env):
    """Runs the daemon's --print-config with exactly env (plus PATH). Returns the process."""
    full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    full.update(env)
    return subprocess.run([str(binary(daemon)), "--print-config"], env=full, cwd="/",
                          capture_output=True, text=True, timeout=30)


def check_env(where, daemon, env):
    """Every variable of env is a key of daemon, and the values are accepted together."""
    problems = []
    for name, value in sorted(env.items()):
        p = print_config(daemon, {name: value})
        if p.returncode != 0:
            problems.append(f"{where}: {name}={value!r} rejected by quaver-{daemon}: "
                            f"{p.stderr.strip() or p.stdout.strip()}")
        elif f"(env {name})" not in p.stdout:
            problems.append(f"{where}: {name} is not a config key of quaver-{daemon} "
                            f"(see quaver-{daemon} --help)")
    p = print_config(daemon, env)
    if p.returncode != 0:
        problems.append(f"{where}: quaver-{daemon} rejects the whole environment: "
                        f"{p.stderr.strip()}")
    return problems


def compose_value(v):
    """Compose interpolation as a shell would with nothing set: ${X:-d} -> d, ${X} -> x."""
    v = "" if v is None else str(v)
    v = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}", r"\1", v)
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}", "x", v)


def compose_env(svc):
    env = svc.get("environment") or {}
    if isinstance(env, list):   # ["K=V", ...]
        env = dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
    return {k: compose_value(v) for k, v in env.items()}


# ---- compose ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose():
    with open(COMPOSE) as f:
        return yaml.safe_load(f)


def test_compose_has_every_service(compose):
    services = compose["services"]
    daemons = {daemon_of(s.get("command")): n for n, s in services.items()}
    for d in DAEMONS:
        assert d in daemons, f"compose: no service runs quaver-{d}"
        assert services[daemons[d]]["image"] == "quaver:latest"
        assert services[daemons[d]]["build"]["dockerfile"] == "deploy/Dockerfile"
    pg = services["postgres"]
    assert pg["image"].startswith("postgres:15")
    assert "shared_preload_libraries=pg_stat_statements" in " ".join(pg["command"])
    assert services["redis"]["image"].startswith("redis")
    assert (REPO / "deploy" / "Dockerfile").is_file()


def test_compose_gateway_publishes_8080_with_readyz_healthcheck(compose):
    gw = next(s for s in compose["services"].values() if daemon_of(s.get("command")) == "gateway")
    assert any(str(p).endswith("8080:8080") for p in gw["ports"]), gw["ports"]
    assert "/readyz" in " ".join(gw["healthcheck"]["test"])


def test_compose_wiring(compose):
    for name, svc in compose["services"].items():
        d = daemon_of(svc.get("command"))
        if not d:
            continue
        env = compose_env(svc)
        assert env.get("QUAVER_BUS_PUB") == "tcp://monitor:5556", f"{name}: bus_pub"
        if d in WORKERS:
            assert env.get("QUAVER_BROKER") == "tcp://gateway:5555", f"{name}: broker"


def test_compose_env_vars_are_config_keys(compose):
    need_binaries()
    problems = []
    for name, svc in compose["services"].items():
        d = daemon_of(svc.get("command"))
        if d:
            problems += check_env(f"compose service {name}", d, compose_env(svc))
    assert not problems, "\n".join(problems)


# ---- kubernetes ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def k8s():
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl not installed (Debian: kubernetes-client); cannot render deploy/k8s")
    p = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, f"kubectl kustomize deploy/k8s failed:\n{p.stderr}"
    docs = [d for d in yaml.safe_load_all(p.stdout) if d]
    return docs


def objects(docs, kind):
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def quaver_containers(docs):
    """(deployment name, daemon, container, pod spec) for every Quaver daemon container."""
    for dep in objects(docs, "Deployment").values():
        spec = dep["spec"]["template"]["spec"]
        for c in spec["containers"]:
            d = daemon_of(c.get("command") or c.get("args"))
            if d:
                yield dep["metadata"]["name"], d, c


def container_env(docs, c):
    """The container's environment as the kubelet would build it (values resolved)."""
    cms, secrets = objects(docs, "ConfigMap"), objects(docs, "Secret")

    def secret_data(s):
        out = {k: base64.b64decode(v).decode() for k, v in (s.get("data") or {}).items()}
        out.update(s.get("stringData") or {})
        return out

    env = {}
    for src in c.get("envFrom") or []:
        if "configMapRef" in src:
            ref = src["configMapRef"]["name"]
            assert ref in cms, f"envFrom: no ConfigMap {ref}"
            env.update({src.get("prefix", "") + k: v for k, v in cms[ref]["data"].items()})
        if "secretRef" in src:
            ref = src["secretRef"]["name"]
            assert ref in secrets, f"envFrom: no Secret {ref}"
            env.update({src.get("prefix", "") + k: v
                        for k, v in secret_data(secrets[ref]).items()})
    for e in c.get("env") or []:
        if "value" in e:
            env[e["name"]] = str(e["value"])
        elif "secretKeyRef" in e.get("valueFrom", {}):
            ref = e["valueFrom"]["secretKeyRef"]
            assert ref["name"] in secrets, f"{e['name']}: no Secret {ref['name']}"
            data = secret_data(secrets[ref["name"]])
            assert ref["key"] in data, f"{e['name']}: Secret {ref['name']} has no {ref['key']}"
            env[e["name"]] = data[ref["key"]]
        elif "configMapKeyRef" in e.get("valueFrom", {}):
            ref = e["valueFrom"]["configMapKeyRef"]
            assert ref["name"] in cms, f"{e['name']}: no ConfigMap {ref['name']}"
            env[e["name"]] = cms[ref["name"]]["data"][ref["key"]]
        elif "fieldRef" in e.get("valueFrom", {}):
            env[e["name"]] = "quaver-pod-0"       # what metadata.name looks like
        else:
            env[e["name"]] = ""
    return env


def test_k8s_has_a_deployment_per_daemon(k8s):
    found = {d for _, d, _ in quaver_containers(k8s)}
    assert found == set(DAEMONS), found
    assert "quaver-postgres" in objects(k8s, "StatefulSet")
    pg = objects(k8s, "StatefulSet")["quaver-postgres"]["spec"]["template"]["spec"]
    assert "shared_preload_libraries=pg_stat_statements" in " ".join(pg["containers"][0]["args"])
    assert "quaver-redis" in objects(k8s, "Deployment")


def test_k8s_every_workload_has_resource_limits(k8s):
    for kind in ("Deployment", "StatefulSet"):
        for name, obj in objects(k8s, kind).items():
            for c in obj["spec"]["template"]["spec"]["containers"]:
                limits = (c.get("resources") or {}).get("limits") or {}
                assert "cpu" in limits and "memory" in limits, f"{kind} {name}/{c['name']}: limits"


def test_k8s_gateway_probes_and_services(k8s):
    gw = [(n, c) for n, d, c in quaver_containers(k8s) if d == "gateway"]
    assert len(gw) == 1
    name, c = gw[0]
    ports = {p.get("name"): p["containerPort"] for p in c["ports"]}

    def probe_port(probe):
        port = probe["httpGet"]["port"]
        return ports.get(port, port)

    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert probe_port(c["readinessProbe"]) == 8080 and probe_port(c["livenessProbe"]) == 8080

    pod_labels = objects(k8s, "Deployment")[name]["spec"]["template"]["metadata"]["labels"]
    services = objects(k8s, "Service")

    def selects_gateway(svc):
        return all(pod_labels.get(k) == v for k, v in svc["spec"]["selector"].items())

    http = services["quaver-gateway"]
    assert selects_gateway(http)
    assert any(p["port"] == 80 and ports.get(p["targetPort"], p["targetPort"]) == 8080
               for p in http["spec"]["ports"])
    broker = services["quaver-broker"]
    assert broker["spec"]["clusterIP"] == "None", "quaver-broker must be headless"
    assert selects_gateway(broker)
    assert any(p["port"] == 5555 for p in broker["spec"]["ports"])
    # A gateway is ready only once workers have connected to it, so the workers must be able
    # to find not-ready gateways.
    assert broker["spec"].get("publishNotReadyAddresses") is True
    mon = services["quaver-monitor"]
    assert {5556, 5557} <= {p["port"] for p in mon["spec"]["ports"]}


def test_k8s_wiring(k8s):
    for name, d, c in quaver_containers(k8s):
        env = container_env(k8s, c)
        assert env.get("QUAVER_BUS_PUB") == "tcp://quaver-monitor:5556", f"{name}: bus_pub"
        if d in WORKERS:
            assert env.get("QUAVER_BROKER") == "tcp://quaver-broker:5555", f"{name}: broker"
        if d == "gateway":
            assert env.get("QUAVER_BUS_SUB") == "tcp://quaver-monitor:5557"
            assert "QUAVER_JWT_SECRET" in env
        if d == "dbopt":
            assert "DATABASE_URL" in env


def test_k8s_env_vars_are_config_keys(k8s):
    need_binaries()
    problems = []
    for name, d, c in quaver_containers(k8s):
        problems += check_env(f"Deployment {name}", d, container_env(k8s, c))
    assert not problems, "\n".join(problems)


def test_check_env_catches_a_wrong_variable():
    """The check itself can fail: a key of another daemon, and a bad value."""
    need_binaries()
    assert check_env("t", "cache", {"DATABASE_URL": "postgresql:///x"})
    assert check_env("t", "monitor", {"QUAVER_STALE_AFTER_MS": "1"})
    assert not check_env("t", "monitor", {"QUAVER_STALE_AFTER_MS": "3000"})


# ---- prometheus ------------------------------------------------------------------------------

def promtool():
    tool = shutil.which("promtool")
    if not tool:
        pytest.skip("promtool not installed (Debian package prometheus)")
    return tool


def test_prometheus_config_and_rules():
    tool = promtool()
    for args in (["check", "config", "prometheus.yml"], ["test", "rules", "rules_test.yml"]):
        p = subprocess.run([tool, *args], cwd=PROMETHEUS, capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == 0, f"promtool {' '.join(args)}:\n{p.stdout}\n{p.stderr}"
    with open(PROMETHEUS / "prometheus.yml") as f:
        job = yaml.safe_load(f)["scrape_configs"][0]
    # The page's own service/instance labels must survive the scrape.
    assert job["honor_labels"] is True and job["metrics_path"] == "/api/metrics"

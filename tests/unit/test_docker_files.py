"""docker/: the image and the compose farm, checked without a Docker engine.

No engine runs on the build machines, so what can be checked statically is: the compose file's services and the
files it names, that every IVR_* variable it and the Dockerfile set is a real setting that validates (a typo in a
variable name would be silently ignored by Docker and fail only at run time), that the addresses in the compose
network, Kamailio's dispatcher list, the nodes' trusted sources and Prometheus' targets agree, the Dockerfile's
non-root USER, HEALTHCHECK, STOPSIGNAL and EXPOSE lines, and that Kamailio accepts its configuration
(``kamailio -c``, when kamailio is installed). The topology itself runs on loopback in tests/interop/test_kamailio.py.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from ivr.config import IvrConfig, load_config
from ivr.ops.admin import OPENAPI

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
COMPOSE = DOCKER / "compose.yaml"
DOCKERFILE = DOCKER / "Dockerfile"
KAMAILIO_CFG = DOCKER / "kamailio" / "kamailio.cfg"
DISPATCHER_LIST = DOCKER / "kamailio" / "dispatcher.list"
PROMETHEUS = DOCKER / "prometheus.yml"
IVR_CONFIG = REPO / "configs" / "ivr.yaml"
NODES = ("ivr1", "ivr2")
TEST_TOKEN = "compose-test-token-0123456789"


def _yaml(path: Path) -> Any:
    return YAML(typ="safe").load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = _yaml(COMPOSE)
    assert isinstance(data, dict)
    return data


def _interpolate(value: str) -> str:
    """Compose's ``${VAR:-default}`` -> default, ``${VAR:?message}`` (required) -> a test value."""

    def one(m: re.Match[str]) -> str:
        name, op, rest = m.group(1), m.group(2), m.group(3)
        if op == ":-":
            return rest
        assert op == ":?", f"${{{name}}} without a default or a required-message in compose.yaml"
        return TEST_TOKEN

    return re.sub(r"\$\{(\w+)(:-|:\?)?([^}]*)\}", one, value)


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "environment as a mapping"
    return {str(k): _interpolate(str(v)) for k, v in env.items()}


def _address(service: dict[str, Any]) -> str:
    return str(service["networks"]["farm"]["ipv4_address"])


def _node_config(compose: dict[str, Any], node: str) -> IvrConfig:
    """configs/ivr.yaml with the image's ENV and then the service's environment applied, as the container sees it."""
    env = {**_dockerfile_env(), **_environment(compose["services"][node])}
    return load_config(IVR_CONFIG, environ=env)


def _seconds(text: str) -> float:
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text):
        total += float(number) * units[unit]
    return total


# -- Dockerfile ----------------------------------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of docker/Dockerfile, continuation lines joined, comments left out."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            word, _, args = full.partition(" ")
            out.append((word.upper(), args.strip()))
    return out


def _final_stage() -> list[tuple[str, str]]:
    instructions = _instructions()
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


def _dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, args in _final_stage():
        if word == "ENV":
            for item in shlex.split(args):
                name, _, value = item.partition("=")
                env[name] = value
    return {k: v for k, v in env.items() if k.startswith("IVR_")}


def test_dockerfile_runs_as_a_non_root_user_in_a_slim_python_image() -> None:
    instructions = _instructions()
    base = next(args for word, args in instructions if word == "ARG" and args.startswith("PYTHON_IMAGE="))
    assert base.partition("=")[2] in ("python:3.11-slim-bookworm", "debian:bookworm-slim"), base
    users = [args for word, args in _final_stage() if word == "USER"]
    assert users, "the runtime stage names a USER"
    user = users[-1].partition(":")[0]
    assert user not in ("root", "0"), users
    useradd = " ".join(args for word, args in _final_stage() if word == "RUN")
    assert "useradd --system" in useradd and user in useradd, "the user is created in the image"


def test_dockerfile_installs_the_runtime_packages_and_the_package_with_its_fast_and_postgres_extras() -> None:
    runs = " ".join(args for word, args in _instructions() if word == "RUN")
    assert "espeak-ng" in runs and "libsndfile1" in runs, runs
    assert re.search(r"pip install \"?\.\[fast,postgres\]", runs), runs


def test_dockerfile_healthcheck_asks_the_admin_api_health_endpoint() -> None:
    checks = [args for word, args in _final_stage() if word == "HEALTHCHECK"]
    assert len(checks) == 1, checks
    assert "/health" in checks[0] and "/health" in OPENAPI["paths"], checks[0]
    assert "CMD" in checks[0] and "--start-period" in checks[0], checks[0]


def test_dockerfile_stops_with_sigterm_and_exposes_sip_rtp_and_admin_ports() -> None:
    final = _final_stage()
    assert ("STOPSIGNAL", "SIGTERM") in final
    exposed = " ".join(args for word, args in final if word == "EXPOSE").split()
    assert {"5060/udp", "5060/tcp", "8080/tcp"} <= set(exposed), exposed
    rtp = next(p for p in exposed if "-" in p)
    env = _dockerfile_env()
    assert rtp == f"{env['IVR_MEDIA__RTP_PORTS']}/udp", (rtp, env)
    # exec: the daemon is PID 1's replacement, so SIGTERM reaches it and starts the drain
    entry = next(args for word, args in final if word == "ENTRYPOINT")
    assert "exec ivr" in entry, entry


def test_dockerfile_environment_names_real_settings() -> None:
    env = _dockerfile_env()
    assert env, "the image sets IVR_* defaults"
    cfg = load_config(
        IVR_CONFIG, environ={**env, "IVR_SIP__ADVERTISED_HOST": "192.0.2.7", "IVR_MEDIA__ADDRESS": "192.0.2.7"}
    )
    assert cfg.sip.listen == env["IVR_SIP__LISTEN"] and cfg.sip.host == "0.0.0.0"
    assert cfg.admin.listen is not None and cfg.admin.listen.startswith("127.0.0.1:"), "admin API on loopback"


# -- compose -------------------------------------------------------------------------------------------------------


def test_compose_has_kamailio_two_ivr_nodes_postgres_and_prometheus(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"kamailio", "postgres", "prometheus", *NODES} <= set(services), sorted(services)
    for node in NODES:
        build = services[node]["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    assert "dockerfile_inline" in services["kamailio"]["build"]
    assert "apt-get install -y --no-install-recommends kamailio" in services["kamailio"]["build"]["dockerfile_inline"]


def test_compose_names_only_files_that_exist(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        build = service.get("build")
        if isinstance(build, dict):
            assert (COMPOSE.parent / build["context"]).is_dir(), name
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).is_file(), f"{name}: {volume}"
            else:
                assert source in compose.get("volumes", {}), f"{name}: named volume {source} is declared"


def test_each_node_config_validates_with_postgres_records_and_its_own_address(compose: dict[str, Any]) -> None:
    services = compose["services"]
    instances = set()
    for node in NODES:
        cfg = _node_config(compose, node)
        address = _address(services[node])
        assert cfg.cdr.url.startswith("postgresql://") and "@postgres:5432/" in cfg.cdr.url, cfg.cdr.url
        assert cfg.sip.advertised_host == address and cfg.media.address == address
        assert cfg.admin.listen == "0.0.0.0:8080" and cfg.admin.token == TEST_TOKEN
        instances.add(cfg.cdr.instance)
    assert len(instances) == len(NODES) and None not in instances, "every node names itself in the shared records"


def test_only_kamailio_may_send_sip_to_the_nodes(compose: dict[str, Any]) -> None:
    kamailio = ipaddress.ip_address(_address(compose["services"]["kamailio"]))
    for node in NODES:
        cfg = _node_config(compose, node)
        assert cfg.security.networks and all(kamailio in net for net in cfg.security.networks), node


def test_the_node_is_given_longer_to_stop_than_its_drain_lasts(compose: dict[str, Any]) -> None:
    for node in NODES:
        service = compose["services"][node]
        cfg = _node_config(compose, node)
        assert service.get("stop_signal", "SIGTERM") == "SIGTERM"
        assert _seconds(service["stop_grace_period"]) > cfg.calls.drain_seconds, service["stop_grace_period"]


def test_dispatcher_list_kamailio_and_prometheus_agree_with_the_compose_addresses(compose: dict[str, Any]) -> None:
    services = compose["services"]
    nodes = {f"sip:{_address(services[n])}:{_node_config(compose, n).sip.port}" for n in NODES}
    listed = {
        line.split()[1]
        for line in DISPATCHER_LIST.read_text().splitlines()
        if line.strip() and not line.startswith("#") and line.split()[0] == "1"
    }
    assert listed == nodes
    cfg_text = KAMAILIO_CFG.read_text()
    assert f"#!define SIP_IP {_address(services['kamailio'])}" in cfg_text
    assert '#!define DS_LIST_FILE "/etc/kamailio/dispatcher.list"' in cfg_text
    assert "./kamailio/dispatcher.list:/etc/kamailio/dispatcher.list:ro" in services["kamailio"]["volumes"]
    subnet = ipaddress.ip_network(compose["networks"]["farm"]["ipam"]["config"][0]["subnet"])
    assert all(ipaddress.ip_address(_address(s)) in subnet for s in services.values() if "networks" in s)
    prometheus = _yaml(PROMETHEUS)
    job = next(j for j in prometheus["scrape_configs"] if j["job_name"] == "ivr")
    targets = {t for group in job["static_configs"] for t in group["targets"]}
    admin_port = {_node_config(compose, n).admin.listen.rpartition(":")[2] for n in NODES}  # type: ignore[union-attr]
    assert targets == {f"{n}:{port}" for n in NODES for port in admin_port}
    assert job.get("metrics_path", "/metrics") == "/metrics" and "/metrics" in OPENAPI["paths"]


def test_dockerignore_keeps_local_state_out_of_the_image() -> None:
    lines = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines() if ln.strip() and ln[0] != "#"]
    assert lines[0] == "*" and {"!ivr", "!configs", "!pyproject.toml", "!README.md"} <= set(lines)
    assert "configs/var" in lines


# -- Kamailio ------------------------------------------------------------------------------------------------------


def _kamailio() -> str:
    found = shutil.which("kamailio") or ("/usr/sbin/kamailio" if Path("/usr/sbin/kamailio").exists() else None)
    if found is None:
        pytest.skip("kamailio not installed (apt-get install -y kamailio)")
    return found


@pytest.mark.parametrize(
    "defines",
    [
        pytest.param([], id="compose-defaults"),
        pytest.param(["SIP_IP=127.0.0.1", "SIP_PORT=5070", "DS_PING_INTERVAL=1", "CHILDREN=2"], id="loopback"),
        pytest.param(["SIP_IP=127.0.0.1", "SIP_ADVERTISE=203.0.113.5:5060"], id="advertised"),
    ],
)
def test_kamailio_accepts_its_configuration(defines: list[str]) -> None:
    argv = [_kamailio(), "-c", "-f", str(KAMAILIO_CFG)]
    for define in defines:
        argv += ["-A", define]
    proc = subprocess.run(["timeout", "20", *argv], capture_output=True, text=True, check=False, cwd=DOCKER)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "config file ok" in output, output
    address = next((d.partition("=")[2] for d in defines if d.startswith("SIP_IP=")), "172.28.0.10")
    assert re.search(rf"udp: {re.escape(address)} \[{re.escape(address)}\]:", output), output

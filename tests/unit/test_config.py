"""ivr.yaml: defaults, file:line errors, IVR_* environment settings, command-line overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from ivr.config import ConfigError, env_overrides, load_config

REPO_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "ivr.yaml"


def test_the_shipped_config_loads_and_routes_to_the_example_flows() -> None:
    cfg = load_config(REPO_CONFIG)
    assert cfg.sip.port == 5060 and cfg.media.port_range == (20000, 29999)
    assert [r.flow for r in cfg.routes] == ["flows/support-line.yaml", "flows/main.yaml"]
    assert cfg.cdr_url == f"sqlite:///{REPO_CONFIG.parent / 'var' / 'cdr.db'}"


def test_bad_values_and_unknown_keys_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "ivr.yaml"
    path.write_text("sip:\n  listen: nope\nmedia:\n  codecz: [PCMU]\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert f"{path}:2: sip.listen" in text and "write e.g. 127.0.0.1:5060" in text
    assert f"{path}:4: media.codecz: unknown setting" in text


def test_yaml_syntax_errors_name_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "ivr.yaml"
    path.write_text("sip:\n  listen: [127.0.0.1\n")
    with pytest.raises(ConfigError, match=rf"{path}:\d+:\d+: YAML syntax error"):
        load_config(path)


def test_environment_overrides_the_file_and_the_command_line_overrides_both(tmp_path: Path) -> None:
    path = tmp_path / "ivr.yaml"
    path.write_text("calls:\n  max_calls: 100\n")
    env = {"IVR_CALLS__MAX_CALLS": "500", "IVR_SIP__TRANSPORTS": "[udp]", "IVR_PYTHON": "/usr/bin/python3"}
    cfg = load_config(path, environ=env)
    assert cfg.calls.max_calls == 500 and cfg.sip.transports == ("udp",)
    cfg = load_config(path, {"calls.max_calls": 7}, environ=env)
    assert cfg.calls.max_calls == 7


def test_a_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"environment IVR_MEDIA__RTP_PORTS: media\.rtp_ports"):
        load_config(None, environ={"IVR_MEDIA__RTP_PORTS": "lots"})


def test_only_double_underscore_variables_are_settings() -> None:
    found = env_overrides({"IVR_CONFIG": "x", "IVR_ADMIN__TOKEN": "s3cret-token-0123456789", "HOME": "/root"})
    assert found == {"admin.token": ("IVR_ADMIN__TOKEN", "s3cret-token-0123456789")}


def test_admin_off_cdr_postgres_and_routes_validate() -> None:
    cfg = load_config(
        None,
        {
            "admin.listen": None,
            "cdr.url": "postgresql://ivr:ivr@127.0.0.1/ivr",
            "routes": [{"client": "acme", "numbers": ["35929*"], "flow": "flows/main.yaml"}],
        },
    )
    assert cfg.admin.listen is None and cfg.cdr_url.startswith("postgresql://")
    with pytest.raises(ConfigError, match=r"cdr\.url"):
        load_config(None, {"cdr.url": "mysql://x"})
    with pytest.raises(ConfigError, match=r"routes\.0\.client"):
        load_config(None, {"routes": [{"client": "", "flow": "x.yaml"}]})

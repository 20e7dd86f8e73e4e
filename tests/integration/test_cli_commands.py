"""The ivr command's configuration commands, as ops run them."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from ivr.cli import app

REPO = Path(__file__).resolve().parents[2]


def test_config_check_names_the_file_and_what_it_routes() -> None:
    result = CliRunner().invoke(app, ["config", "check", "--config", str(REPO / "configs" / "ivr.yaml")])
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith(f"{REPO / 'configs' / 'ivr.yaml'}: OK (2 routes, 2 flow files)")


def test_config_check_and_validate_exit_2_on_a_broken_config(tmp_path: Path) -> None:
    bad = tmp_path / "ivr.yaml"
    bad.write_text("sip:\n  listen: nowhere\n")
    for command in (["config", "check"], ["validate", str(REPO / "configs" / "flows")]):
        result = CliRunner().invoke(app, [*command, "--config", str(bad)])
        assert result.exit_code == 2, result.output
        assert "configuration error" in result.output and f"{bad}:2" in result.output


def test_validate_checks_queue_names_against_the_configs_queues(tmp_path: Path) -> None:
    flow = (REPO / "configs" / "flows" / "support-line.yaml").read_text().replace("queue: support\n", "queue: suport\n")
    (tmp_path / "subflows").mkdir()
    (tmp_path / "subflows" / "identify.yaml").write_text(
        (REPO / "configs" / "flows" / "subflows" / "identify.yaml").read_text()
    )
    (tmp_path / "support-line.yaml").write_text(flow)
    result = CliRunner().invoke(
        app, ["validate", str(tmp_path / "support-line.yaml"), "--config", str(REPO / "configs" / "ivr.yaml")]
    )
    assert result.exit_code == 1, result.output
    assert "there is no queue called `suport` (did you mean `support`?)" in result.output

"""The ``ivr`` command."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ivr import __version__
from ivr.config import ConfigError, IvrConfig, default_config_path, load_config
from ivr.logs import configure_logging

app = typer.Typer(add_completion=False, no_args_is_help=True, help="ivr: telephone IVR and call controller.")


@app.callback()
def _root() -> None:
    """ivr: telephone IVR and call controller."""


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


@app.command()
def serve(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="ivr.yaml (default: ./configs/ivr.yaml, else built-in)")
    ] = None,
    listen: Annotated[str | None, typer.Option(help="SIP host:port, overrides sip.listen")] = None,
    rtp_ports: Annotated[str | None, typer.Option(help="RTP port range LO-HI, overrides media.rtp_ports")] = None,
    hold_calls: Annotated[
        bool,
        typer.Option("--hold-calls", help="no flows: every call hears the welcome prompt looped until it hangs up"),
    ] = False,
    welcome_only: Annotated[
        bool, typer.Option("--welcome-only", help="no flows: every call hears the welcome prompt, then BYE")
    ] = False,
    admin_listen: Annotated[
        str | None, typer.Option(help="admin API host:port (port 0: any free port), or 'off'; overrides admin.listen")
    ] = None,
    cdr: Annotated[str | None, typer.Option(help="CDR store URL, overrides cdr.url")] = None,
    check: Annotated[bool, typer.Option("--check", help="validate the configuration and exit")] = False,
) -> None:
    """Run the daemon: answer SIP calls and play to callers."""
    path = config if config is not None else default_config_path()
    overrides: dict[str, Any] = {}
    if listen:
        overrides["sip.listen"] = listen
    if rtp_ports:
        overrides["media.rtp_ports"] = rtp_ports
    if hold_calls:
        overrides["calls.hangup_after_prompt"] = False
    if hold_calls or welcome_only:
        overrides["routes"] = []
    if admin_listen:
        overrides["admin.listen"] = None if admin_listen == "off" else admin_listen
    if cdr:
        overrides["cdr.url"] = cdr
    try:
        cfg = load_config(path, overrides, environ=os.environ)
    except ConfigError as exc:
        typer.echo(f"configuration error:\n{exc}", err=True)
        raise typer.Exit(2) from None
    if check:
        typer.echo(f"{path or '<built-in defaults>'}: OK")
        return
    configure_logging(cfg.log.format, cfg.log.level)
    from ivr.daemon.server import IvrServer
    from ivr.media.prompts import PromptError

    try:
        server = IvrServer(cfg)
    except PromptError as exc:
        typer.echo(f"prompt error: {exc}", err=True)
        raise typer.Exit(2) from None
    except ConfigError as exc:
        typer.echo(f"configuration error:\n{exc}", err=True)
        raise typer.Exit(2) from None
    from ivr.ops.cdr import CdrError

    try:
        _run(server)
    except (OSError, CdrError) as exc:
        typer.echo(f"cannot start: {exc}", err=True)
        raise typer.Exit(1) from None


def _known_queues(cfg: IvrConfig) -> set[str]:
    """The queue names flows may use: those of the queues file the configuration names (none: no queues)."""
    from ivr.handoff.config import QueueConfigError, load_queues

    path = cfg.queues_path
    if path is None:
        return set()
    try:
        return load_queues(path).names
    except QueueConfigError as exc:
        typer.echo(f"queues error:\n{exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def validate(
    paths: Annotated[list[Path], typer.Argument(help="flow files or folders (every .yaml in them)")],
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="ivr.yaml naming the queues file (default: ./configs/ivr.yaml)"),
    ] = None,
) -> None:
    """Check flow files: print file:line:column: problems; exit 1 on errors (warnings alone exit 0). Queue names
    are checked against the queues file of the daemon configuration."""
    from ivr.flows.commands import validate as validate_flows

    cfg = _config_or_exit(config)
    raise typer.Exit(validate_flows(paths, known_queues=_known_queues(cfg), known_calendars=None, echo=typer.echo))


def _config_or_exit(config: Path | None) -> Any:
    """The daemon configuration (``config``, else the default) with the IVR_* environment applied; exit 2 with
    the problem when it does not load."""
    path = config if config is not None else default_config_path()
    try:
        return load_config(path, environ=os.environ)
    except ConfigError as exc:
        typer.echo(f"configuration error:\n{exc}", err=True)
        raise typer.Exit(2) from None


@app.command("test")
def test_scenarios(
    paths: Annotated[list[Path], typer.Argument(help="scenario files, or folders (every *.test.yaml in them)")],
    min_coverage: Annotated[
        float | None, typer.Option("--min-coverage", help="fail when flow-graph coverage (%) is below this")
    ] = None,
    realtime: Annotated[
        bool, typer.Option("--real-time", help="run over UDP on 127.0.0.1 at the speed of real calls")
    ] = False,
    coverage: Annotated[bool, typer.Option("--coverage/--no-coverage", help="print the coverage report")] = True,
) -> None:
    """Run flow scenarios with a simulated caller on virtual time; print results and flow coverage."""
    from ivr.simulator.commands import run_tests

    configure_logging("console", "warning")
    raise typer.Exit(
        run_tests(paths, min_coverage=min_coverage, realtime=realtime, show_coverage=coverage, echo=typer.echo)
    )


@app.command("call")
def call_command(
    number: Annotated[str, typer.Argument(help="the number to dial (the Request-URI user part)")],
    target: Annotated[str, typer.Option(help="the daemon's SIP host:port")] = "127.0.0.1:5060",
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="the daemon's ivr.yaml, to name the prompts heard")
    ] = None,
    caller: Annotated[str, typer.Option("--from", help="the caller's number")] = "0888123456",
    codec: Annotated[str, typer.Option(help="PCMU or PCMA")] = "PCMU",
) -> None:
    """Call a running daemon from the terminal: see prompts as they play, type keys, say text, see the transfer."""
    from ivr.simulator.interactive import catalog_for_config, interactive_call, stdin_lines

    configure_logging("console", "warning")
    catalog = catalog_for_config(_config_or_exit(config))
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        typer.echo(f"--target {target!r} is not host:port", err=True)
        raise typer.Exit(2)
    uri = f"sip:{number}@{host}:{port}"
    raise typer.Exit(asyncio.run(interactive_call(uri, caller, catalog, stdin_lines(), echo=typer.echo, codec=codec)))


@app.command()
def schema(
    out: Annotated[Path, typer.Option("--output", "-o", help="where to write it; - prints it")] = Path(
        "configs/flows/flow.schema.json"
    ),
) -> None:
    """Write the JSON Schema of flow files, for editors."""
    from ivr.flows.commands import schema as write_schema

    raise typer.Exit(write_schema(out, echo=typer.echo))


@app.command()
def graph(
    flow: Annotated[Path, typer.Argument(help="the flow file to draw")],
    out: Annotated[Path, typer.Option("--output", "-o", help=".svg, .png, .pdf, or .dot")] = Path("flow.svg"),
) -> None:
    """Draw a flow with Graphviz: keys and words on edges, failure paths styled apart, unreachable nodes marked."""
    from ivr.flows.commands import graph as draw_graph

    raise typer.Exit(draw_graph(flow, out, echo=typer.echo))


config_app = typer.Typer(help="The daemon's configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("check")
def config_check(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="ivr.yaml (default: ./configs/ivr.yaml, else built-in)")
    ] = None,
) -> None:
    """Validate ivr.yaml with the IVR_* environment applied, and the flows it routes to; exit 0 when clean."""
    cfg = _config_or_exit(config)
    from ivr.flows.commands import validate as validate_flows

    flows = sorted({cfg.resolve(route.flow) for route in cfg.routes})
    known = _known_queues(cfg)
    status = validate_flows(flows, known_queues=known, known_calendars=None, echo=typer.echo) if flows else 0
    if status == 0:
        path = config if config is not None else default_config_path()
        typer.echo(f"{path or '<built-in defaults>'}: OK ({len(cfg.routes)} routes, {len(flows)} flow files)")
    raise typer.Exit(status)


cdr_app = typer.Typer(help="Call detail records.", no_args_is_help=True)
app.add_typer(cdr_app, name="cdr")


@cdr_app.command("export")
def cdr_export(
    since: Annotated[str, typer.Option(help="ISO date/time, e.g. 2026-11-01 or 2026-11-01T08:00 (UTC if no zone)")],
    until: Annotated[str | None, typer.Option(help="ISO date/time (default: now)")] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv, json or jsonl")] = "csv",
    config: Annotated[Path | None, typer.Option("--config", "-c", help="ivr.yaml naming the CDR store")] = None,
    url: Annotated[str | None, typer.Option(help="CDR store URL (overrides the config)")] = None,
) -> None:
    """Write the call records of a period to standard output (safe while the daemon runs)."""
    from datetime import UTC, datetime

    from ivr.ops.cdr import CdrError, export_records

    def moment(text: str, what: str) -> datetime:
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            typer.echo(f"--{what} {text!r}: write an ISO date/time such as 2026-11-01T08:00", err=True)
            raise typer.Exit(2) from None
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)

    if fmt not in ("csv", "json", "jsonl"):
        typer.echo(f"--format {fmt!r}: write csv, json or jsonl", err=True)
        raise typer.Exit(2)
    try:
        cfg = load_config(config if config is not None else default_config_path(), environ=os.environ)
    except ConfigError as exc:
        typer.echo(f"configuration error:\n{exc}", err=True)
        raise typer.Exit(2) from None
    start = moment(since, "since")
    end = moment(until, "until") if until else datetime.now(UTC)
    try:
        asyncio.run(export_records(url or cfg.cdr_url, start, end, fmt, sys.stdout))  # type: ignore[arg-type]
    except CdrError as exc:
        typer.echo(f"cdr export failed: {exc}", err=True)
        raise typer.Exit(1) from None


def _run(server: Any) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        await server.start()
        # Everything loaded so far (modules, flows, prompts) lives as long as the process: move it out of the
        # cyclic collector's sight, so a full collection under load scans only what calls allocate (shorter
        # pauses of the media clock).
        gc.collect()
        gc.freeze()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, server.request_stop)
        loop.add_signal_handler(signal.SIGHUP, server.request_reload)
        try:
            await server.serve_forever()
        finally:
            await server.close()

    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())


def main() -> None:
    with contextlib.suppress(KeyboardInterrupt):
        app()
    sys.exit(0)


if __name__ == "__main__":
    main()

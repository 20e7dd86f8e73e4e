"""The ``ivr`` command."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ivr import __version__
from ivr.config import ConfigError, default_config_path, load_config
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
        bool, typer.Option("--hold-calls", help="loop the welcome prompt until the caller hangs up")
    ] = False,
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
    try:
        cfg = load_config(path, overrides)
    except ConfigError as exc:
        typer.echo(f"configuration error:\n{exc}", err=True)
        raise typer.Exit(2) from None
    if check:
        typer.echo(f"{path or '<built-in defaults>'}: OK")
        return
    configure_logging(cfg.log.format, cfg.log.level)
    from ivr.media.prompts import PromptError
    from ivr.server import IvrServer

    try:
        server = IvrServer(cfg)
    except PromptError as exc:
        typer.echo(f"prompt error: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        _run(server)
    except OSError as exc:
        typer.echo(f"cannot start: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command()
def validate(
    paths: Annotated[list[Path], typer.Argument(help="flow files or folders (every .yaml in them)")],
) -> None:
    """Check flow files: print file:line:column: problems; exit 1 on errors (warnings alone exit 0)."""
    from ivr.flows.commands import validate as validate_flows

    # Queue and calendar names are checked once the daemon configuration names them (queue-handoff issue).
    raise typer.Exit(validate_flows(paths, known_queues=None, known_calendars=None, echo=typer.echo))


@app.command()
def schema(
    out: Annotated[
        Path, typer.Option("--output", "-o", help="where to write it; - prints it")
    ] = Path("configs/flows/flow.schema.json"),
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


def _run(server: Any) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        await server.start()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, server.request_stop)
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

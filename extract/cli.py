"""The `extract` command: run the local stack and mint credentials for it."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.table import Table

from extract.localstack import PortTaken, Stack, StackHome
from servicekit.infra.process import StartError
from servicekit.security import issue_identity_token

app = typer.Typer(
    help="EXTRACT: a data platform for extreme data across the edge-cloud-HPC continuum.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=True)

STATE_STYLE = {"healthy": "green", "unhealthy": "yellow", "stopped": "red"}


def _stack() -> Stack:
    return Stack(StackHome.from_env())


@app.command()
def up() -> None:
    """Start every part of the local stack (NATS, S3 regions, services, gateway)."""
    stack = _stack()
    try:
        with console.status("starting the local stack…") as spinner:

            def progress(part: str, what: str) -> None:
                if what == "starting":
                    spinner.update(f"starting [bold]{part}[/bold]…")
                else:
                    console.print(f"  [green]✓[/green] {part:<12} {what}")

            stack.up(progress)
    except (PortTaken, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    except StartError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    console.print(f"state in {stack.home.root}; `extract status` shows health")


@app.command()
def down() -> None:
    """Stop every part of the local stack."""

    def progress(part: str, what: str) -> None:
        if what != "stopping":
            console.print(f"  {part:<12} {what}")

    _stack().down(progress)


@app.command()
def status() -> None:
    """Print each part's health; exits 1 unless all are healthy."""
    rows = _stack().status()
    table = Table("part", "state", "pid", "url", "what")
    for row in rows:
        style = STATE_STYLE[row.state]
        table.add_row(
            row.name,
            f"[{style}]{row.state}[/{style}]",
            str(row.pid or "-"),
            row.url,
            row.description,
        )
    Console().print(table)
    if any(row.state != "healthy" for row in rows):
        raise typer.Exit(1)


@app.command()
def logs(
    part: Annotated[str, typer.Argument(help="part name, as `extract status` lists it")],
    lines: Annotated[int, typer.Option("--lines", "-n", help="lines to show")] = 50,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing")] = False,
) -> None:
    """Show a part's log."""
    stack = _stack()
    names = [p.name for p in stack.parts]
    if part not in names:
        console.print(f"[red]error:[/red] no part {part!r}; parts are {', '.join(names)}")
        raise typer.Exit(2)
    path = stack.home.log_path(part)
    if not path.exists():
        console.print(f"[red]error:[/red] {part} has no log yet ({path})")
        raise typer.Exit(1)
    command = ["tail", "-n", str(lines), *(["-F"] if follow else []), str(path)]
    raise typer.Exit(subprocess.call(command))


@app.command()
def token(
    principal: Annotated[str, typer.Option(help="user/<name> or group/<name>")],
    claim: Annotated[list[str] | None, typer.Option(help="extra claim, repeatable")] = None,
    ttl: Annotated[int, typer.Option(help="lifetime in seconds")] = 3600,
) -> None:
    """Mint an identity token for the local stack (for curl and tests)."""
    home = StackHome.from_env()
    home.prepare()
    try:
        minted = issue_identity_token(home.identity_key(), principal, claim or [], ttl=ttl)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    sys.stdout.write(minted + "\n")


@app.command("s3-key")
def s3_key(
    principal: Annotated[str, typer.Option(help="owner of the key: user/<name> or group/<name>")],
) -> None:
    """Create an S3 key pair for the local stack's SkyStore proxies; prints AWS_* lines."""
    home = StackHome.from_env()
    endpoints_file = home.root / "endpoints.json"
    endpoints = json.loads(endpoints_file.read_text()) if endpoints_file.exists() else {}
    locator = endpoints.get("skystore", "http://127.0.0.1:8102")
    token_file = home.keys / "skystore-internal.token"
    if not token_file.exists():
        console.print("[red]error:[/red] SkyStore has never run here; start it with `extract up`")
        raise typer.Exit(1)
    try:
        response = httpx.post(
            f"{locator}/access-keys",
            json={"principal": principal},
            headers={"Authorization": f"Bearer {token_file.read_text().strip()}"},
            timeout=10,
        )
    except httpx.HTTPError as exc:
        console.print(f"[red]error:[/red] the SkyStore locator at {locator} does not answer: {exc}")
        raise typer.Exit(1) from exc
    if response.status_code != 201:
        console.print(f"[red]error:[/red] {response.json().get('detail', response.text)}")
        raise typer.Exit(2)
    key = response.json()
    sys.stdout.write(f"AWS_ACCESS_KEY_ID={key['key_id']}\nAWS_SECRET_ACCESS_KEY={key['secret']}\n")


def main() -> None:
    app()

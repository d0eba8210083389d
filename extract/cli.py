"""The `extract` command: run the local stack, mint credentials for it, and use the platform
through its gateway (search the catalog, put and get data-objects with progress)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from extract.client import ApiError, Client, IntegrityError
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


# --- the platform through its gateway, as a user ------------------------------------------------

Endpoint = Annotated[
    str | None,
    typer.Option(envvar="EXTRACT_ENDPOINT", help="gateway URL [default: https://localhost:8443]"),
]
ApiKey = Annotated[str, typer.Option(envvar="EXTRACT_API_KEY", help="API key id (credential/…)")]
ApiSecret = Annotated[str, typer.Option(envvar="EXTRACT_API_SECRET", help="API key secret")]


@contextmanager
def _logged_in(endpoint: str | None, api_key: str, api_secret: str) -> Iterator[Client]:
    """A client logged in for one command; API errors become a message and exit code 1."""
    try:
        with Client(endpoint) as client:
            client.login_api_key(api_key, api_secret)
            yield client
    except (ApiError, IntegrityError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    except httpx.HTTPError as exc:
        console.print(f"[red]error:[/red] cannot reach the platform: {exc}")
        raise typer.Exit(1) from exc


def _transfer_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


@app.command()
def search(
    collection: Annotated[str, typer.Argument(help="e.g. data-record, data-object, data-set")],
    api_key: ApiKey,
    api_secret: ApiSecret,
    filter_: Annotated[
        list[str] | None, typer.Option("--filter", help="CIMI filter, repeat = AND")
    ] = None,
    orderby: Annotated[str | None, typer.Option(help="attr[:asc|desc],…")] = None,
    first: Annotated[int | None, typer.Option(help="1-based first result")] = None,
    last: Annotated[int | None, typer.Option(help="last result (0 = count only)")] = None,
    select: Annotated[str | None, typer.Option(help="attributes to return")] = None,
    aggregation: Annotated[str | None, typer.Option(help="algo:field,…")] = None,
    endpoint: Endpoint = None,
) -> None:
    """Search a catalog collection; prints the Nuvla answer as JSON."""
    with _logged_in(endpoint, api_key, api_secret) as client:
        found = client.search(
            collection,
            filter=filter_,
            orderby=orderby,
            first=first,
            last=last,
            select=select,
            aggregation=aggregation,
        )
    sys.stdout.write(json.dumps(found, indent=2) + "\n")


@app.command()
def put(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="file to upload")],
    api_key: ApiKey,
    api_secret: ApiSecret,
    object_key: Annotated[str | None, typer.Option("--object", help="S3 key [file name]")] = None,
    bucket: Annotated[str | None, typer.Option(help="bucket [the catalog's default]")] = None,
    content_type: Annotated[str | None, typer.Option(help="content type to record")] = None,
    endpoint: Endpoint = None,
) -> None:
    """Upload a file as a data-object (checked by size and sha256); prints its id."""
    with _logged_in(endpoint, api_key, api_secret) as client, _transfer_bar() as bar:
        task = bar.add_task(f"put {path.name}", total=path.stat().st_size)
        resource_id = client.upload(
            path,
            object_key=object_key or path.name,
            bucket=bucket,
            content_type=content_type,
            progress=lambda moved: bar.advance(task, moved),
        )
    sys.stdout.write(resource_id + "\n")


@app.command()
def get(
    resource_id: Annotated[str, typer.Argument(help="data-object/<uuid>")],
    api_key: ApiKey,
    api_secret: ApiSecret,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="file [its name]")] = None,
    endpoint: Endpoint = None,
) -> None:
    """Download a data-object, checked against its recorded sha256."""
    with _logged_in(endpoint, api_key, api_secret) as client, _transfer_bar() as bar:
        document = client.get(resource_id)
        target = output or Path(Path(document["object"]).name)
        task = bar.add_task(f"get {target.name}", total=document.get("bytes"))
        client.download(resource_id, target, progress=lambda moved: bar.advance(task, moved))
    console.print(f"{resource_id} → {target}")


def main() -> None:
    app()

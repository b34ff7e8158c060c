"""`mmbench tasks` and `mmbench fusions`: what the registries hold."""

from __future__ import annotations


import typer

from mmbench.cli.common import echo_json


def tasks(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List the registered tasks."""
    from mmbench.data.tasks import get_task, task_names

    rows = []
    for name in task_names():
        s = get_task(name)
        rows.append({"name": name, "dataset": s.dataset.name, "target": s.target.type, "modalities": s.modalities,
                     "primary_metric": s.primary_metric, "description": s.description})
    if as_json:
        return echo_json(rows)
    for r in rows:
        typer.echo(f"{r['name']:<24} {r['target']:<11} {r['dataset']:<10} {'+'.join(r['modalities']):<24} "
                   f"{r['primary_metric']:<12} {r['description']}")


def fusions(as_json: bool = typer.Option(False, "--json")) -> None:
    """List the registered fusion methods."""
    from mmbench.core.registry import FUSIONS

    rows = [{"name": n, "description": (cls.__doc__ or "").strip().split("\n")[0]} for n, cls in FUSIONS.items()]
    if as_json:
        return echo_json(rows)
    for r in rows:
        typer.echo(f"{r['name']:<12} {r['description']}")


def register(app: typer.Typer) -> None:
    app.command()(tasks)
    app.command()(fusions)

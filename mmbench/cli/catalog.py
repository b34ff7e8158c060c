"""`mmbench tasks [show|init]` and `mmbench fusions`: what the registries hold, and new task specs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mmbench.cli.common import echo_json, overrides

tasks_app = typer.Typer(rich_markup_mode=None, invoke_without_command=True,
                        help="List the registered tasks; `tasks show`, `tasks init`.")


@tasks_app.callback()
def tasks(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List the registered tasks (a broken spec on the path is warned about, naming its file,
    and left out). `tasks show NAME` prints one resolved; `tasks init NAME --hf PATH` drafts one."""
    if ctx.invoked_subcommand is not None:
        return
    from mmbench.data.tasks import get_task, task_names

    rows = []
    for name in task_names():
        s = get_task(name)
        rows.append({"name": name, "dataset": s.dataset.name, "target": s.target.type, "modalities": s.modalities,
                     "primary_metric": s.primary_metric, "description": s.description})
    if as_json:
        return echo_json(rows)
    cols = [[r["name"] for r in rows], [r["target"] for r in rows], [r["dataset"] for r in rows],
            ["+".join(r["modalities"]) for r in rows], [r["primary_metric"] for r in rows]]
    widths = [max(map(len, col), default=0) for col in cols]  # each column as wide as its longest value
    for i, r in enumerate(rows):
        typer.echo("  ".join(col[i].ljust(w) for col, w in zip(cols, widths)) + f"  {r['description']}")


@tasks_app.command("show")
def tasks_show(task: str = typer.Argument(..., help="Task name, or a task spec .yaml file."),
               as_json: bool = typer.Option(False, "--json"),
               set_: list[str] = typer.Option([], "--set", help="Dataset option key=value (repeatable), as for "
                                              "`data prepare`, e.g. image_encoder=torchvision:resnet152.")) -> None:
    """Print a task's spec resolved: every field, defaults filled in, and the frozen encoders its
    loader will use (backbone, weights file, output, pooling)."""
    import yaml

    from mmbench.data.datasets.base import check_options, encoder_settings
    from mmbench.data.splits import with_dataset_options
    from mmbench.data.tasks import get_task
    from mmbench.models.encoders.backbones import describe_encoders

    spec = with_dataset_options(get_task(task), overrides(set_))
    check_options(spec.dataset.name, dict(spec.dataset.options))
    data = spec.model_dump(mode="json")
    encoders = describe_encoders(encoder_settings(spec.dataset.name, dict(spec.dataset.options)))
    if as_json:
        return echo_json(data | ({"encoders": encoders} if encoders else {}))
    typer.echo(f"# {spec.name}, from {spec.source}")
    typer.echo(yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=110).rstrip())
    for kind, line in encoders.items():
        typer.echo(f"# {kind} encoder: {line}")


@tasks_app.command("init")
def tasks_init(
    name: str = typer.Argument(..., help="The new task's name."),
    hf: str = typer.Option(..., "--hf", help="A Hugging Face dataset: a save_to_disk folder, a folder or file of "
                           "Parquet / Arrow / JSON lines, or a Hub id (owner/name)."),
    out: Optional[Path] = typer.Option(None, "--output", "-o", help="Spec file to write (default: print it)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --output file."),
) -> None:
    """Draft a commented task spec from a dataset's features; what they cannot say is a TODO."""
    from mmbench.core.errors import MMBenchError
    from mmbench.core.io import atomic_write_text
    from mmbench.data.taskinit import draft_task_spec, todo_fields
    from mmbench.data.tasks import parse_task_spec

    if out is not None and out.exists() and not force:
        raise MMBenchError("the file exists (give --force to overwrite it)", out)
    text = draft_task_spec(name, hf)
    todo = todo_fields(text)
    if not todo:
        import yaml

        parse_task_spec(yaml.safe_load(text), str(out or "<drafted spec>"))  # the draft is valid as it stands
    if out is None:
        typer.echo(text, nl=False)
    else:
        atomic_write_text(out, text)
        typer.echo(f"wrote {out}")
    if todo:
        typer.echo(f"fill in the TODOs before use: {', '.join(todo)}", err=True)


def fusions(as_json: bool = typer.Option(False, "--json")) -> None:
    """List the registered fusion methods."""
    import shutil
    import textwrap

    from mmbench.core.registry import FUSIONS

    rows = [{"name": n, "description": " ".join((cls.__doc__ or "").split("\n\n")[0].split())} for n, cls in FUSIONS.items()]
    if as_json:
        return echo_json(rows)
    width = max(60, shutil.get_terminal_size((100, 24)).columns)
    for r in rows:
        typer.echo(textwrap.fill(r["description"] or "-", width=width, initial_indent=f"{r['name']:<12} ",
                                 subsequent_indent=" " * 13, break_on_hyphens=False))


def register(app: typer.Typer) -> None:
    app.add_typer(tasks_app, name="tasks")
    app.command()(fusions)

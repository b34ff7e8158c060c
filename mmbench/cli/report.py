"""CLI commands of this area; `register(app)` is called by mmbench.cli."""

from __future__ import annotations

from pathlib import Path

import typer


def report_command(inputs: list[Path], out: Path, title: str) -> Path:
    from mmbench.board.report import write_report

    return write_report(inputs, out, title)


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report(
        inputs: list[Path] = typer.Argument(..., metavar="INPUTS", help="Result JSON files, leaderboard entry files, run folders "
                                                      "(with result.json) or leaderboard folders, in any mix."),
        out: Path = typer.Option(..., "--output", "-o", metavar="FILE", help="Report file: .html (self-contained) or .md "
                                                             "(figures go to <name>_files/ beside it)."),
        title: str = typer.Option("mmbench report", "--title", help="Title of the report."),
    ) -> None:
        """Write a report: per task the decision matrix (who leads under each scenario, by the tests),
        every metric as mean ± std over seeds with significance letters and rank intervals, robustness
        curves and the trade-off, accuracy vs parameters/latency and the best model's per-class
        confusion; a cross-task ranking first when the inputs cover several tasks."""
        path = report_command(inputs, out, title)
        extra = f" (figures in {path.parent / (path.stem + '_files')})" if path.suffix.lower() == ".md" else ""
        typer.echo(f"wrote {path}{extra}")

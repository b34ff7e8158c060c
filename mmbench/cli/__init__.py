"""`mmbench` command line: a thin layer over the Python API.

Heavy modules (torch, pandas) are imported inside the commands so `mmbench --help` stays fast.
Every user-facing error is one line `error: <file>: <problem>` and exit code 1; `--debug`
shows the traceback instead.
"""

from __future__ import annotations

import sys

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Benchmark multimodal learning: datasets, fusion baselines, evaluation, leaderboard.")

_state = {"debug": False}


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors.")) -> None:
    _state["debug"] = debug


def _register_commands() -> None:
    """One module per command group, each with `register(app)`; the order is `mmbench --help`'s."""
    import importlib

    for module in ("catalog", "data", "train", "leaderboard", "reproduce", "evaluate", "report"):
        importlib.import_module(f"mmbench.cli.{module}").register(app)


_register_commands()


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """A warning as one plain line (Python's default adds the source file and line). Replacing
    the format, not `warnings.showwarning`, leaves `warnings.catch_warnings(record=True)` working."""
    return "warning: " + " ".join(str(message).split()) + "\n"


def main() -> None:
    import warnings

    from mmbench.core.errors import MMBenchError

    debug = "--debug" in sys.argv[1:]
    if not debug:
        warnings.formatwarning = _format_warning
    try:
        app(standalone_mode=False)
    except MMBenchError as exc:
        if debug:
            raise
        typer.echo(f"error: {exc}", err=True)
        if getattr(exc, "details", None):  # a failed model's own output
            typer.echo(exc.details, err=True)
        sys.exit(1)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("aborted", err=True)
        sys.exit(130)
    except Exception as exc:  # click usage errors and anything unexpected
        import click

        if isinstance(exc, click.exceptions.Exit):
            sys.exit(exc.exit_code)
        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if debug:
            raise
        typer.echo(f"error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", err=True)
        sys.exit(1)

"""Run `mmbench` in-process the way the console script does (exit code, stdout, stderr)."""

from __future__ import annotations

import sys


def run_main(args, monkeypatch, capsys, env=None):
    from mmbench import cli

    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(sys, "argv", ["mmbench", *map(str, args)])
    rc = 0
    try:
        cli.main()
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
    cap = capsys.readouterr()
    return rc, cap.out, cap.err

"""The install a user gets: the torch trio pinned exactly and installed as pinned; CI runs README's lines."""

from __future__ import annotations

import re
import subprocess
import tomllib
from importlib import metadata

from conftest import TRIO, install_problem
from _datapaths import REPO


def _dependencies() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = {}
    for requirement in project["dependencies"]:
        name = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower()
        specs[name] = requirement[len(name) :]
    return specs


def test_the_torch_trio_is_pinned_exactly_and_installed_as_pinned():
    specs = _dependencies()
    for name in TRIO:
        assert re.fullmatch(r"==\d+\.\d+\.\d+", specs[name]), f"{name} must be pinned to one release, not {specs[name]!r}"
        assert metadata.version(name).split("+")[0] == specs[name][2:], f"installed {name} differs from its pin"


def test_every_other_dependency_has_an_upper_bound():
    unbounded = [name for name, spec in _dependencies().items() if name not in TRIO and "<" not in spec]
    assert unbounded == []


def test_the_smoke_check_passes_on_this_install():
    assert install_problem() is None


def test_ci_runs_the_readme_commands_in_a_fresh_venv():
    readme = (REPO / "README.md").read_text()
    script = (REPO / ".ci" / "run").read_text()
    assert "python3 -m venv" in script and 'source "$VENV/bin/activate"' in script
    for marker in ("# 1. install", "# 2. run the tests"):
        assert readme.count(marker) == 1, f"README must hold exactly one line marked {marker!r}"
        assert f'readme_command "{marker[2:]}"' in script
    # The extraction .ci/run uses gives the README's command itself.
    line = subprocess.run(
        ["bash", "-c", "grep -m1 -F '# 1. install' README.md | sed 's/[[:space:]]*#.*$//'"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert line == 'pip install -e ".[dev,pretrained]"'

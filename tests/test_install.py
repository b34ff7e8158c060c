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


def test_the_wheel_ships_the_board_and_configs_and_shows_them_outside_a_checkout(tmp_path):
    """Build the wheel, unpack it and run it from a folder outside the checkout: the shipped
    board (entries, published rows, predictions) and the baseline configs are package data, a
    local ./leaderboard takes precedence, and the output says which board it shows."""
    import os
    import shutil
    import sys
    import zipfile

    from mmbench.board.entries import load_entries, rank, render

    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "dist"), str(REPO)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("mmbench-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        z.extractall(tmp_path / "site")
    board = "mmbench/_builtin/leaderboard/"
    shipped = {p.relative_to(REPO / "leaderboard").as_posix() for p in (REPO / "leaderboard").rglob("*") if p.is_file()}
    assert {board + p for p in shipped} <= names
    assert any(n.startswith(board + "published/") for n in names)
    assert any(n.startswith(board + "mosi/predictions/") for n in names)
    assert "mmbench/_builtin/baselines/mosi.yaml" in names and "mmbench/_builtin/tasks/mosi.yaml" in names

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("MMBENCH_TASKS_PATH",)} | {"PYTHONPATH": str(tmp_path / "site")}

    def run(*args):
        return subprocess.run([sys.executable, *args], cwd=elsewhere, capture_output=True, text=True, env=env, timeout=120)

    got = run("-m", "mmbench.cli", "leaderboard", "mosi", "--format", "csv")
    assert got.returncode == 0, got.stderr
    assert got.stderr.startswith(f"showing the board shipped with mmbench ({tmp_path / 'site' / board.rstrip('/')}")
    want = render(rank(load_entries(REPO / "leaderboard", "mosi")), "csv")
    assert got.stdout.strip().splitlines() == want.strip().splitlines()

    entry = sorted((REPO / "leaderboard" / "mosi").glob("*.json"))[0]
    (elsewhere / "leaderboard" / "mosi").mkdir(parents=True)
    shutil.copy(entry, elsewhere / "leaderboard" / "mosi" / entry.name)
    got = run("-m", "mmbench.cli", "leaderboard", "mosi", "--format", "csv")
    assert got.returncode == 0 and got.stderr.startswith("showing the board in ./leaderboard"), got.stderr
    assert len(got.stdout.strip().splitlines()) == 2  # the header and the one local entry

    got = run("-c", "import mmbench; from mmbench.reproduce import config_file; print(mmbench.__file__); "
                    "print(config_file('baselines/mosi.yaml')); print(config_file('mosi'))")
    assert got.returncode == 0, got.stderr
    home = tmp_path / "site" / "mmbench"
    assert got.stdout.split() == [str(home / "__init__.py"), str(home / "_builtin" / "baselines" / "mosi.yaml"),
                                  str(home / "_builtin" / "baselines" / "mosi.yaml")]

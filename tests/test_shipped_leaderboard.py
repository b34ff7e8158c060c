"""The leaderboard shipped in the repository (`leaderboard/`): its entries recompute from the
labels, its pages match what the entries render, published rows stay apart (issue 15)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urljoin

import pytest

from tests._cli import run_main
from tests._datapaths import REPO, real_data_root

BOARD = REPO / "leaderboard"
CHROMIUM = Path("/usr/bin/chromium")
# tasks whose labels need the real data (the synthetic ones are generated)
REAL_DATA_TASKS = {"mosi", "mosei", "avmnist", "meld-sentiment", "meld-emotion", "coco-match", "coco-retrieval",
                   "coco-retrieval-val2017-carve", "clips"}


def _task_dirs() -> list[Path]:
    return sorted(p for p in BOARD.iterdir() if p.is_dir() and p.name != "published")


def _board_copy(tmp_path: Path, with_real_data: bool) -> Path:
    """A copy of the shipped board; without the real data, only the generated tasks."""
    dest = tmp_path / "board"
    shutil.copytree(BOARD, dest, ignore=shutil.ignore_patterns(".*.lock"))
    if not with_real_data:
        for d in dest.iterdir():
            if d.is_dir() and d.name in REAL_DATA_TASKS:
                shutil.rmtree(d)
    return dest


def _have_real_data() -> bool:
    try:
        real_data_root()
    except pytest.skip.Exception:
        return False
    return True


# tasks whose every reference row (fusions and unimodal rows) is on the board; the others'
# rows are added as their grids are run (each row present has all its seeds)
COMPLETE = ("synthetic-redundant", "synthetic-unique", "synthetic-synergy", "mosi", "avmnist", "coco-retrieval-val2017-carve")


def test_the_board_holds_the_reference_baselines_with_predictions():
    """The rows of baselines/reference.json on the board have all the reference's seeds (every
    row for the COMPLETE tasks), each entry with stored predictions (a small Parquet file; a
    retrieval entry: its test embeddings, a float16 .npz of about 2.4 MB)."""
    from mmbench.board.entries import load_entries
    from mmbench.data.tasks import get_task

    reference = json.loads((REPO / "baselines" / "reference.json").read_text())["results"]
    entries = load_entries(BOARD)
    assert entries, "leaderboard/ holds no entries"
    have = {(e.task, e.name, e.seed) for e in entries}
    rows = {(e.task, e.name) for e in entries} | {(t, n) for t in COMPLETE for n in reference[t]}
    for task, name in sorted(rows):
        assert name in reference.get(task, {}), f"{task}/{name} is on the board but not in baselines/reference.json"
        n = next(iter(reference[task][name].values()))["n"]
        missing = [s for s in range(n) if (task, name, s) not in have]
        assert not missing, f"{task}/{name}: seeds {missing} missing from leaderboard/"
    for e in entries:
        retrieval = get_task(e.task).target.type == "retrieval"
        assert e.kind == "baseline" and e.predictions_file and e.predictions_file.endswith(".npz" if retrieval else ".parquet")
        path = BOARD / e.predictions_file
        assert path.is_file() and path.stat().st_size < (3_000_000 if retrieval else 200_000), path
    for d in _task_dirs():
        assert not (d / "history").exists(), f"{d}/history: the shipped board keeps one version per entry"


def test_verify_recomputes_the_shipped_board(tmp_path, monkeypatch, capsys):
    """`mmbench leaderboard verify` over leaderboard/ (CI runs this test): every entry OK."""
    board = _board_copy(tmp_path, _have_real_data())
    if _have_real_data():
        monkeypatch.setenv("MMBENCH_DATA", str(real_data_root()))
    rc, out, err = run_main(["leaderboard", "verify", "--dir", board], monkeypatch, capsys)
    assert rc == 0, out + err
    lines = [ln for ln in out.splitlines() if ln.split(" ")[0] in ("OK", "DIFFERS", "ERROR", "SKIP")]
    assert lines and all(ln.startswith("OK ") for ln in lines), out


def _first_entry(board: Path) -> Path:
    return sorted(board.glob("synthetic-*/*.json"))[0]


def test_verify_fails_on_a_tampered_metric_naming_the_entry(tmp_path, monkeypatch, capsys):
    board = _board_copy(tmp_path, with_real_data=False)
    path = _first_entry(board)
    entry = json.loads(path.read_text())
    metric = entry["primary_metric"]
    entry["metrics"]["clean"][metric] = min(1.0, entry["metrics"]["clean"][metric] + 0.01)
    path.write_text(json.dumps(entry, indent=2))
    rc, out, err = run_main(["leaderboard", "verify", "--dir", board], monkeypatch, capsys)
    label = f"{entry['task']}/{entry['name']} seed {entry['seed']}"
    assert rc == 1
    assert f"DIFFERS {label}: clean {metric}" in out
    assert err.startswith("error: leaderboard verification failed: 1 entry differs") and label in err


def test_verify_fails_on_a_tampered_predictions_file_naming_the_entry(tmp_path, monkeypatch, capsys):
    import pyarrow.parquet as pq

    board = _board_copy(tmp_path, with_real_data=False)
    entry = json.loads(_first_entry(board).read_text())
    preds = board / entry["predictions_file"]
    table = pq.read_table(preds).to_pandas()
    table.loc[0, "prediction"] = 1 - table.loc[0, "prediction"]  # one flipped binary label
    table.to_parquet(preds)
    rc, out, err = run_main(["leaderboard", "verify", "--dir", board], monkeypatch, capsys)
    label = f"{entry['task']}/{entry['name']} seed {entry['seed']}"
    assert rc == 1 and f"DIFFERS {label}: stored predictions" in out and "sha256" in out
    assert label in err

    # the same change with the hash updated: now the metrics themselves differ
    import hashlib

    path = _first_entry(board)
    data = json.loads(path.read_text())
    data["extra"]["predictions_sha256"] = hashlib.sha256(preds.read_bytes()).hexdigest()
    path.write_text(json.dumps(data, indent=2))
    rc, out, err = run_main(["leaderboard", "verify", "--dir", board], monkeypatch, capsys)
    assert rc == 1 and re.search(rf"DIFFERS {re.escape(label)}: \S+ accuracy: entry", out), out


def test_verify_fails_on_edited_per_item_records(tmp_path, monkeypatch, capsys):
    """The per-item records the significance tests read are recomputed from the stored
    predictions: an entry whose `extra.test_items` were edited (metrics untouched) fails."""
    board = _board_copy(tmp_path, with_real_data=False)
    path = _first_entry(board)
    entry = json.loads(path.read_text())
    items = entry["extra"]["test_items"]
    k = next(i for i, (t, p) in enumerate(zip(items["targets"], items["predictions"])) if t == p)
    items["predictions"][k] = 1 - items["predictions"][k]  # a right item made wrong, as a flattering edit would
    path.write_text(json.dumps(entry, indent=2))
    rc, out, err = run_main(["leaderboard", "verify", "--dir", board], monkeypatch, capsys)
    label = f"{entry['task']}/{entry['name']} seed {entry['seed']}"
    assert rc == 1 and f"DIFFERS {label}: extra.test_items: predictions differ on 1 of {len(items['ids'])} items" in out
    assert f"id {items['ids'][k]!r}" in out and label in err


def test_verify_without_the_data_says_once_which_data_root_it_needs(tmp_path, monkeypatch, capsys):
    board = _board_copy(tmp_path, with_real_data=True)
    real = [d.name for d in board.iterdir() if d.is_dir() and d.name in REAL_DATA_TASKS]
    if not real:
        pytest.skip("the shipped board has no real-data task")
    monkeypatch.setenv("MMBENCH_DATA", str(tmp_path / "no-data"))
    rc, out, err = run_main(["leaderboard", "verify", "--dir", board], monkeypatch, capsys)
    assert rc == 1
    assert not [ln for ln in out.splitlines() if ln.startswith("ERROR")], out  # not one error per entry
    assert len(err.strip().splitlines()) == 1 and "MMBENCH_DATA" in err and "--data-dir" in err
    assert all(t in err for t in real) and str(tmp_path / "no-data") in err
    assert [ln for ln in out.splitlines() if ln.startswith("OK ")]  # the generated tasks are still verified


def test_committed_pages_match_the_entries():
    """leaderboard/index.html and the task pages are what `mmbench leaderboard site` renders
    from the entries (regenerate with `mmbench leaderboard site` after changing entries)."""
    from mmbench.board.site import site_differences

    assert site_differences(BOARD) == []


def test_site_check_flags_a_changed_entry(tmp_path, monkeypatch, capsys):
    board = _board_copy(tmp_path, with_real_data=True)
    rc, out, err = run_main(["leaderboard", "site", "--check", "--dir", board], monkeypatch, capsys)
    assert rc == 0, err
    path = _first_entry(board)
    entry = json.loads(path.read_text())
    entry["metrics"]["clean"][entry["primary_metric"]] -= 0.05
    path.write_text(json.dumps(entry))
    rc, out, err = run_main(["leaderboard", "site", "--check", "--dir", board], monkeypatch, capsys)
    assert rc == 1 and "pages out of date" in err and f"{entry['task']}.html" in err
    rc, out, err = run_main(["leaderboard", "site", "--dir", board], monkeypatch, capsys)
    assert rc == 0
    rc, out, err = run_main(["leaderboard", "site", "--check", "--dir", board], monkeypatch, capsys)
    assert rc == 0, err


def test_docs_tables_are_the_boards():
    """docs/baselines.md's measured tables are generated from the shipped entries (issue 24):
    regenerate with `mmbench leaderboard docs docs/baselines.md` after changing entries."""
    from mmbench.board.doctables import doc_table_differences

    text = (REPO / "docs" / "baselines.md").read_text(encoding="utf-8")
    assert "<!-- board-table mosi |" in text and "<!-- board-table avmnist |" in text and "<!-- board-summary -->" in text
    assert doc_table_differences(REPO / "docs" / "baselines.md", BOARD) == []


def test_docs_check_flags_a_changed_entry(tmp_path, monkeypatch, capsys):
    board = _board_copy(tmp_path, with_real_data=True)
    doc = tmp_path / "baselines.md"
    shutil.copy(REPO / "docs" / "baselines.md", doc)
    rc, out, err = run_main(["leaderboard", "docs", doc, "--check", "--dir", board], monkeypatch, capsys)
    assert rc == 0, err
    path = sorted((board / "mosi").glob("concat__seed0.json"))[0]
    entry = json.loads(path.read_text())
    entry["metrics"]["clean"]["mae"] += 0.05  # a column of the MOSI table
    path.write_text(json.dumps(entry))
    rc, out, err = run_main(["leaderboard", "docs", doc, "--check", "--dir", board], monkeypatch, capsys)
    assert rc == 1 and "docs tables out of date" in err and "board-table mosi" in err
    rc, out, err = run_main(["leaderboard", "docs", doc, "--dir", board], monkeypatch, capsys)
    assert rc == 0 and f"wrote {doc}" in out
    rc, out, err = run_main(["leaderboard", "docs", doc, "--check", "--dir", board], monkeypatch, capsys)
    assert rc == 0, err


def test_pages_are_self_contained_and_linked():
    pages = {p.name: p.read_text(encoding="utf-8") for p in BOARD.glob("*.html")}
    assert "index.html" in pages
    tasks = sorted({d.name for d in _task_dirs()} | {p.stem for p in (BOARD / "published").glob("*.yaml")})
    assert sorted(n[:-5] for n in pages if n != "index.html") == tasks
    for name, html in pages.items():
        assert not re.search(r"""(src|href)=["'](https?:)?//[^"']*\.(js|css)""", html), name  # no external files
        assert "<link " not in html and "<script src" not in html, name
        assert 'href="index.html"' in html, name
        for t in tasks:
            assert f'href="{t}.html"' in html, (name, t)


def test_published_rows_are_shown_apart_and_never_ranked(monkeypatch, capsys):
    from mmbench.board.entries import load_entries, rank

    rows = rank(load_entries(BOARD, "mosi")) if (BOARD / "mosi").is_dir() else []
    assert all(r["name"] not in ("TFN", "LMF", "MulT", "MISA", "Self-MM") for r in rows)
    html = (BOARD / "mosi.html").read_text(encoding="utf-8")
    published = html.split("Published figures (not re-run)", 1)
    assert len(published) == 2, "mosi.html has no published section"
    assert "Self-MM" in published[1] and "Self-MM" not in published[0]
    assert "published, not re-run" in published[1] and "thuiar/MMSA" in published[1]
    coco = (BOARD / "coco-retrieval.html").read_text(encoding="utf-8")
    assert "OpenAI-CLIP-ViT-B-32" in coco and "open_clip" in coco and "No measured entries yet." in coco

    monkeypatch.chdir(REPO)  # `mmbench leaderboard` from the repository root shows leaderboard/
    rc, out, err = run_main(["leaderboard", "--format", "md"], monkeypatch, capsys)
    assert rc == 0, err
    tail = out.split("published figures, not re-run by mmbench", 1)
    assert len(tail) == 2 and "Self-MM" in tail[1] and "Self-MM" not in tail[0]


def test_a_broken_published_table_is_one_clear_error(tmp_path, monkeypatch, capsys):
    board = _board_copy(tmp_path, with_real_data=False)
    bad = board / "published" / "mosi.yaml"
    bad.write_text(bad.read_text().replace("acc2_non0: 0.7908", "acc2_non0: .nan"))
    rc, out, err = run_main(["leaderboard", "site", "--dir", board], monkeypatch, capsys)
    assert rc == 1 and "mosi.yaml" in err and "not finite" in err and "\n" not in err.strip()


# ------------------------------------------------------------------------------------------
# the pages in headless Chromium: open, sort a column, follow a link
# ------------------------------------------------------------------------------------------


def _dump_dom(tmp_path: Path, url: str) -> str:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--dump-dom", url]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)
    assert "<table" in res.stdout, f"chromium printed no DOM (rc {res.returncode}): {res.stderr[-2000:]}"
    return res.stdout


def _column(dom: str, table_id: str, col: int) -> list[str]:
    body = re.search(rf'<table[^>]*id="{re.escape(table_id)}".*?<tbody>(.*?)</tbody>', dom, re.S).group(1)
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)
    return [re.sub(r"<[^>]+>", "", re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)[col]).strip() for r in rows]


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium (/usr/bin/chromium) is not installed "
                                                   "(CI installs it: apt-get install chromium)")
def test_site_in_chromium(tmp_path):
    board = _board_copy(tmp_path, with_real_data=True)
    index = (board / "index.html").as_uri()
    dom = _dump_dom(tmp_path, index)
    assert 'data-js="ready"' in dom  # the inline script ran
    tasks = _column(dom, "tasks", 0)
    assert tasks == sorted(tasks) and len(tasks) >= 2

    dom = _dump_dom(tmp_path, index + "#sort=-task")  # sort the task column, descending
    assert 'data-sorted-by="-task"' in dom and _column(dom, "tasks", 0) == sorted(tasks, reverse=True)

    link = re.search(r'<a href="([^"]+\.html)">synthetic-unique</a>', dom).group(1)
    page = _dump_dom(tmp_path, urljoin(index, link))  # follow the link to the task page
    assert 'data-task="synthetic-unique"' in page and 'href="index.html"' in page
    names = _column(page, "entries-synthetic-unique", 1)
    assert len(names) == 4
    page = _dump_dom(tmp_path, urljoin(index, link) + "#sort=name")
    assert _column(page, "entries-synthetic-unique", 1) == sorted(names)

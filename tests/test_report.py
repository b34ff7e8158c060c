"""HTML leaderboard and `mmbench report`: rendering, inputs, Markdown, CLI, and the page in headless Chromium."""

from __future__ import annotations

import json
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from mmbench.core.errors import MMBenchError
from mmbench.board.entries import load_entries, rank, write_entry
from mmbench.board.report import collect_results, render_leaderboard_html, render_report_html, write_report
from mmbench.evaluation.results import make_result

CHROMIUM = Path("/usr/bin/chromium")
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium (/usr/bin/chromium) is not installed "
                                                                  "(CI installs it: apt-get install chromium)")

HW = {"platform": "Linux-6.1-x86_64", "python": "3.11.9", "cpu": "x86_64", "cpu_count": 16, "torch": "2.11.0", "device": "cpu"}
RATES = (0.1, 0.3, 0.5, 0.7, 0.9)
CLS = "synthetic-synergy"
REG = "synthetic-regression"
# clean primary metric per fusion (classification: accuracy; regression: mae, lower is better)
CLS_ACC = {"concat": 0.912, "add": 0.861, "attention": 0.947}
REG_MAE = {"concat": 0.318, "add": 0.352, "attention": 0.301}
PARAMS = {"concat": 27_906, "add": 9_474, "attention": 44_290}


def robustness_summary(per_condition, metric, higher_is_better):
    """What mmbench.evaluation.evaluator.robustness_summary records (kept local: that module imports the
    metrics/torch stack, which these tests do not need)."""
    clean = per_condition["clean"][metric]
    sign = 1.0 if higher_is_better else -1.0
    drops = {c: sign * (clean - v[metric]) for c, v in per_condition.items() if c != "clean"}
    rates = sorted([(0.0, clean)] + [(float(c[5:]), v[metric]) for c, v in per_condition.items() if c.startswith("rate:")])
    area = sum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in zip(rates, rates[1:]))
    return {"metric": metric, "drop_from_clean": drops, "worst_drop": max(drops.values(), default=0.0),
            "auc_rate": area / (rates[-1][0] - rates[0][0]), "rates": {f"{r:g}": v for r, v in rates}}


def _classification(fusion: str, seed: int):
    acc = CLS_ACC[fusion] + (0.006 if seed else -0.004)
    metrics = {"clean": {"accuracy": acc, "f1_macro": acc - 0.004}}
    for m, d in (("m0", 0.41), ("m1", 0.39)):
        metrics[f"drop:{m}"] = {"accuracy": acc - d * (0.5 if fusion == "add" else 1.0), "f1_macro": acc - d - 0.02}
    for r in RATES:
        a = acc - r * (0.35 if fusion == "attention" else 0.45) - 0.01 * seed * r
        metrics[f"rate:{r:g}"] = {"accuracy": a, "f1_macro": a - 0.01}
    n = 600
    correct = round(acc * n)
    tp0 = correct // 2
    confusion = [[tp0, 300 - tp0], [300 - (correct - tp0), correct - tp0]]
    return make_result(
        task=CLS, name=fusion, kind="baseline", fusion=fusion, seed=seed, primary_metric="accuracy", higher_is_better=True,
        metrics=metrics,
        confidence_intervals={"clean": {"accuracy": {"low": acc - 0.022, "high": acc + 0.021, "estimate": acc}}},
        robustness=robustness_summary(metrics, "accuracy", True),
        efficiency={"params": PARAMS[fusion], "flops_per_sample": 2.0 * PARAMS[fusion], "batch_size": 64, "device": "cpu",
                    "latency_ms_per_batch": 0.4 + PARAMS[fusion] / 40_000 + 0.01 * seed},
        dataset_fingerprint="ab" * 32, submission_hash=f"{seed}{fusion}".ljust(64, "0"), hardware=HW,
        created=f"2025-01-0{seed + 1}T12:00:00+00:00",
        extra={"best_epoch": 12 + seed, "train_seconds": 3.5, "confusion_matrix": confusion, "class_names": ["even", "odd"]},
    )


def _regression(fusion: str, seed: int):
    mae = REG_MAE[fusion] + 0.004 * seed
    metrics = {"clean": {"mae": mae, "r2": 1.0 - mae}}
    for r in (0.25, 0.5, 0.75):
        metrics[f"rate:{r:g}"] = {"mae": mae + 0.3 * r, "r2": 1.0 - mae - 0.3 * r}
    return make_result(
        task=REG, name=fusion, kind="baseline", fusion=fusion, seed=seed, primary_metric="mae", higher_is_better=False,
        metrics=metrics, robustness=robustness_summary(metrics, "mae", False),
        efficiency={"params": PARAMS[fusion] // 2, "flops_per_sample": float(PARAMS[fusion]), "batch_size": 64,
                    "device": "cpu", "latency_ms_per_batch": 0.3 + 0.1 * seed},
        dataset_fingerprint="cd" * 32, hardware=HW, created=f"2025-01-0{seed + 1}T12:00:00+00:00",
    )


@pytest.fixture(scope="module")
def board(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("board")
    for fusion in ("concat", "add", "attention"):
        for seed in (0, 1):
            write_entry(root, _classification(fusion, seed))
            write_entry(root, _regression(fusion, seed))
    return root


@pytest.fixture(scope="module")
def rows(board):
    return rank(load_entries(board))


class _Tables(HTMLParser):
    """Table id -> list of rows (cell texts), plus attributes of tables and <body>."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.attrs: dict[str, dict[str, str]] = {}
        self.body: dict[str, str] = {}
        self.headers: dict[str, list[str]] = {}
        self._table = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._in_body = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.body = a
        elif tag == "table":
            self._table = a.get("id", "")
            self.tables[self._table] = []
            self.headers[self._table] = []
            self.attrs[self._table] = a
        elif tag == "tbody":
            self._in_body = True
        elif tag == "th" and self._table is not None:
            self.headers[self._table].append(a.get("data-col"))
        elif tag == "tr" and self._in_body:
            self._row = []
        elif tag == "td" and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "tbody":
            self._in_body = False
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _parse(html: str) -> _Tables:
    p = _Tables()
    p.feed(html)
    return p


def _names(parsed: _Tables, table_id: str) -> list[str]:
    col = parsed.headers[table_id].index("name")
    return [r[col] for r in parsed.tables[table_id]]


# ------------------------------------------------------------------------------------------
# the leaderboard page
# ------------------------------------------------------------------------------------------


def test_board_html_is_one_static_page(rows):
    html = render_leaderboard_html(rows)
    assert html.startswith("<!DOCTYPE html>")
    # self-contained: no external scripts, styles, fonts or images
    assert not re.search(r"""(src|href)=["'](?!data:|#)""", html)
    assert "<link" not in html and "@import" not in html and "url(" not in html
    assert html.count("<script>") == 1 and "<style>" in html
    # per task: bars, rate curves, efficiency; the drop-one chart where drop conditions exist (CLS)
    assert html.count('src="data:image/png;base64,') == 9  # + the robustness trade-off per task
    parsed = _parse(html)
    kinds = ("entries", "robustness", "efficiency", "conditions")
    # modality reliance where drop-one conditions exist (CLS)
    assert set(parsed.tables) == {f"{k}-{t}" for k in kinds for t in (CLS, REG)} | {f"reliance-{CLS}"}
    assert _names(parsed, f"reliance-{CLS}") == ["attention", "concat", "add"]
    rel = dict(zip(parsed.headers[f"reliance-{CLS}"], parsed.tables[f"reliance-{CLS}"][0]))
    row = next(r for r in rows if r["task"] == CLS and r["name"] == "attention")
    assert rel["contribution:m0"] == f"{row['reliance']['contribution']['m0']:.4f} ± {row['reliance']['std']['contribution']['m0']:.4f}"
    assert row["reliance"]["contribution"]["m0"] == pytest.approx(row["accuracy"] - row["conditions"]["drop:m0"])
    # ranked by the primary metric in its direction, mean ± std over seeds
    for k in kinds:
        assert _names(parsed, f"{k}-{CLS}") == ["attention", "concat", "add"]
        assert _names(parsed, f"{k}-{REG}") == ["attention", "concat", "add"]
    first = dict(zip(parsed.headers[f"entries-{CLS}"], parsed.tables[f"entries-{CLS}"][0]))
    assert first["accuracy"] == "0.9480 ± 0.0071" and first["seeds"] == "2" and first["f1_macro"] == "0.9440 ± 0.0071"
    eff = dict(zip(parsed.headers[f"efficiency-{CLS}"], parsed.tables[f"efficiency-{CLS}"][0]))
    assert eff["params"] == "44,290" and eff["device"] == "CPU, 16 cores" and eff["batch_size"] == "64"
    assert eff["precision"] == "unknown"  # not recorded by these entries: never guessed
    rob = parsed.headers[f"robustness-{CLS}"]
    assert rob.index("relative_robustness") < rob.index("effective_robustness") < rob.index("drop:m0") < rob.index("largest_drop")
    heads = parsed.headers[f"conditions-{CLS}"]
    assert heads.index("rate:0.1") < heads.index("rate:0.9") < heads.index("drop:m0")
    assert '<details class="conditions">' in html  # the per-condition table is collapsible
    # deterministic: same rows, byte-identical page
    assert render_leaderboard_html(rows) == html


def test_board_escapes_names():
    r = _classification("concat", 0).model_copy(update={"name": "a<b", "task": "t&<x>"})
    html = render_leaderboard_html(rank([r]))
    assert "a<b" not in html and "a&lt;b" in html and "t&amp;&lt;x&gt;" in html


def test_leaderboard_cli_html(board, tmp_path):
    from typer.testing import CliRunner

    from mmbench.cli import app

    out = tmp_path / "board.html"
    res = CliRunner().invoke(app, ["leaderboard", "--format", "html", "--dir", str(board), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert _names(_parse(out.read_text()), "entries-synthetic-synergy") == ["attention", "concat", "add"]


# ------------------------------------------------------------------------------------------
# the report
# ------------------------------------------------------------------------------------------


def test_collect_results_mixed_inputs(board, tmp_path):
    # a run folder, a runs root, a single result file, a leaderboard task folder and the whole board
    run = tmp_path / "runs" / CLS / "concat" / "seed0"
    run.mkdir(parents=True)
    (run / "result.json").write_text(json.dumps(_classification("concat", 0).to_json()))
    (run / "config.json").write_text("{}")  # other JSON in a run folder is not a result
    results, files, skipped = collect_results([run])
    assert [(r.task, r.name, r.seed) for r in results] == [(CLS, "concat", 0)]
    results, files, skipped = collect_results([tmp_path / "runs"])
    assert len(results) == 1 and files == [run / "result.json"]
    results, files, skipped = collect_results([board / REG])
    assert {r.task for r in results} == {REG} and len(results) == 6
    results, files, skipped = collect_results([board, run, board / CLS / "add__seed1.json"])
    assert len(results) == 12 and skipped == 1  # the run duplicates a board entry; the file is in the board
    with pytest.raises(MMBenchError, match="file not found"):
        collect_results([tmp_path / "nope.json"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(MMBenchError, match="no results found"):
        collect_results([tmp_path / "empty"])
    bad = tmp_path / "bad.json"
    bad.write_text('{"task": "x"}')
    with pytest.raises(MMBenchError, match="invalid leaderboard entry"):
        collect_results([bad])


@pytest.fixture(scope="module")
def report_html(board, tmp_path_factory) -> Path:
    return write_report([board], tmp_path_factory.mktemp("report") / "report.html", title="Synthetic report")


def test_report_html(board, report_html):
    html = report_html.read_text()
    assert "<title>Synthetic report</title>" in html
    assert not re.search(r"""(src|href)=["'](?!data:|#)""", html)
    parsed = _parse(html)
    for kind in ("entries", "robustness", "efficiency", "conditions"):
        for task in (CLS, REG):
            assert _names(parsed, f"{kind}-{task}") == ["attention", "concat", "add"]
    best = dict(zip(parsed.headers[f"entries-{CLS}"], parsed.tables[f"entries-{CLS}"][0]))
    assert best["accuracy"] == "0.9480 ± 0.0071"
    assert 'id="summary-synthetic-synergy"' in html and "Clean accuracy: attention ranks first" in html
    # per-class confusion of the best model (counts per seed: support is the test set's), and a note where there is none
    classes = parsed.tables[f"classes-{CLS}"]
    assert [c[0] for c in classes] == ["even", "odd"]
    assert sum(float(c[1]) for c in classes) == 600 and "the mean over 2 seeds" in html
    assert '<table class="sortable classes" id="classes-synthetic-synergy">\n<thead>' in html
    assert f'<tr class="best"><td class="text">even' not in html  # classes are not ranked
    # several tasks: the cross-task ranking comes first; no internal key names; the inputs collapsed
    assert 'id="across"' in html and html.index('id="across"') < html.index('id="task-')
    assert "extra." not in html and "confidence intervals" not in html
    assert "<details><summary>" in html and "files read</summary>" in html
    assert f"classes-{REG}" not in parsed.tables
    assert "Per-class confusion not available" in html
    # bars + robustness + efficiency per task, confusion for the classification task
    for name in (f"{CLS}-bars", f"{CLS}-robustness", f"{CLS}-drop", f"{CLS}-efficiency", f"{CLS}-confusion",
                 f"{REG}-bars", f"{REG}-robustness", f"{REG}-efficiency"):
        assert f'id="fig-{name}"><img src="data:image/png;base64,' in html, name
    assert f'id="fig-{REG}-confusion"' not in html
    # deterministic output
    results, files, skipped = collect_results([board])
    assert render_report_html(results, "Synthetic report", files, skipped) == html


def test_report_markdown(board, tmp_path):
    out = write_report([board / CLS, board / REG], tmp_path / "out" / "summary.md")
    text = out.read_text()
    assert text.startswith("# mmbench report")
    assert "| # | name | accuracy (primary) | seeds | f1_macro |" in text and "### Decision summary" in text
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(links) == 10 and all(link.startswith("summary_files/") for link in links)
    for link in links:
        png = (out.parent / link).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert b"Software" not in png[:200]  # no matplotlib version stamp
    assert "Per-class confusion not available" in text
    assert sorted(p.name for p in (out.parent / "summary_files").iterdir()) == sorted(Path(link).name for link in links)


def test_report_with_reference_checks(tmp_path):
    from mmbench.board.report import write_results_report
    from mmbench.reproduce import check_against_reference

    results = [_classification(f, s) for f in ("add", "concat") for s in (0, 1)]
    means = {f: sum(r.metrics["clean"]["accuracy"] for r in results if r.name == f) / 2 for f in ("add", "concat")}
    reference = {"results": {CLS: {"add": {"accuracy": {"mean": means["add"] + 0.002, "std": 0.01, "n": 5}},
                                   "concat": {"accuracy": {"mean": means["concat"] - 0.2, "std": 0.01, "n": 5}}}}}
    checks = [check_against_reference(CLS, f, "accuracy", [r.metrics["clean"]["accuracy"] for r in results if r.name == f],
                                      reference) for f in ("add", "concat")]
    checks.append(check_against_reference(CLS, "add", "f1_macro", [0.5, 0.5], reference))  # no reference row
    text = write_results_report(results, tmp_path / "r.md", "grid", checks=checks).read_text()
    section = text[text.index("### Reference check"):text.index("### Per-class")]
    assert f"| add | accuracy | {means['add']:.4f} | {means['add'] + 0.002:.4f} ± 0.0100 | -0.0020 |" in section
    assert "| reproduces |" in section and "| +0.2000 |" in section and "| DIFFERS |" in section
    assert "| add | f1_macro | 0.5000 | - | - | - | no reference |" in section
    html = render_report_html(results, checks=checks)
    assert html.count(">DIFFERS</td>") == 1 and html.count(">reproduces</td>") == 1
    assert "Reference check" not in render_report_html(results)  # only where checks are given
    table = html[html.index('id="reference-'):]
    assert 'class="best"' not in table[:table.index("</table>")]  # a check table is not a ranking


def test_report_without_confusion_or_rates(tmp_path):
    r = _regression("add", 0)
    r = r.model_copy(update={"metrics": {"clean": r.metrics["clean"]}, "robustness": {}, "efficiency": None})
    html = render_report_html([r])
    assert "scored under the clean condition only" in html and "no robustness is measured" in html
    assert "No latency was measured" in html
    assert "Per-class confusion not available" in html
    bad = _classification("add", 0)
    bad.extra["confusion_matrix"] = [[1, 2], [3]]
    assert "is malformed" in render_report_html([bad])


def test_report_cli(board, tmp_path):
    from typer.testing import CliRunner

    from mmbench.cli import app

    runner = CliRunner()
    out = tmp_path / "r.html"
    res = runner.invoke(app, ["report", str(board / CLS / "add__seed0.json"), str(board / REG / "add__seed0.json"), "-o", str(out),
                              "--title", "CLI report"])
    assert res.exit_code == 0, res.output
    assert f"wrote {out}" in res.output
    assert "<h1>CLI report</h1>" in out.read_text()
    res = runner.invoke(app, ["report", str(board / REG / "concat__seed1.json"), "-o", str(tmp_path / "r.md")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "r_files" / f"{REG}-bars.png").is_file() and "![" in (tmp_path / "r.md").read_text()
    res = runner.invoke(app, ["report", str(board), "-o", str(tmp_path / "r.pdf")])
    assert res.exit_code != 0 and isinstance(res.exception, MMBenchError)
    assert "must end with .html, .htm or .md" in str(res.exception)
    res = runner.invoke(app, ["report", str(tmp_path / "missing"), "-o", str(out)])
    assert isinstance(res.exception, MMBenchError) and "file not found" in str(res.exception)


def test_report_cli_error_is_one_line(board, tmp_path, monkeypatch, capsys):
    from mmbench import cli

    monkeypatch.setattr("sys.argv", ["mmbench", "report", str(tmp_path / "missing"), "-o", str(tmp_path / "r.html")])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "file not found" in err and "\n" not in err


# ------------------------------------------------------------------------------------------
# the pages in headless Chromium
# ------------------------------------------------------------------------------------------


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)


def _dump(tmp_path: Path, url: str) -> _Tables:
    res = _chromium(tmp_path, "--dump-dom", url)
    assert "<table" in res.stdout, f"chromium printed no DOM (rc {res.returncode}): {res.stderr[-2000:]}"
    return _parse(res.stdout)


@needs_chromium
def test_board_in_chromium(rows, tmp_path):
    page = tmp_path / "board.html"
    page.write_text(render_leaderboard_html(rows), encoding="utf-8")
    url = page.as_uri()

    dom = _dump(tmp_path, url)
    assert dom.body.get("data-js") == "ready"  # the inline script ran without errors
    assert _names(dom, f"entries-{CLS}") == ["attention", "concat", "add"]
    assert _names(dom, f"entries-{REG}") == ["attention", "concat", "add"]
    assert len(dom.tables[f"entries-{CLS}"]) == 3 and "data-sorted-by" not in dom.attrs[f"entries-{CLS}"]

    dom = _dump(tmp_path, url + "#sort=name")  # every table with a `name` column, ascending
    assert dom.body.get("data-hash-sorted") == "9"  # 8 tables per pair of tasks + the reliance table (CLS)
    assert dom.attrs[f"entries-{CLS}"]["data-sorted-by"] == "name"
    assert _names(dom, f"entries-{CLS}") == ["add", "attention", "concat"]
    assert _names(dom, f"efficiency-{REG}") == ["add", "attention", "concat"]

    dom = _dump(tmp_path, url + "#sort=params")  # numeric (as text "9,474" would sort last)
    assert _names(dom, f"efficiency-{CLS}") == ["add", "concat", "attention"]
    assert dom.attrs[f"efficiency-{CLS}"]["data-sorted-by"] == "params"

    dom = _dump(tmp_path, url + "#sort=drop%3Am0")  # a drop-one column: robustness and conditions of CLS only
    assert dom.body.get("data-hash-sorted") == "2"
    assert _names(dom, f"conditions-{CLS}") == ["concat", "attention", "add"]  # 0.502, 0.537, 0.656
    assert _names(dom, f"robustness-{CLS}") == ["concat", "attention", "add"]
    assert _names(dom, f"conditions-{REG}") == ["attention", "concat", "add"]  # untouched

    shot = tmp_path / "shot.png"
    res = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", url)
    assert shot.is_file(), f"no screenshot (rc {res.returncode}): {res.stderr[-2000:]}"
    _assert_not_blank(shot)


@needs_chromium
def test_report_in_chromium(report_html, tmp_path):
    page = report_html
    dom = _dump(tmp_path, page.as_uri() + "#sort=-seeds")
    assert dom.body.get("data-js") == "ready"
    assert _names(dom, f"entries-{CLS}") == ["attention", "concat", "add"]  # equal keys keep their order
    assert [r[0] for r in dom.tables[f"classes-{CLS}"]] == ["even", "odd"]
    shot = tmp_path / "report.png"
    res = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", page.as_uri())
    assert shot.is_file(), f"no screenshot (rc {res.returncode}): {res.stderr[-2000:]}"
    _assert_not_blank(shot)


def _assert_not_blank(path: Path) -> None:
    import numpy as np
    from PIL import Image

    img = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
    assert img.shape == (2000, 1280, 3)
    assert img.std() > 10.0  # text, tables and plots, not a blank page
    assert (img.mean(axis=2) < 128).mean() > 0.005  # some dark pixels (text)
    colorful = (img.max(axis=2) - img.min(axis=2) > 60).mean()
    assert colorful > 0.005  # the coloured plots rendered


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(pytest.main([__file__, "-q"]))

"""The leaderboard: one JSON entry per submission under `<dir>/<task>/`, and its rankings.

Entries are `Result` records. Each is written atomically under its own file name
(`<name>.json`, or `<name>__seed<k>.json` for seeded baseline runs), so concurrent
evaluations with distinct names never touch each other's files. Re-submitting a name bumps
its `version` and moves the previous entry to `<task>/history/`, under a per-entry file lock.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from filelock import FileLock
from pydantic import ValidationError

from mmbench.board.tables import mean_std
from mmbench.core.errors import DataError
from mmbench.core.io import atomic_write_json, safe_join
from mmbench.evaluation.results import Result


def entry_filename(result: Result) -> str:
    return f"{result.name}__seed{result.seed}.json" if result.seed is not None else f"{result.name}.json"


def write_entry(board_dir: str | Path, result: Result, skip_unchanged: bool = False) -> Path:
    """Write `result` as its leaderboard entry; an existing entry moves to history/ and the new
    one gets the next version. With `skip_unchanged`, an entry equal to `result` but for its
    version is left as it is (a kept run of `reproduce`)."""
    task_dir = safe_join(Path(board_dir), result.task)
    task_dir.mkdir(parents=True, exist_ok=True)
    path = safe_join(task_dir, entry_filename(result))
    with FileLock(str(task_dir / f".{path.name}.lock")):
        if path.exists():
            try:
                old = read_entry(path)
                if skip_unchanged and old.model_dump(exclude={"version"}) == result.model_dump(exclude={"version"}):
                    return path
                result = result.model_copy(update={"version": old.version + 1})
                history = task_dir / "history"
                history.mkdir(exist_ok=True)
                path.replace(history / f"{path.stem}.v{old.version}.json")
            except DataError:
                pass  # a corrupt old entry is simply replaced
        atomic_write_json(path, result.to_json())
    return path


def read_entry(path: str | Path) -> Result:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"unreadable leaderboard entry: {exc}", path) from None
    try:
        return Result.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise DataError(f"invalid leaderboard entry: field '{'.'.join(map(str, err['loc']))}': {err['msg']}", path) from None


def load_entries(board_dir: str | Path, task: str | None = None) -> list[Result]:
    root = Path(board_dir)
    if not root.is_dir():
        return []
    dirs = [safe_join(root, task)] if task else sorted(p for p in root.iterdir() if p.is_dir())
    return [read_entry(f) for d in dirs if d.is_dir() for f in sorted(d.glob("*.json"))]


def rank(entries: list[Result], significance: bool = True, n_resamples: int | None = None, seed: int = 0,
         matrix: bool = True) -> list[dict[str, Any]]:
    """One row per (task, name): mean and std over seeds of every clean metric, robustness and
    efficiency; sorted within each task by the primary metric in its direction. With
    ``significance``, each row also carries the task's verdicts (two-level bootstrap over test
    items and seeds, all pairs, Holm): ``letters``, ``rank_interval``, ``seed_variance_known``,
    ``pairwise`` (the row's line of the pairwise matrix) and ``significance`` (test, unit, B,
    pairs, Monte-Carlo error, caption); see :func:`mmbench.evaluation.significance.annotate_ranking`. ``matrix``
    is kept for callers of the earlier API (the matrix is always there)."""
    from mmbench.board.testsets import partition_by_test_set

    entries = partition_by_test_set(entries)  # entries of different test sets are never ranked together
    groups: dict[tuple[str, str], list[Result]] = {}
    for e in entries:
        groups.setdefault((e.task, e.name), []).append(e)
    rows = []
    for (task, name), group in groups.items():
        first = group[0]
        row: dict[str, Any] = {"task": task, "name": name, "kind": first.kind, "fusion": first.fusion,
                               "seeds": len(group), "primary_metric": first.primary_metric,
                               "higher_is_better": first.higher_is_better}
        for metric in first.metrics.get("clean", {}):
            vals = [e.metrics["clean"][metric] for e in group if metric in e.metrics.get("clean", {})]
            row[metric], row[f"{metric}_std"] = mean_std(vals)
        # one name per metric: relative robustness (= the evaluation's auc_rate) comes from
        # annotate_robustness; the evaluation's worst_drop is shown as the largest drop
        vals = [e.robustness["worst_drop"] for e in group if "worst_drop" in e.robustness]
        if vals:
            row["largest_drop"] = mean_std(vals)[0]
        conds = sorted({c for e in group for c in e.metrics if c != "clean"})
        row["conditions"] = {c: mean_std([e.metrics[c][first.primary_metric] for e in group if c in e.metrics])[0] for c in conds}
        # the missing-modality masks the conditions were scored under (mmbench.data.masks; 1: rate
        # conditions could leave items with no modality) and each condition's level
        row["masks_protocol"] = min(e.masks_protocol for e in group)
        row["condition_levels"] = {c: _level(c) for c in conds}
        rows.append(row)
    def key(r: dict[str, Any]):
        v = r.get(r["primary_metric"], float("nan"))
        return (r["task"], -v if r["higher_is_better"] else v, r["name"])
    rows.sort(key=key)
    for i, r in enumerate(rows):
        r["rank"] = 1 + sum(1 for o in rows[:i] if o["task"] == r["task"])
    from mmbench.board.efficiency import annotate_efficiency
    from mmbench.board.robustness import annotate_robustness

    annotate_robustness(rows, entries)  # relative/effective robustness (MultiBench), mean and std over seeds
    annotate_efficiency(rows, entries)  # median over seeds, with device, precision and batch size
    from mmbench.board.reliance import annotate_reliance

    annotate_reliance(rows, entries)  # contribution and Shapley value per modality, equity (mean and std over seeds)
    from mmbench.board.summary import task_reference_points

    points: dict[str, Any] = {}
    for r in rows:  # chance (a uniform guess) and majority (the training split's), with the test balance
        if r["task"] not in points:
            p = task_reference_points([e for e in entries if e.task == r["task"]], r["primary_metric"])
            points[r["task"]] = p.to_json() if p is not None else None
        r["reference_points"] = points[r["task"]]
    if significance:
        from mmbench.evaluation.significance import DEFAULT_RESAMPLES, annotate_ranking

        annotate_ranking(rows, entries, n_resamples=n_resamples or DEFAULT_RESAMPLES, seed=seed)
    return rows


def table_columns(rows: list[dict[str, Any]]) -> list[str]:
    primary = rows[0]["primary_metric"] if rows else ""
    sig = ["letters", "rank_interval"] if any(r.get("letters") is not None for r in rows) else []
    return ["rank", *sig, "task", "name", "seeds", primary, "relative_robustness", "largest_drop", "params"]


HEADERS = {"rank_interval": "rank range", "relative_robustness": "relative robustness", "largest_drop": "largest drop"}


def clean_zero(v: Any) -> Any:
    """A float below 1e-12 in magnitude (a sum of rounding errors) as 0.0, recursively."""
    if isinstance(v, float):
        return 0.0 if abs(v) < 1e-12 else v
    if isinstance(v, dict):
        return {k: clean_zero(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [clean_zero(x) for x in v]
    return v


def format_value(row: dict[str, Any], col: str) -> str:
    if col == "rank_interval":  # 1 + entries significantly better .. n - entries significantly worse
        ri = row.get("rank_interval")
        return "-" if ri is None else (str(ri[0]) if ri[0] == ri[1] else f"{ri[0]}-{ri[1]}")
    if col == "seeds" and row.get("seed_variance_known") is False:
        return f"{row['seeds']}†"  # a single run: its seed variance is unknown
    from mmbench.board.tables import fmt, fmt_params

    if col == row.get("primary_metric") and col in row:
        std = row.get(f"{col}_std", 0.0)
        return f"{fmt(row[col])} ± {std:.4f}" if row["seeds"] > 1 else fmt(row[col])
    if col == "params":
        return fmt_params(row.get(col))
    v = row.get(col)
    if v is None:
        return "-"
    if isinstance(v, float):
        return fmt(clean_zero(v))
    return str(v)


def significance_note(task_rows: list[dict[str, Any]]) -> str:
    """One line under a task's table: the caption of its verdicts (what the letters mean)."""
    sig = task_rows[0].get("significance") if task_rows else None
    if not sig:
        return ""
    single = any(r.get("seed_variance_known") is False for r in task_rows)
    return sig["caption"] + (" † single run: seed variance unknown." if single else "")


def _condition_order(name: str) -> tuple:
    from mmbench.evaluation.summaries import shared_rate

    kind, _, arg = name.partition(":")
    order = {"drop": 0, "rate": 1, "pattern": 3, "segment": 4}.get(kind, 5)
    r = shared_rate(name)
    if kind == "rate" and r is None:  # imbalanced rates (IMR) after the shared ones
        order = 2
    return (order, r if r is not None else 0.0, arg)


def _level(name: str) -> str:
    """``dataset`` or ``instance`` (mmbench.data.masks); a name that no longer parses: ``unknown``."""
    from mmbench.core.errors import SpecError
    from mmbench.data.masks import parse_condition

    try:
        return parse_condition(name).level
    except SpecError:
        return "unknown"


def masks_protocol_note(task_rows: list[dict[str, Any]]) -> str:
    """One line when some rows were scored under an earlier masks protocol."""
    from mmbench.data.masks import MASKS_PROTOCOL

    old = [r["name"] for r in task_rows if r.get("masks_protocol", MASKS_PROTOCOL) != MASKS_PROTOCOL
           and any(c.startswith("rate:") for c in r.get("conditions", {}))]
    if not old:
        return ""
    return (f"masks protocol 1 ({len(old)} of {len(task_rows)} rows): their rate conditions removed each modality "
            "independently and could leave items with no modality; re-run to score them under the current masks.")


# columns a narrow terminal gives up first (the conditions before them, last first)
DROP_ORDER = ("params", "largest_drop", "relative_robustness", "rank_interval", "seeds")


def _text_width(header: list[str], body: list[list[str]]) -> int:
    """The width of rich's boxed table of these cells (1 space of padding each side, one border
    character between and around the columns)."""
    widths = [max([len(h)] + [len(b[i]) for b in body]) for i, h in enumerate(header)]
    return sum(widths) + 3 * len(widths) + 1


def render(rows: list[dict[str, Any]], fmt: str = "table", width: int | None = None) -> str:
    """Rows as text: table (rich), md, csv or json. HTML lives in mmbench.board.report. The
    table never wraps or shortens a cell: with a terminal `width` it leaves out columns (the
    conditions, then params, largest drop, relative robustness, rank interval, seeds) until it
    fits and says which; without one (piped output) it keeps every column on one line each."""
    from mmbench.board.testsets import test_set_note

    if fmt == "json":
        return json.dumps(clean_zero(rows), indent=2)
    by_task: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_task.setdefault(r["task"], []).append(r)
    out = []
    for task, task_rows in by_task.items():
        cols = [c for c in table_columns(task_rows) if not (fmt == "table" and c == "task")]
        conds = sorted({c for r in task_rows for c in r["conditions"]}, key=_condition_order)
        if fmt == "table":  # keep the terminal table readable: patterns go to md/csv/json/html
            conds = [c for c in conds if not c.startswith("pattern:")]

        def cells(cols: list[str], conds: list[str]) -> tuple[list[str], list[list[str]]]:
            head = [c if fmt == "csv" else HEADERS.get(c, c) for c in cols] + conds  # csv: the json keys
            body = [[format_value(r, c) for c in cols] + [format_value({"v": clean_zero(r["conditions"].get(c))}, "v")
                                                           for c in conds] for r in task_rows]
            return head, body

        header, body = cells(cols, conds)
        note = "\n".join(x for x in (significance_note(task_rows), test_set_note(task), masks_protocol_note(task_rows)) if x)
        if fmt == "csv":
            import csv
            import io

            buf = io.StringIO()
            w = csv.writer(buf)
            w.writerow(header)
            w.writerows(body)
            out.append(buf.getvalue())
        elif fmt == "md":
            lines = [f"### {task}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(b) + " |" for b in body]
            out.append("\n".join(lines + ([""] + [note] if note else [])) + "\n")
        else:
            from rich import box
            from rich.console import Console
            from rich.table import Table

            left_out: list[str] = []
            while width is not None and _text_width(header, body) > width and (conds or set(DROP_ORDER) & set(cols)):
                if conds:
                    left_out.append(conds.pop())
                else:
                    drop = next(c for c in DROP_ORDER if c in cols)
                    cols.remove(drop)
                    left_out.append(HEADERS.get(drop, drop))
                header, body = cells(cols, conds)
            title = (f"{task}: {task_rows[0]['primary_metric']} "
                     f"({'higher' if task_rows[0]['higher_is_better'] else 'lower'} is better), "
                     + ("clean and per missing-modality condition" if any(r.get("conditions") for r in task_rows)
                        else "clean condition only"))
            table = Table(box=box.SQUARE)
            for h in header:
                table.add_column(h, no_wrap=True, overflow="ignore")
            for b in body:
                table.add_row(*b)
            console = Console(width=_text_width(header, body), record=True, force_terminal=False, soft_wrap=True)
            with console.capture() as cap:
                console.print(table)
            hidden = (f"left out to fit {width} columns: {', '.join(reversed(left_out))} "
                      "(`--format md`, csv, json or html show every column)\n") if left_out else ""
            out.append(title + "\n" + cap.get() + hidden + (note + "\n" if note else ""))
    return "\n".join(out)


def add_training_majority(board_dir: str | Path, data_dir: Any = None) -> list[str]:
    """Store the training split's majority (``extra.training_majority``, see
    :mod:`mmbench.evaluation.reference_points`) in every entry of ``board_dir`` that lacks it,
    reading each task's training labels from the data (an annotation: the entry keeps its
    version). Entries scored on other data than the data here (another dataset fingerprint) and
    tasks without classes to count (retrieval, multi-label) are left as they are. One line per
    task saying what was done."""
    from mmbench.core.errors import MMBenchError
    from mmbench.data.tasks import get_task
    from mmbench.evaluation.reference_points import with_training_majority
    from mmbench.evaluation.submissions.tables import load_test_labels

    root = Path(board_dir)
    if not root.is_dir():
        raise DataError("leaderboard folder not found", root)
    lines = []
    for task_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(task_dir.glob("*.json"))
        if not files:
            continue
        spec = get_task(task_dir.name)
        if spec.target.type not in ("multiclass", "binary", "regression"):
            lines.append(f"{task_dir.name}: {spec.target.type} target, no majority class: unchanged")
            continue
        try:
            labels = load_test_labels(spec, data_dir, role="train")
        except MMBenchError as exc:
            lines.append(f"{task_dir.name}: training labels not loaded ({' '.join(str(exc).split())}): unchanged")
            continue
        done = other = 0
        for f in files:
            entry = read_entry(f)
            if entry.dataset_fingerprint != labels.fingerprint:
                other += 1
                continue
            plain = entry.model_copy(update={"extra": {k: v for k, v in entry.extra.items() if k != "training_majority"}})
            new = with_training_majority(plain, spec, labels.targets)
            if new.extra.get("training_majority") != entry.extra.get("training_majority"):
                atomic_write_json(f, new.to_json())
                done += 1
        lines.append(f"{task_dir.name}: training majority stored in {done} of {len(files)} entries"
                     + (f" ({other} scored on other data: unchanged)" if other else ""))
    return lines

"""``python -m benchmarks [--quick] [--device cpu|cuda] [--out results.json] [--cases ...]``.

Prints one table (case, mmbench time, reference time, ratio = reference / mmbench, peak memory,
target, exactness) and writes the rows with the machine description as JSON. Exit status 1 when
a case crashed or an exactness check failed (missed speed targets do not fail the run: timings
depend on the machine and its load).
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import CASES, Row, Settings, data_root, error_row, fmt_seconds, load_average, machine_info


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[1] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="CPU-sized run (a few minutes on 2 cores); the full run is for a GPU.")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when available).")
    p.add_argument("--out", type=Path, default=None, help="Write the results as JSON here.")
    p.add_argument("--cases", default=",".join(CASES), help=f"Comma-separated subset of: {', '.join(CASES)}.")
    p.add_argument("--data-dir", type=Path, default=None, help="Real data root (default $MMBENCH_DATA, else ../shared/data).")
    p.add_argument("--fusions", default="concat,attention,gnn",
                   help="Case 1's fusions (a full GPU run of all three takes ~15 min; split it to fit a time limit).")
    p.add_argument("--train-rows", type=int, default=None, help="Case 1's training rows (default 55,000 in a full run).")
    p.add_argument("--proof", action="store_true",
                   help="The GPU session's short form: case 1 = reference, trainer default, the 10-epoch default step "
                        "and 5 vectorised seeds; case 2 = the 1M x 1M case only.")
    p.add_argument("--seeds-only", action="store_true",
                   help="Case 1: only the reference loop and `reproduce`'s 5 vmapped seeds (compiled with CUDA graphs, "
                        "then eager) -- issue 29's measurement.")
    p.add_argument("--tiny", action="store_true", help="Smoke-test sizes (CI): checks completion and exactness only.")
    p.add_argument("--keep-work", action="store_true", help="Keep the scratch folder (caches, predictions files).")
    return p.parse_args(argv)


def _table(rows: list[Row]) -> str:
    head = ["case", "what", "mmbench", "reference", "ratio", "peak mem", "target", "met", "exact"]
    body = []
    for r in rows:
        unit = "" if r.unit == "s" else f" ({r.unit.removeprefix('s/')})" if r.unit.startswith("s/") else f" {r.unit}"
        body.append([
            r.case, r.name + unit, fmt_seconds(r.mmbench_s), fmt_seconds(r.reference_s) + (f" {r.reference}" if r.reference and r.reference != "-" else ""),
            f"{r.ratio:.2f}x" if r.ratio is not None else "-",
            f"{r.peak_mb:,.0f} MiB" if r.peak_mb is not None else "-",
            r.target or "-", {True: "yes", False: "NO", None: "-"}[r.met], {True: "ok", False: "FAIL", None: "-"}[r.exact],
        ])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    out = [line(head), line(["-" * w for w in widths])] + [line(b) for b in body]
    notes = [f"  [{r.case}] {r.name}: {r.notes}" for r in rows if r.notes]
    return "\n".join(out + ([""] + notes if notes else []))


def _write_json(path: Path, report: dict) -> None:
    """Atomically: a reader (or a kill) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str))
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        print(f"error: unknown case {unknown[0]!r}; known: {', '.join(CASES)}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="mmbench-bench-"))
    st = Settings(quick=args.quick or args.tiny, tiny=args.tiny, device=device, data_dir=data_root(args.data_dir),
                  work_dir=work, log=lambda m: print(m, file=sys.stderr, flush=True),
                  fusions=tuple(f.strip() for f in args.fusions.split(",") if f.strip()), train_rows=args.train_rows,
                  proof=args.proof, seeds_only=args.seeds_only)
    info = machine_info(device)
    st.log(f"mmbench benchmarks ({st.size}) on {device}: {info['cpu']}, {info['cpu_count']} CPUs"
           + (f", {info['gpu']}" if "gpu" in info else "") + f"; load average {info['load_average']}")
    rows: list[Row] = []
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    interrupted = None
    current = {"case": None}

    def report() -> dict:
        failed = [r for r in rows if r.exact is False]
        return {"mode": st.size, "device": device, "machine": info, "case_seconds": seconds,
                "total_seconds": time.perf_counter() - started, "cases": cases, "exactness_ok": not failed,
                "interrupted_in": interrupted, "running": current["case"], "rows": [r.to_json() for r in rows]}

    def record(row: Row) -> None:
        """Keep a row (once; a row emitted again was completed later) and rewrite the JSON."""
        if not any(r is row for r in rows):
            rows.append(row)
        if args.out:
            _write_json(args.out, report())

    st.emit = record
    try:
        for case in cases:
            st.log(f"[{case}]")
            current["case"] = case
            t0 = time.perf_counter()
            try:
                mod = importlib.import_module(f"benchmarks.{case}")
                for row in mod.run(st):
                    record(row)
            except Exception as exc:  # noqa: BLE001 - one broken case must not hide the others
                record(error_row(str(CASES.index(case) + 1), case, exc))
            except KeyboardInterrupt:  # SIGINT (e.g. `timeout -s INT`): report the rows measured so far
                interrupted = case
                st.log(f"[{case}] interrupted after {time.perf_counter() - t0:.1f} s; writing the rows measured so far")
                break
            seconds[case] = time.perf_counter() - t0
            st.log(f"[{case}] {seconds[case]:.1f} s")
    finally:
        current["case"] = None
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    info["load_average_end"] = load_average()
    print(_table(rows))
    failed = [r for r in rows if r.exact is False]
    if args.out:
        _write_json(args.out, report())
        st.log(f"wrote {args.out}")
    if failed:
        st.log("exactness checks FAILED: " + "; ".join(f"[{r.case}] {r.name}" for r in failed))
        return 1
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())

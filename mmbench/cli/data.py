"""`mmbench data info|masks|export|prepare`: inspect, prepare and mask datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from mmbench.cli.common import echo_json, overrides


data_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Inspect, prepare and mask datasets.")


def _dataset_or_task(name: str, data_dir: Optional[Path], options: Optional[dict[str, Any]] = None):
    """(A dataset by registry name, or the dataset (with its options) that a task uses, and a
    context that names the task's spec file in its spec errors); `options` are laid over either."""
    from contextlib import nullcontext

    from mmbench.data.datasets.base import load_dataset
    from mmbench.core.errors import SpecError
    from mmbench.core.registry import DATASETS
    from mmbench.data.splits import naming_the_spec, task_dataset, with_dataset_options
    from mmbench.data.tasks import get_task, is_spec_path, task_names

    if is_spec_path(name) or (name not in DATASETS and name in task_names()):
        spec = with_dataset_options(get_task(name), options)
        return task_dataset(spec, data_dir), naming_the_spec(spec)
    try:
        return load_dataset(name, data_dir, **(options or {})), nullcontext()
    except SpecError as exc:  # an option the loader does not take
        raise SpecError(f"dataset {name!r}: {exc} (in --set)") from None


def data_info(
    dataset: str = typer.Argument(..., help="Dataset or task name, or a task spec .yaml file."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Data root (default $MMBENCH_DATA)."),
    split: Optional[str] = typer.Option(None, "--split"),
    as_json: bool = typer.Option(False, "--json"),
    set_: list[str] = typer.Option([], "--set", help="Dataset option key=value (repeatable), as for `data prepare`."),
) -> None:
    """Per split: samples, per-modality present counts, class counts, where the files are.
    Counted from the annotation files and the file system: nothing is encoded."""
    ds, naming = _dataset_or_task(dataset, data_dir, overrides(set_))
    with naming:
        splits = [split] if split else list(ds.split_names)
        info = {"dataset": ds.name, "root": str(ds.root), "protocol": ds.protocol(), "files": ds.locate(),
                "splits": {s: ds.split_summary(s) for s in splits}}
        test_set = _task_test_set(dataset, ds, data_dir, bool(set_), info["splits"])
    if test_set is not None:
        info["test_set"] = test_set
    if as_json:
        return echo_json(info)
    typer.echo(f"dataset {info['dataset']}  (root {info['root']})")
    typer.echo(f"  protocol: {info['protocol']}")
    if test_set is not None:
        typer.echo(f"  test set of task {test_set['task']}: split {test_set['split']!r}, {test_set['items']:,} items, "
                   f"fingerprint {test_set['fingerprint']}")
        for level in ("dataset", "instance"):
            names = [c for c, lv in test_set["conditions"].items() if lv == level]
            if names:
                typer.echo(f"  {level}-level conditions: {', '.join(names)}")
        if test_set.get("condition_aliases"):
            typer.echo("  evaluated once (equal masks on this test set): " + ", ".join(
                f"{a} = {c}" for a, c in test_set["condition_aliases"].items()))
        for m in test_set.get("absent_modalities", []):
            typer.echo(f"  modality {m}: absent from every test item (no condition of its own)")
        if test_set.get("nothing_present"):
            typer.echo(f"  {test_set['nothing_present']:,} test items have no modality in the data: scored apart "
                       "(nothing present), outside every condition and robustness figure")
    for k, v in info["files"].items():
        typer.echo(f"  {k}: {v}")
    for s, summ in info["splits"].items():
        if "images" in summ:  # image-caption data: images in the annotations and on disk, captions
            scope = f"  ({summ['scope']})" if "scope" in summ else ""
            typer.echo(f"  {s:<6} images {summ['images']:,} in the annotations, {summ['images_on_disk']:,} on disk; "
                       f"captions {summ['captions']:,}{scope}")
            continue
        present = ", ".join(f"{m} {c}" for m, c in summ["present"].items())
        extra = ""
        if "classes" in summ:
            extra = "  classes " + " ".join(f"{k}:{v}" for k, v in summ["classes"].items())
        elif "target" in summ:
            extra = "  target min {min:.3f} max {max:.3f} mean {mean:.3f}".format(**summ["target"])
        typer.echo(f"  {s:<6} {summ['samples']:>7} samples  present: {present}{extra}")


def _task_test_set(name: str, ds: Any, data_dir: Optional[Path], overridden: bool,
                   split_counts: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The test set (protocol, split, items, fingerprint) when `name` is a task (a name that is
    also a dataset: the task's, with its own options); None for a dataset alone."""
    from mmbench.core.registry import DATASETS
    from mmbench.data.tasks import get_task, is_spec_path, task_names

    if not (is_spec_path(name) or name in task_names()):
        return None
    from mmbench.data.testset import task_test_set

    from mmbench.data.masks import MASKS_PROTOCOL
    from mmbench.evaluation.presence import ABSENT, ALIASES, distinct_with_report, scored_items

    spec = get_task(name)
    ts = task_test_set(spec, data_dir, ds if overridden or name not in DATASETS else None)
    out = {"task": spec.name, "protocol": ts.protocol, "split": ts.split, "items": len(ts.ids),
           "fingerprint": ts.fingerprint, "masks_protocol": MASKS_PROTOCOL}
    conds = spec.conditions()
    present = ts.present
    if present is None and ts.split in (split_counts or {}):  # a labels-only read: the loader's counts, if they say it
        from mmbench.data.testset import presence_from_counts

        present = presence_from_counts(split_counts[ts.split].get("present", {}), spec.modalities, len(ts.ids))
    if present is not None and spec.target.type != "retrieval":
        ts.present = present
        conds, report = distinct_with_report(conds, ts.ids, spec.modalities, spec.missing.seed, ts.split, ts.present)
        out |= {"absent_modalities": report.get(ABSENT, []), "condition_aliases": report.get(ALIASES, {}),
                "nothing_present": int((~scored_items(ts.present, len(ts.ids))).sum())}
    out["conditions"] = {c.name: c.level for c in conds}
    return out


def data_masks(
    task: str = typer.Argument(...),
    out: Path = typer.Option(..., "--out", "-o", help="CSV file to write (id, condition, one 0/1 column per modality: "
                                                      "1 = the model sees it, present in the data and kept; with a "
                                                      "segment condition, segment_start and segment_length: each "
                                                      "item's removed span of time steps, -1 / 0 elsewhere)."),
    split: str = typer.Option("test", "--split", help="Split role: train, validation or test."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir"),
) -> None:
    """Export the presence a model sees under each of a task's conditions (the data's own
    presence and the condition's masks), for predictions-file submitters."""
    from mmbench.core.errors import SpecError
    from mmbench.core.io import atomic_write_text
    from mmbench.data.masks import masks_table
    from mmbench.data.splits import naming_the_spec, task_dataset
    from mmbench.data.tasks import get_task

    spec = get_task(task)
    if split not in ("train", "validation", "test"):
        raise SpecError(f"--split must be train, validation or test, not {split!r}")
    split_name = getattr(spec.splits, split)
    if split_name is None:
        raise SpecError(f"task {spec.name!r} has no {split} split", spec.source)
    # the presence a model sees is the data's own as well as the condition's; the loader tells
    # the data's own from its files where it can (COCO retrieval: nothing is encoded)
    with naming_the_spec(spec):
        ids, present = task_dataset(spec, data_dir).split_presence(split_name)
    missing = [m for m in spec.modalities if m not in present]
    if missing:
        raise SpecError(f"task {spec.name!r} uses modality {missing[0]!r} that dataset {spec.dataset.name!r} "
                        f"does not provide", spec.source)
    conditions = spec.conditions()
    if split in ("train", "validation") and spec.missing.train:  # the masks training actually applies
        from mmbench.data.masks import parse_condition

        conditions = [parse_condition(spec.missing.train, spec.modalities)]
    spans = {}
    if any(c.kind == "segment" for c in conditions):  # the spans need each item's time steps: the split is loaded
        from mmbench.data.segments import require_time_axis, segment_spans, valid_steps
        from mmbench.data.splits import load_task_split

        s = load_task_split(spec, split, data_dir)
        for c in conditions:  # a segment condition: each item's removed span of time steps
            if c.kind == "segment":
                m = c.modalities[0]
                spans[c.name] = segment_spans(s.ids, valid_steps(s, m, require_time_axis(s, m, c.name)), c.rate,
                                              spec.missing.seed, s.name, m)
    table = masks_table(conditions, ids, spec.modalities, spec.missing.seed, split_name,
                        present={m: present[m] for m in spec.modalities}, spans=spans or None)
    import csv

    # ids are quoted (strings): leading zeros survive a reader that types columns (docs/datasets.md)
    atomic_write_text(out, table.to_csv(index=False, quoting=csv.QUOTE_NONNUMERIC))
    typer.echo(f"wrote {len(table)} rows ({len(conditions)} conditions x {len(ids)} samples) to {out}")


def data_export(
    task: str = typer.Argument(..., help="Task name, or a task spec .yaml file."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write (datasets.load_from_disk reads it)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir"),
) -> None:
    """Write a task's splits as a Hugging Face dataset: modalities, presence, target, ids."""
    from mmbench.data.export import export_task
    from mmbench.data.tasks import get_task

    rows = export_task(get_task(task), out, data_dir)
    typer.echo(f"wrote {', '.join(f'{r} {n}' for r, n in rows.items())} rows to {out}")


def data_prepare(
    dataset: str = typer.Argument(..., help="Dataset or task name, or a task spec .yaml file."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir"),
    download: bool = typer.Option(False, "--download", help="Fetch the official files (SHA-256 checked, resumable)."),
    mirror: Optional[str] = typer.Option(None, "--mirror", help="With --download: fetch from this mirror, which "
                                         "replaces scheme and host of each official URL, keeping the path "
                                         "(default $MMBENCH_DOWNLOAD_MIRROR)."),
    set_: list[str] = typer.Option([], "--set", help="Dataset option key=value (repeatable), e.g. mnist=idx."),
) -> None:
    """Verify a dataset's inputs and build its derived files (spectrograms, encoded features)."""
    from mmbench.core.progress import showing_progress

    ds, naming = _dataset_or_task(dataset, data_dir, overrides(set_))
    with naming, showing_progress():
        for key, value in ds.prepare(download=download, mirror=mirror).items():
            typer.echo(f"  {key}: {value}")
    typer.echo(f"dataset {ds.name} ready under {ds.root}")


def register(app: typer.Typer) -> None:
    data_app.command("info")(data_info)
    data_app.command("masks")(data_masks)
    data_app.command("export")(data_export)
    data_app.command("prepare")(data_prepare)
    app.add_typer(data_app, name="data")

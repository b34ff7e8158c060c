"""Bring your own dataset: `mmbench tasks init --hf`, spec paths on every command, one-line spec
errors, and the hf round trip through `data export` with presence masks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from _cli import run_main
from _hfdata import image_text_columns, image_text_dict
from mmbench.data.tasks import todo_values

FAST = {"image_encoder": "pixels", "image_size": 16, "text_encoder": "tokens", "max_tokens": 16}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MMBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def init(monkeypatch, capsys, name, source, out, fast=True):
    rc, stdout, err = run_main(["tasks", "init", name, "--hf", source, "-o", out], monkeypatch, capsys)
    assert rc == 0, err
    spec = yaml.safe_load(out.read_text())
    if fast and not todo_values(spec):
        spec["dataset"]["options"] |= FAST
        out.write_text(yaml.safe_dump(spec, sort_keys=False))
    return spec, err


def test_image_text_classlabel_set_init_info_and_one_epoch(tmp_path, monkeypatch, capsys):
    image_text_dict().save_to_disk(str(tmp_path / "data"))
    spec_file = tmp_path / "demo.yaml"
    spec, _ = init(monkeypatch, capsys, "demo", tmp_path / "data", spec_file, fast=False)
    text = spec_file.read_text()
    assert text.count("#") > 15  # every field commented
    assert "    # text_encoder: tokens  # text as token ids, embedded by a trained encoder" in text
    assert spec["dataset"]["options"] == {
        "path": str((tmp_path / "data").resolve()), "id": "uid", "target": "label",
        "modalities": {"image": {"column": "image", "type": "image"}, "caption": {"column": "caption", "type": "text"},
                       "meta": {"column": "meta", "type": "features"}}}
    assert spec["target"] == {"type": "multiclass", "num_classes": 3, "class_names": ["c0", "c1", "c2"]}
    assert spec["splits"] == {"train": "train", "validation": "validation", "test": "test"}
    assert spec["modalities"] == ["image", "caption", "meta"] and spec["primary_metric"] == "accuracy"
    spec["dataset"]["options"] |= FAST  # the caption as token ids: the default encoder embeds them
    spec_file.write_text(yaml.safe_dump(spec, sort_keys=False))

    rc, out, err = run_main(["data", "info", spec_file, "--json"], monkeypatch, capsys)
    assert rc == 0, err
    info = json.loads(out)["splits"]
    cols = image_text_columns(8, 0)
    assert info["train"]["samples"] == 8
    assert info["train"]["present"] == {"image": sum(i is not None for i in cols["image"]),
                                        "caption": sum(c is not None for c in cols["caption"]),
                                        "meta": sum(m is not None for m in cols["meta"])}
    assert info["train"]["classes"] == {str(c): cols["label"].count(c) for c in range(3)}

    rc, out, err = run_main(["train", spec_file, "--fusion", "concat", "--epochs", "1", "--out", tmp_path / "runs",
                             "--no-progress", "--device", "cpu"], monkeypatch, capsys)
    assert rc == 0, err
    assert (tmp_path / "runs" / "demo" / "concat" / "seed0" / "metrics.json").is_file()
    rc, out, err = run_main(["tasks", "show", spec_file, "--json"], monkeypatch, capsys)
    assert rc == 0 and json.loads(out)["missing"] == {"seed": 0, "conditions": ["clean", "drop-each"], "train": None}


def _other_kinds(tmp_path):
    """Parquet files with a binary ClassLabel; a save_to_disk multilabel set with an Array2D and
    numeric columns; JSON lines with a float target; a set whose int target needs a TODO."""
    import datasets

    n = 6
    binary = datasets.Dataset.from_dict(
        {"text": [f"t{i}" for i in range(n)], "label": [i % 2 for i in range(n)]},
        features=datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["no", "yes"])}))
    (tmp_path / "pq").mkdir()
    for split in ("train", "test"):
        binary.to_parquet(str(tmp_path / "pq" / f"{split}.parquet"))
    genres = ["drama", "comedy", "horror"]
    feats = datasets.Features({"seq": datasets.Array2D(shape=(3, 2), dtype="float32"), "a": datasets.Value("float32"),
                               "b": datasets.Value("int64"), "genres": datasets.List(datasets.ClassLabel(names=genres))})
    rows = {"seq": [np.full((3, 2), i, np.float32) for i in range(n)], "a": [i / 2 for i in range(n)],
            "b": list(range(n)), "genres": [[i % 3, (i + 1) % 3] if i % 2 else [i % 3] for i in range(n)]}
    ml = datasets.Dataset.from_dict(rows, features=feats)
    datasets.DatasetDict({"train": ml, "dev": ml, "test": ml}).save_to_disk(str(tmp_path / "ml"))
    (tmp_path / "reg.jsonl").write_text("".join(json.dumps({"id": f"r{i}", "x": [i, 1.0], "y": i * 0.25}) + "\n"
                                                for i in range(n)))
    datasets.Dataset.from_dict({"v": [[1.0, 2.0]] * n, "y": [i % 3 for i in range(n)]}).save_to_disk(str(tmp_path / "int"))


def test_every_feature_kind_is_inferred(tmp_path, monkeypatch, capsys):
    _other_kinds(tmp_path)
    spec, _ = init(monkeypatch, capsys, "bin", tmp_path / "pq", tmp_path / "bin.yaml")
    assert spec["target"] == {"type": "binary", "num_classes": 2, "class_names": ["no", "yes"]}
    assert spec["splits"] == {"train": "train", "test": "test"}
    assert spec["dataset"]["options"]["modalities"]["text"] == {"column": "text", "type": "text"}

    spec, _ = init(monkeypatch, capsys, "ml", tmp_path / "ml", tmp_path / "ml.yaml")
    assert spec["target"] == {"type": "multilabel", "num_classes": 3, "class_names": ["drama", "comedy", "horror"]}
    assert spec["splits"] == {"train": "train", "validation": "dev", "test": "test"}
    assert spec["dataset"]["options"]["modalities"] == {"seq": {"column": "seq", "type": "features"},
                                                         "tabular": {"columns": ["a", "b"], "type": "features"}}
    assert spec["primary_metric"] == "f1_micro"
    rc, out, err = run_main(["data", "info", tmp_path / "ml.yaml", "--json"], monkeypatch, capsys)
    assert rc == 0 and json.loads(out)["splits"]["dev"]["present"] == {"seq": 6, "tabular": 6}, err

    spec, _ = init(monkeypatch, capsys, "reg", tmp_path / "reg.jsonl", tmp_path / "reg.yaml")
    (tmp_path / "reg.yaml.orig").write_text((tmp_path / "reg.yaml").read_text())
    assert spec["target"] == {"type": "regression"} and spec["primary_metric"] == "mae"
    assert spec["dataset"]["options"]["id"] == "id"
    assert spec["dataset"]["options"]["modalities"] == {"x": {"column": "x", "type": "features"}}
    assert str(spec["splits"]["test"]).startswith("TODO: the split to score (the dataset's splits: train)")

    from mmbench.data.datasets.hf import HFDataset

    spec["splits"]["test"] = "train"
    (tmp_path / "reg.yaml").write_text(yaml.safe_dump(spec))
    rc, out, err = run_main(["data", "info", tmp_path / "reg.yaml", "--json"], monkeypatch, capsys)
    assert rc == 0, err
    split = HFDataset(tmp_path, path="reg.jsonl", id="id", target="y", target_type="regression",
                      modalities={"x": {"column": "x", "type": "features"}}).load_split("train")
    assert split.targets.tolist() == [i * 0.25 for i in range(6)]
    assert json.loads(out)["splits"]["train"]["target"]["max"] == 1.25
    assert "# validation: SPLIT  # no validation split found" in (tmp_path / "reg.yaml.orig").read_text()

    spec["splits"]["validation"] = "train"  # one epoch of a regression task and of a multilabel one
    (tmp_path / "reg.yaml").write_text(yaml.safe_dump(spec))
    for task, metric in (("reg", "mae"), ("ml", "f1_micro")):
        rc, out, err = run_main(["train", tmp_path / f"{task}.yaml", "--fusion", "concat", "--epochs", "1", "--out",
                                 tmp_path / "runs", "--no-progress", "--device", "cpu"], monkeypatch, capsys)
        assert rc == 0, err
        assert f"{task} concat seed 0: best epoch 0, test {metric} " in out

    spec, err = init(monkeypatch, capsys, "int", tmp_path / "int", tmp_path / "int.yaml")
    assert "fill in the TODOs before use: splits.test, target.type, target.num_classes" in err
    rc, out, err = run_main(["data", "info", tmp_path / "int.yaml"], monkeypatch, capsys)
    assert rc == 1 and err.startswith(f"error: {tmp_path / 'int.yaml'}: splits.test: still a TODO, fill it in: ")
    assert len(err.strip().splitlines()) == 1


def _spec(tmp_path, monkeypatch, capsys):
    image_text_dict(num_classes=2).save_to_disk(str(tmp_path / "data"))
    spec, _ = init(monkeypatch, capsys, "two", tmp_path / "data", tmp_path / "two.yaml")
    assert spec["target"]["type"] == "binary"
    return spec


@pytest.mark.parametrize("edit, message", [
    (lambda s: s["target"].update(class_names=["c1", "c0"]),
     "target.class_names: ['c1', 'c0'] differ from the names of the ClassLabel column 'label': ['c0', 'c1'] "
     "(same names, other order"),
    (lambda s: s["target"].update(num_classes=3, class_names=None),
     "target.num_classes: a binary target has 2 classes, not 3 (use multiclass)"),
    (lambda s: s["target"].update(type="multiclass", num_classes=3, class_names=None),
     "target.num_classes: 3, but column 'label' is a ClassLabel of 2 names (c0, c1)"),
    (lambda s: (s["target"].clear(), s["target"].update(type="regression"), s.update(
        metrics=[{"name": "mae", "higher_is_better": False}], primary_metric="mae")),
     "target.type: regression, but column 'label' is a ClassLabel (c0, c1); use binary"),
    (lambda s: s["dataset"]["options"].update(tagret="label"),
     "dataset.options.tagret: dataset 'hf' has no option 'tagret'; did you mean 'target'?"),
    (lambda s: s["dataset"]["options"].update(class_names=["c0", "c1"]),
     "dataset.options.class_names: give it once, as the task's target.class_names"),
    (lambda s: s["dataset"]["options"].update(splits={"test": "test"}),
     "dataset.options.splits: give it once, as the task's splits"),
    (lambda s: s["dataset"]["options"]["modalities"]["image"].update(colum="image"),
     "dataset.options.modalities.image.colum: unknown key; did you mean 'column'?"),
    (lambda s: s["target"].update(clas_names=["c0", "c1"]), "target.clas_names: unknown field; did you mean 'class_names'?"),
])
def test_cross_field_errors_are_one_line_naming_file_and_field(tmp_path, monkeypatch, capsys, edit, message):
    spec = _spec(tmp_path, monkeypatch, capsys)
    edit(spec)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(spec))
    rc, out, err = run_main(["data", "info", bad], monkeypatch, capsys)
    assert rc == 1
    assert err.startswith(f"error: {bad}: {message}"), err
    assert len(err.strip().splitlines()) == 1


def test_tasks_lists_the_valid_ones_and_warns_once_per_broken_file(tmp_path, monkeypatch, capsys):
    import os
    import subprocess
    import sys

    spec = _spec(tmp_path, monkeypatch, capsys)
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "good.yaml").write_text(yaml.safe_dump(spec | {"name": "good-one"}))
    (extra / "broken.yaml").write_text(yaml.safe_dump(spec | {"name": "broken-one", "primary_metric": "auroc"}))
    env = dict(os.environ, MMBENCH_TASKS_PATH=str(extra))

    def mmbench(*args):
        return subprocess.run([sys.executable, "-m", "mmbench.cli", *args], capture_output=True, text=True, env=env,
                              timeout=120)

    got = mmbench("tasks")
    assert got.returncode == 0, got.stderr
    names = [line.split()[0] for line in got.stdout.splitlines()]
    assert "good-one" in names and "synthetic-synergy" in names and "broken-one" not in names
    assert got.stderr == (f"warning: skipping task spec: {extra / 'broken.yaml'}: primary_metric: 'auroc' is not in "
                          "metrics (accuracy, f1_macro)\n")
    got = mmbench("data", "masks", "broken-one", "-o", str(tmp_path / "m.csv"))
    assert got.returncode == 1
    assert got.stderr.splitlines()[-1] == (f"error: {extra / 'broken.yaml'}: primary_metric: 'auroc' is not in "
                                           "metrics (accuracy, f1_macro)")


def test_export_then_init_then_load_keeps_ids_targets_and_masks(tmp_path, monkeypatch, capsys):
    """A task with missing modalities is exported, drafted back with `tasks init` and loaded:
    the same ids, targets and presence masks, and the exported tensors."""
    from mmbench.data.splits import load_task_split
    from mmbench.data.tasks import get_task

    _spec(tmp_path, monkeypatch, capsys)
    rc, out, err = run_main(["data", "export", tmp_path / "two.yaml", "-o", tmp_path / "exp"], monkeypatch, capsys)
    assert rc == 0, err
    spec, _ = init(monkeypatch, capsys, "back", tmp_path / "exp", tmp_path / "back.yaml", fast=False)
    mods = spec["dataset"]["options"]["modalities"]
    assert mods["caption"] == {"column": "caption", "type": "features", "present": "present_caption",
                               "lengths": "length_caption"}
    assert mods["image"] == {"column": "image", "type": "features", "present": "present_image"}
    assert spec["target"] == {"type": "binary", "num_classes": 2, "class_names": ["c0", "c1"]}
    original, back = get_task(tmp_path / "two.yaml"), get_task(tmp_path / "back.yaml")
    for role in ("train", "validation", "test"):
        a, b = load_task_split(original, role), load_task_split(back, role)
        assert a.ids == b.ids and torch.equal(a.targets, b.targets)
        assert not all(a.present["image"].tolist()) and not all(a.present["caption"].tolist())
        for m in original.modalities:
            assert torch.equal(a.present[m], b.present[m]), (role, m)
            assert torch.equal(a.modalities[m].float(), b.modalities[m]), (role, m)
        assert torch.equal(a.lengths["caption"], b.lengths["caption"])


def test_data_info_on_an_hf_task_encodes_nothing(tmp_path, monkeypatch, capsys):
    import mmbench.data.datasets.hf as hf

    _spec(tmp_path, monkeypatch, capsys)

    def refuse(*args, **kwargs):
        raise AssertionError("data info encoded a modality")

    monkeypatch.setattr(hf, "image_bytes_modality", refuse)
    monkeypatch.setattr(hf, "text_modality", refuse)
    rc, out, err = run_main(["data", "info", tmp_path / "two.yaml", "--json"], monkeypatch, capsys)
    assert rc == 0, err
    assert json.loads(out)["splits"]["test"]["classes"] == {"0": 3, "1": 3}


def test_the_task_spec_reference_is_current_and_covers_every_field():
    from pathlib import Path

    from mmbench.data.taskdoc import MODELS, task_spec_reference

    text = task_spec_reference()
    doc = Path(__file__).resolve().parent.parent / "docs" / "task-spec.md"
    assert doc.read_text(encoding="utf-8") == text, "run: python -m mmbench.data.taskdoc docs/task-spec.md"
    for model in MODELS:
        for name, info in model.model_fields.items():
            assert info.exclude or f"| `{name}` |" in text, (model.__name__, name)
    assert "one of: `multiclass`, `binary`, `regression`, `retrieval`, `multilabel`" in text
    for kind in ("synthetic", "mosi", "hf"):
        assert f"### `{kind}`:" in text


def test_fusions_prints_each_whole_description_wrapped(monkeypatch, capsys):
    from mmbench.core.registry import FUSIONS

    monkeypatch.setenv("COLUMNS", "80")
    rc, out, err = run_main(["fusions"], monkeypatch, capsys)
    assert rc == 0, err
    assert max(map(len, out.splitlines())) <= 80
    blocks: dict[str, list[str]] = {}
    for line in out.splitlines():
        if not line.startswith(" "):
            name, _, line = line.partition(" ")
            blocks[name] = []
        blocks[name].append(line.strip())
    assert sorted(blocks) == FUSIONS.names()
    for name, cls in FUSIONS.items():
        assert " ".join(blocks[name]) == " ".join(cls.__doc__.split("\n\n")[0].split()), name

"""Submitting a model as a new user would, through the CLI: the template and its call contract,
the call checked before any data, `--limit`, the model's own output on failure, `--split
validation`, refusals of partial / out-of-range / repeated submissions (and their flags), model
entries verifiable from stored predictions with their metadata, several boards ranked together,
one id form for retrieval .npz files, and masks that give the presence the model sees.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmbench.data.tasks import get_task
from _cli import run_main

TASK = "synthetic-synergy"
SPEC = get_task(TASK)
QUICK = ["--bootstrap", "0", "--timeout", "120"]


def split_of(role: str):
    from mmbench.data.splits import load_task_split

    return load_task_split(SPEC, role)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """The template `evaluate --template` writes, in a folder of its own."""
    from mmbench.data.tasks import get_task as task
    from mmbench.evaluation.submissions.contract import write_template

    return write_template(task(TASK), tmp_path_factory.mktemp("team") / "sub")


def test_template_states_the_contract_and_scores(template, tmp_path, monkeypatch, capsys):
    text = template.read_text()
    assert "model(modalities: dict[str, Tensor [B, ...]], present: dict[str, bool Tensor [B]], lengths" in text
    assert "-> float Tensor [B, 2]" in text and "m0 [B, 16]; m1 [B, 16]" in text
    rc, out, err = run_main(["evaluate", TASK, "--template", template.parent], monkeypatch, capsys)
    assert rc == 1 and "already there" in err  # never overwritten
    # --limit: raw outputs under every condition, nothing written
    rc, out, err = run_main(["evaluate", TASK, "--model", f"{template}:build", "--limit", "3", *QUICK], monkeypatch, capsys)
    assert rc == 0, err
    lines = out.splitlines()
    assert "first 3 test items" in lines[0] and "nothing scored or written" in lines[0]
    conditions = [c.name for c in SPEC.conditions()]
    assert [ln.split(": shape")[0].strip() for ln in lines[1:]] == conditions
    assert all("shape [3, 2] float32" in ln for ln in lines[1:])
    assert "warning: no --weights" in err  # the template's model is untrained
    # the full evaluation, to a board: every condition, the isolation, the metadata
    board = tmp_path / "board"
    rc, out, err = run_main(["evaluate", TASK, "--model", f"{template}:build", "--name", "tmpl", "--leaderboard", board,
                             "--description", "the template", "--url", "https://example.org/tmpl", *QUICK],
                            monkeypatch, capsys)
    assert rc == 0, err
    entry = json.loads((board / TASK / "tmpl.json").read_text())
    evaluated = set(conditions) - set(entry["extra"]["condition_aliases"])  # equal masks: evaluated once
    assert set(entry["metrics"]) == evaluated
    meta = entry["extra"]["submission"]
    assert meta["name"] == "tmpl" and meta["description"] == "the template" and meta["url"] == "https://example.org/tmpl"
    assert meta["params"] == entry["efficiency"]["params"] == (16 * 64 + 64) * 2 + 64 * 2 + 2
    assert meta["isolation"] == entry["extra"]["isolation"]
    # its predictions are stored: verify rescores the model entry (no more "no stored predictions")
    assert entry["predictions_file"] == "synthetic-synergy/predictions/tmpl.parquet"
    rc, out, err = run_main(["leaderboard", "verify", "--dir", board], monkeypatch, capsys)
    assert rc == 0 and f"OK      {TASK}/tmpl: {len(evaluated)} condition(s) and the per-item records match" in out, out + err
    stored = pd.read_parquet(board / entry["predictions_file"])
    assert len(stored) == len(evaluated) * 600 and set(stored["condition"]) == evaluated
    # a tampered prediction is caught
    stored.loc[0, "prediction"] = 1 - stored.loc[0, "prediction"]
    stored.to_parquet(board / entry["predictions_file"])
    rc, out, err = run_main(["leaderboard", "verify", "--dir", board], monkeypatch, capsys)
    assert rc == 1 and "DIFFERS" in out
    # the same name again is refused, nothing changes; --force replaces it (the old one kept in history)
    before = (board / TASK / "tmpl.json").read_bytes()
    rc, out, err = run_main(["evaluate", TASK, "--model", f"{template}:build", "--name", "tmpl", "--leaderboard", board,
                             *QUICK], monkeypatch, capsys)
    assert rc == 1 and "already has an entry named 'tmpl'" in err and "--force" in err
    assert (board / TASK / "tmpl.json").read_bytes() == before
    rc, out, err = run_main(["evaluate", TASK, "--model", f"{template}:build", "--name", "tmpl", "--leaderboard", board,
                             "--force", *QUICK], monkeypatch, capsys)
    assert rc == 0, err
    assert list((board / TASK / "history").glob("tmpl.v*.json"))
    rc, out, err = run_main(["leaderboard", "verify", "--dir", board], monkeypatch, capsys)
    assert rc == 0, out + err


WRONG_CALL = '''
import torch

class OneArg(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(16, 2)

    def forward(self, modalities):
        return self.lin(modalities["m0"])

def build():
    return OneArg()
'''


def test_the_call_is_checked_before_any_data(tmp_path, monkeypatch, capsys):
    import torch

    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "model.py").write_text(WRONG_CALL)
    rc, out, err = run_main(["evaluate", TASK, "--model", f"{tmp_path / 'sub' / 'model.py'}:build", *QUICK],
                            monkeypatch, capsys)
    expected = ("the model must take the call model(modalities: dict[str, Tensor [B, ...]], present: dict[str, bool "
                "Tensor [B]], lengths: dict[str, int64 Tensor [B]]) -> float Tensor [B, 2]; its forward takes "
                "(modalities)")
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert rc == 1 and len(errors) == 1 and errors[0].endswith(expected), err
    # a .pt2 exported with two arguments: the same one line, not a raw torch error
    class Two(torch.nn.Module):
        def forward(self, modalities, present):
            return modalities["m0"][:, :2] * present["m0"][:, None]

    b = split_of("test").batch(torch.arange(4))
    ep = torch.export.export(Two(), (b.modalities, b.present))
    torch.export.save(ep, str(tmp_path / "two.pt2"))
    rc, out, err = run_main(["evaluate", TASK, "--model", tmp_path / "two.pt2", *QUICK], monkeypatch, capsys)
    assert rc == 1 and "the model must take the call model(modalities" in err and "takes (modalities, present)" in err


def test_export_helper_writes_a_program_that_scores_like_the_factory(template, tmp_path, monkeypatch, capsys):
    import importlib.util

    import mmbench

    spec = importlib.util.spec_from_file_location("tmpl_model", template)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    import torch

    torch.manual_seed(0)
    model = module.build({"inputs": {"m0": {"shape": [16], "sequence": False}, "m1": {"shape": [16], "sequence": False}},
                          "outputs": 2})
    from safetensors.torch import save_file

    save_file(model.state_dict(), tmp_path / "w.safetensors")
    path = mmbench.export_submission(model, TASK, tmp_path / "model.pt2")
    results = []
    for args in (["--model", path], ["--model", f"{template}:build", "--weights", tmp_path / "w.safetensors"]):
        out = tmp_path / f"r{len(results)}.json"
        rc, _, err = run_main(["evaluate", TASK, *args, "--output", out, *QUICK], monkeypatch, capsys)
        assert rc == 0, err
        results.append(json.loads(out.read_text())["metrics"])
    assert results[0] == results[1]


LOUD = '''
import torch

class Loud(torch.nn.Module):
    def forward(self, modalities, present, lengths):
        print("batch of", len(modalities["m0"]))
        return modalities["m0"] @ torch.ones(3, 2)

def build():
    return Loud()
'''


def test_failure_shows_the_models_output_and_its_own_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "sub").mkdir()
    model = tmp_path / "sub" / "loud.py"
    model.write_text(LOUD)
    rc, out, err = run_main(["evaluate", TASK, "--model", f"{model}:build", "--conditions", "clean", *QUICK],
                            monkeypatch, capsys)
    assert rc == 1
    first, *rest = [ln for ln in err.strip().splitlines() if not ln.startswith("warning: no --weights")]
    assert first.startswith(f"error: {model}: model failed: model forward failed on a batch of condition(s) ") and "RuntimeError" in first
    assert first.endswith(f"(at {model}, line 7, in forward)")
    assert "model stdout:" in rest and "  batch of 256" in rest
    assert f'    File "{model}", line 7, in forward' in rest and "worker.py" not in err


def test_validation_split_and_partial_predictions(tmp_path, monkeypatch, capsys):
    val = split_of("validation")
    y = val.targets.numpy()
    p = tmp_path / "val.csv"
    pd.DataFrame({"id": val.ids, "prediction": y}).to_csv(p, index=False)
    rc, out, err = run_main(["evaluate", TASK, "-p", p, "--split", "validation", "--output", tmp_path / "v.json",
                             "--bootstrap", "0", "--allow-partial"], monkeypatch, capsys)
    assert rc == 0, err
    r = json.loads((tmp_path / "v.json").read_text())
    assert r["metrics"]["clean"]["accuracy"] == 1.0 and r["extra"]["split"] == "validation"
    # validation ids are not test ids: scored against the test split they are refused
    rc, out, err = run_main(["evaluate", TASK, "-p", p, "--allow-partial"], monkeypatch, capsys)
    assert rc == 1
    rc, out, err = run_main(["evaluate", TASK, "-p", p, "--split", "validation", "--leaderboard", tmp_path / "lb"],
                            monkeypatch, capsys)
    assert rc == 1 and "never go on a leaderboard" in err and not (tmp_path / "lb").exists()
    # a test predictions file with the clean condition only: refused, naming what is missing
    test = split_of("test")
    clean = tmp_path / "clean.csv"
    pd.DataFrame({"id": test.ids, "prediction": test.targets.numpy()}).to_csv(clean, index=False)
    rc, out, err = run_main(["evaluate", TASK, "-p", clean, "--leaderboard", tmp_path / "lb"], monkeypatch, capsys)
    # the patterns equal clean and the drops on this test set (evaluated once): not asked for
    missing = [c.name for c in SPEC.conditions() if c.name != "clean" and not c.name.startswith("pattern:")]
    assert rc == 1 and f"missing {', '.join(missing)}" in err and "--allow-partial" in err
    assert not (tmp_path / "lb").exists()
    rc, out, err = run_main(["evaluate", TASK, "-p", clean, "--allow-partial", "--leaderboard", tmp_path / "lb",
                             "--bootstrap", "0"], monkeypatch, capsys)
    assert rc == 0, err
    entry = json.loads((tmp_path / "lb" / TASK / "clean.json").read_text())
    assert "worst_drop" not in entry["robustness"] and "auc_rate" not in entry["robustness"]
    assert "robustness" not in out  # absent, not 0
    rc, out, err = run_main(["leaderboard", TASK, "--dir", tmp_path / "lb", "--format", "csv"], monkeypatch, capsys)
    row = dict(zip(*[ln.split(",") for ln in out.strip().splitlines()[:2]]))
    assert row["largest_drop"] in ("", "-", "nan") and row["name"] == "clean"


def test_regression_range_refused_or_clipped(tmp_path, monkeypatch, capsys):
    from _datapaths import real_data_root

    root = real_data_root()
    monkeypatch.setenv("MMBENCH_DATA", str(root))
    spec = get_task("mosi")
    from mmbench.evaluation.submissions.tables import load_test_labels

    labels = load_test_labels(spec, root)
    rows = []
    for c in spec.conditions():
        pred = labels.targets.astype(np.float64).copy()
        pred[0] = 1e6  # a million times outside [-3, 3]
        rows.append(pd.DataFrame({"id": labels.ids, "condition": c.name, "prediction": pred}))
    p = tmp_path / "far.csv"
    pd.concat(rows).to_csv(p, index=False, float_format="%.17g")
    board = tmp_path / "lb"
    rc, out, err = run_main(["evaluate", "mosi", "-p", p, "--leaderboard", board, "--bootstrap", "0"], monkeypatch, capsys)
    assert rc == 1 and "1 of 686 predictions under 'clean' lie outside the range of task 'mosi', [-3, 3] (e.g. 1e+06)" in err
    assert not board.exists()
    rc, out, err = run_main(["evaluate", "mosi", "-p", p, "--leaderboard", board, "--bootstrap", "0", "--clip-range"],
                            monkeypatch, capsys)
    assert rc == 0, err
    entry = json.loads((board / "mosi" / "far.json").read_text())
    assert entry["extra"]["clipped_to_range"] == [-3.0, 3.0]
    from mmbench.evaluation.metrics import mosi_metrics

    clipped = np.clip(pd.concat(rows).query("condition == 'clean'")["prediction"].to_numpy(), -3, 3)
    assert entry["metrics"]["clean"]["mae"] == pytest.approx(mosi_metrics(labels.targets, clipped)["mae"], abs=1e-12)
    rc, out, err = run_main(["leaderboard", "verify", "--dir", board], monkeypatch, capsys)
    assert rc == 0, out + err


def test_several_boards_ranked_together(tmp_path, monkeypatch, capsys):
    test = split_of("test")
    y = test.targets.numpy()

    def write(board: Path, name: str, flip: int) -> None:
        rows = []
        for c in SPEC.conditions():
            pred = y.copy()
            pred[:flip] = 1 - pred[:flip]
            rows.append(pd.DataFrame({"id": test.ids, "condition": c.name, "prediction": pred}))
        p = tmp_path / f"{name}.csv"
        pd.concat(rows).to_csv(p, index=False)
        rc, _, err = run_main(["evaluate", TASK, "-p", p, "--leaderboard", board, "--bootstrap", "0"], monkeypatch, capsys)
        assert rc == 0, err

    write(tmp_path / "a", "alpha", 60)
    write(tmp_path / "b", "beta", 0)
    (tmp_path / "b2").mkdir()
    write(tmp_path / "b2", "alpha", 300)  # the same name on another board: never pooled as a seed
    rc, out, err = run_main(["leaderboard", TASK, "--dir", tmp_path / "a", "--dir", tmp_path / "b", "--dir",
                             tmp_path / "b2", "--format", "csv"], monkeypatch, capsys)
    assert rc == 0, err
    header, *rows = [ln.split(",") for ln in out.strip().splitlines()]
    names = [dict(zip(header, r))["name"] for r in rows]
    assert names == ["beta", "alpha", "alpha [b2]"]
    rc, out, err = run_main(["leaderboard", "verify", "--dir", tmp_path / "a", "--dir", tmp_path / "b"], monkeypatch, capsys)
    assert rc == 1 and "one --dir" in err


def test_npz_ids_in_the_exported_form(tmp_path):
    """Retrieval .npz ids: bare integers or the `coco-<id>` form `data export` writes; else one message naming both."""
    from mmbench.core.errors import SubmissionError
    from mmbench.evaluation.submissions.checks import Limits
    from mmbench.evaluation.submissions.retrieval import parse_retrieval

    image_ids, caption_ids = [1000, 1007], [50000, 50001, 50002, 50003]
    index = np.array([0, 0, 1, 1])
    rng = np.random.default_rng(0)
    img, cap = rng.normal(size=(2, 8)).astype(np.float32), rng.normal(size=(4, 8)).astype(np.float32)
    forms = {"int": (np.array(image_ids), np.array(caption_ids)),
             "exported": (np.array([f"coco-{i}" for i in image_ids]), np.array([f"coco-{i}" for i in caption_ids][::-1]))}
    parsed = {}
    for form, (im, ca) in forms.items():
        path = tmp_path / f"{form}.npz"
        c = cap if form == "int" else cap[::-1]
        np.savez(path, image_ids=im, image_embeddings=img, caption_ids=ca, caption_embeddings=c)
        parsed[form] = parse_retrieval(path, image_ids, caption_ids, index, Limits.from_env())
    assert np.array_equal(parsed["int"].caption_embeddings, parsed["exported"].caption_embeddings)
    assert np.array_equal(parsed["int"].image_embeddings, parsed["exported"].image_embeddings)
    bad = tmp_path / "bad.npz"
    np.savez(bad, image_ids=np.array(["img-1000", "img-1007"]), image_embeddings=img, caption_ids=np.array(caption_ids),
             caption_embeddings=cap)
    with pytest.raises(SubmissionError, match=re.escape("as integers (1000) or strings in the form `data export` and "
                                                        "`data masks` write (coco-1000)")):
        parse_retrieval(bad, image_ids, caption_ids, index, Limits.from_env())


def test_masks_give_the_presence_the_model_sees(tmp_path, monkeypatch, capsys):
    """MOSI: no test clip has vision, so the vision column is 0 under every condition."""
    from _datapaths import real_data_root

    root = real_data_root()
    monkeypatch.setenv("MMBENCH_DATA", str(root))
    spec = get_task("mosi")
    from mmbench.data.splits import apply_condition, load_task_split

    s = load_task_split(spec, "test", root)
    rc, out, err = run_main(["data", "masks", "mosi", "--out", tmp_path / "m.csv"], monkeypatch, capsys)
    assert rc == 0, err
    table = pd.read_csv(tmp_path / "m.csv", dtype={"id": str})
    assert not s.present["vision"].any() and (table["vision"] == 0).all()
    for c in spec.conditions()[:4]:
        seen = apply_condition(s, c, spec.missing.seed)
        rows = table[table["condition"] == c.name].set_index("id").loc[s.ids]
        for m in spec.modalities:
            assert np.array_equal(rows[m].to_numpy().astype(bool), seen.present[m].numpy()), (c.name, m)

"""Test-set fingerprints (mmbench.data.testset): an independent re-computation, stable across
runs, different when ids, targets, protocol or masks differ; stored in results by `evaluate`,
compared with a claimed one, checked by `leaderboard verify`; the board ranks entries of one
fingerprint together only and says why it splits a task."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from _cli import run_main
from mmbench.data.masks import condition_masks
from mmbench.data.tasks import get_task
from mmbench.data.testset import fingerprint_of, task_test_set

TASK = "synthetic-synergy"


def test_fingerprint_matches_an_independent_recomputation():
    spec = get_task(TASK)
    ts = task_test_set(spec)
    h = hashlib.sha256(b"mmbench-test-set-v1\0")
    h.update(json.dumps({"protocol": ts.protocol, "split": ts.split, "n": len(ts.ids), "seed": spec.missing.seed,
                         "gallery": None, "target_shape": [len(ts.ids)]}, sort_keys=True).encode())
    h.update(b"\0ids\0" + "\n".join(ts.ids).encode())
    h.update(b"\0targets\0" + ts.targets.astype("<i8").tobytes())
    for c in spec.conditions():
        masks = condition_masks(c, ts.ids, spec.modalities, seed=spec.missing.seed, split=ts.split)
        h.update(f"\0condition\0{c.name}".encode())
        for m in sorted(masks):
            h.update(f"\0{m}\0".encode() + np.packbits(masks[m]).tobytes())
    assert ts.fingerprint == "ts1-" + h.hexdigest()[:16]
    assert task_test_set(spec).fingerprint == ts.fingerprint  # stable across runs
    from mmbench.data.splits import load_task_split

    # from a split already loaded (reproduce, evaluate --model): the same fingerprint
    assert task_test_set(spec, loaded=load_task_split(spec, "test")).fingerprint == ts.fingerprint


def test_fingerprint_changes_with_ids_targets_protocol_and_masks():
    ids, targets = ["a", "b", "c"], np.array([0, 1, 0])
    masks = [("clean", {"x": np.ones(3, bool)})]
    base = fingerprint_of("p", "test", ids, targets, masks, 0)
    assert base == fingerprint_of("p", "test", list(ids), targets.copy(), masks, 0)
    others = [fingerprint_of("q", "test", ids, targets, masks, 0),
              fingerprint_of("p", "dev", ids, targets, masks, 0),
              fingerprint_of("p", "test", ["a", "c", "b"], targets, masks, 0),
              fingerprint_of("p", "test", ids, np.array([0, 1, 1]), masks, 0),
              fingerprint_of("p", "test", ids, targets, [("clean", {"x": np.array([1, 0, 1], bool)})], 0),
              fingerprint_of("p", "test", ids, targets, masks, 1),
              fingerprint_of("p", "test", ids, targets, masks, 0, gallery=["i1"])]
    assert len({base, *others}) == 8


def _predictions(tmp_path):
    from mmbench.evaluation.submissions.tables import load_test_labels

    labels = load_test_labels(get_task(TASK))
    path = tmp_path / "preds.csv"
    path.write_text("id,prediction\n" + "".join(f"{i},{int(t)}\n" for i, t in zip(labels.ids, labels.targets)))
    return path, labels


def test_evaluate_stores_and_checks_the_fingerprint(tmp_path, monkeypatch, capsys):
    preds, labels = _predictions(tmp_path)
    fp = labels.test_set.fingerprint
    board = tmp_path / "board"
    rc, out, err = run_main(["evaluate", TASK, "-p", preds, "--name", "a", "--leaderboard", board, "--bootstrap", "0",
                             "--allow-partial", "--test-set", fp, "--json"], monkeypatch, capsys)
    assert rc == 0, err
    result = json.loads(out)
    assert result["test_set_fingerprint"] == fp and result["protocol"] == "synthetic"
    rc, out, err = run_main(["evaluate", TASK, "-p", preds, "--name", "b", "--leaderboard", board, "--bootstrap", "0",
                             "--allow-partial", "--test-set", "ts1-0000000000000000"], monkeypatch, capsys)
    assert rc == 1 and "claims test set ts1-0000000000000000" in err and fp in err
    assert not (board / TASK / "b.json").exists() and not (board / TASK / "predictions" / "b.csv").exists()
    rc, out, err = run_main(["leaderboard", "verify", "--dir", board], monkeypatch, capsys)
    assert rc == 0 and f"OK      {TASK}/a" in out, out + err
    entry = board / TASK / "a.json"
    data = json.loads(entry.read_text())
    entry.write_text(json.dumps(data | {"test_set_fingerprint": "ts1-ffffffffffffffff"}))
    rc, out, err = run_main(["leaderboard", "verify", "--dir", board], monkeypatch, capsys)
    assert rc == 1 and "scored on test set ts1-ffffffffffffffff" in out and fp in out
    legacy = {k: v for k, v in data.items() if k not in ("test_set_fingerprint", "protocol")}
    entry.write_text(json.dumps(legacy))
    rc, out, err = run_main(["leaderboard", "verify", "--dir", board], monkeypatch, capsys)
    assert rc == 0 and "no test-set fingerprint stored" in out


def _board_with_legacy(tmp_path, monkeypatch, capsys):
    """A board holding `here` (scored now, with its fingerprint) and `old` (the same, legacy)."""
    from mmbench.board.entries import read_entry, write_entry

    preds, _ = _predictions(tmp_path)
    board = tmp_path / "board"
    rc, out, err = run_main(["evaluate", TASK, "-p", preds, "--name", "here", "--leaderboard", board, "--bootstrap", "0",
                             "--allow-partial"],
                            monkeypatch, capsys)
    assert rc == 0, err
    here = read_entry(board / TASK / "here.json")
    write_entry(board, here.model_copy(update={"name": "old", "test_set_fingerprint": None, "protocol": None}))
    return board, here


def test_board_ranks_each_test_set_apart(tmp_path, monkeypatch, capsys):
    from mmbench.board.entries import rank, render, write_entry

    board, here = _board_with_legacy(tmp_path, monkeypatch, capsys)
    write_entry(board, here.model_copy(update={"name": "elsewhere", "test_set_fingerprint": "ts1-aaaaaaaaaaaaaaaa"}))
    from mmbench.board.entries import load_entries

    rows = rank(load_entries(board), significance=False)
    groups = {r["task"]: r["name"] for r in rows}
    assert groups == {f"{TASK}@{here.test_set_fingerprint}": "here", f"{TASK}@ts1-aaaaaaaaaaaaaaaa": "elsewhere",
                      f"{TASK}@legacy": "old"}
    assert all(r["rank"] == 1 for r in rows)  # each alone in its group: never ranked against each other
    text = render(rows, "md")
    assert "ranked on its own and never against another" in text and "made before fingerprints existed" in text
    # one fingerprint: the task keeps its name
    (board / TASK / "elsewhere.json").unlink()
    (board / TASK / "old.json").unlink()
    assert {r["task"] for r in rank(load_entries(board), significance=False)} == {TASK}


@pytest.mark.parametrize("task", ["mosi"])
def test_documented_fingerprints_match(task):
    """docs/datasets.md lists the fingerprints computable from annotation files; they match."""
    from pathlib import Path

    from _datapaths import real_data_root

    docs = (Path(__file__).resolve().parent.parent / "docs" / "datasets.md").read_text()
    fp = task_test_set(get_task(task), real_data_root()).fingerprint
    assert f"| {task} |" in docs and fp in docs


def test_retrieval_embeddings_carry_their_claimed_test_set(tmp_path):
    """An .npz may hold `test_set_fingerprint`: scored when it matches the test set here,
    refused (naming both) when it does not; the result stores the fingerprint."""
    from mmbench.core.errors import SubmissionError
    from mmbench.evaluation.scoring import evaluate_predictions

    root = tmp_path / "data"
    ann = root / "coco" / "annotations"
    ann.mkdir(parents=True)
    images = [{"id": 10 + i, "file_name": f"{10 + i:012d}.jpg"} for i in range(6)]
    anns = [{"id": 900 + k, "image_id": 10 + k // 3, "caption": f"caption {k}"} for k in range(18)]
    (ann / "captions_val2017.json").write_text(json.dumps({"images": images, "annotations": anns}))
    spec = get_task("coco-retrieval")
    ts = task_test_set(spec, root)
    assert ts.protocol == "coco-val2017-5k" and ts.gallery == [str(10 + i) for i in range(6)]
    rng = np.random.default_rng(0)
    arrays = dict(image_ids=np.arange(10, 16), image_embeddings=rng.normal(size=(6, 4)).astype(np.float32),
                  caption_ids=np.arange(900, 918), caption_embeddings=rng.normal(size=(18, 4)).astype(np.float32))
    good = tmp_path / "good.npz"
    np.savez(good, **arrays, test_set_fingerprint=np.array(ts.fingerprint))
    assert evaluate_predictions(spec, good, "g", data_dir=root, n_resamples=0).test_set_fingerprint == ts.fingerprint
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays, test_set_fingerprint=np.array("ts1-0123456789abcdef"))
    with pytest.raises(SubmissionError, match=rf"bad.npz: the embeddings claim test set ts1-0123456789abcdef, .*{ts.fingerprint}"):
        evaluate_predictions(spec, bad, "b", data_dir=root, n_resamples=0)
    odd = tmp_path / "odd.npz"
    np.savez(odd, **arrays, test_set_fingerprint=np.array([1, 2]))
    with pytest.raises(SubmissionError, match="'test_set_fingerprint' must be one string"):
        evaluate_predictions(spec, odd, "o", data_dir=root, n_resamples=0)


def test_site_pages_of_a_split_task_say_why(tmp_path, monkeypatch, capsys):
    from mmbench.board.site import render_site

    board, _ = _board_with_legacy(tmp_path, monkeypatch, capsys)
    pages = render_site(board)
    legacy = next(html for name, html in pages.items() if "legacy" in name)
    assert "made before fingerprints existed" in legacy and "never against another" in legacy

"""A retrieval baseline from `reproduce` to a verified leaderboard entry (issue 26, item 6):
the run stores its test embeddings (float16, the .npz a retrieval submitter gives), `leaderboard
publish` writes the entry with them, its test-set fingerprint and protocol, and `leaderboard
verify` recomputes recall@k from them, failing when they are edited. On the real val2017 data
(the task `coco-retrieval-val2017-carve`: train, validation and test carved from val2017), one
seed and one epoch.
"""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pytest

from tests._cli import run_main
from tests._datapaths import real_data_root

pytestmark = pytest.mark.filterwarnings("ignore::mmbench.data.datasets.coco.CocoDataWarning")  # images not on disk
TASK = "coco-retrieval-val2017-carve"


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """(board folder, entry dict, runs folder) of one published one-epoch run (`reproduce`'s
    and `leaderboard publish`'s Python API: what the two commands run)."""
    from mmbench.board.publish import publish_runs
    from mmbench.reproduce import run_grid

    root = real_data_root()
    if not (root / "coco" / "annotations" / "captions_val2017.json").is_file():
        pytest.skip(f"COCO captions_val2017.json not under {root}")
    tmp = tmp_path_factory.mktemp("retrieval")
    results, checks = run_grid([TASK], ["dual-encoder"], [0], out_dir=tmp / "runs", leaderboard_dir=None, device="cpu",
                               data_dir=str(root), overrides={"epochs": 1}, progress=False, log=lambda line: None)
    assert len(results) == 1 and not [c for c in checks if c.error], checks
    written = publish_runs(tmp / "board", [tmp / "runs"])
    assert [p.name for p in written] == ["dual-encoder__seed0.json"]
    entry = json.loads(written[0].read_text())
    return tmp / "board", entry, tmp / "runs"


@pytest.fixture(autouse=True)
def _data(monkeypatch):
    monkeypatch.setenv("MMBENCH_DATA", str(real_data_root()))


def test_the_entry_stores_the_test_embeddings(published):
    from mmbench.data.tasks import get_task
    from mmbench.evaluation.retrieval_scoring import retrieval_gallery
    from mmbench.data.testset import task_test_set

    board, entry, runs = published
    assert entry["kind"] == "baseline" and entry["predictions_file"] == f"{TASK}/predictions/dual-encoder__seed0.npz"
    spec = get_task(TASK)
    test_set = task_test_set(spec)
    assert entry["test_set_fingerprint"] == test_set.fingerprint and entry["protocol"] == "coco-val2017-carve-60-20-20-seed0"
    path = board / entry["predictions_file"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["extra"]["predictions_sha256"]
    assert path.read_bytes() == (runs / TASK / "dual-encoder" / "seed0" / "predictions.npz").read_bytes()
    image_ids, caption_ids, _, _ = retrieval_gallery(spec)
    with np.load(path, allow_pickle=False) as npz:
        assert sorted(npz.files) == ["caption_embeddings", "caption_ids", "image_embeddings", "image_ids",
                                     "test_set_fingerprint"]
        assert npz["image_embeddings"].dtype == np.float16 and npz["caption_embeddings"].dtype == np.float16
        assert npz["image_embeddings"].shape == (len(image_ids), entry["extra"]["embedding_dim"])
        assert npz["caption_ids"].tolist() == [int(c) for c in caption_ids]
        assert str(npz["test_set_fingerprint"][0]) == entry["test_set_fingerprint"]
    assert path.stat().st_size < 3_000_000


def test_evaluate_scores_the_stored_file_as_the_entry(published, monkeypatch, capsys):
    """The stored file is an ordinary retrieval submission: `evaluate --predictions` gives the
    entry's metrics exactly (they were scored from the same float16 values)."""
    board, entry, _ = published
    rc, out, err = run_main(["evaluate", TASK, "--predictions", board / entry["predictions_file"], "--json"],
                            monkeypatch, capsys)
    assert rc == 0, err
    assert json.loads(out)["metrics"] == entry["metrics"]


def test_verify_is_ok_and_fails_on_edited_embeddings(published, tmp_path, monkeypatch, capsys):
    import shutil

    board = tmp_path / "board"
    shutil.copytree(published[0], board)
    entry = published[1]
    rc, out, err = run_main(["leaderboard", "verify", "--dir", board], monkeypatch, capsys)
    label = f"{TASK}/dual-encoder seed 0"
    assert rc == 0 and (f"OK      {label}: 1 condition(s) and the per-query records match (recall@k recomputed from "
                        "the stored embeddings") in out, out + err

    # a flattering edit: every caption given its own image's embedding (perfect text-to-image retrieval)
    path = board / entry["predictions_file"]
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    from mmbench.evaluation.retrieval_scoring import retrieval_gallery
    from mmbench.data.tasks import get_task

    _, _, index, _ = retrieval_gallery(get_task(TASK))
    arrays["caption_embeddings"] = arrays["image_embeddings"][index]
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    path.write_bytes(buf.getvalue())
    rc, out, err = run_main(["leaderboard", "verify", "--dir", board], monkeypatch, capsys)
    assert rc == 1 and f"DIFFERS {label}: stored predictions" in out and "sha256" in out, out
    assert label in err

    # the same edit with the entry's hash updated: now the recomputed recalls differ
    entry_path = board / TASK / "dual-encoder__seed0.json"
    data = json.loads(entry_path.read_text())
    data["extra"]["predictions_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    entry_path.write_text(json.dumps(data, indent=2))
    rc, out, err = run_main(["leaderboard", "verify", "--dir", board], monkeypatch, capsys)
    assert rc == 1 and f"DIFFERS {label}: clean " in out and "recall" in out, out


def test_verify_fails_on_edited_per_query_records(published, tmp_path, monkeypatch, capsys):
    import shutil

    board = tmp_path / "board"
    shutil.copytree(published[0], board)
    entry_path = board / TASK / "dual-encoder__seed0.json"
    data = json.loads(entry_path.read_text())
    data["extra"]["test_queries"]["t2i"]["tied"][3] += 1
    entry_path.write_text(json.dumps(data, indent=2))
    rc, out, err = run_main(["leaderboard", "verify", "--dir", board], monkeypatch, capsys)
    assert rc == 1 and "extra.test_queries: t2i tied differ (first: query" in out, out


def test_the_entry_stores_per_query_records_and_the_missing_counts(published):
    """Per caption and per image the counts of the tie rule, clustered by image; recall@k from
    them is the entry's; the missing counts are the data's (images not on disk)."""
    from mmbench.data.tasks import get_task
    from mmbench.evaluation.retrieval import COUNT_KEYS, recalls_from_counts
    from mmbench.evaluation.retrieval_scoring import gallery_presence, retrieval_gallery
    from mmbench.data.splits import task_dataset

    _, entry, _ = published
    spec = get_task(TASK)
    image_ids, caption_ids, index, _ = retrieval_gallery(spec)
    q = entry["extra"]["test_queries"]
    assert q["cluster_by"] == "image"
    assert q["t2i"]["ids"] == caption_ids and q["t2i"]["cluster"] == [image_ids[i] for i in index]
    assert q["i2t"]["ids"] == image_ids == q["i2t"]["cluster"]
    for d in ("t2i", "i2t"):
        t, r = np.array(q[d]["tied"]), np.array(q[d]["relevant"])
        assert (np.array(q[d]["above"]) >= 0).all() and (t >= r).all() and (r >= 1).all()
    assert (np.array(q["t2i"]["relevant"]) == 1).all()
    got = recalls_from_counts(*({k: np.array(q[d][k]) for k in COUNT_KEYS} for d in ("t2i", "i2t")))
    assert got == pytest.approx(entry["metrics"]["clean"], abs=1e-12)
    presence = gallery_presence(spec, task_dataset(spec))
    missing = int((~presence["image"]).sum())
    assert entry["extra"]["missing"] == {"images": missing, "captions": 0} and entry["extra"]["missing_images"] == missing
    present = entry["extra"]["present_only"]
    assert present["images"] == len(image_ids) - missing and present["captions"] == int(presence["image"][index].sum())
    assert 0.0 <= present["metrics"]["mean_recall"] <= 1.0


def test_the_site_and_the_report_render_a_retrieval_task(published, tmp_path, monkeypatch, capsys):
    """One condition, per-query records: the pages state the tie rule, the missing counts and
    the present-only recall, test the entries (one here: no pair) and say that no robustness is
    measured (no robustness or per-condition table, no raw Python value)."""
    import re
    import shutil

    board = tmp_path / "board"
    shutil.copytree(published[0], board)
    rc, out, err = run_main(["leaderboard", "site", "--dir", board], monkeypatch, capsys)
    assert rc == 0, err
    report = tmp_path / "report.md"
    rc, out, err = run_main(["report", board, "-o", report], monkeypatch, capsys)
    assert rc == 0, err
    page = (board / f"{TASK}.html").read_text(encoding="utf-8")
    md = report.read_text(encoding="utf-8")
    for text in (re.sub(r"<[^>]+>", " ", re.sub(r"<(style|script).*?</\1>", "", page, flags=re.S)), md):
        text = " ".join(text.split())
        assert "Tie rule: recall@k is the expected value under uniformly random tie-breaking" in text
        assert "Missing modality: " in text and "gallery images and 0 of" in text and "Present-only mean_recall" in text
        assert "is the only entry: no pair to test" in text
        assert "scored under the clean condition only" in text and "no robustness is measured" in text
        assert not re.search(r"\b(None|nan|True|False)\b|\{'", text), text
    assert f'id="robustness-{TASK}"' not in page and f'id="conditions-{TASK}"' not in page
    assert f'id="entries-{TASK}"' in page and "dual-encoder" in page
    assert "Per-class confusion: not applicable (a retrieval task has no classes)." in md
    rc, out, err = run_main(["leaderboard", TASK, "--dir", board], monkeypatch, capsys)
    assert rc == 0 and f"{TASK}: mean_recall (higher is better), clean condition only" in " ".join(out.split()), out + err

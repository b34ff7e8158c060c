"""A corpus of bad submissions, generated here: every one is refused with exit code 1 and one
line `error: <file>: <problem>` (no traceback), and nothing is written or changed: no result
file, no leaderboard entry, no stored predictions.

Most cases run the CLI in-process through `mmbench.cli.main()`; a handful run it as a
subprocess (`python -m mmbench.cli`) to check the real exit code and streams.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmbench.data.datasets.synthetic import SyntheticDataset
from mmbench.data.tasks import get_task
from _cli import run_main
from _cocofiles import write_train2017_stub

TASK = "synthetic-synergy"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def test_split():
    spec = get_task(TASK)
    ds = SyntheticDataset(**spec.dataset.options)
    s = ds.load_split(spec.splits.test)
    return s.ids, s.targets.numpy()


def _good_frame(ids, targets, conditions=("clean",)) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    frames = []
    for c in conditions:
        pred = np.where(rng.random(len(ids)) < 0.8, targets, 1 - targets)
        frames.append(pd.DataFrame({"id": ids, "condition": c, "prediction": pred}))
    return pd.concat(frames, ignore_index=True)




@pytest.fixture(scope="module")
def seeded_board(tmp_path_factory, test_split):
    """A leaderboard with one valid entry (made by the CLI), copied into each test."""
    root = tmp_path_factory.mktemp("board")
    ids, targets = test_split
    good = root / "good.csv"
    _good_frame(ids, targets).to_csv(good, index=False)
    proc = subprocess.run([sys.executable, "-m", "mmbench.cli", "evaluate", TASK, "--predictions", str(good),
                           "--name", "seed-entry", "--leaderboard", str(root / "lb"), "--bootstrap", "0", "--allow-partial"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    return root / "lb"


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
            and not p.name.endswith(".lock")}


# --------------------------------------------------------------------------------------------
# the corpus: name -> (builder(tmp, ids, targets) -> (file or None, extra args, env), expected words)
# --------------------------------------------------------------------------------------------


def csv_text(text: str, name: str = "preds.csv"):
    def build(tmp, ids, targets):
        p = tmp / name
        p.write_text(text.replace("{ID0}", ids[0]).replace("{ID1}", ids[1]))
        return p, [], {}
    return build


def frame_case(mutate, name="preds.csv", writer="csv", env=None, extra=None):
    """Start from a valid frame (all test ids, clean), apply `mutate`, write it."""
    def build(tmp, ids, targets):
        df = _good_frame(ids, targets)
        df = mutate(df, ids, targets)
        p = tmp / name
        if writer == "csv":
            df.to_csv(p, index=False)
        elif writer == "jsonl":
            df.to_json(p, orient="records", lines=True)
        else:
            df.to_parquet(p, index=False)
        return p, list(extra or []), dict(env or {})
    return build


def raw_bytes(data: bytes, name: str):
    def build(tmp, ids, targets):
        p = tmp / name
        p.write_bytes(data)
        return p, [], {}
    return build


def jsonl_lines(make_lines, name="preds.jsonl"):
    def build(tmp, ids, targets):
        lines = [json.dumps({"id": i, "prediction": int(t)}) for i, t in zip(ids, targets)]
        lines = make_lines(lines, ids)
        p = tmp / name
        p.write_text("\n".join(lines) + "\n")
        return p, [], {}
    return build


def parquet_table(make_table, name="preds.parquet"):
    def build(tmp, ids, targets):
        p = tmp / name
        pq.write_table(make_table(ids, targets), p)
        return p, [], {}
    return build


def good_csv_with(extra=None, env=None, name="good.csv"):
    def build(tmp, ids, targets):
        p = tmp / name
        _good_frame(ids, targets).to_csv(p, index=False)
        return p, list(extra or []), dict(env or {})
    return build


def truncated(writer_suffix: str, fraction: float = 0.5):
    def build(tmp, ids, targets):
        full = tmp / f"full{writer_suffix}"
        df = _good_frame(ids, targets)
        if writer_suffix == ".parquet":
            df.to_parquet(full, index=False)
        elif writer_suffix == ".jsonl":
            df.to_json(full, orient="records", lines=True)
        else:
            df.to_csv(full, index=False)
        data = full.read_bytes()
        cut = int(len(data) * fraction)
        while data[cut - 1:cut] == b"\n" or data[cut:cut + 1] == b"\n":
            cut -= 3  # cut inside a line, not at its end
        p = tmp / f"truncated{writer_suffix}"
        p.write_bytes(data[:cut])
        full.unlink()
        return p, [], {}
    return build


def spec_file(text: str):
    def build(tmp, ids, targets):
        spec = tmp / "badtask.yaml"
        spec.write_text(text)
        p = tmp / "good.csv"
        _good_frame(ids, targets).to_csv(p, index=False)
        return p, ["__TASK__", str(spec)], {}
    return build


GOOD_SPEC = get_task(TASK).model_dump(exclude={"source"})


def spec_with(**changes):
    import yaml

    data = json.loads(json.dumps(GOOD_SPEC))
    data["name"] = "bad-task"
    for key, value in changes.items():
        target = data
        *parents, leaf = key.split("__")
        for p in parents:
            target = target[p]
        if value is None:
            target.pop(leaf, None)
        else:
            target[leaf] = value
    return spec_file(yaml.safe_dump(data))


def set_col(col, value):
    def mutate(df, ids, targets):
        df = df.copy()
        df[col] = df[col].astype(object)
        df.loc[3, col] = value
        return df
    return mutate


def _evil_pickle() -> bytes:
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch /tmp/mmbench-bad-inputs-pwned",))
    return pickle.dumps(Evil())


def _npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


CASES = {
    # empty / truncated / malformed files
    "empty-csv": (raw_bytes(b"", "preds.csv"), "empty"),
    "empty-jsonl": (raw_bytes(b"", "preds.jsonl"), "empty"),
    "empty-parquet": (raw_bytes(b"", "preds.parquet"), "empty"),
    "whitespace-csv": (raw_bytes(b"\n\n  \n", "preds.csv"), "no content"),
    "header-only-csv": (csv_text("id,prediction\n"), "no data rows"),
    "truncated-csv": (truncated(".csv", 0.37), "row"),
    "truncated-jsonl": (truncated(".jsonl", 0.51), "invalid json"),
    "truncated-parquet": (truncated(".parquet", 0.6), "parquet"),
    "garbage-parquet": (raw_bytes(os.urandom(3000), "preds.parquet"), "not a valid parquet"),
    "ragged-csv": (csv_text("id,prediction\n{ID0},1\n{ID1},0,7,8\n"), "malformed csv"),
    "binary-csv": (raw_bytes(b"id,prediction\n\x00\x01\x02,1\n", "preds.csv"), "nul"),
    "non-utf8-csv": (raw_bytes(b"id,prediction\nsynergy-\xff\xfe0001,1\n", "preds.csv"), "utf-8"),
    "non-utf8-jsonl": (raw_bytes(b'{"id": "\xe9t\xe9", "prediction": 1}\n', "preds.jsonl"), "utf-8"),
    "json-array": (raw_bytes(b'[{"id": "a", "prediction": 1}]', "preds.json"), "json array"),
    "jsonl-not-object": (jsonl_lines(lambda ls, ids: ls[:5] + ["42"] + ls[5:]), "expected a json object"),
    "jsonl-missing-key": (jsonl_lines(lambda ls, ids: ls[:7] + [json.dumps({"id": ids[7]})] + ls[8:]), "missing key"),
    "jsonl-new-key": (jsonl_lines(lambda ls, ids: ls[:2] + [json.dumps({"id": ids[2], "prediction": 1, "x": 2})] + ls[3:]),
                      "every line must have the same keys"),
    "jsonl-nan": (jsonl_lines(lambda ls, ids: ls[:9] + ['{"id": "%s", "prediction": NaN}' % ids[9]] + ls[10:]), "nan"),
    "jsonl-infinity": (jsonl_lines(lambda ls, ids: ls[:9] + ['{"id": "%s", "prediction": -Infinity}' % ids[9]] + ls[10:]),
                       "infinity"),
    "jsonl-huge-number": (jsonl_lines(lambda ls, ids: ls[:4] + ['{"id": "%s", "prediction": 1e400}' % ids[4]] + ls[5:]),
                          "nan and infinities"),
    "jsonl-id-list": (jsonl_lines(lambda ls, ids: ls[:3] + [json.dumps({"id": [1, 2], "prediction": 1})] + ls[4:]),
                      "'id' must be a string"),
    "jsonl-bool-prediction": (jsonl_lines(lambda ls, ids: ls[:3] + [json.dumps({"id": ids[3], "prediction": True})] + ls[4:]),
                              "must be a number"),
    "jsonl-string-prediction": (jsonl_lines(lambda ls, ids: ls[:3] + [json.dumps({"id": ids[3], "prediction": "1"})] + ls[4:]),
                                "must be a number"),
    # columns
    "no-id-column": (frame_case(lambda df, i, t: df.rename(columns={"id": "sample"})), "no 'id' column"),
    "no-prediction-column": (frame_case(lambda df, i, t: df.drop(columns=["prediction"])), "no 'prediction' column"),
    "unknown-column": (frame_case(lambda df, i, t: df.assign(confidence=0.5)), "unexpected column 'confidence'"),
    "prediction-and-scores": (frame_case(lambda df, i, t: df.assign(score_0=0.1, score_1=0.9)), "both"),
    "wrong-score-columns": (frame_case(lambda df, i, t: df.drop(columns=["prediction"]).assign(score_0=0.1, score_2=0.9)),
                            "score columns must be exactly"),
    "too-many-score-columns": (frame_case(lambda df, i, t: df.drop(columns=["prediction"]).assign(score_0=0.1, score_1=0.2,
                                                                                                   score_2=0.7)),
                               "score columns must be exactly"),
    "csv-empty-column-name": (frame_case(lambda df, i, t: df.assign(**{"": 1})), "empty column name"),
    # values
    "label-not-a-number": (frame_case(set_col("prediction", "cat")), "not a number"),
    "label-fractional": (frame_case(set_col("prediction", 0.5)), "not a class label"),
    "label-out-of-range": (frame_case(set_col("prediction", 2)), "not a class of this task"),
    "label-negative": (frame_case(set_col("prediction", -1)), "not a class of this task"),
    "label-empty": (frame_case(set_col("prediction", "")), "empty 'prediction'"),
    "label-nan": (frame_case(set_col("prediction", "nan")), "nan"),
    "score-inf": (frame_case(lambda df, i, t: set_col("score_1", "inf")(df.drop(columns=["prediction"]).assign(
        score_0=0.2, score_1=0.8), i, t)), "inf"),
    "score-enormous": (frame_case(lambda df, i, t: set_col("score_0", 1e300)(df.drop(columns=["prediction"]).assign(
        score_0=0.2, score_1=0.8), i, t)), "exceeds the limit"),
    "label-overflow": (frame_case(set_col("prediction", "1e999")), "nan and infinities"),
    # ids
    "duplicate-ids": (frame_case(lambda df, i, t: pd.concat([df, df.iloc[[5]]], ignore_index=True)), "duplicate id"),
    "missing-ids": (frame_case(lambda df, i, t: df.iloc[10:]), "missing"),
    "unknown-id": (frame_case(set_col("id", "not-a-test-id")), "unknown id"),
    "train-id": (frame_case(set_col("id", "synergy-000001")), "unknown id"),
    "empty-id": (frame_case(set_col("id", " ")), "empty 'id'"),
    # conditions
    "unknown-condition": (frame_case(set_col("condition", "blur:m0")), "unknown condition"),
    "condition-unknown-modality": (frame_case(set_col("condition", "drop:audio")), "unknown modality"),
    "condition-not-in-task": (frame_case(set_col("condition", "rate:0.2")), "not one of this task's conditions"),
    "no-clean-rows": (frame_case(lambda df, i, t: df.assign(condition="drop:m0")), "no rows for the 'clean' condition"),
    "condition-missing-ids": (frame_case(lambda df, i, t: pd.concat([df, df.iloc[:100].assign(condition="drop:m1")])),
                              "missing under condition 'drop:m1'"),
    "condition-duplicates": (frame_case(lambda df, i, t: pd.concat([df, df.assign(condition="rate:0.5"),
                                                                     df.iloc[[0]].assign(condition="rate:0.5")])),
                             "duplicate id"),
    "requested-condition-absent": (good_csv_with(extra=["--conditions", "drop:m0"]), "no rows for condition 'drop:m0'"),
    # parquet types
    "parquet-string-prediction": (parquet_table(lambda ids, t: pa.table({"id": ids, "prediction": [str(x) for x in t]})),
                                  "must be a number"),
    "parquet-list-prediction": (parquet_table(lambda ids, t: pa.table({"id": ids, "prediction": [[float(x)] for x in t]})),
                                "parquet type"),
    "parquet-float-ids": (parquet_table(lambda ids, t: pa.table({"id": np.arange(len(ids), dtype=float), "prediction": t})),
                          "'id' must be a string"),
    "parquet-null-prediction": (parquet_table(lambda ids, t: pa.table({"id": ids, "prediction": [None] + list(t[1:])})),
                                "null"),
    "parquet-nan-score": (parquet_table(lambda ids, t: pa.table({"id": ids, "score_0": np.r_[np.nan, np.zeros(len(ids) - 1)],
                                                                  "score_1": np.ones(len(ids))})), "nan"),
    # limits
    "too-many-rows": (good_csv_with(env={"MMBENCH_MAX_ROWS": "100"}), "over the limit"),
    "file-too-large": (good_csv_with(env={"MMBENCH_MAX_UPLOAD_BYTES": "2000"}), "over the upload limit"),
    # file kinds
    "unsupported-extension": (good_csv_with(name="preds.txt"), "unsupported predictions file extension"),
    "npz-for-classification": (raw_bytes(_npz_bytes(image_ids=np.arange(3)), "preds.npz"), "retrieval"),
    "pickle-predictions": (raw_bytes(_evil_pickle(), "preds.pkl"), "pickle"),
    "pickle-disguised-as-csv": (raw_bytes(_evil_pickle(), "preds.csv"), "pickle"),
    "missing-file": (lambda tmp, ids, t: (tmp / "nope.csv", [], {}), "not found"),
    "directory-as-file": (lambda tmp, ids, t: ((tmp / "dir.csv").mkdir() or tmp / "dir.csv", [], {}), "not a regular file"),
    # names (path traversal and friends)
    "name-traversal": (good_csv_with(extra=["--name", "../../x"]), "invalid submission name"),
    "name-absolute": (good_csv_with(extra=["--name", "/tmp/x"]), "invalid submission name"),
    "name-dotdot": (good_csv_with(extra=["--name", "a..b"]), "invalid submission name"),
    "name-empty": (good_csv_with(extra=["--name", ""]), "invalid submission name"),
    "name-from-bad-stem": (good_csv_with(name="-bad name.csv"), "give --name"),
    # bad task specs
    "spec-unknown-metric": (spec_with(metrics=[{"name": "accuracy", "higher_is_better": True},
                                               {"name": "bleu", "higher_is_better": True}]), "unknown metric 'bleu'"),
    "spec-primary-not-listed": (spec_with(primary_metric="f1"), "primary_metric"),
    "spec-bad-direction": (spec_with(metrics=[{"name": "accuracy", "higher_is_better": False}]), "higher_is_better"),
    "spec-bad-condition": (spec_with(missing__conditions=["clean", "rate:7"]), "missing.conditions"),
    "spec-missing-target": (spec_with(target=None), "target"),
    "spec-extra-field": (spec_with(colour="blue"), "colour"),
    "spec-num-classes": (spec_with(target={"type": "binary", "num_classes": 3}), "binary"),
    "spec-invalid-yaml": (spec_file("name: [unclosed\n  metrics: {"), "invalid yaml"),
    "spec-not-mapping": (spec_file("- just\n- a list\n"), "mapping"),
    "unknown-task": (lambda tmp, ids, t: (good_csv_with()(tmp, ids, t)[0], ["__TASK__", "no-such-task"], {}), "unknown task"),
    # arguments
    "both-predictions-and-model": (good_csv_with(extra=["--model", "baseline"]), "exactly one"),
    "weights-without-model": (good_csv_with(extra=["--weights", "w.safetensors"]), "--weights goes with --model"),
    "bad-condition-option": (good_csv_with(extra=["--conditions", "rate:abc"]), "not a number"),
}

# -- retrieval (coco-retrieval on a small generated captions JSON; the gallery needs no images)

N_IMAGES, CAPS_PER_IMAGE, DIM = 12, 5, 16


def _coco_root(tmp: Path) -> Path:
    root = tmp / "data"
    ann = root / "coco" / "annotations"
    ann.mkdir(parents=True, exist_ok=True)
    images = [{"id": 500 + i, "file_name": f"{500 + i:012d}.jpg"} for i in range(N_IMAGES)]
    anns = [{"id": 9000 + k, "image_id": 500 + k // CAPS_PER_IMAGE, "caption": f"a caption {k}"}
            for k in range(N_IMAGES * CAPS_PER_IMAGE)]
    (ann / "captions_val2017.json").write_text(json.dumps({"images": images, "annotations": anns}))
    write_train2017_stub(ann)  # the test split: all of val2017
    return root


def _good_arrays():
    rng = np.random.default_rng(3)
    img = rng.normal(size=(N_IMAGES, DIM)).astype(np.float32)
    cap = (np.repeat(img, CAPS_PER_IMAGE, axis=0) + rng.normal(scale=0.5, size=(N_IMAGES * CAPS_PER_IMAGE, DIM))).astype(np.float32)
    return {"image_ids": np.arange(500, 500 + N_IMAGES), "image_embeddings": img,
            "caption_ids": np.arange(9000, 9000 + N_IMAGES * CAPS_PER_IMAGE), "caption_embeddings": cap}


def npz_case(mutate=None, raw=None, name="emb.npz", env=None, allow_pickle=False):
    def build(tmp, ids, targets):
        root = _coco_root(tmp)
        p = tmp / name
        if raw is not None:
            p.write_bytes(raw(tmp) if callable(raw) else raw)
        else:
            arrays = _good_arrays()
            arrays = mutate(arrays) if mutate else arrays
            if allow_pickle:
                with open(p, "wb") as fh:
                    np.savez(fh, **arrays)
            else:
                np.savez(p, **arrays)
        return p, ["__TASK__", "coco-retrieval", "--data-dir", str(root)], dict(env or {})
    return build


def _with(key, fn):
    def mutate(a):
        a = dict(a)
        a[key] = fn(a[key])
        return a
    return mutate


def _without(key):
    return lambda a: {k: v for k, v in a.items() if k != key}


def _truncated_npz(tmp):
    buf = io.BytesIO()
    np.savez(buf, **_good_arrays())
    data = buf.getvalue()
    return data[: len(data) // 2]


def _nan_at(x, value=np.nan):
    x = x.copy()
    x[2, 3] = value
    return x


RETRIEVAL_CASES = {
    "npz-truncated": (npz_case(raw=_truncated_npz), "npz"),
    "npz-not-a-zip": (npz_case(raw=b"this is not a zip file at all"), "not a valid .npz"),
    "npz-missing-array": (npz_case(_without("caption_ids")), "missing array 'caption_ids'"),
    "npz-extra-array": (npz_case(lambda a: a | {"labels": np.zeros(3)}), "unexpected array 'labels'"),
    "npz-object-array": (npz_case(_with("image_ids", lambda x: np.array([str(v) for v in x] + [None], dtype=object)[:-1]),
                                  allow_pickle=True), "python objects"),
    "npz-dim-mismatch": (npz_case(_with("caption_embeddings", lambda x: x[:, :8].copy())), "must match"),
    "npz-3d-embeddings": (npz_case(_with("image_embeddings", lambda x: x[:, :, None])), "shape"),
    "npz-1d-embeddings": (npz_case(_with("image_embeddings", lambda x: x[:, 0].copy())), "shape"),
    "npz-nan": (npz_case(_with("caption_embeddings", _nan_at)), "nan"),
    "npz-inf": (npz_case(_with("image_embeddings", lambda x: _nan_at(x, np.inf))), "infinity"),
    "npz-enormous": (npz_case(_with("image_embeddings", lambda x: _nan_at(x.astype(np.float64), 1e300))), "beyond"),
    "npz-int-embeddings": (npz_case(_with("image_embeddings", lambda x: (x * 10).astype(np.int32))), "floating point"),
    "npz-complex": (npz_case(_with("image_embeddings", lambda x: x.astype(np.complex64))), "floating point"),
    "npz-float-ids": (npz_case(_with("image_ids", lambda x: x.astype(float))), "ids must be integers or strings"),
    "npz-duplicate-image": (npz_case(_with("image_ids", lambda x: np.r_[x[:-1], x[0]])), "duplicate image id"),
    "npz-unknown-caption": (npz_case(_with("caption_ids", lambda x: np.r_[x[:-1], 123456])), "unknown caption id"),
    "npz-missing-captions": (npz_case(lambda a: a | {"caption_ids": a["caption_ids"][:-4],
                                                     "caption_embeddings": a["caption_embeddings"][:-4]}), "missing"),
    "npz-rows-mismatch": (npz_case(_with("caption_ids", lambda x: x[:-1])), "rows for"),
    "npz-zero-row": (npz_case(_with("image_embeddings", lambda x: np.r_[x[:-1], np.zeros((1, x.shape[1]), x.dtype)])),
                     "all zeros"),
    "npz-dim-over-limit": (npz_case(env={"MMBENCH_MAX_EMBED_DIM": "8"}), "over the limit"),
    "npz-rows-over-limit": (npz_case(env={"MMBENCH_MAX_ROWS": "20"}), "over the limit"),
    "csv-for-retrieval": (npz_case(raw=b"id,prediction\n1,2\n", name="emb.csv"), "retrieval task takes an .npz"),
}


def _coco_available() -> bool:
    try:
        return get_task("coco-retrieval").target.type == "retrieval"
    except Exception:
        return False


if _coco_available():
    CASES.update(RETRIEVAL_CASES)

# words that identify the file in the error line (the spec file for spec cases)
SPEC_CASES = {k for k in CASES if k.startswith("spec-")}
NO_FILE_CASES = {"unknown-task", "both-predictions-and-model", "weights-without-model", "bad-condition-option",
                 "name-traversal", "name-absolute", "name-dotdot", "name-empty"}
SUBPROCESS_CASES = ["truncated-csv", "jsonl-nan", "garbage-parquet", "name-traversal", "spec-unknown-metric"]


def test_corpus_is_large_enough():
    assert len(CASES) >= 40


def _prepare(case, tmp_path, test_split, seeded_board):
    builder, expected = CASES[case]
    ids, targets = test_split
    board = tmp_path / "lb"
    shutil.copytree(seeded_board, board)
    out = tmp_path / "result.json"
    out.write_text('{"old": true}\n')
    path, extra, env = builder(tmp_path, ids, targets)
    task = TASK
    if "__TASK__" in extra:
        k = extra.index("__TASK__")
        task = extra[k + 1]
        extra = extra[:k] + extra[k + 2:]
    args = ["evaluate", task, "--predictions", str(path), "--output", str(out), "--leaderboard", str(board),
            "--bootstrap", "10", "--allow-partial"]  # the corpus's valid rows cover the clean condition only
    if "--name" not in extra and case != "name-from-bad-stem":
        args += ["--name", "sub1"]
    args += extra
    return args, env, path, expected, board, out


def _check(case, rc, stdout, stderr, path, expected, board, out, before, tmp_path):
    assert rc == 1, f"{case}: exit code {rc}\nstdout: {stdout}\nstderr: {stderr}"
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"{case}: expected one error line, got:\n{stderr}"
    line = lines[0]
    assert line.startswith("error: "), line
    assert "Traceback" not in stderr + stdout
    assert expected.lower() in line.lower(), f"{case}: {expected!r} not in {line!r}"
    if case in SPEC_CASES:
        assert "badtask.yaml" in line, line
    elif case not in NO_FILE_CASES:
        assert path.name in line, f"{case}: file name {path.name!r} not in {line!r}"
    # nothing written or changed
    assert _snapshot(board) == before, f"{case}: leaderboard changed"
    assert out.read_text() == '{"old": true}\n', f"{case}: result file changed"
    assert not (tmp_path / "x.json").exists() and not (tmp_path.parent / "x.json").exists()
    assert not Path("/tmp/mmbench-bad-inputs-pwned").exists()


@pytest.mark.parametrize("case", [c for c in CASES if c not in SUBPROCESS_CASES])
def test_bad_input_in_process(case, tmp_path, test_split, seeded_board, monkeypatch, capsys):
    args, env, path, expected, board, out = _prepare(case, tmp_path, test_split, seeded_board)
    before = _snapshot(board)
    monkeypatch.chdir(tmp_path)
    rc, stdout, stderr = run_main(args, monkeypatch, capsys, env)
    _check(case, rc, stdout, stderr, path, expected, board, out, before, tmp_path)


def test_bad_inputs_as_subprocesses(tmp_path, test_split, seeded_board):
    """A handful through the real entry point, started together to save time."""
    procs = {}
    for case in SUBPROCESS_CASES:
        work = tmp_path / case
        work.mkdir()
        args, env, path, expected, board, out = _prepare(case, work, test_split, seeded_board)
        before = _snapshot(board)
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("MMBENCH_MAX")} | env
        p = subprocess.Popen([sys.executable, "-m", "mmbench.cli", *args], cwd=work, env=full_env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs[case] = (p, path, expected, board, out, before, work)
    for case, (p, path, expected, board, out, before, work) in procs.items():
        stdout, stderr = p.communicate(timeout=240)
        _check(case, p.returncode, stdout, stderr, path, expected, board, out, before, work)


def test_debug_flag_shows_traceback(tmp_path, test_split, monkeypatch, capsys):
    """--debug is the one way to get a traceback (the error still propagates)."""
    p = tmp_path / "preds.csv"
    p.write_text("id,prediction\n")
    from mmbench.core.errors import SubmissionError

    with pytest.raises(SubmissionError, match="no data rows"):
        run_main(["--debug", "evaluate", TASK, "--predictions", str(p)], monkeypatch, capsys)


def test_valid_file_is_accepted_after_refusals(tmp_path, test_split, monkeypatch, capsys):
    """The same process keeps working after the refusals above (sanity check of the corpus)."""
    ids, targets = test_split
    p = tmp_path / "good.csv"
    _good_frame(ids, targets).to_csv(p, index=False)
    rc, out, err = run_main(["evaluate", TASK, "--predictions", str(p), "--bootstrap", "10", "--allow-partial"],
                            monkeypatch, capsys)
    assert rc == 0, err
    assert "clean: accuracy" in out

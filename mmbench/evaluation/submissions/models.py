"""Model submissions: resolve a model spec (``baseline``, ``file.py:factory`` or a ``.pt2``
torch.export program) and check its files before the sandbox runs anything. A retrieval
model's .pt2 holds two programs, ``encode_image`` and ``encode_text``
(:func:`save_retrieval_program` writes one).
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmbench.core.errors import SubmissionError
from mmbench.evaluation.submissions.checks import check_file, check_safetensors, is_safetensors, Limits, one_line


@dataclass
class ModelSpec:
    kind: str  # baseline | factory | exported
    source: Path | None  # factory .py or .pt2 file
    attr: str | None  # factory function name
    weights: Path | None
    files: list[Path]


_FACTORY_RE = re.compile(r"^(?P<file>.+\.py):(?P<attr>[A-Za-z_][A-Za-z0-9_]*)$")


def parse_model_spec(model: str, weights: str | Path | None, limits: Limits | None = None) -> ModelSpec:
    """`baseline` (+ --weights safetensors), `path/file.py:function` (+ optional --weights
    safetensors) or `model.pt2` (torch.export program). Pickled checkpoints are refused."""
    limits = limits or Limits.from_env()
    w = Path(weights) if weights else None
    if model == "baseline":
        if w is None:
            raise SubmissionError("--model baseline needs --weights FILE.safetensors (a run's best.safetensors)")
        w = check_safetensors(w, limits)
        return ModelSpec("baseline", None, None, w, [w])
    m = _FACTORY_RE.match(model)
    if m:
        src = Path(m.group("file"))
        if not src.is_file():
            raise SubmissionError("factory file not found", src)
        if src.stat().st_size > limits.max_model_bytes:
            raise SubmissionError("factory file is over the upload limit (MMBENCH_MAX_MODEL_BYTES)", src)
        if w is not None:
            w = check_safetensors(w, limits)
        return ModelSpec("factory", src, m.group("attr"), w, [src] + ([w] if w else []))
    p = Path(model)
    if p.suffix.lower() == ".py" or model.endswith(".py:"):
        raise SubmissionError(f"--model {model!r}: name the factory function, as in path/to/file.py:build")
    if p.suffix.lower() == ".pt2":
        if w is not None:
            raise SubmissionError("--weights is not used with a .pt2 program (its weights are inside it)", w)
        p = check_file(p, limits, "exported program", model=True)
        check_pt2_archive(p, limits)
        return ModelSpec("exported", p, None, None, [p])
    if p.exists():
        check_file(p, limits, "model file", model=True)  # refuses pickles with the explanation
        if is_safetensors(p):
            raise SubmissionError("a safetensors file holds weights only: use --model baseline --weights FILE, or "
                                  "--model path/file.py:build --weights FILE", p)
        raise SubmissionError("unrecognised model file; expected a torch.export .pt2 program", p)
    raise SubmissionError(f"--model {model!r}: expected 'baseline' (with --weights), 'path/to/file.py:build' or a "
                          "torch.export 'model.pt2' file")


def check_pt2_archive(path: Path, limits: Limits) -> None:
    """Refuse .pt2 archives that carry pickled payloads: torch.export.load would unpickle
    pickled weights/constants with weights_only=False (arbitrary code). Only the sample
    inputs are torch.save files; the sandbox worker loads those with weights_only=True."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            total = sum(i.file_size for i in infos)
            if total > limits.max_model_bytes:
                raise SubmissionError(f"archive expands to {total:,} bytes, over the limit of {limits.max_model_bytes:,} "
                                      "(MMBENCH_MAX_MODEL_BYTES)", path)
            names = [i.filename for i in infos]
            if not any("/models/" in "/" + n and n.endswith(".json") for n in names):
                raise SubmissionError("not a torch.export program (no models/*.json in the archive)", path)
            for n in names:
                parts = n.split("/")
                if ".." in parts or n.startswith("/"):
                    raise SubmissionError(f"archive member {n!r} has an unsafe path", path)
                low = n.lower()
                if low.endswith((".pkl", ".pickle")):
                    raise SubmissionError(f"archive member {n!r} is a pickle; refused", path)
                if low.endswith(".pt") and "/sample_inputs/" not in "/" + n:
                    raise SubmissionError(f"archive member {n!r} is a pickled tensor file (legacy format); refused — "
                                          "re-save with torch.export.save from a current torch", path)
                if low.endswith(".pt"):
                    with zf.open(n) as fh:
                        if fh.read(4) != b"PK\x03\x04":
                            raise SubmissionError(f"archive member {n!r} is a raw pickle; refused", path)
                if low.endswith("_config.json") and "/data/" in "/" + n:
                    try:
                        cfg = json.loads(zf.read(n))
                    except (ValueError, UnicodeDecodeError):
                        raise SubmissionError(f"archive member {n!r} is not valid JSON", path) from None
                    entries = cfg.get("config", {}) if isinstance(cfg, dict) else {}
                    for fqn, meta in (entries.items() if isinstance(entries, dict) else []):
                        if isinstance(meta, dict) and (meta.get("use_pickle") or str(meta.get("path_name", "")).startswith("custom_obj")):
                            raise SubmissionError(f"archive stores {fqn!r} as a pickle; pickled payloads are refused", path)
    except SubmissionError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise SubmissionError(f"not a valid .pt2 archive: {one_line(exc)}", path) from None


RETRIEVAL_PROGRAMS = ("encode_image", "encode_text")


def program_names(path: Path) -> list[str]:
    """Names of the programs in a .pt2 archive (``models/<name>.json``); torch.export.save writes one, 'model'."""
    with zipfile.ZipFile(path) as zf:
        return sorted({n.rsplit("/", 1)[-1][:-5] for n in zf.namelist() if "/models/" in "/" + n and n.endswith(".json")})


def check_retrieval_program(path: Path) -> None:
    """A retrieval .pt2 holds one program per modality, named encode_image and encode_text."""
    names = program_names(path)
    missing = [n for n in RETRIEVAL_PROGRAMS if n not in names]
    if missing:
        raise SubmissionError(f"a retrieval .pt2 must hold two exported programs named {' and '.join(RETRIEVAL_PROGRAMS)}; "
                              f"this one holds {', '.join(names) or 'none'} (write it with "
                              "mmbench.save_retrieval_program)", path)


def save_retrieval_program(path: str | Path, encode_image: Any, encode_text: Any) -> Path:
    """Write the two exported programs of a retrieval model (``torch.export.export`` of a module
    whose forward is the image / the text encoder) into one .pt2 archive, in the layout
    ``--model FILE.pt2`` expects on a retrieval task."""
    from torch.export import ExportedProgram
    # what torch.export.save uses, with several programs; listed in torch.export's API reference
    # (docs.pytorch.org/docs/stable/export/api_reference) despite its module's underscore
    from torch.export.pt2_archive._package import package_pt2

    for name, ep in (("encode_image", encode_image), ("encode_text", encode_text)):
        if not isinstance(ep, ExportedProgram):
            raise SubmissionError(f"{name} must be a torch.export.ExportedProgram, got {type(ep).__name__}")
    path = Path(path)
    package_pt2(path, exported_programs={"encode_image": encode_image, "encode_text": encode_text})
    return path

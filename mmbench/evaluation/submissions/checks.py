"""What every kind of submission shares: size limits, pickle refusal, file checks, the
submission's name and the hash of its files.

Nothing here runs submitted code or unpickles anything. Every problem raises
:class:`~mmbench.core.errors.SubmissionError` with a one-line message that names the file, so the
CLI can print it as ``error: <file>: <problem>``.
"""

from __future__ import annotations

import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from mmbench.core.errors import SubmissionError


@dataclass(frozen=True)
class Limits:
    """Upper bounds on what a submission may hold (environment variables override them)."""

    max_file_bytes: int = 1 << 30  # MMBENCH_MAX_UPLOAD_BYTES: a predictions file (and its arrays, uncompressed)
    max_model_bytes: int = 8 << 30  # MMBENCH_MAX_MODEL_BYTES: weights, .pt2 program, factory file
    max_rows: int = 10_000_000  # MMBENCH_MAX_ROWS (rows of a predictions table / embeddings)
    max_embedding_dim: int = 8192  # MMBENCH_MAX_EMBED_DIM
    max_abs_value: float = 1e15  # largest |value| accepted for a prediction, score or embedding

    @classmethod
    def from_env(cls) -> "Limits":
        def get(name: str, default: Any, kind: type) -> Any:
            raw = os.environ.get(name)
            if raw is None or raw == "":
                return default
            try:
                value = kind(float(raw)) if kind is int else kind(raw)
            except ValueError:
                raise SubmissionError(f"environment variable {name}={raw!r} is not a number") from None
            if value <= 0:
                raise SubmissionError(f"environment variable {name} must be positive")
            return value

        d = cls()
        return cls(
            max_file_bytes=get("MMBENCH_MAX_UPLOAD_BYTES", d.max_file_bytes, int),
            max_model_bytes=get("MMBENCH_MAX_MODEL_BYTES", d.max_model_bytes, int),
            max_rows=get("MMBENCH_MAX_ROWS", d.max_rows, int),
            max_embedding_dim=get("MMBENCH_MAX_EMBED_DIM", d.max_embedding_dim, int),
            max_abs_value=get("MMBENCH_MAX_ABS_VALUE", d.max_abs_value, float),
        )


PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt", ".joblib", ".tar", ".mar")


def one_line(text: Any, limit: int = 300) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def show_values(values: Sequence[Any], k: int = 3) -> str:
    """The first `k` values as Python writes them: numpy scalars as plain numbers (``1.5``, not
    ``np.float64(1.5)``)."""
    shown = ", ".join(repr(v.item() if hasattr(v, "item") and getattr(v, "ndim", None) == 0 else v)
                      for v in list(values)[:k])
    return shown + (", ..." if len(values) > k else "")


# --------------------------------------------------------------------------------------------
# pickles and file checks
# --------------------------------------------------------------------------------------------


def _looks_like_pickle(head: bytes) -> bool:
    """Pickle protocol 2+ starts with PROTO (0x80, version); protocol 0/1 pickles of a class
    instance or global start with a GLOBAL/MARK/EMPTY_* opcode followed by a module path."""
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return True
    if head[:1] == b"c" and re.match(rb"^c[A-Za-z_][\w.]*\n[\w.]+\n", head):
        return True
    return head[:2] in (b"(d", b"(l", b"(t", b"}q", b"]q", b"(c", b"(i")


def _zip_has_pickle(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith((".pkl", ".pickle")) or n.rsplit("/", 1)[-1] == "data.pkl" for n in zf.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


def is_pickle_file(path: str | Path) -> bool:
    """True for a raw pickle or a torch.save zip archive (which holds a pickle). Reads only
    the first bytes and the zip directory: nothing is unpickled."""
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(64)
    if _looks_like_pickle(head):
        return True
    return head[:4] == b"PK\x03\x04" and _zip_has_pickle(path)


def refuse_pickle(path: str | Path, what: str = "file") -> None:
    if is_pickle_file(path):
        raise SubmissionError(
            f"{what} is a pickle; pickled files are refused and never unpickled (they can run arbitrary code). "
            "Save weights with safetensors (safetensors.torch.save_file(model.state_dict(), 'weights.safetensors')) "
            "or export the model with torch.export.save(..., 'model.pt2')",
            path,
        )


def check_file(path: str | Path, limits: Limits, what: str = "file", model: bool = False) -> Path:
    """Exists, is a regular non-empty file within the size limit, and is not a pickle."""
    path = Path(path)
    limit, variable = (limits.max_model_bytes, "MMBENCH_MAX_MODEL_BYTES") if model else \
        (limits.max_file_bytes, "MMBENCH_MAX_UPLOAD_BYTES")
    if not path.exists():
        raise SubmissionError(f"{what} not found", path)
    if not path.is_file():
        raise SubmissionError(f"{what} is not a regular file", path)
    size = path.stat().st_size
    if size == 0:
        raise SubmissionError(f"{what} is empty", path)
    if size > limit:
        raise SubmissionError(f"{what} is {size:,} bytes, over the upload limit of {limit:,} bytes ({variable})", path)
    refuse_pickle(path, what)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        # not a pickle by content, but a pickle-format extension: refuse rather than guess
        if not is_safetensors(path):
            raise SubmissionError(f"{what} has a pickle-checkpoint extension {path.suffix!r}; only safetensors weights, "
                                  "torch.export .pt2 programs and CSV/JSON lines/Parquet/npz predictions are accepted", path)
    return path


def is_safetensors(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
        if len(head) < 9:
            return False
        n = int.from_bytes(head[:8], "little")
        return 2 <= n <= min(path.stat().st_size - 8, 100 << 20) and head[8:9] == b"{"
    except OSError:
        return False


def check_safetensors(path: str | Path, limits: Limits, what: str = "weights file") -> Path:
    path = check_file(path, limits, what, model=True)
    if not is_safetensors(path):
        raise SubmissionError(f"{what} is not a safetensors file (weights must be saved with safetensors)", path)
    return path


def submission_hash(files: Sequence[Path]) -> tuple[str, dict[str, str]]:
    """sha256 of one file, or sha256 over the (name, sha256) lines of several."""
    import hashlib

    from mmbench.core.io import sha256_file

    per = {p.name: sha256_file(p) for p in files}
    if len(files) == 1:
        return next(iter(per.values())), per
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.name}\0{per[p.name]}\n".encode())
    return h.hexdigest(), per


NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")


def check_name(name: str) -> str:
    if not NAME_RE.match(name or "") or ".." in name:
        raise SubmissionError(f"invalid submission name {name!r}: use 1-100 letters, digits, '.', '_', '+' or '-', "
                              "starting with a letter or digit (no path separators or '..')")
    return name

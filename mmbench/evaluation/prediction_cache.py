"""The per-item prediction cache of `evaluate --model`: a killed evaluation resumes, a second
one scores from the cache without running the model.

An entry holds one condition's raw model outputs, one row per test item, with the items' ids.
Its key is the SHA-256 of everything the outputs depend on:

* the submission: every file of its folder (a factory's folder, recursively) and its weights
  (:func:`submission_digest`);
* the test set: the dataset's fingerprint, the split, its item ids and targets;
* the masks actually sent: the data's own presence masks and the condition's keep-masks, as
  bytes (:func:`masks_digest`; not the condition's name, whose masks may change);
* the code: the package source hash (:func:`mmbench.core.source.source_hash`);
* how it ran: the kind of model, the device, the batch size and the isolation mode.

Any change to one of them is another key: the cache never serves a prediction made for
another model, test set, masks or code. An entry is read only when its ids equal the items
asked for, in order. Entries are written atomically (a killed write leaves no entry), under
``$MMBENCH_CACHE/predictions/`` (default ``~/.cache/mmbench/predictions``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["PredictionCache", "cached_outputs", "masks_digest", "submission_digest", "test_set_digest"]


def _sha(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "little") + p)
    return h.hexdigest()


def submission_digest(model_spec: Any) -> str:
    """A submission's files: a factory's whole folder (its .py and every file beside or below it)
    and its weights; an exported program; a baseline's weights. A factory folder the sandbox
    refuses (a shared folder such as /tmp, the home folder) is refused here too, before anything
    is read: the cache never stands in for that refusal."""
    from mmbench.core.io import sha256_file
    from mmbench.evaluation.sandbox.isolation import check_submission_folder

    files: list[tuple[str, Path]] = []
    if model_spec.kind == "factory" and model_spec.source is not None:
        folder = Path(model_spec.source).resolve().parent
        check_submission_folder(folder)
        files += [(f"src/{p.relative_to(folder).as_posix()}", p) for p in sorted(folder.rglob("*"))
                  if p.is_file() and "__pycache__" not in p.parts]
        files.append(("entry", Path(model_spec.source).resolve()))
    elif model_spec.source is not None:
        files.append(("program", Path(model_spec.source)))
    if model_spec.weights is not None:
        files.append(("weights", Path(model_spec.weights)))
    lines = [f"{name}\0{sha256_file(p)}".encode() for name, p in files]
    return _sha(model_spec.kind.encode(), str(model_spec.attr).encode(), *lines)


def test_set_digest(dataset_fingerprint: str, split: Any) -> str:
    """The items scored: the dataset's fingerprint, the split's name, ids and targets."""
    targets = split.targets.cpu().numpy()
    return _sha(dataset_fingerprint.encode(), str(split.name).encode(), json.dumps(list(split.ids)).encode(),
                str(targets.dtype).encode(), np.ascontiguousarray(targets).tobytes())


def masks_digest(split: Any, condition: Any, seed: int) -> str:
    """What the model gets under `condition`, as bytes: the data's own presence, the condition's
    keep-masks (drawn as the evaluator draws them, aware of that presence) and, for a segment
    condition, each item's removed span and the fill."""
    from mmbench.data.splits import TRAINING_MEANS
    from mmbench.evaluation.mixing import mix_conditions

    mixed = mix_conditions(split, [condition], seed, (split.info or {}).get(TRAINING_MEANS))
    parts = [condition.kind.encode()]
    for m in split.modality_names:
        parts.append(m.encode())
        parts.append(np.ascontiguousarray(split.present[m].cpu().numpy().astype(np.uint8)).tobytes())
        parts.append(np.ascontiguousarray(mixed.keep[m].cpu().numpy().astype(np.uint8)).tobytes())
    for m, seg in sorted(mixed.segments.items()):
        parts.append(f"segment {m} axis {seg['axis']}".encode())
        for k in ("start", "length", "fill"):
            parts.append(np.ascontiguousarray(seg[k].detach().cpu().numpy()).tobytes())
    return _sha(*parts)


@dataclass
class PredictionCache:
    """Cached outputs by key; counts the items served (``from_cache``) and predicted."""

    root: Path | None = None
    enabled: bool = True
    from_cache: int = 0
    predicted: int = 0
    conditions_from_cache: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.root is None:
            from mmbench.core.cache import default_cache_root

            self.root = default_cache_root() / "predictions"
        self.root = Path(self.root)

    @staticmethod
    def key(**parts: str) -> str:
        """The key of an entry from its named parts (see the module docstring)."""
        from mmbench.core.source import source_hash

        parts = {**parts, "source": source_hash()}
        return "pc1-" + hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def _path(self, key: str, suffix: str = ".safetensors") -> Path:
        assert self.root is not None
        return self.root / key[4:6] / f"{key}{suffix}"

    def get(self, key: str, ids: Sequence[str]) -> np.ndarray | None:
        """The cached outputs for these items (in this order), or None."""
        if not self.enabled:
            return None
        from mmbench.core.io import load_safetensors

        path = self._path(key)
        if not path.is_file():
            return None
        try:
            tensors, meta = load_safetensors(path)
        except Exception:  # noqa: BLE001 - an unreadable entry is a miss (it is rewritten)
            return None
        if meta.get("key") != key or json.loads(meta.get("ids", "null")) != list(ids):
            return None
        return tensors["outputs"].numpy()

    def put(self, key: str, ids: Sequence[str], outputs: np.ndarray) -> None:
        if not self.enabled:
            return
        import torch

        from mmbench.core.io import atomic_save_safetensors

        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save_safetensors(path, {"outputs": torch.from_numpy(np.ascontiguousarray(outputs))},
                                {"key": key, "ids": json.dumps(list(ids))})

    def get_record(self, key: str) -> dict[str, Any] | None:
        """A small JSON record kept beside the outputs (the efficiency figures of a submission)."""
        if not self.enabled:
            return None
        try:
            record = json.loads(self._path(key, ".json").read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) and record.get("key") == key else None

    def put_record(self, key: str, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        from mmbench.core.io import atomic_write_json

        path = self._path(key, ".json")
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, {**record, "key": key})

    def summary(self) -> str:
        return f"prediction cache: {self.from_cache:,} item predictions from the cache, {self.predicted:,} predicted"


def cached_outputs(cache: PredictionCache | None, conditions: list, ids: Sequence[str], keys: dict[str, str],
                   predict_chunk: Any, chunk_size: int) -> dict[str, np.ndarray]:
    """Outputs per condition: from the cache where it has them, else by ``predict_chunk(conds)``
    (``{condition name: outputs}``), a chunk of at most `chunk_size` conditions at a time, each
    chunk cached as soon as it returns (a killed evaluation redoes at most the chunk in flight)."""
    out: dict[str, np.ndarray] = {}
    todo = []
    for c in conditions:
        hit = cache.get(keys[c.name], ids) if cache is not None else None
        if hit is None:
            todo.append(c)
        else:
            out[c.name] = hit
            cache.from_cache += len(ids)
            cache.conditions_from_cache.append(c.name)
    for start in range(0, len(todo), max(1, chunk_size)):
        chunk = todo[start:start + max(1, chunk_size)]
        got = predict_chunk(chunk)
        for c in chunk:
            out[c.name] = got[c.name]
            if cache is not None:
                cache.put(keys[c.name], ids, got[c.name])
                cache.predicted += len(ids)
    return {c.name: out[c.name] for c in conditions}

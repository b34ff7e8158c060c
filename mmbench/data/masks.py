"""Missing-modality protocols: reproducible presence masks and training-time dropout.

Conditions are written as strings so they can live in task specs, result files and a
submitter's predictions file:

- ``clean``                 every modality as the dataset has it
- ``drop:<modality>``       that modality removed from every sample
- ``rate:<r>``              each modality of each sample removed independently with probability r
- ``pattern:<m1>+<m2>``     exactly these modalities kept (others removed) for every sample
- ``patterns`` (spec only)  expands to every non-empty pattern
- ``drop-each`` (spec only) expands to ``drop:<m>`` for every modality
- ``missing:<type>:<eta>``  the image-text missing-modality protocol (Ma et al. 2022, Lee et
  al. 2023): exactly ``int(N * eta)`` samples lose a modality; ``<type>`` names the modality
  they lose, or ``both``: ``int(k * 0.5)`` of the k affected samples lose the first modality
  in sorted order (``image``) and the rest the second (``text``). Which samples are affected
  is the ``int(N * eta)`` smallest ``blake2b(seed, split, "missing", id)`` values (the papers
  draw them with unseeded ``random.sample``), so the set is the same on every machine,
  independent of order, and nested across eta.

A rate condition decides each (sample, modality) with a uniform number derived from
``blake2b(seed, split, modality, sample id)``: the same on every run and every machine,
independent of sample order and batch size, and nested (whatever is dropped at r=0.3 is
also dropped at r=0.5), which makes the metric-vs-rate curves comparable across rates.
Protocol masks are ANDed with the data's own presence (a sample that never had audio stays
without it).
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from mmbench.core.errors import SpecError


@dataclass(frozen=True)
class Condition:
    kind: str  # clean | drop | rate | pattern
    modalities: tuple[str, ...] = ()
    rate: float = 0.0

    @property
    def name(self) -> str:
        if self.kind == "clean":
            return "clean"
        if self.kind == "drop":
            return f"drop:{self.modalities[0]}"
        if self.kind == "rate":
            return f"rate:{self.rate:g}"
        if self.kind == "missing":
            return f"missing:{self.modalities[0]}:{self.rate:g}"
        return "pattern:" + "+".join(self.modalities)


def _fraction(text: str, what: str, value: str) -> float:
    try:
        r = float(value)
    except ValueError:
        raise SpecError(f"condition {text!r}: {what} {value!r} is not a number") from None
    if not 0.0 <= r <= 1.0:
        raise SpecError(f"condition {text!r}: {what} must be in [0, 1]")
    return r


def parse_condition(text: str, modalities: Sequence[str] | None = None) -> Condition:
    text = text.strip()
    kind, _, arg = text.partition(":")
    if kind == "clean" and not arg:
        cond = Condition("clean")
    elif kind == "drop" and arg:
        cond = Condition("drop", (arg,))
    elif kind == "rate" and arg:
        cond = Condition("rate", rate=_fraction(text, "rate", arg))
    elif kind == "missing" and arg:
        kind_of, _, eta = arg.partition(":")
        r = _fraction(text, "eta (missing:<modality or both>:<eta>)", eta)
        if modalities is not None and kind_of == "both" and len(modalities) != 2:
            raise SpecError(f"condition {text!r}: 'both' splits the affected samples between two modalities; "
                            f"the task has {len(modalities)}")
        cond = Condition("missing", (kind_of,), rate=r)
        if kind_of == "both":
            return cond
    elif kind == "pattern" and arg:
        names = tuple(sorted(set(arg.split("+"))))
        if "" in names:
            raise SpecError(f"condition {text!r}: empty modality name")
        cond = Condition("pattern", names)
    else:
        raise SpecError(
            f"unknown condition {text!r}; expected clean, drop:<modality>, rate:<r>, pattern:<m1>+<m2>, "
            "missing:<modality or both>:<eta>, patterns or drop-each"
        )
    if modalities is not None:
        unknown = [m for m in cond.modalities if m not in modalities]
        if unknown:
            raise SpecError(f"condition {text!r} names unknown modality {unknown[0]!r}; task modalities: {', '.join(modalities)}")
    return cond


def expand_conditions(items: Iterable[str], modalities: Sequence[str]) -> list[Condition]:
    """Parse spec entries, expanding ``patterns`` and ``drop-each``; duplicates removed, order kept."""
    out: list[Condition] = []
    mods = sorted(modalities)
    for item in items:
        if item == "patterns":
            new = [
                Condition("pattern", combo)
                for size in range(len(mods), 0, -1)
                for combo in itertools.combinations(mods, size)
            ]
        elif item == "drop-each":
            new = [Condition("drop", (m,)) for m in mods]
        else:
            new = [parse_condition(item, mods)]
        out.extend(c for c in new if c not in out)
    return out


def uniform_hash(seed: int, split: str, modality: str, ids: Sequence[str]) -> np.ndarray:
    """One uniform [0, 1) number per id, a pure function of (seed, split, modality, id)."""
    prefix = f"{seed}\x1f{split}\x1f{modality}\x1f".encode()
    out = np.empty(len(ids), dtype=np.float64)
    for i, sample_id in enumerate(ids):
        digest = hashlib.blake2b(prefix + str(sample_id).encode(), digest_size=8).digest()
        out[i] = int.from_bytes(digest, "little") / 2.0**64
    return out


def condition_masks(
    condition: Condition | str, ids: Sequence[str], modalities: Sequence[str], seed: int = 0, split: str = "test"
) -> dict[str, np.ndarray]:
    """Boolean keep-masks {modality: [N]} for one condition (before ANDing with the data's own presence)."""
    if isinstance(condition, str):
        condition = parse_condition(condition, modalities)
    n = len(ids)
    if condition.kind == "clean":
        return {m: np.ones(n, dtype=bool) for m in modalities}
    if condition.kind == "drop":
        return {m: np.full(n, m != condition.modalities[0]) for m in modalities}
    if condition.kind == "pattern":
        return {m: np.full(n, m in condition.modalities) for m in modalities}
    if condition.kind == "missing":
        return missing_protocol_masks(condition.modalities[0], condition.rate, ids, modalities, seed, split)
    return {m: uniform_hash(seed, split, m, ids) >= condition.rate for m in modalities}


def _hash_order(seed: int, split: str, salt: str, ids: Sequence[str]) -> np.ndarray:
    """Row indices sorted by their per-id hash (ties, never seen in practice, by id)."""
    h = uniform_hash(seed, split, salt, ids)
    return np.array(sorted(range(len(ids)), key=lambda i: (h[i], str(ids[i]))), dtype=np.int64)


BOTH_RATIO = 0.5  # share of the affected samples that lose the image under type "both" (the papers' both_ratio)


def missing_protocol_masks(missing_type: str, eta: float, ids: Sequence[str], modalities: Sequence[str],
                           seed: int = 0, split: str = "test") -> dict[str, np.ndarray]:
    """Keep-masks of ``missing:<type>:<eta>`` (see the module docstring)."""
    n = len(ids)
    keep = {m: np.ones(n, dtype=bool) for m in modalities}
    affected = _hash_order(seed, split, "missing", ids)[: int(n * eta)]
    if missing_type != "both":
        keep[missing_type][affected] = False
        return keep
    first, second = sorted(modalities)
    sub = _hash_order(seed, split, "missing-both", [ids[i] for i in affected])
    lose_first = affected[sub[: int(len(affected) * BOTH_RATIO)]]
    keep[second][affected] = False
    keep[second][lose_first] = True
    keep[first][lose_first] = False
    return keep


def masks_table(conditions: Sequence[Condition], ids: Sequence[str], modalities: Sequence[str], seed: int, split: str,
                present: dict[str, np.ndarray] | None = None):
    """A pandas DataFrame with columns id, condition, <modality>... : the export format. Without
    `present` a modality column is the condition's keep-mask (1 = keep); with the data's own
    presence masks it is what the model sees (1 = present: in the data and kept)."""
    import pandas as pd

    frames = []
    for cond in conditions:
        masks = condition_masks(cond, ids, modalities, seed, split)
        frame = pd.DataFrame({"id": list(ids), "condition": cond.name})
        for m in sorted(modalities):
            seen = masks[m] & np.asarray(present[m], dtype=bool) if present is not None else masks[m]
            frame[m] = seen.astype(np.int8)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def read_masks_table(path) -> dict[str, dict[str, np.ndarray]]:
    """Inverse of masks_table written as CSV: {condition: {modality: keep[N]}} in file order."""
    import pandas as pd

    from mmbench.core.errors import DataError

    try:
        frame = pd.read_csv(path, dtype={"id": str, "condition": str})
    except Exception as exc:  # pandas raises many types for malformed CSV
        raise DataError(f"cannot read mask table: {exc}", path) from None
    for col in ("id", "condition"):
        if col not in frame.columns:
            raise DataError(f"mask table has no {col!r} column", path)
    mods = [c for c in frame.columns if c not in ("id", "condition")]
    return {
        cond: {m: group[m].to_numpy().astype(bool) for m in mods} | {"id": group["id"].to_numpy()}
        for cond, group in frame.groupby("condition", sort=False)
    }


class ModalityDropout:
    """Training-time transform: drop each present modality of a batch with probability `rate`.

    Seeded through the torch.Generator the trainer passes in, so a run is reproducible. With
    `keep_one`, a sample whose every modality would be dropped keeps one chosen at random.
    """

    def __init__(self, rate: float, keep_one: bool = True):
        if not 0.0 <= rate < 1.0:
            raise SpecError(f"modality dropout rate must be in [0, 1), got {rate}")
        self.rate = rate
        self.keep_one = keep_one

    def __call__(self, batch, generator):
        import torch

        if self.rate == 0.0:
            return batch
        names = sorted(batch.present)
        b = len(batch)
        device = batch.targets.device
        keep = torch.rand((len(names), b), generator=generator, device=generator.device).to(device) >= self.rate
        if self.keep_one:
            none_kept = ~keep.any(0)
            pick = torch.randint(len(names), (b,), generator=generator, device=generator.device).to(device)
            rescue = torch.nn.functional.one_hot(pick, len(names)).T.bool() & none_kept[None, :]
            keep = keep | rescue
        present, modalities = dict(batch.present), dict(batch.modalities)
        for i, name in enumerate(names):
            present[name] = batch.present[name] & keep[i]
            shape = (-1,) + (1,) * (batch.modalities[name].dim() - 1)
            modalities[name] = batch.modalities[name] * present[name].view(shape).to(batch.modalities[name].dtype)
        lengths = {k: torch.where(present[k], v, 0) for k, v in batch.lengths.items()}
        return type(batch)(batch.ids, modalities, present, batch.targets, lengths)

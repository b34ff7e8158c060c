"""Missing-modality protocols: reproducible presence masks and training-time dropout.

Conditions are written as strings so they can live in task specs, result files and a
submitter's predictions file. Each is at one of two **levels** (MissMAC-Bench, Lin et al. 2026,
arXiv 2602.00811, evaluates both): *dataset level*, the same modalities absent for every test
item (``drop:``, ``pattern:``), and *instance level*, what is missing drawn per item
(``rate:``, ``missing:``, ``segment:``). :attr:`Condition.level` names it.

- ``clean``                 every modality as the dataset has it (dataset level)
- ``drop:<modality>``       that modality removed from every item (dataset level)
- ``pattern:<m1>+<m2>``     exactly these modalities kept for every item (dataset level)
- ``rate:<r>``              shared missing rate (SMR): a share r of the items lose a modality,
  the losses split evenly between the modalities (below)
- ``rate:<m1>=<s1>,<m2>=<s2>``  imbalanced missing rates (IMR, MissBench, Pham et al. 2026,
  arXiv 2603.09874): a share s_m of the items loses modality m; names sorted in the canonical form
- ``segment:<modality>=<f>`` one contiguous span of a share f of that modality's time steps
  removed per item (MuteBench's within-modality missing, Zheng et al. 2026, arXiv 2605.15235;
  see :mod:`mmbench.data.segments`)
- ``missing:<type>:<eta>``  the image-text protocol of Ma et al. 2022 / Lee et al. 2023 (MMP):
  exactly ``int(N * eta)`` items lose a modality; ``<type>`` names the modality they lose, or
  ``both``: ``int(k * 0.5)`` of the k affected items lose the first modality in sorted order
  (``image``) and the rest the second (``text``). Which items are affected is the
  ``int(N * eta)`` smallest ``blake2b(seed, split, "missing", id)`` values (the papers draw them
  with unseeded ``random.sample``), so the set is the same on every machine and nested across eta.
- ``patterns`` / ``drop-each`` (spec only) expand to every non-empty pattern / ``drop:<m>`` per modality
- ``smr-imr:<a>[,<a>...]`` (spec only) at each average per-modality missing fraction a, the SMR
  condition ``rate:<k*a>`` and k IMR conditions that put the larger share on each modality in
  turn (:func:`smr_imr_pair`)

**No condition removes an item's last modality** (issue 32; MMP's convention, in which an
affected item loses one of its two modalities). Rate conditions (SMR and IMR) follow one rule:
the items whose data give them at least two of the task's modalities are grouped by which
modalities they have; within a group of n items and k modalities, modality m's share s_m
(SMR: r/k each) makes ``floor(n * s_m)`` items lose m, and these sets are disjoint, so an
affected item loses exactly one modality and keeps the others (the shares must sum to at most 1,
else the spec is refused). The items are taken in the order of ``blake2b(seed, split, "rate", id)``
(the same on every machine, independent of item order and batch size). With two modalities the
first in sorted order takes its items from the front of that order and the second from the back,
so each modality's set is nested in its own share whatever the other's; with three or more, claims
are interleaved in proportion to the shares (:func:`_interleave`), nested when all shares grow
together. SMR at rate r is therefore nested across r and identical to IMR with equal shares r/k.
Pattern and drop conditions leave alone an item they would empty (its data has none of the kept
modalities). An item the data itself leave empty stays empty: it is scored apart as "nothing
present" (:mod:`mmbench.evaluation.presence`).

Masks are ANDed with the data's own presence. Two conditions whose masks, after that AND, are
equal are one condition (:func:`distinct_conditions`: found by comparing masks, the first name in
the task's order kept), and a modality no test item has yields no condition of its own
(:func:`absent_modalities`).

``MASKS_PROTOCOL`` is the version of these rules that results record (``extra.masks_protocol``);
version 1 (results without the field) drew each (item, modality) of ``rate:<r>`` independently,
``blake2b(seed, split, modality, id) < r``, which left items with no modality at all
(:func:`legacy_rate_masks` keeps it so results scored under it still verify).
"""

from __future__ import annotations

import hashlib
import itertools
import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from mmbench.core.errors import SpecError

MASKS_PROTOCOL = 2
DATASET_LEVEL = "dataset"
INSTANCE_LEVEL = "instance"


@dataclass(frozen=True)
class Condition:
    kind: str  # clean | drop | rate | pattern | missing | segment
    modalities: tuple[str, ...] = ()
    rate: float = 0.0
    shares: tuple[tuple[str, float], ...] = ()  # IMR: (modality, share), names sorted

    @property
    def name(self) -> str:
        if self.kind == "clean":
            return "clean"
        if self.kind == "drop":
            return f"drop:{self.modalities[0]}"
        if self.kind == "rate":
            return "rate:" + (",".join(f"{m}={s:g}" for m, s in self.shares) if self.shares else f"{self.rate:g}")
        if self.kind == "missing":
            return f"missing:{self.modalities[0]}:{self.rate:g}"
        if self.kind == "segment":
            return f"segment:{self.modalities[0]}={self.rate:g}"
        return "pattern:" + "+".join(self.modalities)

    @property
    def level(self) -> str:
        """``dataset`` (the same modalities absent for every item) or ``instance`` (drawn per item)."""
        return DATASET_LEVEL if self.kind in ("clean", "drop", "pattern") else INSTANCE_LEVEL

    @property
    def imbalanced(self) -> bool:
        return self.kind == "rate" and bool(self.shares)

    def average_missing(self, k: int) -> float | None:
        """A rate condition's average per-modality missing fraction over k modalities."""
        if self.kind != "rate":
            return None
        return sum(s for _, s in self.shares) / k if self.shares else self.rate / k


def _fraction(text: str, what: str, value: str) -> float:
    try:
        r = float(value)
    except ValueError:
        raise SpecError(f"condition {text!r}: {what} {value!r} is not a number") from None
    if not 0.0 <= r <= 1.0:
        raise SpecError(f"condition {text!r}: {what} must be in [0, 1]")
    return r


def _shares(text: str, arg: str) -> tuple[tuple[str, float], ...]:
    out: dict[str, float] = {}
    for part in arg.split(","):
        name, eq, value = part.strip().partition("=")
        if not eq or not name:
            raise SpecError(f"condition {text!r}: expected rate:<r> or rate:<modality>=<share>,...")
        if name in out:
            raise SpecError(f"condition {text!r}: modality {name!r} given twice")
        out[name] = _fraction(text, f"share of {name}", value)
    if sum(out.values()) > 1.0 + 1e-9:
        raise SpecError(f"condition {text!r}: the shares sum to {sum(out.values()):g}; an item loses at most one "
                        "modality under a rate condition (no item is left empty), so they must sum to at most 1")
    return tuple(sorted(out.items()))


def parse_condition(text: str, modalities: Sequence[str] | None = None) -> Condition:
    text = text.strip()
    kind, _, arg = text.partition(":")
    if kind == "clean" and not arg:
        cond = Condition("clean")
    elif kind == "drop" and arg:
        cond = Condition("drop", (arg,))
    elif kind == "rate" and arg:
        if "=" in arg:
            shares = _shares(text, arg)
            cond = Condition("rate", tuple(m for m, _ in shares), shares=shares)
        else:
            cond = Condition("rate", rate=_fraction(text, "rate", arg))
    elif kind == "segment" and arg:
        name, eq, value = arg.partition("=")
        if not eq or not name:
            raise SpecError(f"condition {text!r}: expected segment:<modality>=<fraction of its time steps>")
        cond = Condition("segment", (name,), rate=_fraction(text, "fraction", value))
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
            f"unknown condition {text!r}; expected clean, drop:<modality>, rate:<r>, rate:<m1>=<s1>,<m2>=<s2>, "
            "pattern:<m1>+<m2>, segment:<modality>=<fraction>, missing:<modality or both>:<eta>, patterns, drop-each "
            "or smr-imr:<average>"
        )
    if modalities is not None:
        unknown = [m for m in cond.modalities if m not in modalities]
        if unknown:
            raise SpecError(f"condition {text!r} names unknown modality {unknown[0]!r}; task modalities: {', '.join(modalities)}")
    return cond


IMR_LOW_SHARE = 0.1  # the share each other modality keeps in an smr-imr pair


def smr_imr_pair(average: float, modalities: Sequence[str]) -> list[Condition]:
    """``smr-imr:<a>``: the SMR condition ``rate:<k*a>`` and, for each modality in turn, the IMR
    condition giving it the larger share ``k*a - (k-1)*0.1`` and every other modality 0.1, all
    at the average per-modality missing fraction a (MissBench compares SMR and IMR at equal
    average rates; the 0.1 floor is ours: at a = 0.4 with two modalities it gives 0.7 / 0.1)."""
    mods = sorted(modalities)
    k = len(mods)
    text = f"smr-imr:{average:g}"
    if k < 2:
        raise SpecError(f"condition {text!r}: SMR and IMR need at least two modalities")
    if not IMR_LOW_SHARE < average <= 1.0 / k:
        raise SpecError(f"condition {text!r}: the average per-modality missing fraction must lie in "
                        f"({IMR_LOW_SHARE:g}, {1 / k:g}] with {k} modalities (the shares sum to at most 1)")
    out = [Condition("rate", rate=round(k * average, 12))]
    high = round(k * average - (k - 1) * IMR_LOW_SHARE, 12)
    for heavy in mods:
        shares = tuple((m, high if m == heavy else IMR_LOW_SHARE) for m in mods)
        out.append(Condition("rate", tuple(mods), shares=shares))
    return out


def smr_imr_groups(names: Iterable[str], k: int) -> dict[float, dict[str, list[str]]]:
    """{average per-modality missing fraction: {"smr": [names], "imr": [names]}} of the rate
    conditions among `names` over k modalities, the averages at which at least one IMR condition
    exists: what the board and report set SMR against IMR by (MissBench)."""
    groups: dict[float, dict[str, list[str]]] = {}
    for name in names:
        try:
            cond = parse_condition(name)
        except SpecError:
            continue
        avg = cond.average_missing(k)
        if avg is not None:
            groups.setdefault(round(avg, 9), {"smr": [], "imr": []})["imr" if cond.imbalanced else "smr"].append(name)
    return {a: g for a, g in sorted(groups.items()) if g["imr"]}


def expand_conditions(items: Iterable[str], modalities: Sequence[str]) -> list[Condition]:
    """Parse spec entries, expanding ``patterns``, ``drop-each`` and ``smr-imr:``; duplicates
    removed, order kept."""
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
        elif item.startswith("smr-imr:"):
            new = []
            for part in item.partition(":")[2].split(","):
                new += smr_imr_pair(_fraction(item, "average", part.strip()), mods)
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


def share_count(n: int, share: float) -> int:
    """``floor(n * share)``, robust to the float error of e.g. 0.7 * 1000."""
    return int(math.floor(n * share + 1e-9))


def _presence(present: Mapping[str, np.ndarray] | None, modalities: Sequence[str], n: int) -> dict[str, np.ndarray]:
    if present is None:
        return {m: np.ones(n, dtype=bool) for m in modalities}
    return {m: np.asarray(present[m], dtype=bool) if m in present else np.ones(n, dtype=bool) for m in modalities}


def condition_masks(
    condition: Condition | str, ids: Sequence[str], modalities: Sequence[str], seed: int = 0, split: str = "test",
    present: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Boolean keep-masks {modality: [N]} for one condition (before ANDing with the data's own
    presence). `present`, the data's own presence ({modality: bool [N]}; None: every modality
    present), decides which modalities an item can lose (module docstring). A ``segment:``
    condition keeps every modality (its span is :func:`mmbench.data.segments.segment_spans`)."""
    if isinstance(condition, str):
        condition = parse_condition(condition, modalities)
    n = len(ids)
    have = _presence(present, modalities, n)
    if condition.kind in ("clean", "segment"):
        return {m: np.ones(n, dtype=bool) for m in modalities}
    if condition.kind == "rate":
        return rate_masks(condition, ids, modalities, seed, split, have)
    if condition.kind == "drop":
        keep = {m: np.full(n, m != condition.modalities[0]) for m in modalities}
    elif condition.kind == "pattern":
        keep = {m: np.full(n, m in condition.modalities) for m in modalities}
    else:
        keep = missing_protocol_masks(condition.modalities[0], condition.rate, ids, modalities, seed, split)
    # an item the condition would empty (its data has none of the kept modalities) is left alone
    emptied = ~np.logical_or.reduce([keep[m] & have[m] for m in modalities]) & np.logical_or.reduce(
        [have[m] for m in modalities])
    return {m: keep[m] | emptied for m in modalities}


def _hash_order(seed: int, split: str, salt: str, ids: Sequence[str]) -> np.ndarray:
    """Row indices sorted by their per-id hash (ties, never seen in practice, by id)."""
    h = uniform_hash(seed, split, salt, ids)
    return np.array(sorted(range(len(ids)), key=lambda i: (h[i], str(ids[i]))), dtype=np.int64)


def _interleave(counts: dict[str, int], shares: dict[str, float]) -> list[str]:
    """Claims of three or more modalities in one order: modality m's c-th claim at
    (c + 1) / p_m (p_m its share of the total), ties by name; scaling every share by one factor
    extends the list at its end, so the sets are nested when all shares grow together."""
    total = sum(shares.values())
    claims = [((c + 1) * total / shares[m], m) for m, k in counts.items() for c in range(k)]
    return [m for _, m in sorted(claims)]


def rate_masks(condition: Condition, ids: Sequence[str], modalities: Sequence[str], seed: int, split: str,
               have: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Keep-masks of an SMR or IMR ``rate:`` condition (module docstring)."""
    n = len(ids)
    keep = {m: np.ones(n, dtype=bool) for m in modalities}
    mods = sorted(modalities)
    order = _hash_order(seed, split, "rate", ids)
    given = dict(condition.shares)
    groups: dict[tuple[str, ...], list[int]] = {}
    for i in order.tolist():  # items in hash order, grouped by the modalities their data give them
        groups.setdefault(tuple(m for m in mods if have[m][i]), []).append(i)
    for group, rows in groups.items():
        if len(group) < 2:
            continue  # an item with one modality (or none) loses nothing
        shares = {m: given.get(m, 0.0) for m in group} if given else {m: condition.rate / len(group) for m in group}
        counts = {m: share_count(len(rows), s) for m, s in shares.items()}
        if len(group) == 2:
            first, second = group
            keep[first][rows[:counts[first]]] = False
            if counts[second]:
                keep[second][rows[len(rows) - counts[second]:]] = False
            continue
        for i, m in zip(rows, _interleave({m: c for m, c in counts.items() if c}, shares)):
            keep[m][i] = False
    return keep


def legacy_rate_masks(rate: float, ids: Sequence[str], modalities: Sequence[str], seed: int = 0,
                      split: str = "test") -> dict[str, np.ndarray]:
    """``rate:<r>`` as masks protocol 1 drew it: each (item, modality) removed independently
    when ``blake2b(seed, split, modality, id) < r`` (it could remove every modality of an item).
    Kept only so results scored under protocol 1 verify; never used to score."""
    return {m: uniform_hash(seed, split, m, ids) >= rate for m in modalities}


def protocol_masks(condition: Condition, ids: Sequence[str], modalities: Sequence[str], seed: int, split: str,
                   protocol: int = MASKS_PROTOCOL, present: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The keep-masks of `condition` under masks protocol `protocol` (1: before issue 32)."""
    if protocol == 1 and condition.kind == "rate" and not condition.shares:
        return legacy_rate_masks(condition.rate, ids, modalities, seed, split)
    if protocol == 1 and condition.kind in ("drop", "pattern"):
        return condition_masks(condition, ids, modalities, seed, split)
    return condition_masks(condition, ids, modalities, seed, split, present)


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


def seen_masks(condition: Condition, ids: Sequence[str], modalities: Sequence[str], seed: int, split: str,
               present: Mapping[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    """What a model sees under `condition`: its keep-masks ANDed with the data's own presence."""
    have = _presence(present, modalities, len(ids))
    keep = condition_masks(condition, ids, modalities, seed, split, have)
    return {m: keep[m] & have[m] for m in modalities}


def absent_modalities(modalities: Sequence[str], present: Mapping[str, np.ndarray] | None) -> list[str]:
    """The task's modalities that no item has (MOSI's vision in the offline release)."""
    if present is None:
        return []
    return [m for m in sorted(modalities) if m in present and not np.asarray(present[m], dtype=bool).any()]


def distinct_conditions(conditions: Sequence[Condition], ids: Sequence[str], modalities: Sequence[str], seed: int,
                        split: str, present: Mapping[str, np.ndarray] | None) -> tuple[list[Condition], dict[str, str]]:
    """(the conditions with distinct masks, {name: the name it equals}): two conditions whose
    masks after the AND with the data's presence are equal are one, under the first name in the
    task's order (AV-MNIST's ``pattern:audio`` is ``drop:image``; MOSI's ``drop:vision`` is
    ``clean``). Segment conditions are told apart by their modality and fraction, not masks."""
    kept: list[Condition] = []
    aliases: dict[str, str] = {}
    seen: dict[bytes, str] = {}
    for cond in conditions:
        if cond.kind == "segment":
            key = cond.name.encode()
        else:
            masks = seen_masks(cond, ids, modalities, seed, split, present)
            key = b"".join(np.packbits(masks[m]).tobytes() for m in sorted(modalities))
        if key in seen:
            if seen[key] != cond.name:
                aliases[cond.name] = seen[key]
            continue
        seen[key] = cond.name
        kept.append(cond)
    return kept, aliases


SPAN_COLUMNS = ("segment_start", "segment_length")


def masks_table(conditions: Sequence[Condition], ids: Sequence[str], modalities: Sequence[str], seed: int, split: str,
                present: dict[str, np.ndarray] | None = None,
                spans: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None):
    """A pandas DataFrame with columns id, condition, <modality>... : the export format. Without
    `present` a modality column is the condition's keep-mask (1 = keep); with the data's own
    presence masks it is what the model sees (1 = present: in the data and kept). With `spans`
    ({segment condition name: (start, length) per item, in time steps}) the columns
    ``segment_start`` and ``segment_length`` give each item's removed span (-1 elsewhere)."""
    import pandas as pd

    frames = []
    for cond in conditions:
        masks = condition_masks(cond, ids, modalities, seed, split, present)
        frame = pd.DataFrame({"id": list(ids), "condition": cond.name})
        for m in sorted(modalities):
            seen = masks[m] & np.asarray(present[m], dtype=bool) if present is not None else masks[m]
            frame[m] = seen.astype(np.int8)
        if spans:
            start, length = spans.get(cond.name, (np.full(len(ids), -1), np.full(len(ids), -1)))
            frame[SPAN_COLUMNS[0]], frame[SPAN_COLUMNS[1]] = np.asarray(start, np.int64), np.asarray(length, np.int64)
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
    mods = [c for c in frame.columns if c not in ("id", "condition", *SPAN_COLUMNS)]
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

"""What every dataset loader provides, and where data is found."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmbench.core.errors import DataError, MMBenchError, SpecError
from mmbench.core.registry import DATASETS

if TYPE_CHECKING:
    from mmbench.data.samples import Split

DEFAULT_DATA_ROOT = Path.home() / ".cache" / "mmbench" / "data"

#: The backbone options' defaults: a loader records only the others among its options (its
#: fingerprint), so adding these options left every existing dataset fingerprint as it was.
ENCODER_DEFAULTS: dict[str, Any] = {"image_output": None, "text_pooling": "mean", "audio_encoder": "logmel",
                                    "audio_layer": None}


def encoder_options(**options: Any) -> dict[str, Any]:
    """The backbone options (:data:`ENCODER_DEFAULTS`) that differ from their default."""
    return {k: v for k, v in options.items() if v != ENCODER_DEFAULTS[k]}


#: The image and text encoders of the image-text loaders besides ``torchvision:<arch>`` and
#: a transformers model folder (:mod:`mmbench.data.datasets.coco_features`).
IMAGE_ENCODERS = ("pixels", "efficientnet")
TEXT_ENCODERS = ("minilm", "tokens")


def check_image_encoder(image_encoder: str, dataset: str) -> None:
    """One of :data:`IMAGE_ENCODERS` or ``torchvision:<arch>[:<WEIGHTS>]``."""
    if image_encoder not in IMAGE_ENCODERS and not str(image_encoder).startswith("torchvision:"):
        raise SpecError(f"{dataset}: image_encoder {image_encoder!r} is not one of {', '.join(IMAGE_ENCODERS)} "
                        "or torchvision:<arch> (a torchvision classification backbone)")


def check_text_encoder(text_encoder: str, dataset: str) -> None:
    """One of :data:`TEXT_ENCODERS` or a local transformers model folder (checked when used)."""
    if text_encoder not in TEXT_ENCODERS and not str(text_encoder).strip():
        raise SpecError(f"{dataset}: text_encoder must be one of {', '.join(TEXT_ENCODERS)} or a local transformers "
                        "model folder")


def data_root(data_dir: str | Path | None = None) -> Path:
    """`--data-dir`, else `$MMBENCH_DATA`, else ~/.cache/mmbench/data."""
    if data_dir:
        return Path(data_dir)
    env = os.environ.get("MMBENCH_DATA")
    return Path(env) if env else DEFAULT_DATA_ROOT


class MultimodalDataset(ABC):
    """A loader: options in the constructor, one `Split` of stacked tensors per split name.

    Subclasses set `name`, `modalities` and `split_names`, and implement `load_split`.
    `locate()` reports where the files were found, for `mmbench data info`.
    """

    name: str = ""
    modalities: tuple[str, ...] = ()
    split_names: tuple[str, ...] = ("train", "val", "test")
    needs_files: bool = True

    def __init__(self, data_dir: str | Path | None = None, **options: Any):
        self.root = data_root(data_dir)
        self.options = options

    @abstractmethod
    def load_split(self, split: str) -> Split: ...

    def locate(self) -> dict[str, str]:
        return {}

    @classmethod
    def task_options(cls, spec: Any) -> dict[str, Any]:
        """Options this loader takes from a task spec's own fields (the `hf` loader: its target
        and class names), laid under the spec's `dataset.options`."""
        return {}

    def split_summary(self, split: str) -> dict[str, Any]:
        """Counts for `mmbench data info` (`Split.summary`'s keys). Loaders that can count from
        their annotation files and the file system override this so nothing is encoded; the
        default loads the split."""
        return self.load_split(split).summary()

    def split_presence(self, split: str) -> tuple[list[str], dict[str, Any]]:
        """(ids, {modality: bool array [N]}) of `split`: which rows hold each modality, what
        `mmbench data masks` writes. The default loads the split; loaders that can tell from
        their annotation files and the file system override this so nothing is encoded."""
        s = self.load_split(split)
        return list(s.ids), {m: s.present[m].cpu().numpy() for m in s.present}

    # Official files for `mmbench data prepare --download`: dicts of url, path (relative to the
    # data root), sha256 and, for an archive, extract / strip / members (mmbench.core.download).
    # Empty where there is no public direct download; `download_note` then says where to go.
    downloads: tuple[dict[str, Any], ...] = ()
    download_note: str = "place the files as README 'Data layout' shows"

    def prepare(self, download: bool = False, mirror: str | None = None) -> dict[str, str]:
        """Fetch (optionally) and verify the inputs, and build derived files. The default
        downloads `downloads` (from `mirror` if given) then loads every split, which verifies
        the inputs."""
        report: dict[str, str] = {}
        if mirror and not download:
            raise SpecError("a download mirror only applies with --download")
        if download:
            if not self.needs_files:
                raise MMBenchError(f"dataset {self.name!r} is generated, there is nothing to download")
            entries = self.downloads
            if not entries:
                raise MMBenchError(f"dataset {self.name!r} has no public direct download: {self.download_note}")
            from mmbench.core.download import download_all

            paths = download_all([dict(d) for d in entries], self.root, mirror=mirror)
            report["downloaded"] = ", ".join(str(p.relative_to(self.root)) for p in dict.fromkeys(paths))
        for split in self.split_names:
            report[split] = f"{len(self.load_split(split))} samples"
        return report

    def protocol(self) -> str:
        """The name of the evaluation protocol the splits follow (part of the test-set
        fingerprint, :mod:`mmbench.data.testset`); loaders with several protocols name theirs."""
        return self.name

    def fingerprint(self) -> str:
        """Identifies the exact data a result was computed on (recorded in result files).
        Numbers count by value: ``audio_snr_db: -14`` in a YAML file and ``-14.0`` as a
        Python default build the same data, so they give the same fingerprint."""
        import hashlib
        import json

        def canonical(x: Any) -> Any:
            if isinstance(x, float) and x.is_integer():
                return int(x)
            if isinstance(x, dict):
                return {k: canonical(v) for k, v in x.items()}
            if isinstance(x, (list, tuple)):
                return [canonical(v) for v in x]
            return x

        return hashlib.sha256(json.dumps([self.name, canonical(self.options)], sort_keys=True, default=str).encode()
                              ).hexdigest()[:16]

    def check_split(self, split: str) -> None:
        if split not in self.split_names:
            raise DataError(f"dataset {self.name!r} has no split {split!r}; splits: {', '.join(self.split_names)}")

    def require(self, path: Path, what: str) -> Path:
        if not path.exists():
            raise DataError(f"{what} not found (data root {self.root}; see README 'Data layout')", path)
        return path


def option_names(cls: type) -> set[str] | None:
    """The keyword options a loader class takes (its constructors' keywords along the class
    chain), or None where one takes any keyword itself."""
    import inspect

    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(vars(klass)["__init__"]).parameters.values()
        names |= {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)} - {"self", "data_dir"}
        if klass is MultimodalDataset or not any(p.kind is p.VAR_KEYWORD for p in params):
            return names
    return None


#: The options that choose and configure a modality's frozen encoder (``mmbench tasks show``).
ENCODER_KEYS = ("image_encoder", "image_weights", "image_output", "text_encoder", "text_model", "text_pooling",
                "tokenizer", "audio_encoder", "audio_weights", "audio_layer")


def encoder_settings(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The encoder options (:data:`ENCODER_KEYS`) dataset `name` would use with `options`: the
    given ones over its constructors' defaults along the class chain."""
    import inspect

    settings: dict[str, Any] = {}
    for klass in DATASETS.get(name).__mro__:
        if "__init__" in vars(klass):
            for p in inspect.signature(vars(klass)["__init__"]).parameters.values():
                if p.name in ENCODER_KEYS and p.default is not p.empty:
                    settings.setdefault(p.name, p.default)
    return settings | {k: v for k, v in options.items() if k in ENCODER_KEYS}


def check_options(name: str, options: dict[str, Any], where: str = "dataset.options") -> None:
    """Refuse an option the loader does not take, naming the nearest one it does."""
    from mmbench.core.registry import nearest

    known = option_names(DATASETS.get(name))
    for key in options:
        if known is not None and key not in known:
            raise SpecError(f"{where}.{key}: dataset {name!r} has no option {key!r}{nearest(key, known)}")


def load_dataset(name: str, data_dir: str | Path | None = None, **options: Any) -> MultimodalDataset:
    check_options(name, options)
    cls = DATASETS.get(name)
    return cls(data_dir, **options)

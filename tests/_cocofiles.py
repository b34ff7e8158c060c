"""Generated COCO caption files shared by tests."""

from __future__ import annotations

import json
from pathlib import Path


def write_train2017_stub(annotations: Path) -> None:
    """A one-image captions_train2017.json beside a generated val2017 file: the coco-retrieval
    task's test split stays the whole val2017 file (as without it); too small to carve a val
    split from."""
    doc = {"images": [{"id": 1, "file_name": "000000000001.jpg"}],
           "annotations": [{"id": 1, "image_id": 1, "caption": "a stub caption"}]}
    (annotations / "captions_train2017.json").write_text(json.dumps(doc))

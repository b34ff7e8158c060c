"""Where the tests find the real data: $MMBENCH_DATA, else ../shared/data beside the repo.

Absent data skips the test with the reason, except under CI (MMBENCH_REQUIRE_DATA=1), where
it fails: CI always has the data, so a skip there would hide a broken path.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def real_data_root() -> Path:
    root = Path(os.environ.get("MMBENCH_DATA") or REPO.parent / "shared" / "data")
    if not (root / "README.md").exists():
        reason = f"real data not found at {root}: set MMBENCH_DATA or place it at ../shared/data"
        if os.environ.get("MMBENCH_REQUIRE_DATA") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return root

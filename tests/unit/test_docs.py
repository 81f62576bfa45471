"""The configuration reference names every setting and its environment variable."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from jobtrack.settings import Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_every_setting_is_documented() -> None:
    text = DOC.read_text()
    missing = [
        f.name
        for f in dataclasses.fields(Settings)
        if f"`{f.name}`" not in text or f"`JOBTRACK_{f.name.upper()}`" not in text
    ]
    assert missing == []

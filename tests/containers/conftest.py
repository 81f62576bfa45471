"""Container tests: run by scripts/test-containers (which makes sure a Docker engine and
the images are there), not by the main pytest run."""

from __future__ import annotations

import shutil
import subprocess

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if (
        shutil.which("docker") is None
        or subprocess.run(["docker", "info"], capture_output=True, check=False).returncode
    ):
        skip = pytest.mark.skip(
            reason="no Docker engine runs here (scripts/test-containers starts one)"
        )
        for item in items:
            item.add_marker(skip)

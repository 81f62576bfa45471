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


ROOT = DOC.parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _extras() -> set[str]:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return set(project["optional-dependencies"])


def test_install_lines_install_from_the_checkout_with_extras_that_exist() -> None:
    """jobtrack is not on a package index: every ``pip install`` the docs show installs
    this checkout (``.``, ``'.[redis,web]'``), and every extra they name (in an install
    line, or as "the X extra") is one pyproject.toml defines."""
    import re

    extras, wrong = _extras(), []
    for page in PAGES:
        for n, line in enumerate(page.read_text().splitlines(), 1):
            where = f"{page.name}:{n}"
            for target in re.findall(r"pip install ((?:-\S+ )*)(\S+)", line):
                spec = target[1].strip("'\"")
                if not spec.startswith("."):
                    wrong.append(f"{where}: installs {spec!r}, not the checkout")
                named = re.search(r"\[([^\]]*)\]", spec)
                given = [e.strip() for e in named.group(1).split(",")] if named else []
                wrong += [f"{where}: no extra {e!r}" for e in given if e not in extras]
            mentioned = re.findall(r"the `([a-z-]+)` extra", line)
            wrong += [f"{where}: no extra {e!r}" for e in mentioned if e not in extras]
    assert wrong == []


def test_the_supported_databases_are_said_near_the_top() -> None:
    for page in (ROOT / "README.md", ROOT / "docs" / "quickstart.md"):
        top = "\n".join(page.read_text().splitlines()[:16])
        assert "PostgreSQL" in top and "SQLite" in top, page.name

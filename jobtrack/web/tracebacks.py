"""A Python traceback, as text, cut into what a job page shows open and what it folds.

A failed job's page leads with its error: the traceback's frames in the task's own code
stay open, and each run of library frames (Celery, Kombu, the standard library, anything
installed in ``site-packages``) is folded into one line saying how many and from where.
Only the text is read: nothing here imports or runs what a traceback names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["Fold", "fold"]

_FRAME = re.compile(r'^\s+File "(?P<path>[^"]*)", line \d+')
#: Where a file is not the task's own code: installed packages and the standard library.
_LIBRARY = re.compile(
    r"[/\\](?:site|dist)-packages[/\\]|[/\\]lib[/\\]python\d[\d.]*[/\\]|^<frozen |^<string>$"
)
_PACKAGE = re.compile(r"[/\\](?:site|dist)-packages[/\\](?P<name>[A-Za-z0-9_.-]+)")


@dataclass
class Fold:
    """A run of the traceback's lines: ``library`` frames (folded, with the packages
    they are from), or anything else, shown open."""

    lines: list[str] = field(default_factory=list)
    library: bool = False
    frames: int = 0
    packages: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def summary(self) -> str:
        """ "3 library frames (celery, kombu)"."""
        where = f" ({', '.join(self.packages)})" if self.packages else ""
        return f"{self.frames} library frame{'' if self.frames == 1 else 's'}{where}"


def _package(path: str) -> str:
    found = _PACKAGE.search(path)
    if found is not None:
        return found.group("name").split(".")[0]
    return "python" if not path.startswith("<") else path.strip("<>").split()[0]


def fold(traceback: str) -> list[Fold]:
    """The traceback's lines in runs: a frame (its ``File`` line and the indented lines
    under it) joins the run of its kind; every other line (the header, the exception, a
    chained exception's line) is shown open."""
    runs: list[Fold] = []
    frame_library: bool | None = None  # the kind of the frame being read, if any
    for line in traceback.splitlines():
        found = _FRAME.match(line)
        if found is not None:
            path = found.group("path")
            frame_library = bool(_LIBRARY.search(path))
            if not runs or runs[-1].library != frame_library:
                runs.append(Fold(library=frame_library))
            run = runs[-1]
            run.frames += 1
            if frame_library and (name := _package(path)) not in run.packages:
                run.packages.append(name)
            run.lines.append(line)
        elif frame_library is not None and line.startswith(("    ", "\t")):
            runs[-1].lines.append(line)  # the frame's source line, its carets
        else:
            frame_library = None
            if not runs or runs[-1].library:
                runs.append(Fold())
            runs[-1].lines.append(line)
    return runs

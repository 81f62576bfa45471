"""The store's log statements: a job's captured log lines, in order, paged by ``seq``.

A part the :class:`~jobtrack.store.Store` holds. Lines are written with the rest of a batch
(``Store.write_batch``); every read here is one range of the ``(job_id, seq)`` index.
"""

from __future__ import annotations

from sqlalchemy import func, select

from ..models import LogLine
from ..schema import job_logs
from .common import ReadingPart

__all__ = ["LogQueries"]


class LogQueries(ReadingPart):
    """A job's log lines (``store.logs``)."""

    def lines(
        self, job_id: str, *, after: int = 0, limit: int = 1000, last: bool = False
    ) -> list[LogLine]:
        """The job's log lines with ``seq`` above ``after``, oldest first, at most
        ``limit``; with ``last``, the newest ``limit`` of them (still oldest first)."""
        query = select(job_logs).where(job_logs.c.job_id == job_id, job_logs.c.seq > after)
        order = job_logs.c.seq.desc() if last else job_logs.c.seq
        query = query.order_by(order).limit(max(min(limit, 10_000), 1))
        with self._read("list logs") as conn:
            lines = [
                LogLine(
                    job_id=r.job_id,
                    at=r.at,
                    level=r.level,
                    logger=r.logger,
                    message=r.message,
                    seq=int(r.seq),
                )
                for r in conn.execute(query)
            ]
        return lines[::-1] if last else lines

    def count(self, job_id: str) -> int:
        """How many log lines the job has kept."""
        query = select(func.count()).select_from(job_logs).where(job_logs.c.job_id == job_id)
        with self._read("count logs") as conn:
            return int(conn.execute(query).scalar_one())

"""The tables, defined once. Dialect differences are settled here, not per query.

``metadata`` is public: add it to your own Alembic ``target_metadata`` (or
``include_object``) to join these tables from your models. PostgreSQL gets JSONB and
``timestamptz``; SQLite gets JSON text and ISO timestamps read back as UTC; MySQL and
MariaDB get ``DATETIME(6)`` holding UTC, ``LONGTEXT`` for long text, ``DOUBLE`` for
floats, and utf8mb4 tables whose text compares byte for byte (see
:data:`MYSQL_TABLE_OPTIONS`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.dialects.postgresql import JSONB

from .models import ERROR_GROUP_CHARS, ERROR_MASKS

__all__ = [
    "CHANGES_INDEX",
    "DIALECT_ONLY_INDEXES",
    "ERROR_GROUP_FUNCTION_DDL",
    "ERROR_GROUP_TRIGGERS_DDL",
    "FAILURES",
    "FAILURE_GROUPS_INDEX",
    "FAILURE_GROUPS_INDEX_DDL",
    "FULLTEXT_INDEX",
    "ID_PREFIX_INDEX",
    "ID_PREFIX_INDEX_DDL",
    "MYSQL",
    "MYSQL_ONLY_INDEXES",
    "OWNER_SETTING",
    "PARTITIONED_TABLES",
    "PARTITION_KEY",
    "POSTGRESQL_ONLY_INDEXES",
    "RLS_TABLES",
    "SCHEMA_LOCK_ID",
    "SEARCH_INDEX",
    "SEARCH_INDEX_DDL",
    "SEARCH_TEXT",
    "SEARCH_WORDS",
    "TRACE_VIEW",
    "WORDS_INDEX",
    "WORDS_INDEX_DDL",
    "action_targets",
    "actions",
    "alert_deliveries",
    "alert_progress",
    "alert_seen",
    "alert_state",
    "alerts",
    "error_group_sql",
    "job_events",
    "job_items",
    "job_logs",
    "jobs",
    "leases",
    "metadata",
    "partitioned_twin",
    "partitioning",
    "trace_view_ddl",
]


#: The names SQLAlchemy gives MySQL's dialect and MariaDB's (``mariadb://`` URLs).
MYSQL = ("mysql", "mariadb")


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python, on every backend.
    MySQL and MariaDB have no zoned type: ``DATETIME(6)`` (microseconds) holding UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name in MYSQL:
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        if dialect.name == "sqlite" or dialect.name in MYSQL:
            return value.replace(tzinfo=None)  # no zone stored: UTC, one sortable form
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment: datetime = datetime.fromisoformat(value) if isinstance(value, str) else value
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)


#: JSON on SQLite, JSONB on PostgreSQL; Python None is SQL NULL, not JSON null.
JSONDoc = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
#: BIGSERIAL on PostgreSQL; SQLite only autoincrements INTEGER PRIMARY KEY.
RowId = BigInteger().with_variant(Integer(), "sqlite")
#: Unbounded text: MySQL's TEXT holds 64 KB, too little for a traceback of 32,000
#: characters in utf8mb4.
LongText = Text().with_variant(mysql.LONGTEXT(), *MYSQL)
#: MySQL's FLOAT is single precision (33.333333 reads back as 33.3333): DOUBLE there.
Double = Float().with_variant(mysql.DOUBLE(asdecimal=False), *MYSQL)
#: Every table on MySQL and MariaDB: utf8mb4 (any text PostgreSQL holds), and a binary
#: collation, so ids, keys and filters compare as on PostgreSQL (case counts). Revisions
#: pick the server's NO PAD binary collation (``migrations.dialects``), so trailing
#: spaces count too.
MYSQL_TABLE_OPTIONS = {
    f"{name}_{option}": value
    for name in MYSQL
    for option, value in (("charset", "utf8mb4"), ("collate", "utf8mb4_bin"))
}

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

ID_LENGTH = 255
#: Open cancel requests: asked for, and no worker has finished the job (terminal order
#: keys start at 2**40, see ``models.TERMINAL_SEQ``). A literal, so the planner can use
#: the partial index below.
_OPEN_CANCEL = "cancel_requested_at IS NOT NULL AND state_seq < 1099511627776"
#: Open pause requests: asked for, not resumed, not finished (the same reasoning).
_OPEN_PAUSE = "pause_requested_at IS NOT NULL AND state_seq < 1099511627776"
ITEM_KEY_LENGTH = 500
#: The columns the dashboard filters jobs by, each with a ``(column, status,
#: created_at)`` index (revision 0009). Each index carries the filters after its own in
#: this order (PostgreSQL: INCLUDE, revision 0012), so filters combined are all checked
#: in one index, that of the combination's first filter here; task names, the longest
#: values, are carried by none.
FILTER_COLUMNS = ("task_name", "owner_id", "job_type", "queue")

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(ID_LENGTH), primary_key=True, comment="the Celery task id"),
    Column("task_name", String(255)),
    Column("job_type", String(100)),
    Column("job_subtype", String(100)),
    Column("name", LongText),
    Column("owner_id", String(255)),
    Column("status", String(20), nullable=False),
    Column(
        "state_seq",
        BigInteger,
        nullable=False,
        server_default="0",
        comment="order key of status: attempt and rank; terminal states outrank all",
    ),
    Column("queue", String(255)),
    Column("priority", Integer),
    Column("eta", UTCDateTime),
    Column("parent_id", String(ID_LENGTH)),
    Column("root_id", String(ID_LENGTH)),
    Column("group_id", String(ID_LENGTH)),
    Column("input_data", JSONDoc),
    Column("output_data", JSONDoc),
    Column("metadata", JSONDoc),
    Column("total_items", Integer),
    Column("processed_items", Integer, nullable=False, server_default="0"),
    Column("failed_items", Integer, nullable=False, server_default="0"),
    Column("skipped_items", Integer, nullable=False, server_default="0"),
    Column("progress_percent", Double),
    Column("progress_stage", String(255)),
    Column(
        "stage_index", Integer, comment="position of progress_stage in the declared plan, from 1"
    ),
    Column("stage_count", Integer, comment="how many stages @track(stages=...) declares"),
    Column("progress_message", LongText),
    Column("retries", Integer, nullable=False, server_default="0"),
    Column("max_retries", Integer),
    Column("error_type", String(255)),
    Column("error_message", LongText),
    Column("traceback", LongText),
    Column("worker", String(255)),
    Column("pid", Integer),
    Column("created_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime),
    Column("completed_at", UTCDateTime),
    Column("duration_ms", BigInteger),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("heartbeat_at", UTCDateTime),
    Column("checkpoint", JSONDoc, comment="the latest job.checkpoint(data)"),
    Column("checkpoint_at", UTCDateTime),
    Column(
        "cancel_requested_at",
        UTCDateTime,
        comment="when an operator asked to cancel; stays set if the task ran anyway",
    ),
    Column("ref", String(255), comment="what the job works on: @track(ref=...), upsert_job(ref=)"),
    Column(
        "pause_requested_at",
        UTCDateTime,
        comment="when an operator asked to pause; cleared when the job is resumed",
    ),
    Column(
        "replay_of",
        String(ID_LENGTH),
        comment="the job an operator replayed (with edited arguments) as this one",
    ),
    Column("eta_at", UTCDateTime, comment="estimated finish, from the recent progress rate"),
    Column(
        "retried_by",
        String(ID_LENGTH),
        comment="the job an operator retried or replayed this one as (the newest)",
    ),
    Column(
        "error_group",
        String(32),
        comment="the failure group of its error (PostgreSQL: kept by a trigger)",
    ),
    Column(
        "sent_at",
        UTCDateTime,
        comment="when the message of the run the row follows was published (its stamp)",
    ),
    Index(None, "status", "created_at"),
    # Jobs that finished in a window (alert rules: failed, failure rate, item failures).
    Index(None, "status", "completed_at"),
    # Each filter the dashboard offers, then the status: a tab's count stops after
    # COUNT_CAP entries of one range, and a tab's newest page is a range read backwards
    # per status (the store merges the statuses of a tab; see Store.list_jobs). With
    # filters combined, the range of one is read and the others checked in its entries,
    # not in the jobs (see FILTER_COLUMNS).
    *(
        Index(
            None,
            column,
            "status",
            "created_at",
            postgresql_include=list(FILTER_COLUMNS[n + 1 :]),
        )
        for n, column in enumerate(FILTER_COLUMNS)
    ),
    # The newest jobs; with what ``stats`` counts carried in it, its window is read from
    # the index alone (PostgreSQL: INCLUDE; SQLite reads the rows).
    Index(None, "created_at", postgresql_include=["status", "job_type", "duration_ms"]),
    # The newest job for a ref is one lookup; a prefix ("repo:42@*") uses it too on
    # PostgreSQL (pattern operators: LIKE 'prefix%' whatever the collation).
    Index(None, "ref", "created_at", postgresql_ops={"ref": "varchar_pattern_ops"}),
    # Workers read the open cancel requests at start and every few seconds: a partial
    # index keeps that read as small as the set it returns.
    Index(
        "ix_jobs_cancel_requested",
        "cancel_requested_at",
        postgresql_where=text(_OPEN_CANCEL),
        sqlite_where=text(_OPEN_CANCEL),
    ),
    Index(
        "ix_jobs_pause_requested",
        "pause_requested_at",
        postgresql_where=text(_OPEN_PAUSE),
        sqlite_where=text(_OPEN_PAUSE),
    ),
    # A workflow's tree (chains, groups, chords, tasks started from tasks) is one read;
    # a group's members (a chord's header tasks are each their own root) one more.
    Index(None, "root_id"),
    Index(
        "ix_jobs_group_id",
        "group_id",
        postgresql_where=text("group_id IS NOT NULL"),
        sqlite_where=text("group_id IS NOT NULL"),
    ),
    # "Replayed as ..." on the original's page: only replays have one.
    Index(
        "ix_jobs_replay_of",
        "replay_of",
        postgresql_where=text("replay_of IS NOT NULL"),
        sqlite_where=text("replay_of IS NOT NULL"),
    ),
)

job_items = Table(
    "job_items",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("job_id", String(ID_LENGTH), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("key", String(ITEM_KEY_LENGTH), nullable=False),
    Column("status", String(20), nullable=False),
    Column("message", LongText),
    Column("error_code", String(100)),
    Column("before_state", JSONDoc),
    Column("after_state", JSONDoc),
    Column("processed_at", UTCDateTime, nullable=False),
    UniqueConstraint("job_id", "key"),
    # Pages of a job's items, all or of one status, by keyset (``after`` an item id).
    Index(None, "job_id", "id"),
    Index(None, "job_id", "status", "id"),
)

job_events = Table(
    "job_events",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("job_id", String(ID_LENGTH), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("status", String(20), nullable=False),
    Column("attempt", Integer, nullable=False, server_default="0"),
    Column("worker", String(255)),
    Column("error_type", String(255)),
    Column("error_message", LongText),
    Column("stage", String(255), comment="set on the event of a stage change"),
    Column("note", String(255), comment="what an operator did: paused, resumed, ..."),
    Column(
        "started_at",
        UTCDateTime,
        comment="on an attempt's outcome whose running was not written apart: its start",
    ),
    Index(None, "job_id", "at"),
)

#: Every transition of every job as its own row: ``job_events`` with an attempt written
#: as one row (its outcome, carrying ``started_at``) given back as its ``running`` and its
#: outcome. ``id`` is the ``job_events`` row's; ``step`` orders the two halves of one
#: row (0 its start, 1 the row itself): ``ORDER BY at, id, step``.
TRACE_VIEW = "job_trace"


def trace_view_ddl(dialect: str, server_version: int = 0) -> str:
    """The statement creating :data:`TRACE_VIEW`. On PostgreSQL 15 and later it reads
    with the rights of whoever queries it (``security_invoker``), so row-level security
    binds through it exactly as it binds ``job_events`` itself."""
    invoker = (
        " WITH (security_invoker = true)"
        if dialect == "postgresql" and server_version >= 150000
        else ""
    )
    return (
        f"CREATE VIEW {TRACE_VIEW}{invoker} AS "
        "SELECT job_id, started_at AS at, 'running' AS status, attempt, worker, "
        "NULL AS error_type, NULL AS error_message, NULL AS stage, NULL AS note, id, 0 AS step "
        "FROM job_events WHERE started_at IS NOT NULL "
        "UNION ALL "
        "SELECT job_id, at, status, attempt, worker, error_type, error_message, stage, note, "
        "id, 1 AS step FROM job_events"
    )


#: What the job's task logged while it ran (``job_log_level`` and up), bounded per job.
job_logs = Table(
    "job_logs",
    metadata,
    Column("seq", RowId, primary_key=True, autoincrement=True, comment="orders and pages lines"),
    Column("job_id", String(ID_LENGTH), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("level", String(10), nullable=False),
    Column("logger", String(255)),
    Column("message", LongText),
    Index(None, "job_id", "seq"),
)


actions = Table(
    "jobtrack_actions",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("action", String(20), nullable=False, comment="retry, cancel, pause, resume, ..."),
    Column("actor", String(255), nullable=False, comment="the token's name, or cli"),
    Column("role", String(20), nullable=False),
    Column("owner_id", String(255), comment="the owner an owner-bound operator acts for"),
    Column("bulk", Boolean, nullable=False, server_default=false()),
    Column("filter", JSONDoc, comment="what the action covers: a filter, or the ids"),
    Column("options", JSONDoc),
    Column("status", String(20), nullable=False, comment="pending, running, completed, failed"),
    Column("job_id", String(ID_LENGTH), comment="the jobtrack job that tracks a bulk action"),
    Column("matched", Integer, nullable=False, server_default="0"),
    Column("done", Integer, nullable=False, server_default="0"),
    Column("skipped", Integer, nullable=False, server_default="0"),
    Column("failed", Integer, nullable=False, server_default="0"),
    Column("outcome", LongText, comment="what it did, in words (single actions), or its error"),
    Column("created_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    Index(None, "created_at"),
    comment="the audit trail: every operator action, from any interface (append-only)",
)

#: What one action does to each job: the ids it covers, snapshotted when it starts, and
#: how far each one got. No foreign key to ``jobs``: a deleted job's entry stays.
action_targets = Table(
    "jobtrack_action_targets",
    metadata,
    Column(
        "action_id",
        RowId,
        ForeignKey("jobtrack_actions.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("job_id", String(ID_LENGTH), primary_key=True),
    Column("state", String(20), nullable=False, comment="pending, sending, done, skipped, failed"),
    Column("sends", Integer, nullable=False, server_default="0"),
    Column("result_id", String(ID_LENGTH), comment="the new job of a retry or replay"),
    Column("outcome", String(500)),
    Index(None, "job_id"),
)


alerts = Table(
    "jobtrack_alerts",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("rule", String(100), nullable=False),
    Column("kind", String(20), nullable=False, comment="firing, resolved or test"),
    Column("title", LongText, nullable=False),
    Column("body", JSONDoc, comment="what it says: counts, a sample of the jobs, the rule"),
    Column("created_at", UTCDateTime, nullable=False),
    Index(None, "created_at"),
    comment="every alert message jobtrack sent or is sending",
)

alert_deliveries = Table(
    "jobtrack_alert_deliveries",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("alert_id", RowId, ForeignKey("jobtrack_alerts.id", ondelete="CASCADE"), nullable=False),
    Column("channel", String(100), nullable=False),
    Column("status", String(20), nullable=False, comment="pending, sent or failed"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("last_error", LongText, comment="the last failure, with every secret masked"),
    Column("sent_at", UTCDateTime),
    Index(None, "status", "next_attempt_at"),
    Index(None, "alert_id"),
)

#: A job an alert rule has reported already: never twice, across restarts.
alert_seen = Table(
    "jobtrack_alert_seen",
    metadata,
    Column("rule", String(100), primary_key=True),
    Column("job_id", String(ID_LENGTH), primary_key=True),
    Column("alert_id", RowId),
    Column("at", UTCDateTime, nullable=False),
    Index(None, "at"),
)

#: Per rule: whether it is firing (rate rules) and when it last sent.
alert_state = Table(
    "jobtrack_alert_state",
    metadata,
    Column("rule", String(100), primary_key=True),
    Column("firing", Boolean, nullable=False, server_default=false()),
    Column("value", Double, comment="what a rate rule measured last"),
    Column("last_sent_at", UTCDateTime),
    Column("updated_at", UTCDateTime, nullable=False),
)

#: The progress of running jobs as the alert runner last saw it, and since when it is so:
#: a job whose progress has not changed for a rule's time is stuck.
alert_progress = Table(
    "jobtrack_alert_progress",
    metadata,
    Column("job_id", String(ID_LENGTH), primary_key=True),
    Column("fingerprint", String(255), nullable=False),
    Column("changed_at", UTCDateTime, nullable=False),
)


leases = Table(
    "jobtrack_leases",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("holder", String(255), nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    comment="who does a periodic chore (the in-worker reaper) until when",
)

#: Whether (and by what period) the job tables are partitioned (PostgreSQL): one row once
#: ``jobtrack db partition`` converted them, none otherwise. Revision 0010 makes it.
partitioning = Table(
    "jobtrack_partitioning",
    metadata,
    Column("period", String(10), primary_key=True, comment="month or day"),
    Column("since", UTCDateTime, nullable=False, comment="when the tables were converted"),
    comment="set by jobtrack db partition: the job tables are partitioned by this period",
)


for _table in metadata.tables.values():  # one place for what every table takes there
    _table.dialect_kwargs.update(MYSQL_TABLE_OPTIONS)


#: What a job search matches as text (PostgreSQL): its name and error text in one text,
#: so one trigram index answers for either. The chr(31) between them keeps a match from
#: spanning the two. Ids are not in it: their hex digits would make every digit trigram
#: common (a search for "4242" would read millions of entries); an id or an id prefix is
#: found by :data:`ID_PREFIX_INDEX` instead. Written once, here: the index (revision 0009)
#: and the store's query must spell it the same for the planner.
SEARCH_TEXT = "(coalesce(name, '') || chr(31) || coalesce(error_message, ''))"
#: The trigram index over :data:`SEARCH_TEXT`: PostgreSQL with the pg_trgm extension
#: only (revision 0009 makes it where the extension can be had), so it is not part of
#: ``metadata``; without it a search reads the table, bounded by the read time limit.
SEARCH_INDEX = "ix_jobs_search_trgm"
SEARCH_INDEX_DDL = (
    f"CREATE INDEX IF NOT EXISTS {SEARCH_INDEX} ON jobs USING gin ({SEARCH_TEXT} gin_trgm_ops)"
)
#: An id prefix (``LIKE '5f0c1a2b%'``) as a range of this index whatever the database's
#: collation (PostgreSQL, revision 0009; SQLite's own key order already serves it).
ID_PREFIX_INDEX = "ix_jobs_id_prefix"
ID_PREFIX_INDEX_DDL = (
    f"CREATE INDEX IF NOT EXISTS {ID_PREFIX_INDEX} ON jobs (id varchar_pattern_ops)"
)
#: The whole words of :data:`SEARCH_TEXT`, lowercased (its maximal runs of letters and
#: digits). Trigrams of words that every job shares ("import", "batch", digits) make a
#: trigram search read huge posting lists; a search holding a whole word that few jobs
#: hold is answered by :data:`WORDS_INDEX` instead, the row rechecked for the full text
#: (see ``store.common.searching``). Plain GIN: no extension needed.
SEARCH_WORDS = f"array_remove(regexp_split_to_array(lower({SEARCH_TEXT}), '[^[:alnum:]]+'), '')"
#: The word index over :data:`SEARCH_WORDS` (PostgreSQL, revision 0011).
WORDS_INDEX = "ix_jobs_search_words"
WORDS_INDEX_DDL = f"CREATE INDEX IF NOT EXISTS {WORDS_INDEX} ON jobs USING gin ({SEARCH_WORDS})"


#: The failure group of a row's error, in SQL (PostgreSQL): ``models.error_group_of``
#: spelled with the same masks (``models.ERROR_MASKS``), over the row ``row`` names
#: (``NEW`` in a trigger, ``jobs`` in an update).
def error_group_sql(row: str) -> str:
    masked = f"left(coalesce({row}.error_message, ''), {ERROR_GROUP_CHARS})"
    for pattern, replacement in ERROR_MASKS:
        masked = f"regexp_replace({masked}, {_quoted(pattern)}, {_quoted(replacement)}, 'g')"
    return (
        f"CASE WHEN {row}.error_type IS NULL AND {row}.error_message IS NULL THEN NULL "
        f"ELSE md5(coalesce({row}.task_name, '') || chr(31) || coalesce({row}.error_type, '') "
        f"|| chr(31) || {masked}) END"
    )


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


#: PostgreSQL keeps ``jobs.error_group`` with a trigger (revision 0015): a row whose task,
#: error type or message changes gets its group in the same statement, whichever process
#: writes it, with no cost to rows without an error (the triggers' WHEN clauses). SQLite
#: has no regular expressions: its groups are read in Python (``models.error_group_of``).
ERROR_GROUP_FUNCTION_DDL = (
    "CREATE OR REPLACE FUNCTION jobtrack_error_group() RETURNS trigger LANGUAGE plpgsql AS "
    f"$$ BEGIN NEW.error_group := {error_group_sql('NEW')}; RETURN NEW; END $$"
)
ERROR_GROUP_TRIGGERS_DDL = (
    "CREATE TRIGGER jobtrack_error_group_insert BEFORE INSERT ON jobs FOR EACH ROW "
    "WHEN (NEW.error_type IS NOT NULL OR NEW.error_message IS NOT NULL) "
    "EXECUTE FUNCTION jobtrack_error_group()",
    "CREATE TRIGGER jobtrack_error_group_update BEFORE UPDATE ON jobs FOR EACH ROW "
    "WHEN (NEW.error_message IS DISTINCT FROM OLD.error_message "
    "OR NEW.error_type IS DISTINCT FROM OLD.error_type "
    "OR NEW.task_name IS DISTINCT FROM OLD.task_name) "
    "EXECUTE FUNCTION jobtrack_error_group()",
)
#: The failures no operator handled yet, by group and time (PostgreSQL, revision 0015):
#: the failure groups are read from this index alone, however many jobs finished well.
FAILURE_GROUPS_INDEX = "ix_jobs_failure_groups"
FAILURES = "status IN ('failed', 'lost') AND retried_by IS NULL"
FAILURE_GROUPS_INDEX_DDL = (
    f"CREATE INDEX IF NOT EXISTS {FAILURE_GROUPS_INDEX} ON jobs (error_group, completed_at) "
    f"INCLUDE (updated_at) WHERE {FAILURES}"
)

#: Indexes revisions 0009, 0011 and 0015 make on PostgreSQL only, outside ``metadata``.
POSTGRESQL_ONLY_INDEXES = (SEARCH_INDEX, ID_PREFIX_INDEX, WORDS_INDEX, FAILURE_GROUPS_INDEX)
#: The change cursor of the live stream where the database has no LISTEN/NOTIFY (MySQL,
#: MariaDB; revision 0017): the jobs changed since a moment are one range of it, however
#: many jobs the table holds. PostgreSQL is told of changes at commit instead, and pays
#: no index write per transition for it.
CHANGES_INDEX = "ix_jobs_updated_at"
#: The FULLTEXT index over name and error text (MySQL, MariaDB; revision 0017): a search
#: holding whole words reads the jobs holding them, each then checked for the whole
#: search (``store.common.fulltext_words``); other searches read the table.
FULLTEXT_INDEX = "ix_jobs_search_fulltext"
#: Indexes revision 0017 makes on MySQL and MariaDB only, outside ``metadata``.
MYSQL_ONLY_INDEXES = (CHANGES_INDEX, FULLTEXT_INDEX)
#: Every index a revision makes on some backends only (not part of ``metadata``).
DIALECT_ONLY_INDEXES = POSTGRESQL_ONLY_INDEXES + MYSQL_ONLY_INDEXES

#: The PostgreSQL session setting row-level security reads: an owner id, or ``*`` for
#: every owner (what jobtrack's own connections set; see docs/schema.md).
OWNER_SETTING = "jobtrack.owner_id"
#: The job-scoped tables row-level security covers (migration 0005 adds their policies).
RLS_TABLES = ("jobs", "job_items", "job_events", "job_logs")


#: The PostgreSQL advisory lock key every schema change takes (upgrades, partitioning):
#: one at a time, whichever process starts it.
SCHEMA_LOCK_ID = 0x6A6F6274

#: The job tables that partitioning (PostgreSQL, optional) splits by period, parents
#: first: a job's items, events and log lines live in its job's partition, so dropping a
#: period's partitions removes whole jobs.
PARTITIONED_TABLES = ("jobs", "job_items", "job_events", "job_logs")
#: The partition key: the first day of the job's period (month or day), fixed when the
#: job's row is first written and never changed by later writes (see Store.partitioned).
PARTITION_KEY = "part"


def partitioned_twin(table: Table) -> Table:
    """``table`` as a table partitioned by :data:`PARTITION_KEY` (PostgreSQL): the same
    columns and indexes (same names), the key added to the primary key and to each
    unique constraint (PostgreSQL requires it), no foreign keys (a job's rows are
    removed with it explicitly, or with its partition). Derived, never defined twice:
    ``jobtrack db partition`` creates it, the store's partitioned writes name it."""
    twin_md = MetaData(naming_convention=metadata.naming_convention)
    keys = [c.name for c in table.primary_key.columns]
    columns = [
        Column(
            c.name,
            c.type,
            nullable=c.nullable if not c.primary_key else False,
            server_default=getattr(c.server_default, "arg", None),
            comment=c.comment,
            autoincrement=bool(c.primary_key and c.autoincrement is True),
        )
        for c in table.columns
    ]
    twin = Table(
        table.name,
        twin_md,
        *columns,
        Column(PARTITION_KEY, Date, nullable=False, comment="the first day of the job's period"),
        PrimaryKeyConstraint(*keys, PARTITION_KEY),
        *(
            UniqueConstraint(*[c.name for c in u.columns], PARTITION_KEY)
            for u in table.constraints
            if isinstance(u, UniqueConstraint)
        ),
        comment=table.comment,
        postgresql_partition_by=f"RANGE ({PARTITION_KEY})",
    )
    for index in table.indexes:
        Index(
            index.name,
            *[
                twin.c[c.name] if hasattr(c, "name") and c.name in twin.c else c
                for c in index.expressions
            ],
            unique=index.unique,
            **index.dialect_kwargs,
        )
    return twin


def staging_table(table: Table) -> Table:
    """A PostgreSQL temporary twin of ``table`` for bulk loading (COPY, then one
    ``INSERT … SELECT … ON CONFLICT``). Derived from ``table``, never defined twice; rows
    vanish at commit. Not part of the schema users see or migrate."""
    return Table(
        f"jobtrack_stage_{table.name}",
        MetaData(),
        *(
            Column(c.name, c.type)
            for c in table.columns
            if not c.primary_key or (c.name == "id" and table.name == "jobs")
        ),
        prefixes=["TEMPORARY"],
        postgresql_on_commit="DELETE ROWS",
    )

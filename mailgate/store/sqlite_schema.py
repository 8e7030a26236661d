"""The store's tables in SQLite, as versioned migrations (mailgate.store.migrations).

Migration 1 is every table as mailgate made it before versions were kept,
when each part of the store created its own tables in the spool file; the
``messages`` columns added after the first release are added when missing,
as that code did, so any spool file it wrote opens with its mail.
"""

from __future__ import annotations

from mailgate.store.migrations import Migration, Schema, check_order

_MESSAGES = """CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    received_at REAL NOT NULL,
    mail_from TEXT NOT NULL,
    rcpt TEXT NOT NULL,
    raw BLOB NOT NULL,
    order_key TEXT,                         -- 'ticket:N': applied in arrival order
    state TEXT NOT NULL DEFAULT 'queued',   -- queued, done, dead
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    lease_until REAL NOT NULL DEFAULT 0,
    claimed_by TEXT,                        -- host:pid:start of the lease's holder
    last_error TEXT,
    outcome TEXT,                           -- JSON, once done
    finished_at REAL
)"""

# The mail itself, once per mail however many recipients it has.  Written
# through a blob handle (mailgate.store.spool.SqliteSpool), never as part of a record.
_BODIES = """CREATE TABLE IF NOT EXISTS bodies (
    id INTEGER PRIMARY KEY,
    raw BLOB NOT NULL
)"""

_PROCESSED = """CREATE TABLE IF NOT EXISTS processed (
    mail_key TEXT NOT NULL,
    route_key TEXT NOT NULL,
    ticket INTEGER,
    journal_id INTEGER,
    outcome TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (mail_key, route_key)
)"""

#: Columns added to ``messages`` after the first release, before versions were kept.
_ADDED_COLUMNS = [("order_key", "TEXT"), ("body_id", "INTEGER"), ("claimed_by", "TEXT")]


def _add_missing_columns(cur) -> None:
    have = {row[1] for row in cur.execute("PRAGMA table_info(messages)").fetchall()}
    for name, definition in _ADDED_COLUMNS:
        if name not in have:
            cur.execute(f"ALTER TABLE messages ADD COLUMN {name} {definition}")


_DISCORD_POSTS = """CREATE TABLE IF NOT EXISTS discord_posts (
    id INTEGER PRIMARY KEY,                 -- also the order of a ticket's posts
    mail_key TEXT NOT NULL,
    channel TEXT NOT NULL,                  -- Destination.key
    ticket INTEGER NOT NULL,
    content TEXT NOT NULL,
    thread_name TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued',   -- queued, sent, dead
    created_at REAL NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0,    -- rate limits are not failures
    next_attempt_at REAL NOT NULL DEFAULT 0,
    lease_until REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    finished_at REAL,
    message_id TEXT,
    thread_id TEXT,
    UNIQUE (mail_key, channel)
)"""

_DISCORD_THREADS = """CREATE TABLE IF NOT EXISTS discord_threads (
    channel TEXT NOT NULL,
    ticket INTEGER NOT NULL,
    thread_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    announced INTEGER NOT NULL DEFAULT 0,   -- 1: on_thread_created done, -1: given up
    failures INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    PRIMARY KEY (channel, ticket)
)"""

_NOTICES = """CREATE TABLE IF NOT EXISTS notices (
    sender TEXT NOT NULL,                   -- who was told (lower case)
    reason_kind TEXT NOT NULL,
    day TEXT NOT NULL,                      -- UTC date, YYYY-MM-DD
    sent_at REAL NOT NULL,                  -- when the notice was decided and queued
    PRIMARY KEY (sender, reason_kind, day)
)"""

_NOTICE_OUTBOX = """CREATE TABLE IF NOT EXISTS notice_outbox (
    id INTEGER PRIMARY KEY,
    recipient TEXT NOT NULL,
    reason_kind TEXT NOT NULL,
    message BLOB NOT NULL,                  -- rendered once, the same on every attempt
    created_at REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued',   -- queued, sent, dead
    failures INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    lease_until REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    finished_at REAL
)"""

_RATE_BUCKETS = """CREATE TABLE IF NOT EXISTS rate_buckets (
    key TEXT PRIMARY KEY,
    tokens REAL NOT NULL,
    updated_at REAL NOT NULL
)"""

# mailgate.store.receipts: one row per mail taken out of a mailbox.
_RECEIPTS = """CREATE TABLE receipts (
    source TEXT NOT NULL,                   -- the mailbox: user@host/folder
    uidvalidity INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    mail_key TEXT NOT NULL,                 -- Message-ID, else sha256 of the bytes
    outcome TEXT NOT NULL,                  -- spooled, rejected, duplicate
    reason TEXT,
    created_at REAL NOT NULL,
    PRIMARY KEY (source, uidvalidity, uid)
)"""

# mailgate.store.watch: the Redmine watcher's watermark, and each journal it found.
_WATCH_STATE = """CREATE TABLE watch_state (
    name TEXT PRIMARY KEY,              -- what is watched: 'redmine'
    watermark TEXT,                     -- Redmine's updated_on polled up to (NULL: not yet)
    started TEXT,                       -- the first watermark: older journals are history
    handled TEXT NOT NULL DEFAULT '{}', -- JSON {issue id: updated_on} near the watermark
    next_poll_at REAL NOT NULL DEFAULT 0,
    lease_until REAL NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0, -- polls failed in a row
    last_error TEXT,
    polled_at REAL                      -- when a poll last succeeded
)"""

_WATCH_JOURNALS = """CREATE TABLE watch_journals (
    journal_id INTEGER PRIMARY KEY,     -- Redmine's: each journal becomes events once
    ticket INTEGER NOT NULL,
    snapshot TEXT NOT NULL,             -- JSON: the journal and its issue, as polled
    state TEXT NOT NULL DEFAULT 'queued', -- queued, done, dead
    created_at REAL NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    lease_until REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    outcome TEXT,                       -- JSON: what was told, to whom
    finished_at REAL
)"""

# mailgate.store.discord_reads: Discord threads read back into Redmine (issue 14).
_DISCORD_READS = """CREATE TABLE discord_reads (
    thread_id TEXT PRIMARY KEY,         -- a tracked thread of discord_threads
    ticket INTEGER NOT NULL,
    after INTEGER NOT NULL,             -- the newest message id read: a snowflake
    created_at REAL NOT NULL,
    next_poll_at REAL NOT NULL DEFAULT 0,
    lease_until REAL NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0, -- reads failed in a row
    last_error TEXT,
    polled_at REAL,                     -- when a read last went through
    gone INTEGER NOT NULL DEFAULT 0     -- 1: Discord says the thread is no more
)"""

_DISCORD_MESSAGES = """CREATE TABLE discord_messages (
    message_id INTEGER PRIMARY KEY,     -- Discord's: each message becomes one note at most
    thread_id TEXT NOT NULL,
    ticket INTEGER NOT NULL,
    message TEXT NOT NULL,              -- JSON: the message as it was read
    state TEXT NOT NULL DEFAULT 'queued', -- queued, done, dead
    created_at REAL NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    lease_until REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    outcome TEXT,                       -- JSON: what became of it
    finished_at REAL
)"""

# A ticket's discord-thread field, as the Redmine watcher last saw it change.
_DISCORD_SWITCH = """CREATE TABLE discord_switch (
    ticket INTEGER PRIMARY KEY,
    tracked INTEGER NOT NULL,           -- 1: set, 0: cleared (no posting, no reading)
    since INTEGER NOT NULL,             -- a snowflake: read what was written after it
    journal_id INTEGER NOT NULL,        -- the journal that set or cleared it
    changed_at REAL NOT NULL
)"""

_DISCORD_READ_STATE = """CREATE TABLE discord_read_state (
    name TEXT PRIMARY KEY,
    started INTEGER NOT NULL            -- a snowflake: threads older than reading start here
)"""

MIGRATIONS = check_order([
    Migration(1, "the tables as before versions", [
        _MESSAGES, _BODIES, _PROCESSED, _add_missing_columns,
        "CREATE INDEX IF NOT EXISTS messages_due ON messages (state, next_attempt_at)",
        "CREATE INDEX IF NOT EXISTS messages_order ON messages (order_key, state, id)",
        _DISCORD_POSTS,
        "CREATE INDEX IF NOT EXISTS discord_posts_due ON discord_posts (state, next_attempt_at)",
        "CREATE INDEX IF NOT EXISTS discord_posts_ticket ON discord_posts (channel, ticket, state)",
        _DISCORD_THREADS,
        _NOTICES, _NOTICE_OUTBOX,
        "CREATE INDEX IF NOT EXISTS notice_outbox_due ON notice_outbox (state, next_attempt_at)",
        _RATE_BUCKETS,
        "CREATE INDEX IF NOT EXISTS rate_buckets_updated ON rate_buckets (updated_at)",
    ]),
    # Two processes announcing the same thread would write Redmine's fields twice.
    Migration(2, "a lease on a thread's Redmine announcement", [
        "ALTER TABLE discord_threads ADD COLUMN lease_until REAL NOT NULL DEFAULT 0",
    ]),
    Migration(3, "indexes for the retention purge", [
        "CREATE INDEX messages_finished ON messages (state, finished_at)",
        "CREATE INDEX messages_body ON messages (body_id)",
        "CREATE INDEX discord_posts_finished ON discord_posts (state, finished_at)",
        "CREATE INDEX notice_outbox_finished ON notice_outbox (state, finished_at)",
    ]),
    Migration(4, "how each mail reached us (whose Authentication-Results count)", [
        "ALTER TABLE messages ADD COLUMN via TEXT",
    ]),
    Migration(5, "receipts: the mail taken from IMAP mailboxes, by UID and by key", [
        _RECEIPTS,
        "CREATE INDEX receipts_key ON receipts (source, mail_key)",
    ]),
    Migration(6, "the Redmine watcher; answers sent from their own envelope sender", [
        _WATCH_STATE, _WATCH_JOURNALS,
        "CREATE INDEX watch_journals_due ON watch_journals (state, next_attempt_at)",
        "CREATE INDEX watch_journals_finished ON watch_journals (state, finished_at)",
        # Notices go from the null reverse path; answers from the ticket's address, so
        # that their bounces come back and are recorded.
        "ALTER TABLE notice_outbox ADD COLUMN mail_from TEXT NOT NULL DEFAULT ''",
    ]),
    Migration(7, "Discord threads read back into Redmine; the discord-thread switch", [
        _DISCORD_READS, _DISCORD_MESSAGES, _DISCORD_SWITCH, _DISCORD_READ_STATE,
        "CREATE INDEX discord_messages_due ON discord_messages (state, next_attempt_at)",
        "CREATE INDEX discord_messages_ticket ON discord_messages (ticket, state)",
        "CREATE INDEX discord_messages_finished ON discord_messages (state, finished_at)",
        "CREATE INDEX discord_reads_ticket ON discord_reads (ticket)",
        "CREATE INDEX discord_reads_due ON discord_reads (next_poll_at)",
        # A read is tracked while its thread is the registry's: looked up by thread id.
        "CREATE INDEX discord_threads_thread ON discord_threads (thread_id)",
    ]),
])

SCHEMA = Schema(
    MIGRATIONS,
    has_versions="SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_version'",
    create_versions="CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY,"
                    " name TEXT NOT NULL, applied_at REAL NOT NULL)",
    current="SELECT max(version) FROM schema_version",
    record="INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
)

"""The store's tables in PostgreSQL, as versioned migrations (mailgate.store.migrations).

Migration 1 is the spool as mailgate made it before versions were kept;
migration 2 brings the rest of the shared state here (Discord's queue and
thread registry, the notices, the rate buckets), which until then stayed in
each host's SQLite file.  PostgreSQL keeps a mail's bytes in its row: there is
no ``bodies`` table, and ``messages.body_id`` stays empty.
"""

from __future__ import annotations

from mailgate.store.migrations import Migration, Schema, check_order

_MESSAGES = """CREATE TABLE IF NOT EXISTS messages (
    id BIGSERIAL PRIMARY KEY,
    received_at DOUBLE PRECISION NOT NULL,
    mail_from TEXT NOT NULL,
    rcpt TEXT NOT NULL,
    raw BYTEA NOT NULL,
    order_key TEXT,
    body_id BIGINT,
    state TEXT NOT NULL DEFAULT 'queued',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at DOUBLE PRECISION NOT NULL DEFAULT 0,
    lease_until DOUBLE PRECISION NOT NULL DEFAULT 0,
    claimed_by TEXT,
    last_error TEXT,
    outcome TEXT,
    finished_at DOUBLE PRECISION
)"""

_PROCESSED = """CREATE TABLE IF NOT EXISTS processed (
    mail_key TEXT NOT NULL,
    route_key TEXT NOT NULL,
    ticket INTEGER,
    journal_id INTEGER,
    outcome TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (mail_key, route_key)
)"""

_DISCORD_POSTS = """CREATE TABLE discord_posts (
    id BIGSERIAL PRIMARY KEY,               -- also the order of a ticket's posts
    mail_key TEXT NOT NULL,
    channel TEXT NOT NULL,                  -- Destination.key
    ticket BIGINT NOT NULL,
    content TEXT NOT NULL,
    thread_name TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued',   -- queued, sent, dead
    created_at DOUBLE PRECISION NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0,    -- rate limits are not failures
    next_attempt_at DOUBLE PRECISION NOT NULL DEFAULT 0,
    lease_until DOUBLE PRECISION NOT NULL DEFAULT 0,
    last_error TEXT,
    finished_at DOUBLE PRECISION,
    message_id TEXT,
    thread_id TEXT,
    UNIQUE (mail_key, channel)
)"""

_DISCORD_THREADS = """CREATE TABLE discord_threads (
    channel TEXT NOT NULL,
    ticket BIGINT NOT NULL,
    thread_id TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    announced INTEGER NOT NULL DEFAULT 0,   -- 1: on_thread_created done, -1: given up
    failures INTEGER NOT NULL DEFAULT 0,
    next_attempt_at DOUBLE PRECISION NOT NULL DEFAULT 0,
    lease_until DOUBLE PRECISION NOT NULL DEFAULT 0,
    last_error TEXT,
    PRIMARY KEY (channel, ticket)
)"""

_NOTICES = """CREATE TABLE notices (
    sender TEXT NOT NULL,                   -- who was told (lower case)
    reason_kind TEXT NOT NULL,
    day TEXT NOT NULL,                      -- UTC date, YYYY-MM-DD
    sent_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (sender, reason_kind, day)
)"""

_NOTICE_OUTBOX = """CREATE TABLE notice_outbox (
    id BIGSERIAL PRIMARY KEY,
    recipient TEXT NOT NULL,
    reason_kind TEXT NOT NULL,
    message BYTEA NOT NULL,                 -- rendered once, the same on every attempt
    created_at DOUBLE PRECISION NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued',   -- queued, sent, dead
    failures INTEGER NOT NULL DEFAULT 0,
    next_attempt_at DOUBLE PRECISION NOT NULL DEFAULT 0,
    lease_until DOUBLE PRECISION NOT NULL DEFAULT 0,
    last_error TEXT,
    finished_at DOUBLE PRECISION
)"""

_RATE_BUCKETS = """CREATE TABLE rate_buckets (
    key TEXT PRIMARY KEY,
    tokens DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
)"""

# mailgate.store.receipts: one row per mail taken out of a mailbox.
_RECEIPTS = """CREATE TABLE receipts (
    source TEXT NOT NULL,                   -- the mailbox: user@host/folder
    uidvalidity BIGINT NOT NULL,            -- unsigned 32-bit: past INTEGER's range
    uid BIGINT NOT NULL,
    mail_key TEXT NOT NULL,                 -- Message-ID, else sha256 of the bytes
    outcome TEXT NOT NULL,                  -- spooled, rejected, duplicate
    reason TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (source, uidvalidity, uid)
)"""

# mailgate.store.watch: the Redmine watcher's watermark, and each journal it found.
_WATCH_STATE = """CREATE TABLE watch_state (
    name TEXT PRIMARY KEY,              -- what is watched: 'redmine'
    watermark TEXT,                     -- Redmine's updated_on polled up to (NULL: not yet)
    started TEXT,                       -- the first watermark: older journals are history
    handled TEXT NOT NULL DEFAULT '{}', -- JSON {issue id: updated_on} near the watermark
    next_poll_at DOUBLE PRECISION NOT NULL DEFAULT 0,
    lease_until DOUBLE PRECISION NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0, -- polls failed in a row
    last_error TEXT,
    polled_at DOUBLE PRECISION          -- when a poll last succeeded
)"""

_WATCH_JOURNALS = """CREATE TABLE watch_journals (
    journal_id BIGINT PRIMARY KEY,      -- Redmine's: each journal becomes events once
    ticket BIGINT NOT NULL,
    snapshot TEXT NOT NULL,             -- JSON: the journal and its issue, as polled
    state TEXT NOT NULL DEFAULT 'queued', -- queued, done, dead
    created_at DOUBLE PRECISION NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0,
    next_attempt_at DOUBLE PRECISION NOT NULL DEFAULT 0,
    lease_until DOUBLE PRECISION NOT NULL DEFAULT 0,
    last_error TEXT,
    outcome TEXT,                       -- JSON: what was told, to whom
    finished_at DOUBLE PRECISION
)"""

# mailgate.store.discord_reads: Discord threads read back into Redmine (issue 14).
_DISCORD_READS = """CREATE TABLE discord_reads (
    thread_id TEXT PRIMARY KEY,         -- a tracked thread of discord_threads
    ticket BIGINT NOT NULL,
    after BIGINT NOT NULL,              -- the newest message id read: a snowflake
    created_at DOUBLE PRECISION NOT NULL,
    next_poll_at DOUBLE PRECISION NOT NULL DEFAULT 0,
    lease_until DOUBLE PRECISION NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0, -- reads failed in a row
    last_error TEXT,
    polled_at DOUBLE PRECISION,         -- when a read last went through
    gone INTEGER NOT NULL DEFAULT 0     -- 1: Discord says the thread is no more
)"""

_DISCORD_MESSAGES = """CREATE TABLE discord_messages (
    message_id BIGINT PRIMARY KEY,      -- Discord's: each message becomes one note at most
    thread_id TEXT NOT NULL,
    ticket BIGINT NOT NULL,
    message TEXT NOT NULL,              -- JSON: the message as it was read
    state TEXT NOT NULL DEFAULT 'queued', -- queued, done, dead
    created_at DOUBLE PRECISION NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0,
    next_attempt_at DOUBLE PRECISION NOT NULL DEFAULT 0,
    lease_until DOUBLE PRECISION NOT NULL DEFAULT 0,
    last_error TEXT,
    outcome TEXT,                       -- JSON: what became of it
    finished_at DOUBLE PRECISION
)"""

# A ticket's discord-thread field, as the Redmine watcher last saw it change.
_DISCORD_SWITCH = """CREATE TABLE discord_switch (
    ticket BIGINT PRIMARY KEY,
    tracked INTEGER NOT NULL,           -- 1: set, 0: cleared (no posting, no reading)
    since BIGINT NOT NULL,              -- a snowflake: read what was written after it
    journal_id BIGINT NOT NULL,         -- the journal that set or cleared it
    changed_at DOUBLE PRECISION NOT NULL
)"""

_DISCORD_READ_STATE = """CREATE TABLE discord_read_state (
    name TEXT PRIMARY KEY,
    started BIGINT NOT NULL             -- a snowflake: threads older than reading start here
)"""

MIGRATIONS = check_order([
    Migration(1, "the spool as before versions", [
        _MESSAGES,
        "ALTER TABLE messages ADD COLUMN IF NOT EXISTS body_id BIGINT",
        "ALTER TABLE messages ADD COLUMN IF NOT EXISTS claimed_by TEXT",
        "CREATE INDEX IF NOT EXISTS messages_due ON messages (state, next_attempt_at)",
        "CREATE INDEX IF NOT EXISTS messages_order ON messages (order_key, state, id)",
        _PROCESSED,
    ]),
    Migration(2, "Discord, notices and rate buckets shared by every host", [
        _DISCORD_POSTS,
        "CREATE INDEX discord_posts_due ON discord_posts (state, next_attempt_at)",
        "CREATE INDEX discord_posts_ticket ON discord_posts (channel, ticket, state)",
        _DISCORD_THREADS,
        _NOTICES, _NOTICE_OUTBOX,
        "CREATE INDEX notice_outbox_due ON notice_outbox (state, next_attempt_at)",
        _RATE_BUCKETS,
        "CREATE INDEX rate_buckets_updated ON rate_buckets (updated_at)",
    ]),
    Migration(3, "indexes for the retention purge", [
        "CREATE INDEX messages_finished ON messages (state, finished_at)",
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
    has_versions="SELECT to_regclass('schema_version')::text WHERE"
                 " to_regclass('schema_version') IS NOT NULL",
    create_versions="CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY,"
                    " name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)",
    current="SELECT max(version) FROM schema_version",
    record="INSERT INTO schema_version (version, name, applied_at) VALUES (%s, %s, %s)",
    # Several hosts may start at once: one migrates, the others wait and find it done.
    lock="SELECT pg_advisory_xact_lock(727274)",
)

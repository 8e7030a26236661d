"""The spool's statements, each written twice: for SQLite and for PostgreSQL.

``SpoolSQL`` declares every statement the spool runs, so a backend missing
one fails at import, not on the day a mail needs it.  The two sets say the
same thing in their own dialect; ``claim`` leaves ``{only}`` for the clause
that limits a claim to given ids (``mailgate pipe`` claims its own mail).
"""

from __future__ import annotations

from dataclasses import dataclass

COLUMNS = ("id, received_at, mail_from, rcpt, raw, attempts, state, last_error, outcome,"
           " next_attempt_at, order_key, via")


@dataclass(frozen=True)
class SpoolSQL:
    insert: str
    claim: str
    held: str
    release: str
    renew: str
    next_due: str
    finish: str
    defer: str
    bury: str
    seen: str
    attempt: str
    remember: str
    waiting: str
    get: str
    mails: str
    mails_in: str
    retry_one: str
    retry_all: str
    drop: str
    counts: str
    oldest_queued: str


_NEXT_DUE = ("SELECT min(CASE WHEN next_attempt_at > lease_until"
             " THEN next_attempt_at ELSE lease_until END) FROM messages WHERE state='queued'")
_COUNTS = "SELECT state, count(*) FROM messages GROUP BY state"
# The tickets whose next mail is due and in nobody's hands (facts are read for them
# together: mailgate.facts).
_WAITING = ("SELECT DISTINCT m.order_key FROM messages m WHERE m.state = 'queued'"
            " AND m.order_key LIKE 'ticket:%%' AND m.next_attempt_at <= {p}"
            " AND NOT EXISTS (SELECT 1 FROM messages e WHERE e.order_key = m.order_key"
            " AND e.state = 'queued' AND e.lease_until > {p}) LIMIT {p}")
_OLDEST = "SELECT min(received_at) FROM messages WHERE state='queued'"
_RETRY_ALL = ("UPDATE messages SET state='queued', next_attempt_at=0, lease_until=0"
              " WHERE state = 'dead' OR state = 'queued'")

SQLITE = SpoolSQL(
    insert="INSERT INTO messages (received_at, mail_from, rcpt, raw, order_key, body_id, via)"
           " VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
    # One UPDATE ... RETURNING: SQLite has one writer at a time, so the check for
    # an earlier mail of the same ticket and the claim are atomic.  The mail's
    # bytes are read apart, through a blob handle (SqliteSpool.claim).
    claim=f"""UPDATE messages SET lease_until = ?, claimed_by = ?, attempts = attempts + 1
        WHERE id = (SELECT m.id FROM messages m
                    WHERE m.state = 'queued' AND m.next_attempt_at <= ?
                      AND m.lease_until <= ? {{only}}
                      AND NOT EXISTS (SELECT 1 FROM messages e
                                      WHERE e.order_key = m.order_key
                                        AND e.state = 'queued' AND e.id < m.id)
                    ORDER BY m.id LIMIT 1)
        RETURNING {COLUMNS.replace(' raw,', ' NULL,')}""",
    held="SELECT id, claimed_by FROM messages WHERE state='queued' AND lease_until > ?"
         " AND claimed_by LIKE ?",
    release="UPDATE messages SET lease_until=0 WHERE id=? AND claimed_by=? AND state='queued'",
    renew="UPDATE messages SET lease_until=? WHERE id=? AND state='queued' AND lease_until > 0",
    next_due=_NEXT_DUE,
    finish="UPDATE messages SET state='done', outcome=?, finished_at=?, lease_until=0,"
           " last_error=NULL WHERE id=?",
    defer="UPDATE messages SET next_attempt_at=?, last_error=?, lease_until=0 WHERE id=?",
    bury="UPDATE messages SET state='dead', last_error=?, outcome=?, finished_at=?,"
         " lease_until=0 WHERE id=?",
    seen="SELECT outcome FROM processed WHERE mail_key=? AND route_key=?",
    attempt="INSERT INTO processed (mail_key, route_key, outcome, created_at)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (mail_key, route_key) DO NOTHING",
    # An outcome replaces the record of an attempt, and nothing else.
    remember="INSERT INTO processed (mail_key, route_key, ticket, journal_id, outcome,"
             " created_at) VALUES (?, ?, ?, ?, ?, ?)"
             " ON CONFLICT (mail_key, route_key) DO UPDATE SET ticket = excluded.ticket,"
             " journal_id = excluded.journal_id, outcome = excluded.outcome,"
             " created_at = excluded.created_at WHERE processed.outcome = ?",
    waiting=_WAITING.replace("{p}", "?").replace("%%", "%"),
    get=f"SELECT {COLUMNS} FROM messages WHERE id=?",
    mails=f"SELECT {COLUMNS} FROM messages ORDER BY id LIMIT ?",
    mails_in=f"SELECT {COLUMNS} FROM messages WHERE state=? ORDER BY id LIMIT ?",
    retry_one="UPDATE messages SET state='queued', next_attempt_at=0, lease_until=0"
              " WHERE id=? AND state <> 'done'",
    retry_all=_RETRY_ALL,
    # The body goes too when no other recipient's row points at it (SqliteSpool.drop).
    drop="DELETE FROM messages WHERE id=? AND state <> 'done' RETURNING body_id",
    counts=_COUNTS,
    oldest_queued=_OLDEST,
)

POSTGRES = SpoolSQL(
    insert="INSERT INTO messages (received_at, mail_from, rcpt, raw, order_key, body_id, via)"
           " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
    # SKIP LOCKED: a worker passes over the row another worker is claiming
    # instead of waiting for it; the earlier mail of a ticket stays 'queued'
    # (leased) until done, so NOT EXISTS keeps each ticket in order.
    claim=f"""WITH next AS (
            SELECT m.id FROM messages m
            WHERE m.state = 'queued' AND m.next_attempt_at <= %s AND m.lease_until <= %s
              {{only}}
              AND NOT EXISTS (SELECT 1 FROM messages e
                              WHERE e.order_key = m.order_key
                                AND e.state = 'queued' AND e.id < m.id)
            ORDER BY m.id LIMIT 1
            FOR UPDATE SKIP LOCKED)
        UPDATE messages SET lease_until = %s, claimed_by = %s, attempts = attempts + 1
        FROM next WHERE messages.id = next.id
        RETURNING {', '.join('messages.' + c.strip() for c in COLUMNS.split(','))}""",
    held="SELECT id, claimed_by FROM messages WHERE state='queued' AND lease_until > %s"
         " AND claimed_by LIKE %s",
    release="UPDATE messages SET lease_until=0 WHERE id=%s AND claimed_by=%s"
            " AND state='queued'",
    renew="UPDATE messages SET lease_until=%s WHERE id=%s AND state='queued'"
          " AND lease_until > 0",
    next_due=_NEXT_DUE,
    finish="UPDATE messages SET state='done', outcome=%s, finished_at=%s, lease_until=0,"
           " last_error=NULL WHERE id=%s",
    defer="UPDATE messages SET next_attempt_at=%s, last_error=%s, lease_until=0 WHERE id=%s",
    bury="UPDATE messages SET state='dead', last_error=%s, outcome=%s, finished_at=%s,"
         " lease_until=0 WHERE id=%s",
    seen="SELECT outcome FROM processed WHERE mail_key=%s AND route_key=%s",
    attempt="INSERT INTO processed (mail_key, route_key, outcome, created_at)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (mail_key, route_key) DO NOTHING",
    remember="INSERT INTO processed (mail_key, route_key, ticket, journal_id, outcome,"
             " created_at) VALUES (%s, %s, %s, %s, %s, %s)"
             " ON CONFLICT (mail_key, route_key) DO UPDATE SET ticket = excluded.ticket,"
             " journal_id = excluded.journal_id, outcome = excluded.outcome,"
             " created_at = excluded.created_at WHERE processed.outcome = %s",
    waiting=_WAITING.replace("{p}", "%s"),
    get=f"SELECT {COLUMNS} FROM messages WHERE id=%s",
    mails=f"SELECT {COLUMNS} FROM messages ORDER BY id LIMIT %s",
    mails_in=f"SELECT {COLUMNS} FROM messages WHERE state=%s ORDER BY id LIMIT %s",
    retry_one="UPDATE messages SET state='queued', next_attempt_at=0, lease_until=0"
              " WHERE id=%s AND state <> 'done'",
    retry_all=_RETRY_ALL,
    drop="DELETE FROM messages WHERE id=%s AND state <> 'done' RETURNING body_id",
    counts=_COUNTS,
    oldest_queued=_OLDEST,
)

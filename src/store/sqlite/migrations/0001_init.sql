-- agent-handoff schema, version 1.
-- Times are UTC milliseconds since the Unix epoch; ids are 16-byte UUIDs.

-- One row per proposal. `body` is the whole ticket as JSON; the other columns are copies of
-- its fields for indexes and constraints.
CREATE TABLE tickets (
    id              BLOB    PRIMARY KEY CHECK (length(id) = 16),
    agent           TEXT    NOT NULL,
    idempotency_key TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    version         INTEGER NOT NULL CHECK (version >= 1),
    digest          BLOB    NOT NULL CHECK (length(digest) = 32),
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    -- when the state changes by time alone (review deadline, grant end, lease end)
    due_at          INTEGER,
    body            TEXT    NOT NULL,
    -- idempotency keys are scoped per proposing agent
    UNIQUE (agent, idempotency_key)
) STRICT;
CREATE INDEX tickets_due ON tickets (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX tickets_state_created ON tickets (state, created_at);
CREATE INDEX tickets_agent_created ON tickets (agent, created_at);
CREATE INDEX tickets_created ON tickets (created_at, id);

-- The reviewer groups a ticket's requirements name, for "pending for reviewer" listings.
CREATE TABLE ticket_groups (
    grp       TEXT NOT NULL,
    ticket_id BLOB NOT NULL REFERENCES tickets (id),
    PRIMARY KEY (grp, ticket_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX ticket_groups_ticket ON ticket_groups (ticket_id);

-- Every decision asked for, accepted or refused.
CREATE TABLE decisions (
    id        INTEGER PRIMARY KEY,
    ticket_id BLOB    NOT NULL REFERENCES tickets (id),
    person    TEXT,
    verdict   TEXT    NOT NULL,
    refusal   TEXT,
    at        INTEGER NOT NULL
) STRICT;
CREATE INDEX decisions_ticket ON decisions (ticket_id, id);

-- The audit hash chain. `bytes` are the canonical event bytes that were hashed, kept as they
-- were so verification never re-serialises. Append-only: see the triggers.
CREATE TABLE audit_events (
    seq       INTEGER PRIMARY KEY CHECK (seq >= 1),
    ticket_id BLOB,
    at        INTEGER NOT NULL,
    kind      TEXT    NOT NULL,
    bytes     BLOB    NOT NULL,
    prev_hash BLOB    NOT NULL CHECK (length(prev_hash) = 32),
    hash      BLOB    NOT NULL CHECK (length(hash) = 32),
    -- the store's commit time (not hashed): commit times never go backwards across restarts
    committed_at INTEGER NOT NULL
) STRICT;
CREATE INDEX audit_events_ticket ON audit_events (ticket_id, seq) WHERE ticket_id IS NOT NULL;
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;

-- Signed checkpoints of the chain head (kept apart from the chain they vouch for).
CREATE TABLE checkpoints (
    size INTEGER PRIMARY KEY,
    text TEXT    NOT NULL
) STRICT;

-- Notifications written in the same transaction as the transition that needs them.
CREATE TABLE outbox (
    id         BLOB    PRIMARY KEY CHECK (length(id) = 16),
    ticket_id  BLOB    NOT NULL REFERENCES tickets (id),
    channel    TEXT    NOT NULL,
    payload    TEXT    NOT NULL,
    due_at     INTEGER NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    status     TEXT    NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'dead')),
    receipt    TEXT,
    last_error TEXT
) STRICT;
CREATE INDEX outbox_due ON outbox (due_at) WHERE status = 'pending';

-- Single-use nonces of decision tokens, kept until the token has expired.
CREATE TABLE nonces (
    nonce      BLOB    PRIMARY KEY CHECK (length(nonce) = 16),
    expires_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX nonces_expiry ON nonces (expires_at);

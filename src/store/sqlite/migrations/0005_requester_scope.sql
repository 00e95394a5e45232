-- agent-handoff schema: idempotency keys are scoped by the whole requester; the horizon of
-- forgotten nonces.
--
-- One ticket per (agent, principal, idempotency key): the same agent acting for two people
-- proposes two tickets under one key, and neither can read or block the other's. "No
-- principal" is stored as the empty string, a value of its own (a person id is never empty):
-- a UNIQUE index treats NULLs as distinct, so a NULL here would let one key make two tickets.
--
-- SQLite cannot drop a table's UNIQUE constraint, so the table is rebuilt (the procedure of
-- https://www.sqlite.org/lang_altertable.html#otheralter: foreign keys are off while this
-- runs and checked afterwards by the migration runner).
CREATE TABLE tickets_new (
    id              BLOB    PRIMARY KEY CHECK (length(id) = 16),
    agent           TEXT    NOT NULL,
    -- the principal the agent acts for; '' when it acts on its own
    principal       TEXT    NOT NULL,
    idempotency_key TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    version         INTEGER NOT NULL CHECK (version >= 1),
    digest          BLOB    NOT NULL CHECK (length(digest) = 32),
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    -- when the state changes by time alone (review deadline, grant end, lease end)
    due_at          INTEGER,
    body            TEXT    NOT NULL,
    -- idempotency keys are scoped per requester: agent and principal
    UNIQUE (agent, principal, idempotency_key)
) STRICT;
INSERT INTO tickets_new (id, agent, principal, idempotency_key, state, version, digest,
                         created_at, updated_at, due_at, body)
    SELECT id, agent, coalesce(json_extract(body, '$.requester.principal'), ''),
           idempotency_key, state, version, digest, created_at, updated_at, due_at, body
    FROM tickets;
DROP TABLE tickets;
ALTER TABLE tickets_new RENAME TO tickets;
CREATE INDEX tickets_due ON tickets (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX tickets_state_created ON tickets (state, created_at);
CREATE INDEX tickets_agent_created ON tickets (agent, created_at);
CREATE INDEX tickets_created ON tickets (created_at, id);

-- Nonces are forgotten once expired (Store::prune_nonces). The latest expiry forgotten is kept
-- here, never lowered: a write consuming a nonce that expired at or before it is refused as
-- too late, even after an operator stepped the commit floor back (clock rebase).
CREATE TABLE nonce_horizon (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    forgotten_before INTEGER NOT NULL
) STRICT;

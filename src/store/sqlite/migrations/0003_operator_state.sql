-- agent-handoff schema: operator state that must hold across restarts and across every process
-- sharing the file.

-- Freezes in force (the kill switch). A write guarded by a freeze check reads this table in
-- its own transaction, so it commits either before a freeze or not at all.
CREATE TABLE freezes (
    -- `all`, or `agent:` followed by the agent id
    scope  TEXT    PRIMARY KEY,
    reason TEXT    NOT NULL,
    -- the commit time of the write that set it
    since  INTEGER NOT NULL,
    -- the operator's person id
    by     TEXT
) STRICT, WITHOUT ROWID;

-- Operators' rebases of the commit floor onto the clock. Every writer compares the newest id
-- with the one it last saw: a new one means the floor stepped back, and the writer drops the
-- commit time it remembers.
CREATE TABLE clock_rebases (
    id           INTEGER PRIMARY KEY,
    -- the new floor: the clock's reading at the rebase
    at           INTEGER NOT NULL,
    -- the floor before
    floor_before INTEGER NOT NULL
) STRICT;

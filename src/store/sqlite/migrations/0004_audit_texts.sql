-- agent-handoff schema, version 4: free text and values of audit events, kept beside the chain.

-- The chained event holds a salted commitment of each text under its name; the plaintext
-- (its JSON text) and the salt live here, bounded in size, and can be erased: an erasure drops
-- value and salt and names the `text_erased` event that records it. Not append-only, and not
-- referenced from the chain: a text is trusted only when it opens the commitment the event
-- holds (checked on every read), so an edited row shows as altered, never as evidence.
CREATE TABLE audit_texts (
    seq       INTEGER NOT NULL CHECK (seq >= 1),
    name      TEXT    NOT NULL CHECK (length(name) BETWEEN 1 AND 64),
    value     TEXT    CHECK (value IS NULL OR length(value) <= 1048576),
    salt      BLOB    CHECK (salt IS NULL OR length(salt) = 32),
    erased_by INTEGER,
    CHECK ((value IS NULL) = (salt IS NULL) AND (value IS NULL) = (erased_by IS NOT NULL)),
    PRIMARY KEY (seq, name)
) STRICT;

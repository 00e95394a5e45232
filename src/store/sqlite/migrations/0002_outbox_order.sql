-- agent-handoff schema, version 2: the outbox delivers each ticket's rows per channel in order.

-- A row is claimable only when no earlier row of the same ticket and channel is pending
-- (the card is posted before it is updated or closed), and a close looks up the receipt of
-- the card it closes.
CREATE INDEX outbox_ticket_channel ON outbox (ticket_id, channel);

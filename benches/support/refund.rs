//! The request the store and audit-memory benches propose: a realistic production write, a
//! refund on an order, with a reason and a precondition. One definition, so both benches
//! write the same bytes.

use agent_handoff::action::{ActionRequest, Environment};

/// The refund of order `n` (its idempotency key is unique per `n`).
pub fn request(n: u64) -> ActionRequest {
    ActionRequest::builder("db.row.update", format!("refund-order-{n:012}"))
        .target("postgres://prod/orders")
        .parameters(serde_json::json!({
            "table": "orders",
            "id": format!("{n:012}"),
            "set": { "status": "refunded", "refund_minor_units": 4_999, "currency": "EUR" },
        }))
        .environment(Environment::Production)
        .reason("the customer asked for a refund within the 30-day window (ticket CS-1842)")
        .precondition("orders.status", serde_json::json!("paid"))
        .build()
        .expect("a valid request")
}

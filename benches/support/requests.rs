//! The request mix the policy benches evaluate (included by `benches/policy.rs` and by
//! `crates/bench-peers` with `#[path]`, so both crates bench the same requests).

use agent_handoff::action::{
    ActionRequest, Amount, Environment, Impact, Reversibility, Sensitivity,
};
use serde_json::json;

/// A realistic mix of 32 requests: mostly development reads, then writes, payments, drops,
/// deploys, exports and kinds no rule covers. Shared by `benches/policy.rs` and the peer
/// comparison in `crates/bench-peers`, so both measure the same requests.
pub fn requests(services: usize) -> Vec<ActionRequest> {
    let usd = |a: &str| {
        Impact::new(
            Amount::parse(a).unwrap_or_else(|_| Amount::from_units(0)),
            "USD",
        )
    };
    let mut out = Vec::new();
    for i in 0..32usize {
        let s = (i * 7) % services;
        let base = |kind: String| ActionRequest::builder(kind, "idem-key-0001");
        let request = match i % 16 {
            0..=5 => base(format!("svc{s}.orders.read"))
                .environment(Environment::Development)
                .sensitivity(Sensitivity::Internal)
                .reversibility(Reversibility::Reversible)
                .confidence(0.95),
            6 | 7 => base(format!("svc{s}.orders.write"))
                .environment(Environment::Staging)
                .sensitivity(Sensitivity::Internal)
                .reversibility(Reversibility::Compensable)
                .confidence(if i % 2 == 0 { 0.5 } else { 0.9 }),
            8 => base(format!("svc{s}.payment.send"))
                .environment(Environment::Production)
                .sensitivity(Sensitivity::Confidential)
                .reversibility(Reversibility::Compensable)
                .impact(usd("420.50")),
            9 => base(format!("svc{s}.payment.send"))
                .environment(Environment::Production)
                .impact(usd("25000")),
            10 => base(format!("svc{s}.payment.refund"))
                .environment(Environment::Production)
                .impact(Impact::new(Amount::from_units(80), "GBP")),
            11 => base(format!("svc{s}.table.drop"))
                .environment(Environment::Production)
                .sensitivity(Sensitivity::Regulated),
            12 => base(format!("svc{s}.deploy"))
                .environment(Environment::Production)
                .sensitivity(Sensitivity::Internal)
                .reversibility(Reversibility::Reversible)
                .attribute("team", json!("payments"))
                .attribute("risk", json!(8)),
            13 => base(format!("svc{s}.customers.export"))
                .environment(Environment::Production)
                .sensitivity(Sensitivity::Confidential),
            14 => base("mail.send".to_owned())
                .environment(Environment::Production)
                .sensitivity(Sensitivity::Internal)
                .confidence(0.9),
            _ => base(format!("svc{s}.cache.flush"))
                .environment(Environment::Development)
                .sensitivity(Sensitivity::Public)
                .reversibility(Reversibility::Reversible),
        };
        if let Ok(request) = request.build() {
            out.push(request);
        }
    }
    out
}

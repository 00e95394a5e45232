#!/usr/bin/env python3
"""Writes the seed corpus under fuzz/seeds/<target>/ from the repository's golden vectors and
examples. Run from anywhere: `python3 fuzz/make_seeds.py`. The output is committed (a few
kilobytes); rerun it when a vector or the input layout of a check changes. Python standard
library only. The layouts are documented at the top of each fuzz/checks/<target>.rs."""

import base64
import hashlib
import hmac
import json
import pathlib
import re
import struct

ROOT = pathlib.Path(__file__).resolve().parents[1]
SEEDS = ROOT / "fuzz" / "seeds"
VECTORS = ROOT / "tests" / "vectors"
FF = b"\xff"


def write(target, name, data):
    folder = SEEDS / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def chunk(b):
    assert len(b) < 256
    return bytes([len(b)]) + b


def i64(n):
    return struct.pack(">q", n)


# --- token ---------------------------------------------------------------------------------
tokens = json.loads((VECTORS / "token_v1.json").read_text())
for n, case in enumerate(tokens["cases"]):
    write("token", f"golden-{n}", b"\x00" + case["token"].encode())
write("token", "bad-signature", b"\x00" + tokens["cases"][0]["token"][:-2].encode() + b"AA")
write("token", "not-a-token", b"\x00ah1.AAAA.AAAA")
for n, (key, reviewer) in enumerate([(0, b"alice@example.com"), (1, b""), (0, "é".encode() * 100)]):
    write(
        "token",
        f"mint-{n}",
        b"\x01"
        + bytes([key])
        + chunk(reviewer)
        + bytes(range(16))
        + bytes([n])
        + bytes(range(160, 192))
        + i64(1_700_000_000_000)
        + i64(1_700_000_600_000)
        + bytes(range(16))
        + struct.pack(">H", 40)
        + b"Z",
    )

# --- policies --------------------------------------------------------------------------------
write("policy_toml", "example.toml", (ROOT / "examples" / "policy.toml").read_bytes())
write("policy_json", "example.json", (ROOT / "examples" / "policy.json").read_bytes())
module_doc = (ROOT / "src" / "policy" / "mod.rs").read_text()
doc_toml = re.search(r"//! ```toml\n(.*?)//! ```", module_doc, re.S).group(1)
write("policy_toml", "module-doc.toml", re.sub(r"^//! ?", "", doc_toml, flags=re.M))
write(
    "policy_toml",
    "attributes.toml",
    """version = "fuzz-1"
allow_unreviewed_high_risk = true
default.allow = { grant_ttl = "1h" }

[[rule]]
id = "attrs"
when = { attributes = { team = "payments", tier = ["gold", "platinum"], risk = { at_least = 5, below = 10 } }, confidence_below = 0.8 }
then.review = { approvals = 2, groups = ["a", "b"], deadline = "1d2h", approval_ttl = "90s", veto = false }

[[rule]]
id = "deny-big"
when = { kind = ["payment.**", "*.send"], impact_at_least = { USD = "1000.5", rows = 10 }, sensitivity_at_least = "internal", reversibility = ["irreversible", "compensable"], environment = ["production", "sandbox-1"] }
then.deny = { reason = "too big" }
""",
)
write(
    "policy_json",
    "small.json",
    json.dumps(
        {
            "version": "fuzz-2",
            "default": {"deny": {"reason": "no"}},
            "rule": [
                {
                    "id": "dev",
                    "when": {"environment": ["development"], "reversibility": ["reversible"],
                             "attributes": {"risk": {"at_least": 0, "below": 1}}},
                    "then": {"allow": {"grant_ttl": "5m"}},
                }
            ],
        }
    ),
)

# --- webhook -------------------------------------------------------------------------------
hooks = json.loads((VECTORS / "webhook_standard_v1.json").read_text())
for n, case in enumerate(hooks["cases"]):
    parts = [case["msg_id"], str(case["timestamp"]), case["signature"]]
    body = case["body"].encode()
    write("webhook", f"parts-{n}", b"\x00" + FF.join(p.encode() for p in parts) + FF + body)
    headers = [b"webhook-id", parts[0].encode(), b"Webhook-Timestamp", parts[1].encode(),
               b"WEBHOOK-SIGNATURE", parts[2].encode()]
    write("webhook", f"headers-{n}", b"\x01" + body + FF + FF.join(headers))
    write("webhook", f"secret-{n}", b"\x02" + case["secrets"][-1].encode())
write("webhook", "empty-signature", b"\x00msg_1" + FF + b"1649367553" + FF + b"v1, v1a,abc" + FF + b"{}")
write(
    "webhook",
    "mint",
    b"\x03" + chunk(bytes(range(32))) + chunk(b"msg_27UH4WbU6Z5A5EzD8u03UvzRbpk")
    + i64(1_649_367_553_000) + b"\x02" + struct.pack(">H", 7) + b"x" + b'{"type":"review.requested"}',
)

# --- feishu --------------------------------------------------------------------------------
fs = json.loads((VECTORS / "feishu_crypto.json").read_text())
ca = fs["card_action"]
write("feishu", "card-action", b"\x00\x07" + FF.join(
    [ca["signature"].encode(), ca["timestamp"].encode(), ca["nonce"].encode(), ca["body"].encode()]))
write("feishu", "card-action-dup-ts", b"\x00\x0f" + FF.join(
    [ca["signature"].encode(), ca["timestamp"].encode(), ca["nonce"].encode(), ca["body"].encode()]))
write("feishu", "url-verification", b"\x00\x00" + FF + FF + FF + fs["url_verification"]["body"].encode())
write("feishu", "decrypt-published", b"\x01" + fs["published_decrypt"]["encrypt"].encode())
write("feishu", "decrypt-card", b"\x01" + json.loads(ca["body"])["encrypt"].encode())
for n, bot in enumerate(fs["custom_bot"]):
    write("feishu", f"custom-bot-{n}", b"\x02" + i64(bot["timestamp"]) + bot["secret"].encode())
for n, (flags, plain) in enumerate([
    (1, ca["plaintext"]),
    (0, ca["plaintext"]),
    (1, fs["url_verification"]["plaintext"]),
]):
    write("feishu", f"mint-{n}", b"\x03" + bytes([flags]) + bytes(range(16)) + struct.pack(">I", 1_700_000_000)
          + chunk(ca["nonce"].encode()) + struct.pack(">H", 99) + b"0" + bytes([n]) + plain.encode())

# --- action_json ---------------------------------------------------------------------------
digest_tests = (ROOT / "tests" / "action_digest.rs").read_text()
write("action_json", "vector-2-request.json",
      re.search(r'const VECTOR_2_REQUEST: &str = r#"(.*?)"#;', digest_tests, re.S).group(1))
for name in ["action_digest_v1.json", "action_digest_v1_unicode.json"]:
    write("action_json", name, (VECTORS / name).read_bytes())
write("action_json", "sensitive.json", json.dumps({
    "kind": "payment.send", "idempotency_key": "pay-2024-0001", "targets": ["vendor:acme"],
    "parameters": {"amount": "4200.50", "iban": "DE89370400440532013000", "card": {"pan": "4111", "cvv": 123}},
    "sensitive": ["/iban", "/card", "/card/pan"],
    "environment": "production", "sensitivity": "confidential", "reversibility": "compensable",
    "impact": {"amount": "4200.50", "unit": "USD"}, "confidence": 0.93,
    "justification": {"reason": "invoice", "expected_effect": "paid", "risk_factors": ["new vendor"],
                      "rollback_plan": "refund"},
    "preconditions": {"balance_at_least": "5000"}, "attributes": {"vendor_tier": "new"},
}, indent=1))
write("action_json", "duplicate-key.json", '{"kind": "a", "kind": "b"}')
write("action_json", "syntax.json", '{"a": [1, 2,]\n  "b": 01}')

# --- audit_jsonl ---------------------------------------------------------------------------
GENESIS = hashlib.sha256(b"agent-handoff/audit-chain/v1").digest()
prev, lines = GENESIS, []
for seq in range(1, 4):
    event = json.dumps({"actor": {"type": "system"}, "at": seq, "data": {"i": seq}, "kind": "proposed",
                        "seq": seq, "ticket": None}, separators=(",", ":"), sort_keys=True)
    h = hashlib.sha256(prev + struct.pack(">Q", seq) + event.encode()).digest()
    lines.append(json.dumps({"seq": seq, "prev_hash": prev.hex(), "hash": h.hex(), "event": event},
                            separators=(",", ":")))
    prev = h
write("audit_jsonl", "export-3", b"\x00" + "\n".join(lines).encode() + b"\n")
write("audit_jsonl", "export-gap", b"\x00" + "\n".join([lines[0], lines[2]]).encode() + b"\n")
write("audit_jsonl", "export-blank-crlf", b"\x00" + "\r\n \n".join(lines).encode())
name = "fuzz-2025"
key_id = hashlib.sha256(name.encode() + b"\n\xff" + b"agent-handoff/checkpoint/hmac-sha256").digest()[:4]
note = f"fuzz.example/audit\n3\n{base64.b64encode(prev).decode()}\n"
tag = hmac.new(b"\x5a" * 32, note.encode(), hashlib.sha256).digest()
write("audit_jsonl", "checkpoint", b"\x01" + f"{note}\n\u2014 {name} {base64.b64encode(key_id + tag).decode()}\n".encode())
for n in range(3):
    write("audit_jsonl", f"tamper-{n}", bytes([2, 5]) + bytes(range(n, 200 + n)))

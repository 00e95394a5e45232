//! The policy document as written, before validation: the serde schema shared by TOML and JSON.
//!
//! Everything here is deliberately loose in value (names and durations are plain strings) and
//! strict in shape (unknown fields refused everywhere, duplicate map keys refused), so the
//! compiler can report value errors with a precise field path while serde reports shape errors.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::action::Amount;

/// The whole document. `R` is what each `[[rule]]` is read as: [`RawRule`], or
/// [`IgnoredAny`](serde::de::IgnoredAny) to read the rest of the document alone (each rule is
/// then read on its own, so a mistake in one does not hide the others').
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPolicy<R = RawRule> {
    pub(crate) version: String,
    #[serde(default)]
    pub(crate) allow_unreviewed_high_risk: bool,
    pub(crate) default: RawOutcome,
    #[serde(default = "Vec::new")]
    pub(crate) rule: Vec<R>,
}

/// One `[[rule]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) description: Option<String>,
    #[serde(default)]
    pub(crate) when: RawWhen,
    pub(crate) then: RawOutcome,
}

/// A rule's conditions; every one given must hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWhen {
    #[serde(default)]
    pub(crate) kind: Option<OneOrMany>,
    #[serde(default)]
    pub(crate) environment: Option<OneOrMany>,
    #[serde(default)]
    pub(crate) sensitivity_at_least: Option<String>,
    #[serde(default)]
    pub(crate) impact_at_least: Option<StrictMap<Amount>>,
    #[serde(default)]
    pub(crate) reversibility: Option<OneOrMany>,
    #[serde(default)]
    pub(crate) confidence_below: Option<f64>,
    #[serde(default)]
    pub(crate) attributes: Option<StrictMap<RawAttribute>>,
}

/// `allow`, `review` or `deny` (exactly one must be present; the compiler checks).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOutcome {
    #[serde(default)]
    pub(crate) allow: Option<RawAllow>,
    #[serde(default)]
    pub(crate) review: Option<RawReview>,
    #[serde(default)]
    pub(crate) deny: Option<RawDeny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAllow {
    pub(crate) grant_ttl: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawReview {
    pub(crate) approvals: u32,
    pub(crate) groups: OneOrMany,
    pub(crate) deadline: String,
    pub(crate) approval_ttl: String,
    #[serde(default)]
    pub(crate) veto: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDeny {
    pub(crate) reason: String,
}

/// A string or a list of strings (`kind = "payment.*"` or `kind = ["payment.*", "*.read"]`).
#[derive(Debug)]
pub(crate) struct OneOrMany {
    pub(crate) items: Vec<String>,
    /// Written as a list (so error paths carry an index).
    pub(crate) list: bool,
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany {
                    items: vec![v.to_owned()],
                    list: false,
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    items.push(item);
                }
                Ok(OneOrMany { items, list: true })
            }
        }
        d.deserialize_any(V)
    }
}

/// A map with string keys that refuses duplicate keys (JSON allows them; we do not).
#[derive(Debug)]
pub(crate) struct StrictMap<V>(pub(crate) BTreeMap<String, V>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for StrictMap<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = StrictMap<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StrictMap<T>, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    if out.contains_key(&key) {
                        return Err(de::Error::custom(format_args!("duplicate key `{key}`")));
                    }
                    let value = map.next_value::<T>()?;
                    out.insert(key, value);
                }
                Ok(StrictMap(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// A scalar an attribute is compared with.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RawScalar {
    Str(String),
    Int(i64),
    Bool(bool),
}

impl RawScalar {
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            RawScalar::Str(_) => "string",
            RawScalar::Int(_) => "integer",
            RawScalar::Bool(_) => "boolean",
        }
    }
}

/// A number a threshold is written with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum RawNumber {
    Int(i64),
    Float(f64),
}

/// The condition on one custom attribute.
#[derive(Debug)]
pub(crate) enum RawAttribute {
    /// `team = "payments"`: equality.
    Equals(RawScalar),
    /// `tier = ["gold", "platinum"]`: membership.
    OneOf(Vec<RawScalar>),
    /// `risk = { at_least = 5, below = 10 }`: numeric thresholds.
    Range {
        at_least: Option<RawNumber>,
        below: Option<RawNumber>,
    },
}

const SCALAR_EXPECTED: &str = "a string, an integer or a boolean";

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = RawScalar;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(SCALAR_EXPECTED)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawScalar, E> {
        Ok(RawScalar::Str(v.to_owned()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawScalar, E> {
        Ok(RawScalar::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawScalar, E> {
        i64::try_from(v)
            .map(RawScalar::Int)
            .map_err(|_| E::custom(format_args!("integer {v} is too large")))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawScalar, E> {
        Ok(RawScalar::Bool(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawScalar, E> {
        Err(E::custom(format_args!(
            "attribute values compared for equality are never floats (got {v}); use `at_least` / `below` for numeric thresholds"
        )))
    }
}

impl<'de> Deserialize<'de> for RawScalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

struct NumberVisitor;

impl<'de> Visitor<'de> for NumberVisitor {
    type Value = RawNumber;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawNumber, E> {
        Ok(RawNumber::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawNumber, E> {
        i64::try_from(v)
            .map(RawNumber::Int)
            .map_err(|_| E::custom(format_args!("integer {v} is too large")))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawNumber, E> {
        if v.is_finite() {
            Ok(RawNumber::Float(v))
        } else {
            Err(E::custom("thresholds must be finite numbers"))
        }
    }
}

impl<'de> Deserialize<'de> for RawNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NumberVisitor)
    }
}

impl<'de> Deserialize<'de> for RawAttribute {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawAttribute;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a string, integer or boolean (equality), a list of them (membership), or a table with `at_least` and/or `below`",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawAttribute, E> {
                ScalarVisitor.visit_str(v).map(RawAttribute::Equals)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawAttribute, E> {
                ScalarVisitor.visit_i64(v).map(RawAttribute::Equals)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawAttribute, E> {
                ScalarVisitor.visit_u64(v).map(RawAttribute::Equals)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawAttribute, E> {
                ScalarVisitor.visit_bool(v).map(RawAttribute::Equals)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawAttribute, E> {
                ScalarVisitor.visit_f64(v).map(RawAttribute::Equals)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawAttribute, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<RawScalar>()? {
                    items.push(item);
                }
                Ok(RawAttribute::OneOf(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawAttribute, A::Error> {
                let mut at_least = None;
                let mut below = None;
                while let Some(key) = map.next_key::<String>()? {
                    let slot = match key.as_str() {
                        "at_least" => &mut at_least,
                        "below" => &mut below,
                        other => {
                            return Err(de::Error::unknown_field(other, &["at_least", "below"]))
                        }
                    };
                    if slot.is_some() {
                        return Err(de::Error::duplicate_field(if key == "below" {
                            "below"
                        } else {
                            "at_least"
                        }));
                    }
                    *slot = Some(map.next_value::<RawNumber>()?);
                }
                Ok(RawAttribute::Range { at_least, below })
            }
        }
        d.deserialize_any(V)
    }
}

//! The structured facts policy rules match on.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Where the action takes effect.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Environment {
    /// A developer's environment.
    Development,
    /// Pre-production.
    Staging,
    /// Production.
    Production,
    /// Any other named environment (lowercase ASCII letters, digits, `-`, `_`).
    Custom(String),
}

impl Environment {
    /// The name used in documents and digests (`production`, or the custom name).
    pub fn as_str(&self) -> &str {
        match self {
            Environment::Development => "development",
            Environment::Staging => "staging",
            Environment::Production => "production",
            Environment::Custom(name) => name,
        }
    }

    /// Parses a name; the three well-known names map to their variants.
    pub fn parse(name: &str) -> Result<Self, String> {
        Ok(match name {
            "development" => Environment::Development,
            "staging" => Environment::Staging,
            "production" => Environment::Production,
            other => {
                let ok = !other.is_empty()
                    && other.len() <= 64
                    && other.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                    });
                if !ok {
                    return Err(format!(
                        "environment `{other}` must be 1 to 64 lowercase ASCII letters, digits, `-` or `_`"
                    ));
                }
                Environment::Custom(other.to_owned())
            }
        })
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Environment {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Environment {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Environment::parse(&name).map_err(serde::de::Error::custom)
    }
}

/// How sensitive the data the action touches is. Ordered: `Public < Internal < Confidential <
/// Regulated`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sensitivity {
    /// Public data.
    Public,
    /// Internal data.
    Internal,
    /// Confidential data (customer data, secrets of the business).
    Confidential,
    /// Regulated data (health, payment cards, personal data under law).
    Regulated,
}

impl Sensitivity {
    /// The name used in documents and digests.
    pub fn as_str(self) -> &'static str {
        match self {
            Sensitivity::Public => "public",
            Sensitivity::Internal => "internal",
            Sensitivity::Confidential => "confidential",
            Sensitivity::Regulated => "regulated",
        }
    }
}

/// Whether the effect can be undone. Ordered by severity: `Reversible < Compensable <
/// Irreversible`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reversibility {
    /// Can be undone exactly (e.g. a soft delete).
    Reversible,
    /// Can be compensated by another action (e.g. a refund for a payment).
    Compensable,
    /// Cannot be undone (e.g. dropping a table without a backup, a public post).
    Irreversible,
}

impl Reversibility {
    /// The name used in documents and digests.
    pub fn as_str(self) -> &'static str {
        match self {
            Reversibility::Reversible => "reversible",
            Reversibility::Compensable => "compensable",
            Reversibility::Irreversible => "irreversible",
        }
    }
}

/// An exact, non-negative decimal amount. Never a float: parsed from a decimal string
/// (`"4200.50"`) or a JSON integer (minor units, when the unit says so).
///
/// Kept in normal form — no leading zeros in the integer part, no trailing zeros in the
/// fraction, no trailing `.` — so `"4200.50"` and `"4200.5"` are the same amount and encode
/// the same way in digests. Comparison is exact.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Amount {
    /// Integer digits, no leading zeros (`"0"` for zero).
    int: String,
    /// Fraction digits, no trailing zeros (may be empty).
    frac: String,
}

/// Most digits an [`Amount`] may have in total.
pub const MAX_AMOUNT_DIGITS: usize = 40;

impl Amount {
    /// Parses `digits[.digits]`. Signs, exponents, spaces and more than
    /// [`MAX_AMOUNT_DIGITS`] digits are refused.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (int, frac) = match text.split_once('.') {
            Some((i, f)) => (i, f),
            None => (text, ""),
        };
        let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if int.is_empty() || !digits_only(int) || !digits_only(frac) || text.ends_with('.') {
            return Err(format!(
                "amount `{}` is not a non-negative decimal such as `4200.50`",
                text.chars().take(48).collect::<String>()
            ));
        }
        if int.len() + frac.len() > MAX_AMOUNT_DIGITS {
            return Err(format!("amount has more than {MAX_AMOUNT_DIGITS} digits"));
        }
        let int = int.trim_start_matches('0');
        let frac = frac.trim_end_matches('0');
        Ok(Self {
            int: if int.is_empty() {
                "0".into()
            } else {
                int.into()
            },
            frac: frac.into(),
        })
    }

    /// From an integer count of units (e.g. minor units).
    pub fn from_units(units: u64) -> Self {
        Self {
            int: units.to_string(),
            frac: String::new(),
        }
    }

    /// Whether the amount is zero.
    pub fn is_zero(&self) -> bool {
        self.int == "0" && self.frac.is_empty()
    }
}

impl Ord for Amount {
    fn cmp(&self, other: &Self) -> Ordering {
        self.int
            .len()
            .cmp(&other.int.len())
            .then_with(|| self.int.cmp(&other.int))
            .then_with(|| self.frac.cmp(&other.frac))
    }
}

impl PartialOrd for Amount {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.frac.is_empty() {
            f.write_str(&self.int)
        } else {
            write!(f, "{}.{}", self.int, self.frac)
        }
    }
}

impl fmt::Debug for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Amount({self})")
    }
}

impl std::str::FromStr for Amount {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Amount {
    /// Always the normal-form decimal string.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Amount;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a decimal string such as \"4200.50\" or a non-negative integer")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Amount, E> {
                Amount::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Amount, E> {
                Ok(Amount::from_units(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Amount, E> {
                u64::try_from(v)
                    .map(Amount::from_units)
                    .map_err(|_| E::custom("amount must not be negative"))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Amount, E> {
                Err(E::custom(
                    "amounts are never floats: use a decimal string such as \"4200.50\" or integer minor units",
                ))
            }
        }
        d.deserialize_any(V)
    }
}

/// The most the action can move or destroy, in one unit (`USD`, `EUR_cents`, `rows`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Impact {
    /// The amount.
    pub amount: Amount,
    /// The unit; policy thresholds are per unit and compared only within one unit.
    pub unit: String,
}

impl Impact {
    /// An impact of `amount` `unit`s.
    pub fn new(amount: Amount, unit: impl Into<String>) -> Self {
        Self {
            amount,
            unit: unit.into(),
        }
    }
}

/// The agent's own confidence in the action, in `0.0..=1.0`.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize)]
#[serde(transparent)]
pub struct Confidence(f64);

impl Confidence {
    /// Validates `0.0 <= value <= 1.0` (NaN refused).
    pub fn new(value: f64) -> Result<Self, String> {
        if (0.0..=1.0).contains(&value) {
            Ok(Self(value))
        } else {
            Err(format!("confidence {value} is outside 0..=1"))
        }
    }

    /// The value.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Confidence {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Confidence::new(f64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// Why the agent wants the action. Shown to reviewers and recorded; **not** part of the action
/// digest (it does not change what is executed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Justification {
    /// Why the action is needed.
    #[serde(default)]
    pub reason: String,
    /// What the agent expects to happen.
    #[serde(default)]
    pub expected_effect: String,
    /// What could go wrong.
    #[serde(default)]
    pub risk_factors: Vec<String>,
    /// How to undo or compensate, if possible.
    #[serde(default)]
    pub rollback_plan: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_compare_exactly() {
        let a = |s: &str| Amount::parse(s).unwrap();
        assert_eq!(a("4200.50"), a("04200.5"));
        assert!(a("10") > a("9.999"));
        assert!(a("0.1") < a("0.10001"));
        assert_eq!(a("000"), Amount::from_units(0));
        assert_eq!(a("12.300").to_string(), "12.3");
        for bad in ["", ".5", "5.", "-1", "1e3", " 1", "1,5", "0x10"] {
            assert!(Amount::parse(bad).is_err(), "{bad} accepted");
        }
        assert!(serde_json::from_str::<Amount>("12.5").is_err());
        assert_eq!(serde_json::from_str::<Amount>("125").unwrap(), a("125"));
    }

    #[test]
    fn orders_are_by_severity() {
        assert!(Sensitivity::Public < Sensitivity::Regulated);
        assert!(Reversibility::Compensable < Reversibility::Irreversible);
        assert!(Confidence::new(1.5).is_err());
        assert!(Confidence::new(f64::NAN).is_err());
        assert_eq!(
            Environment::parse("eu-prod").unwrap(),
            Environment::Custom("eu-prod".into())
        );
        assert!(Environment::parse("Prod!").is_err());
    }
}

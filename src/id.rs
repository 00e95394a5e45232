//! Identifier newtypes, so a ticket id can never be passed where a reviewer id is expected.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Identifies one review ticket. A UUID v7 (time ordered), minted by the facade; the pure core
/// never creates one by itself.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TicketId(Uuid);

impl TicketId {
    /// Wraps an existing UUID.
    pub const fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// The UUID inside.
    pub const fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl fmt::Debug for TicketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TicketId({})", self.0)
    }
}

impl fmt::Display for TicketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::str::FromStr for TicketId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// Error for a string identifier that is empty, too long or contains control characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} `{value}`: {problem}")]
pub struct InvalidId {
    /// Which identifier (e.g. `agent id`).
    pub what: &'static str,
    /// The rejected value (cut to 64 characters).
    pub value: String,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl InvalidId {
    /// The stable code (see [`codes`](crate::codes)).
    pub fn code(&self) -> crate::codes::Code {
        crate::codes::INVALID_ID
    }
}

/// Longest string identifier accepted, in bytes.
pub const MAX_ID_LEN: usize = 256;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps an identifier: 1 to [`MAX_ID_LEN`] bytes, no control
            /// characters, no leading or trailing whitespace.
            pub fn new(value: impl Into<String>) -> Result<Self, InvalidId> {
                let value = value.into();
                check_string_id($what, &value)?;
                Ok(Self(value))
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:?})"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = InvalidId;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let value = String::deserialize(d)?;
                Self::new(value).map_err(serde::de::Error::custom)
            }
        }
    };
}

fn check_string_id(what: &'static str, value: &str) -> Result<(), InvalidId> {
    let problem = if value.is_empty() {
        Some("must not be empty")
    } else if value.len() > MAX_ID_LEN {
        Some("longer than 256 bytes")
    } else if value.chars().any(char::is_control) {
        Some("contains a control character")
    } else if value.trim() != value {
        Some("has leading or trailing whitespace")
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(problem) => Err(InvalidId {
            what,
            value: value.chars().take(64).collect(),
            problem,
        }),
    }
}

string_id!(
    /// The agent that proposes actions, as named by the host application (never by the model).
    AgentId,
    "agent id"
);

string_id!(
    /// A person in the reviewer directory. Reviewers and the human principal an agent acts for
    /// live in this one namespace, so one human with two credentials counts once and
    /// self-approval is caught across channels.
    PersonId,
    "person id"
);

string_id!(
    /// A reviewer group in the directory (`dba`, `finance`).
    GroupName,
    "group name"
);

string_id!(
    /// The id of a policy rule, unique within a policy document.
    RuleId,
    "rule id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_ids_are_validated() {
        assert!(AgentId::new("billing-agent").is_ok());
        assert_eq!(AgentId::new("").unwrap_err().problem, "must not be empty");
        assert!(PersonId::new(" alice").is_err());
        assert!(GroupName::new("db\na").is_err());
        assert!(RuleId::new("x".repeat(257)).is_err());
        assert!(serde_json::from_str::<PersonId>("\"\"").is_err());
    }
}

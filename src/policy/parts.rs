//! Reading a document part by part, after it did not read whole: the top level on its own,
//! then each rule on its own, so a shape mistake in one part (an unknown field, a missing
//! one, a wrong type) does not hide the mistakes in the others.

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Deserialize as _;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::compile;
use super::document::{RawPolicy, RawRule};
use super::error::{self, PolicyError, Problems};
use super::locate::{FieldPath, SpanIndex};
use super::Format;

/// Every problem of a document whose whole reading failed with `whole` (a shape error, not a
/// syntax error): the shape errors of its parts, and the value problems of the parts that do
/// read. Returns them with the count of problems not reported.
pub(super) fn problems(
    text: &str,
    format: Format,
    whole: PolicyError,
) -> (Vec<PolicyError>, usize) {
    let (index, top, rules) = match format {
        Format::Toml => {
            let index = SpanIndex::toml(text);
            let (top, rules) = toml_parts(text, &index);
            (index, top, rules)
        }
        Format::Json => {
            let index = SpanIndex::json(text);
            let (top, rules) = json_parts(text, &index);
            (index, top, rules)
        }
    };
    let mut errors = Vec::new();
    let top = top.map_err(|e| errors.push(e)).ok();
    let total = rules.len();
    let mut parsed = Vec::with_capacity(total);
    // The ids of rules that did not read still count as taken.
    let mut unread_ids = Vec::new();
    for (i, rule) in rules.into_iter().enumerate() {
        match rule {
            Ok(rule) => parsed.push((i, rule)),
            Err(e) => {
                errors.push(e);
                unread_ids.extend(index.rule_id(i).map(|id| (i, id)));
            }
        }
    }
    // A part that does not read as text at all means the parts were cut wrong: trust the
    // whole document's error. So does finding no shape error where the whole found one.
    if errors.is_empty()
        || errors
            .iter()
            .any(|e| matches!(e, PolicyError::Syntax { .. }))
    {
        errors = vec![whole];
    }
    let mut found = Problems::default();
    compile::check_parts(top, parsed, unread_ids, total, &mut found);
    let (located, more) = found.locate(text, &index);
    errors.extend(located);
    (errors, more)
}

type Parts = (
    Result<RawPolicy<IgnoredAny>, PolicyError>,
    Vec<Result<RawRule, PolicyError>>,
);

fn toml_parts(text: &str, index: &SpanIndex) -> Parts {
    let top = toml::from_str::<RawPolicy<IgnoredAny>>(text)
        .map_err(|e| error::toml_error(text, index, &e, false));
    let rules = match DeTable::parse(text) {
        Ok(root) => match root
            .get_ref()
            .iter()
            .find(|(k, _)| k.get_ref() == "rule")
            .map(|(_, v)| v.get_ref())
        {
            Some(DeValue::Array(items)) => items
                .iter()
                .map(|item| {
                    RawRule::deserialize(ValueDeserializer::from(item.clone()))
                        .map_err(|e| error::toml_error(text, index, &e, false))
                })
                .collect(),
            _ => Vec::new(),
        },
        Err(_) => Vec::new(),
    };
    (top, rules)
}

fn json_parts(text: &str, index: &SpanIndex) -> Parts {
    let top = serde_json::from_str::<RawPolicy<IgnoredAny>>(text)
        .map_err(|e| error::json_error(text, index, &e, 0));
    let rule_path = FieldPath::root().key("rule");
    let mut rules = Vec::new();
    while let Some(span) = index.value_span(&rule_path.index(rules.len())) {
        rules.push(json_part(text, index, span.start, span.end));
    }
    (top, rules)
}

fn json_part<T: DeserializeOwned>(
    text: &str,
    index: &SpanIndex,
    start: usize,
    end: usize,
) -> Result<T, PolicyError> {
    let part = text.get(start..end).unwrap_or_default();
    serde_json::from_str(part).map_err(|e| error::json_error(text, index, &e, start))
}

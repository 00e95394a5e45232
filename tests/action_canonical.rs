//! RFC 8785 canonical JSON through the public API: numbers against V8, and the parser's
//! agreement with the canonical writer.

use agent_handoff::action::{canonical_json, parse_strict_json};
use serde_json::Value;

const V8_NUMBERS: &str = include_str!("vectors/es6_numbers_v8.txt");

#[test]
fn numbers_serialise_as_v8_prints_them() {
    let mut checked = 0;
    for line in V8_NUMBERS.lines() {
        let (bits, expected) = line.split_once(' ').unwrap();
        let x = f64::from_bits(u64::from_str_radix(bits, 16).unwrap());
        let ours = canonical_json(&Value::from(x));
        assert_eq!(std::str::from_utf8(&ours).unwrap(), expected, "bits {bits}");
        // V8's text, read strictly and canonicalised, is itself (a fixed point).
        let reread = canonical_json(&parse_strict_json(expected).unwrap());
        assert_eq!(
            std::str::from_utf8(&reread).unwrap(),
            expected,
            "bits {bits}"
        );
        checked += 1;
    }
    assert!(checked > 3900, "only {checked} vectors");
}

#[test]
fn rfc_8785_section_3_2_2_example() {
    // The input and output of RFC 8785 section 3.2.2 (sorting, numbers and string escapes).
    let input = r#"{
  "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
  "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
  "literals": [null, true, false]
}"#;
    let expected = "{\"literals\":[null,true,false],\"numbers\":[333333333.3333333,1e+30,4.5,0.002,1e-27],\"string\":\"€$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"}";
    let out = canonical_json(&parse_strict_json(input).unwrap());
    assert_eq!(std::str::from_utf8(&out).unwrap(), expected);
}

#[test]
fn rfc_8785_section_3_2_3_sorting_example() {
    let input = r#"{
  "\u20ac": "Euro Sign",
  "\r": "Carriage Return",
  "\ufb33": "Hebrew Letter Dalet With Dagesh",
  "1": "One",
  "\ud83d\ude00": "Emoji: Grinning Face",
  "\u0080": "Control",
  "\u00f6": "Latin Small Letter O With Diaeresis"
}"#;
    let value = parse_strict_json(input).unwrap();
    let out = String::from_utf8(canonical_json(&value)).unwrap();
    let order: Vec<String> = out
        .split("\":\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_owned())
        .collect();
    assert_eq!(
        order,
        [
            "Carriage Return",
            "One",
            "Control",
            "Latin Small Letter O With Diaeresis",
            "Euro Sign",
            "Emoji: Grinning Face",
            "Hebrew Letter Dalet With Dagesh"
        ]
    );
    assert!(out.starts_with("{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\""));
}

//! Durations in policy documents: `"90s"`, `"30m"`, `"1h"`, `"2d"`, `"1h30m"`.
//!
//! One or more groups of decimal digits followed by a unit — `d` (days), `h`, `m`, `s` — with
//! units in that order and each at most once. No spaces, signs or fractions.

use std::time::Duration;

const UNITS: [(u8, u64); 4] = [(b'd', 86_400), (b'h', 3_600), (b'm', 60), (b's', 1)];

/// Parses a policy duration; the error says what is wrong.
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "duration `{}` is not like `90s`, `30m`, `1h`, `2d` or `1h30m`",
            text.chars().take(32).collect::<String>()
        )
    };
    if text.is_empty() {
        return Err(bad());
    }
    let bytes = text.as_bytes();
    let mut total: u64 = 0;
    let mut next_unit = 0; // index into UNITS: units must come in descending order
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == start || i - start > 9 || i == bytes.len() {
            return Err(bad());
        }
        let number: u64 = text[start..i].parse().map_err(|_| bad())?;
        let unit = bytes[i];
        i += 1;
        let Some(pos) = UNITS[next_unit..].iter().position(|(u, _)| *u == unit) else {
            return Err(bad());
        };
        let seconds = UNITS[next_unit + pos].1;
        next_unit += pos + 1;
        total = number
            .checked_mul(seconds)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(bad)?;
    }
    Ok(Duration::from_secs(total))
}

/// Formats a whole-second duration the way documents write it (`1h30m`, `0s`).
pub(crate) fn format(duration: Duration) -> String {
    let mut secs = duration.as_secs();
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in UNITS {
        if secs >= size {
            out.push_str(&(secs / size).to_string());
            out.push(char::from(unit));
            secs %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_compounds() {
        assert_eq!(parse("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("30m"), Ok(Duration::from_secs(1_800)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3_600)));
        assert_eq!(parse("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse("1d2h3m4s"), Ok(Duration::from_secs(93_784)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn refuses_everything_else() {
        for bad in [
            "",
            "30",
            "m",
            "1.5h",
            "-1m",
            "1 h",
            "1H",
            "30m1h",
            "1h1h",
            "1w",
            "1000000000s",
            "1hm",
            " 1m",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn formats_back() {
        for text in ["90s", "1m30s", "30m", "1h30m", "2d", "1d2h3m4s"] {
            let d = parse(text).unwrap();
            assert_eq!(parse(&format(d)), Ok(d));
        }
        assert_eq!(format(Duration::from_secs(5_400)), "1h30m");
        assert_eq!(format(Duration::ZERO), "0s");
    }
}

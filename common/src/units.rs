//! Parsers for human-written sizes (`10GiB`) and rates (`500/s`).

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("invalid size {input:?}: {reason}")]
    Size { input: String, reason: String },
    #[error("invalid rate {input:?}: {reason}")]
    Rate { input: String, reason: String },
}

const SIZE_UNITS: &[(&str, u64)] = &[
    ("", 1),
    ("B", 1),
    ("K", 1 << 10),
    ("KiB", 1 << 10),
    ("M", 1 << 20),
    ("MiB", 1 << 20),
    ("G", 1 << 30),
    ("GiB", 1 << 30),
    ("T", 1 << 40),
    ("TiB", 1 << 40),
    ("P", 1 << 50),
    ("PiB", 1 << 50),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
    ("PB", 1_000_000_000_000_000),
];

/// A byte count: an integer with an optional unit — binary (`KiB`, `MiB`, `GiB`, `TiB`,
/// `PiB`, or `K`/`M`/`G`/`T`/`P`) or decimal (`KB`, `MB`, `GB`, `TB`, `PB`).
pub fn parse_size(input: &str) -> Result<u64, UnitError> {
    let err = |reason: String| UnitError::Size {
        input: input.to_string(),
        reason,
    };
    let s = input.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = (&s[..split], s[split..].trim());
    if digits.is_empty() {
        return Err(err("expected a whole number, like 10GiB or 4096".into()));
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| err(format!("{digits} is too large")))?;
    let (_, mult) = SIZE_UNITS.iter().find(|(u, _)| *u == unit).ok_or_else(|| {
        err(format!(
            "unknown unit {unit:?} (use B, KiB, MiB, GiB, TiB, PiB, KB, MB, GB, TB or PB)"
        ))
    })?;
    n.checked_mul(*mult)
        .ok_or_else(|| err("does not fit in 64 bits".into()))
}

/// Creations per second: `N`, `N/s`, or `N/min` (a whole number per second).
pub fn parse_rate(input: &str) -> Result<u32, UnitError> {
    let err = |reason: String| UnitError::Rate {
        input: input.to_string(),
        reason,
    };
    let s = input.trim();
    let (num, per) = match s.split_once('/') {
        Some((n, p)) => (n.trim(), p.trim()),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| err("expected a whole number, like 500/s".into()))?;
    let per_sec = match per {
        "s" | "sec" => n,
        "min" if n.is_multiple_of(60) => n / 60,
        "min" => return Err(err(format!("{n}/min is not a whole number per second"))),
        other => return Err(err(format!("unknown period {other:?} (use /s or /min)"))),
    };
    u32::try_from(per_sec).map_err(|_| err("too large".into()))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10GiB"), Ok(10 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("2 MB"), Ok(2_000_000));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        for bad in [
            "10XiB",
            "",
            "GiB",
            "-1",
            "1.5GiB",
            "99999999999999999999",
            "16777216TiB",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
        let msg = parse_size("10XiB").unwrap_err().to_string();
        assert!(msg.contains("10XiB") && msg.contains("XiB"), "{msg}");
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("500/s"), Ok(500));
        assert_eq!(parse_rate("500"), Ok(500));
        assert_eq!(parse_rate("600/min"), Ok(10));
        for bad in ["", "x/s", "5/h", "61/min", "-3/s", "99999999999/s"] {
            assert!(parse_rate(bad).is_err(), "{bad:?} accepted");
        }
    }

    /// Inputs near the grammar: numbers (some huge), units real and not, separators, junk.
    fn size_like() -> impl Strategy<Value = String> {
        let number = prop_oneof![
            (0u64..100_000).prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            "[0-9]{15,30}",
            "-?[0-9]{0,4}(\\.[0-9]{0,3})?",
        ];
        let unit = prop_oneof![
            Just(String::new()),
            proptest::sample::select(vec![
                "B", "K", "KB", "KiB", "M", "MB", "MiB", "G", "GB", "GiB", "T", "TB", "TiB", "/s",
                "/min", "/h", "/", "kib", "XiB",
            ])
            .prop_map(String::from),
            ".{0,4}",
        ];
        (number, "[ \t]{0,2}", unit, ".{0,2}")
            .prop_map(|(n, sp, u, junk)| format!("{n}{sp}{u}{junk}"))
    }

    /// Fuzz target: the size and rate parsers never panic, an error names the input, and a
    /// size that parses is the number times its unit.
    #[test]
    fn fuzz_size_and_rate_parsers() {
        crate::fuzz::run_for(
            "size/rate parsers",
            prop_oneof![size_like(), ".{0,24}"],
            |s| {
                for result in [parse_size(&s), parse_rate(&s).map(u64::from)] {
                    if let Err(e) = result {
                        let msg = e.to_string();
                        let named = [s.as_str(), s.trim()]
                            .iter()
                            .any(|v| msg.contains(v) || msg.contains(&format!("{v:?}")));
                        prop_assert!(named, "error {msg:?} does not name {s:?}");
                    }
                }
                if let (Ok(n), Some(digits)) = (parse_size(&s), s.trim().strip_suffix("KiB"))
                    && let Ok(d) = digits.trim().parse::<u64>()
                {
                    prop_assert_eq!(Some(n), d.checked_mul(1024));
                }
                Ok(())
            },
        );
    }

    proptest! {
        #[test]
        fn sizes_round_trip(n in 0u64..(1 << 40)) {
            prop_assert_eq!(parse_size(&format!("{n}KiB")), Ok(n << 10));
        }
    }
}

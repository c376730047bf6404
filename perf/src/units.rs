//! Parsing of sizes (`256MiB`, `2GiB`, `4096`) and durations (`5ms`, `2s`).

use std::time::Duration;

/// A size or a duration that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnitError {
    /// A size with a suffix that is not a unit.
    #[error("size {input:?}: unknown unit {unit:?} (use B, KiB, MiB, GiB, TiB, PiB or EiB)")]
    SizeUnit {
        /// What was given.
        input: String,
        /// The suffix.
        unit: String,
    },
    /// A size whose number does not parse.
    #[error("size {0:?} is not a number with a unit, e.g. 256MiB")]
    SizeNumber(String),
    /// A size that is negative or beyond `u64`.
    #[error("size {0:?} is out of range")]
    SizeRange(String),
    /// A duration whose number does not parse.
    #[error("duration {0:?} is not a number with a unit, e.g. 5ms")]
    DurationNumber(String),
    /// A duration without a unit.
    #[error("duration {0:?} needs a unit: ns, us, ms or s")]
    DurationNoUnit(String),
    /// A duration with a suffix that is not a unit.
    #[error("duration {input:?}: unknown unit {unit:?} (use ns, us, ms or s)")]
    DurationUnit {
        /// What was given.
        input: String,
        /// The suffix.
        unit: String,
    },
    /// A duration that is negative or too long.
    #[error("duration {0:?} is out of range")]
    DurationRange(String),
    /// A list of sizes that is empty, has a zero, or is a bad range.
    #[error("size list {input:?}: {reason} (e.g. 32MiB,128MiB,1GiB or 32MiB..1GiB:8)")]
    SizeList {
        /// What was given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Most sizes a list may expand to.
pub const MAX_SIZE_LIST: usize = 256;

/// Parses a list of sizes: comma-separated (`32MiB,128MiB,1GiB`), or a
/// range with a number of steps, spaced geometrically, both ends included
/// (`32MiB..1GiB:8`). Sizes come back sorted, without duplicates; `0` is
/// allowed (for "none") only where `zero_ok`.
pub fn parse_size_list(s: &str, zero_ok: bool) -> Result<Vec<u64>, UnitError> {
    let bad = |reason: &str| UnitError::SizeList {
        input: s.into(),
        reason: reason.into(),
    };
    let mut v = if let Some((range, steps)) = s.split_once(':') {
        let (lo, hi) = range
            .split_once("..")
            .ok_or_else(|| bad("a range is LOW..HIGH:STEPS"))?;
        let (lo, hi) = (parse_size(lo)?, parse_size(hi)?);
        let steps: usize = steps
            .trim()
            .parse()
            .map_err(|_| bad("STEPS is not a whole number"))?;
        if lo == 0 || hi < lo || !(2..=MAX_SIZE_LIST).contains(&steps) {
            return Err(bad(&format!(
                "needs 0 < LOW <= HIGH and 2..={MAX_SIZE_LIST} steps"
            )));
        }
        let f = (hi as f64 / lo as f64).powf(1.0 / (steps - 1) as f64);
        (0..steps)
            .map(|i| {
                if i + 1 == steps {
                    hi
                } else {
                    (lo as f64 * f.powi(i as i32)).round() as u64
                }
            })
            .collect::<Vec<_>>()
    } else {
        let parts: Vec<&str> = s.split(',').collect();
        if parts.len() > MAX_SIZE_LIST {
            return Err(bad(&format!("more than {MAX_SIZE_LIST} sizes")));
        }
        parts
            .into_iter()
            .map(|p| match p.trim() {
                "none" => Ok(0),
                p => parse_size(p),
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    if v.is_empty() {
        return Err(bad("no sizes"));
    }
    if !zero_ok && v.contains(&0) {
        return Err(bad("a size of 0"));
    }
    v.sort_unstable();
    v.dedup();
    Ok(v)
}

/// Splits `"256MiB"` into `("256", "MiB")`, trimmed.
fn number_and_unit(s: &str) -> (&str, &str) {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    (num, unit.trim())
}

/// Parses a byte size with an optional suffix: B, KiB, MiB, GiB, TiB, PiB,
/// EiB (binary) or K, M, G, T, P, E (also binary), case-insensitive. Whole
/// numbers are exact; a size beyond `u64` is an error, never a wrap.
pub fn parse_size(s: &str) -> Result<u64, UnitError> {
    let (num, unit) = number_and_unit(s);
    let shift: u32 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" | "kb" => 10,
        "m" | "mib" | "mb" => 20,
        "g" | "gib" | "gb" => 30,
        "t" | "tib" | "tb" => 40,
        "p" | "pib" | "pb" => 50,
        "e" | "eib" | "eb" => 60,
        u => {
            return Err(UnitError::SizeUnit {
                input: s.into(),
                unit: u.into(),
            })
        }
    };
    let range = || UnitError::SizeRange(s.into());
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(1 << shift).ok_or_else(range);
    }
    let n: f64 = num.parse().map_err(|_| UnitError::SizeNumber(s.into()))?;
    let bytes = n * (1u64 << shift) as f64;
    // 2^64 itself is out of range (`u64::MAX as f64` rounds up to it).
    if !bytes.is_finite() || bytes < 0.0 || bytes >= u64::MAX as f64 {
        return Err(range());
    }
    Ok(bytes as u64)
}

/// A size as [`parse_size`] reads it back: the largest binary unit that
/// divides it, e.g. `8GiB`, `1536KiB`, `100B`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    for (i, u) in UNITS.iter().enumerate().rev() {
        let shift = 10 * (i as u32 + 1);
        if bytes != 0 && bytes.trailing_zeros() >= shift {
            return format!("{}{u}", bytes >> shift);
        }
    }
    format!("{bytes}B")
}

/// A size for people: as [`format_size`] where that is a whole number of
/// units, else the largest unit it fills, to one decimal (`45.3MiB`).
pub fn format_size_rounded(bytes: u64) -> String {
    let exact = format_size(bytes);
    if exact.ends_with("iB") || bytes < 1024 {
        return exact;
    }
    let units = ["KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1}{}", units[u])
}

/// Parses a duration: a number with ns, us, ms or s.
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    let (num, unit) = number_and_unit(s);
    let n: f64 = num
        .parse()
        .map_err(|_| UnitError::DurationNumber(s.into()))?;
    let secs = match unit {
        "ns" => n / 1e9,
        "us" | "µs" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "" => return Err(UnitError::DurationNoUnit(s.into())),
        u => {
            return Err(UnitError::DurationUnit {
                input: s.into(),
                unit: u.into(),
            })
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|_| UnitError::DurationRange(s.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounded_sizes_are_exact_where_they_can_be() {
        assert_eq!(format_size_rounded(8 << 20), "8MiB");
        assert_eq!(format_size_rounded(1000), "1000B");
        assert_eq!(format_size_rounded(47_500_000), "45.3MiB");
        assert_eq!(format_size_rounded(512_000), "500KiB");
        assert_eq!(format_size_rounded(3 << 40 | 1), "3.0TiB");
    }

    #[test]
    fn size_lists_and_ranges() {
        assert_eq!(
            parse_size_list("1GiB,32MiB, 128MiB,32MiB", false).unwrap(),
            vec![32 << 20, 128 << 20, 1 << 30]
        );
        assert_eq!(
            parse_size_list("1MiB..8MiB:4", false).unwrap(),
            vec![1 << 20, 2 << 20, 4 << 20, 8 << 20]
        );
        assert_eq!(
            parse_size_list("none,1GiB", true).unwrap(),
            vec![0, 1 << 30]
        );
        for bad in [
            "",
            "0",
            "none",
            "8MiB..1MiB:4",
            "1MiB..8MiB:1",
            "1MiB..8MiB:x",
            "1MiB:3",
            "1MiB..8MiB:100000",
        ] {
            assert!(parse_size_list(bad, false).is_err(), "{bad:?} parsed");
        }
        assert!(matches!(
            parse_size_list("3furlongs", false),
            Err(UnitError::SizeUnit { .. })
        ));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert!(parse_size("12 parsecs")
            .unwrap_err()
            .to_string()
            .contains("unknown unit"));
        assert_eq!(parse_size("15EiB").unwrap(), 15 << 60);
        assert_eq!(parse_size("18446744073709551615").unwrap(), u64::MAX);
        for big in [
            "16EiB",
            "18446744073709551616",
            "16384PiB",
            "17179869184GiB",
        ] {
            assert_eq!(
                parse_size(big).unwrap_err().to_string(),
                format!("size {big:?} is out of range")
            );
        }
        for (b, s) in [
            (8u64 << 30, "8GiB"),
            (1536 << 10, "1536KiB"),
            (100, "100B"),
            (0, "0B"),
            (15 << 60, "15EiB"),
            (u64::MAX, "18446744073709551615B"),
        ] {
            assert_eq!(format_size(b), s);
            assert_eq!(parse_size(s).unwrap(), b);
        }
        assert!(parse_size("MiB")
            .unwrap_err()
            .to_string()
            .contains("not a number"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5ms").unwrap(), Duration::from_millis(5));
        assert_eq!(parse_duration("20us").unwrap(), Duration::from_micros(20));
        assert_eq!(parse_duration(" 2 s ").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("5")
            .unwrap_err()
            .to_string()
            .contains("needs a unit"));
        assert!(parse_duration("-1s").is_err());
    }
}

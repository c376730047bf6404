//! Parsing of sizes (`256MiB`, `2GiB`, `4096`) and durations (`5ms`, `2s`).

use std::time::Duration;

/// A size or a duration that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnitError {
    /// A size with a suffix that is not a unit.
    #[error("size {input:?}: unknown unit {unit:?} (use B, KiB, MiB, GiB or TiB)")]
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

/// Parses a byte size with an optional suffix: B, KiB, MiB, GiB, TiB
/// (binary) or K, M, G, T (also binary), case-insensitive.
pub fn parse_size(s: &str) -> Result<u64, UnitError> {
    let (num, unit) = number_and_unit(s);
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        "g" | "gib" | "gb" => 1 << 30,
        "t" | "tib" | "tb" => 1 << 40,
        u => {
            return Err(UnitError::SizeUnit {
                input: s.into(),
                unit: u.into(),
            })
        }
    };
    let n: f64 = num.parse().map_err(|_| UnitError::SizeNumber(s.into()))?;
    let bytes = n * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(UnitError::SizeRange(s.into()));
    }
    Ok(bytes as u64)
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
    fn sizes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert!(parse_size("12 parsecs")
            .unwrap_err()
            .to_string()
            .contains("unknown unit"));
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

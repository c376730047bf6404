//! Parsing of sizes (`256MiB`, `2GiB`, `4096`) and durations (`5ms`, `2s`).

use std::time::Duration;

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
pub fn parse_size(s: &str) -> Result<u64, String> {
    let (num, unit) = number_and_unit(s);
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        "g" | "gib" | "gb" => 1 << 30,
        "t" | "tib" | "tb" => 1 << 40,
        u => {
            return Err(format!(
                "size {s:?}: unknown unit {u:?} (use B, KiB, MiB, GiB or TiB)"
            ))
        }
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("size {s:?} is not a number with a unit, e.g. 256MiB"))?;
    let bytes = n * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("size {s:?} is out of range"));
    }
    Ok(bytes as u64)
}

/// Parses a duration: a number with ns, us, ms or s.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = number_and_unit(s);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("duration {s:?} is not a number with a unit, e.g. 5ms"))?;
    let secs = match unit {
        "ns" => n / 1e9,
        "us" | "µs" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "" => return Err(format!("duration {s:?} needs a unit: ns, us, ms or s")),
        u => {
            return Err(format!(
                "duration {s:?}: unknown unit {u:?} (use ns, us, ms or s)"
            ))
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("duration {s:?} is out of range"))
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
            .contains("unknown unit"));
        assert!(parse_size("MiB").unwrap_err().contains("not a number"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5ms").unwrap(), Duration::from_millis(5));
        assert_eq!(parse_duration("20us").unwrap(), Duration::from_micros(20));
        assert_eq!(parse_duration(" 2 s ").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("5").unwrap_err().contains("needs a unit"));
        assert!(parse_duration("-1s").is_err());
    }
}

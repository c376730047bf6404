//! `--faults` and `--backing-faults`: what to inject into the L2 devices
//! and the simulated store, parsed from `KIND=P[:DURATION],…`, and what was
//! injected, for the report.

use crate::units::parse_duration;
use polarc::backing::{SimFaultCounters, SimFaults};
use polarc::device::faulty::{FaultConfig, FaultCounters};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// How long `hang=P` hangs an L2 request without a duration.
pub const DEFAULT_HANG: Duration = Duration::from_secs(10);

/// A fault spec that does not parse: the part at fault, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{part:?}: {why}")]
pub struct SpecError {
    /// The part of the spec at fault (`KIND=P[:DURATION]`).
    pub part: String,
    /// What is wrong with it.
    pub why: String,
}

/// `--faults SPEC`: faults injected into every L2 device. A kind not in
/// the spec is `None`, and is reported as `null`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct L2Faults {
    /// `eio=P`: reads and writes fail with an I/O error.
    pub eio: Option<f64>,
    /// `torn=P`: writes land only a prefix of their blocks, and succeed.
    pub torn: Option<f64>,
    /// `flip=P`: reads come back with one bit flipped.
    pub flip: Option<f64>,
    /// `hang=P[:DUR|forever]`: requests complete only after DUR
    /// ([`DEFAULT_HANG`]); `None`: never (until the queue is dropped).
    pub hang: Option<(f64, Option<Duration>)>,
    /// `slow=P:DUR`: requests complete DUR late.
    pub slow: Option<(f64, Duration)>,
    /// `seed=N`: the RNG seed.
    pub seed: u64,
}

/// `--backing-faults SPEC`: faults injected into the simulated store's
/// reads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BackingFaults {
    /// `fail=P`: reads fail.
    pub fail: Option<f64>,
    /// `slow=P:DUR`: reads are answered DUR late.
    pub slow: Option<(f64, Duration)>,
    /// `hang=P`: reads are never answered (the engine's backing timeout
    /// fails their callers).
    pub hang: Option<f64>,
    /// `seed=N`: the RNG seed.
    pub seed: u64,
}

/// One `KIND=VALUE[:DURATION]` of a spec.
struct Part<'a> {
    text: &'a str,
    kind: &'a str,
    value: &'a str,
    duration: Option<&'a str>,
}

impl Part<'_> {
    fn err(&self, why: impl Into<String>) -> SpecError {
        SpecError {
            part: self.text.into(),
            why: why.into(),
        }
    }

    /// P, a probability within 0..=1.
    fn probability(&self) -> Result<f64, SpecError> {
        self.value
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|p| (0.0..=1.0).contains(p))
            .ok_or_else(|| {
                self.err(format!(
                    "the probability {:?} must be a number within 0..=1",
                    self.value
                ))
            })
    }

    /// P, for a kind that takes no duration.
    fn bare(&self) -> Result<f64, SpecError> {
        if self.duration.is_some() {
            return Err(self.err(format!("{} takes no duration ({}=P)", self.kind, self.kind)));
        }
        self.probability()
    }

    /// P:DUR, the duration required.
    fn timed(&self) -> Result<(f64, Duration), SpecError> {
        let p = self.probability()?;
        let d = self.duration.ok_or_else(|| {
            self.err(format!(
                "missing duration ({}=P:DURATION, e.g. {}=0.01:5ms)",
                self.kind, self.kind
            ))
        })?;
        Ok((p, self.duration_of(d)?))
    }

    fn duration_of(&self, d: &str) -> Result<Duration, SpecError> {
        parse_duration(d.trim()).map_err(|e| self.err(e.to_string()))
    }

    /// `seed=N`.
    fn seed(&self) -> Result<u64, SpecError> {
        if self.duration.is_some() {
            return Err(self.err("seed=N takes no duration"));
        }
        self.value
            .trim()
            .parse()
            .map_err(|_| self.err(format!("the seed {:?} must be a whole number", self.value)))
    }
}

/// The parts of `spec`, each kind at most once.
fn parts<'a>(spec: &'a str, kinds: &str) -> Result<Vec<Part<'a>>, SpecError> {
    let mut out: Vec<Part<'a>> = vec![];
    for text in spec.split(',') {
        let err = |why: String| SpecError {
            part: text.into(),
            why,
        };
        let (kind, rest) = text
            .split_once('=')
            .ok_or_else(|| err(format!("expected KIND=P or KIND=P:DURATION ({kinds})")))?;
        let kind = kind.trim();
        if !kinds.split(", ").any(|k| k == kind) {
            return Err(err(format!("unknown kind {kind:?} (expected {kinds})")));
        }
        if out.iter().any(|p| p.kind == kind) {
            return Err(err(format!("{kind} is given twice")));
        }
        let (value, duration) = match rest.split_once(':') {
            Some((v, d)) => (v, Some(d)),
            None => (rest, None),
        };
        out.push(Part {
            text,
            kind,
            value,
            duration,
        });
    }
    Ok(out)
}

impl L2Faults {
    /// The kinds `--faults` takes.
    pub const KINDS: &'static str = "eio, torn, flip, hang, slow, seed";

    /// Parses `--faults`' spec.
    pub fn parse(spec: &str) -> Result<L2Faults, SpecError> {
        let mut f = L2Faults::default();
        for p in parts(spec, Self::KINDS)? {
            match p.kind {
                "eio" => f.eio = Some(p.bare()?),
                "torn" => f.torn = Some(p.bare()?),
                "flip" => f.flip = Some(p.bare()?),
                "hang" => {
                    let prob = p.probability()?;
                    let d = match p.duration.map(str::trim) {
                        None => Some(DEFAULT_HANG),
                        Some("forever") => None,
                        Some(d) => Some(p.duration_of(d)?),
                    };
                    f.hang = Some((prob, d));
                }
                "slow" => f.slow = Some(p.timed()?),
                "seed" => f.seed = p.seed()?,
                _ => unreachable!("parts() checks the kinds"),
            }
        }
        Ok(f)
    }

    /// The fault configuration of L2 device `device` (each device draws
    /// from its own seed).
    pub fn config(&self, device: usize) -> FaultConfig {
        let eio = self.eio.unwrap_or(0.0);
        let (hang, hang_for) = self.hang.unwrap_or((0.0, None));
        let (slow, slow_by) = self.slow.unwrap_or((0.0, Duration::ZERO));
        FaultConfig {
            read_error: eio,
            write_error: eio,
            torn_write: self.torn.unwrap_or(0.0),
            bit_flip: self.flip.unwrap_or(0.0),
            hang,
            hang_for,
            slow,
            slow_by,
            // Queue i of a device draws from seed + i: devices far apart.
            seed: self.seed.wrapping_add((device as u64) << 32),
            ..FaultConfig::default()
        }
    }

    /// What was injected, summed over `devices`: `{eio, torn, flip, hang,
    /// slow}`, `null` for kinds not asked for.
    pub fn injected(&self, devices: &[std::sync::Arc<FaultCounters>]) -> serde_json::Value {
        let sum = |f: fn(&FaultCounters) -> u64| devices.iter().map(|c| f(c)).sum::<u64>();
        let kind = |asked: bool, n: u64| asked.then_some(n);
        serde_json::json!({
            "eio": kind(self.eio.is_some(), sum(|c| c.read_errors.load(Relaxed) + c.write_errors.load(Relaxed))),
            "torn": kind(self.torn.is_some(), sum(|c| c.torn_writes.load(Relaxed))),
            "flip": kind(self.flip.is_some(), sum(|c| c.bit_flips.load(Relaxed))),
            "hang": kind(self.hang.is_some(), sum(|c| c.hangs.load(Relaxed))),
            "slow": kind(self.slow.is_some(), sum(|c| c.slow.load(Relaxed))),
        })
    }
}

impl BackingFaults {
    /// The kinds `--backing-faults` takes.
    pub const KINDS: &'static str = "fail, slow, hang, seed";

    /// Parses `--backing-faults`' spec.
    pub fn parse(spec: &str) -> Result<BackingFaults, SpecError> {
        let mut f = BackingFaults::default();
        for p in parts(spec, Self::KINDS)? {
            match p.kind {
                "fail" => f.fail = Some(p.bare()?),
                "slow" => f.slow = Some(p.timed()?),
                "hang" => f.hang = Some(p.bare()?),
                "seed" => f.seed = p.seed()?,
                _ => unreachable!("parts() checks the kinds"),
            }
        }
        Ok(f)
    }

    /// The simulated store's fault configuration.
    pub fn config(&self) -> SimFaults {
        let (slow, slow_by) = self.slow.unwrap_or((0.0, Duration::ZERO));
        SimFaults {
            fail: self.fail.unwrap_or(0.0),
            slow,
            slow_by,
            hang: self.hang.unwrap_or(0.0),
            seed: self.seed,
        }
    }

    /// What was injected: `{fail, slow, hang}`, `null` for kinds not
    /// asked for.
    pub fn injected(&self, c: &SimFaultCounters) -> serde_json::Value {
        let kind = |asked: bool, n: &std::sync::atomic::AtomicU64| asked.then(|| n.load(Relaxed));
        serde_json::json!({
            "fail": kind(self.fail.is_some(), &c.failed),
            "slow": kind(self.slow.is_some(), &c.slow),
            "hang": kind(self.hang.is_some(), &c.hung),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn l2_specs_parse_into_fault_configs() {
        let f = L2Faults::parse("eio=0.001,torn=0.01,flip=0.5,hang=0.0001,slow=0.01:5ms,seed=9")
            .unwrap();
        assert_eq!(
            f,
            L2Faults {
                eio: Some(0.001),
                torn: Some(0.01),
                flip: Some(0.5),
                hang: Some((0.0001, Some(DEFAULT_HANG))),
                slow: Some((0.01, Duration::from_millis(5))),
                seed: 9,
            }
        );
        let c = f.config(0);
        assert_eq!((c.read_error, c.write_error), (0.001, 0.001));
        assert_eq!((c.torn_write, c.bit_flip), (0.01, 0.5));
        assert_eq!(
            (c.hang, c.hang_for),
            (0.0001, Some(Duration::from_secs(10)))
        );
        assert_eq!((c.slow, c.slow_by), (0.01, Duration::from_millis(5)));
        assert_eq!(c.seed, 9);
        assert_ne!(f.config(1).seed, c.seed, "each device its own seed");
        let f = L2Faults::parse("hang=1:forever").unwrap();
        assert_eq!(f.hang, Some((1.0, None)));
        assert_eq!(f.config(0).hang_for, None);
        let f = L2Faults::parse("hang=0.5:250ms").unwrap();
        assert_eq!(f.hang, Some((0.5, Some(Duration::from_millis(250)))));
        assert_eq!(L2Faults::parse("eio=0").unwrap().eio, Some(0.0));
        assert_eq!(L2Faults::parse("eio=1").unwrap().torn, None);
    }

    #[test]
    fn backing_specs_parse_into_store_faults() {
        let f = BackingFaults::parse("fail=0.001,slow=0.01:20ms,hang=0.0001,seed=3").unwrap();
        assert_eq!(
            f,
            BackingFaults {
                fail: Some(0.001),
                slow: Some((0.01, Duration::from_millis(20))),
                hang: Some(0.0001),
                seed: 3,
            }
        );
        let c = f.config();
        assert_eq!((c.fail, c.slow, c.hang, c.seed), (0.001, 0.01, 0.0001, 3));
        assert_eq!(c.slow_by, Duration::from_millis(20));
        assert_eq!(BackingFaults::parse("hang=1").unwrap().config().fail, 0.0);
    }

    #[test]
    fn bad_specs_name_the_part_at_fault() {
        let bad = |spec: &str, part: &str, why: &str| {
            let e = L2Faults::parse(spec)
                .err()
                .or_else(|| BackingFaults::parse(spec).err())
                .unwrap_or_else(|| panic!("{spec:?} parsed"));
            assert_eq!(e.part, part, "{spec:?}: {e}");
            assert!(e.why.contains(why), "{spec:?}: {e}");
            assert!(e.to_string().contains(&format!("{part:?}")), "{e}");
        };
        bad("eio=0.1,bogus=1", "bogus=1", "unknown kind \"bogus\"");
        bad("eio=1.5", "eio=1.5", "within 0..=1");
        bad("eio=-0.1", "eio=-0.1", "within 0..=1");
        bad("torn=NaN", "torn=NaN", "within 0..=1");
        bad("flip=lots", "flip=lots", "within 0..=1");
        bad("slow=0.1", "slow=0.1", "missing duration");
        bad("slow=0.1:5parsecs", "slow=0.1:5parsecs", "parsecs");
        bad("hang=0.1:soon", "hang=0.1:soon", "soon");
        bad("eio=0.1:5ms", "eio=0.1:5ms", "takes no duration");
        bad("eio=0.1,eio=0.2", "eio=0.2", "given twice");
        bad("eio", "eio", "expected KIND=P");
        bad("", "", "expected KIND=P");
        bad("eio=0.1,", "", "expected KIND=P");
        bad("seed=x", "seed=x", "whole number");
        // Each flag knows only its own kinds.
        let e = BackingFaults::parse("eio=0.1").unwrap_err();
        assert!(e.why.contains("fail, slow, hang, seed"), "{e}");
        let e = L2Faults::parse("fail=0.1").unwrap_err();
        assert!(e.why.contains("eio, torn, flip, hang, slow, seed"), "{e}");
        let e = BackingFaults::parse("hang=0.1:5s").unwrap_err();
        assert!(e.why.contains("takes no duration"), "{e}");
    }

    #[test]
    fn injected_counts_sum_devices_and_null_kinds_not_asked() {
        let f = L2Faults::parse("eio=0.1,flip=0.2").unwrap();
        let a = Arc::new(FaultCounters::default());
        let b = Arc::new(FaultCounters::default());
        a.read_errors.store(2, Relaxed);
        b.write_errors.store(3, Relaxed);
        b.bit_flips.store(4, Relaxed);
        b.hangs.store(5, Relaxed);
        assert_eq!(
            f.injected(&[a, b]),
            serde_json::json!({"eio": 5, "torn": null, "flip": 4, "hang": null, "slow": null})
        );
        let f = BackingFaults::parse("fail=0.1,hang=0.1").unwrap();
        let c = SimFaultCounters::default();
        c.failed.store(7, Relaxed);
        c.slow.store(8, Relaxed);
        assert_eq!(
            f.injected(&c),
            serde_json::json!({"fail": 7, "slow": null, "hang": 0})
        );
    }
}

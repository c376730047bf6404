//! Key sampling with a workload's popularity.

use super::{Error, Popularity, Workload};
use rand::Rng;
use rand_distr::Distribution;

/// Samples key indices with a workload's popularity (the driver's clients
/// use it, and so do peers driven elsewhere, e.g. foyer).
#[derive(Debug)]
pub struct KeySampler(Keys);

#[derive(Debug)]
enum Keys {
    Uniform(u64),
    Zipf(rand_distr::Zipf<f64>),
    Hotspot { n: u64, hot: u64, share: f64 },
}

impl KeySampler {
    /// A sampler for `w`'s keys.
    pub fn new(w: &Workload) -> Result<KeySampler, Error> {
        let n = w.keys.max(1);
        Ok(KeySampler(match w.popularity {
            Popularity::Uniform | Popularity::Zipf(0.0) => Keys::Uniform(n),
            Popularity::Zipf(t) => rand_distr::Zipf::new(n, t)
                .map(Keys::Zipf)
                .map_err(|source| Error::Zipf { theta: t, source })?,
            Popularity::Hotspot { keys, share } => Keys::Hotspot {
                n,
                hot: ((n as f64 * keys) as u64).clamp(1, n),
                share,
            },
        }))
    }

    /// The next key index.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        match &self.0 {
            Keys::Uniform(n) => rng.gen_range(0..*n),
            Keys::Zipf(z) => z.sample(rng) as u64 - 1,
            Keys::Hotspot { n, hot, share } => {
                if rng.gen_bool(*share) || hot == n {
                    rng.gen_range(0..*hot)
                } else {
                    rng.gen_range(*hot..*n)
                }
            }
        }
    }
}

//! Latency distributions for time to first token and the gap between tokens,
//! written on the command line as `fixed:20`, `uniform:10..50` or
//! `lognormal:20,0.5` (median in ms, sigma).

use std::str::FromStr;
use std::time::Duration;

use rand_distr::{Distribution, LogNormal};

#[derive(Debug, Clone, PartialEq)]
pub enum LatencyDist {
    Fixed(Duration),
    Uniform { min: Duration, max: Duration },
    LogNormal { median_ms: f64, sigma: f64 },
}

impl LatencyDist {
    pub fn sample(&self) -> Duration {
        match self {
            LatencyDist::Fixed(d) => *d,
            LatencyDist::Uniform { min, max } => {
                if max <= min {
                    return *min;
                }
                let span = (*max - *min).as_micros() as u64;
                *min + Duration::from_micros(rand::random_range(0..=span))
            }
            LatencyDist::LogNormal { median_ms, sigma } => {
                match LogNormal::new(median_ms.max(0.001).ln(), *sigma) {
                    // Capped so one sample cannot stall a test for minutes.
                    Ok(dist) => {
                        Duration::from_secs_f64((dist.sample(&mut rand::rng()) / 1000.0).min(60.0))
                    }
                    Err(_) => Duration::from_secs_f64(median_ms / 1000.0),
                }
            }
        }
    }
}

impl FromStr for LatencyDist {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let ms = |s: &str| {
            s.trim()
                .parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| format!("{s:?} is not a whole number of milliseconds"))
        };
        let (kind, args) = text.split_once(':').unwrap_or(("fixed", text));
        match kind {
            "fixed" => Ok(LatencyDist::Fixed(ms(args)?)),
            "uniform" => {
                let (a, b) = args
                    .split_once("..")
                    .ok_or_else(|| format!("uniform needs MIN..MAX, got {args:?}"))?;
                Ok(LatencyDist::Uniform {
                    min: ms(a)?,
                    max: ms(b)?,
                })
            }
            "lognormal" => {
                let (m, s) = args
                    .split_once(',')
                    .ok_or_else(|| format!("lognormal needs MEDIAN_MS,SIGMA, got {args:?}"))?;
                let median_ms: f64 = m.trim().parse().map_err(|_| format!("bad median {m:?}"))?;
                let sigma: f64 = s.trim().parse().map_err(|_| format!("bad sigma {s:?}"))?;
                if !(median_ms >= 0.0 && (0.0..=5.0).contains(&sigma)) {
                    return Err("lognormal needs median >= 0 and 0 <= sigma <= 5".into());
                }
                Ok(LatencyDist::LogNormal { median_ms, sigma })
            }
            other => Err(format!(
                "unknown distribution {other:?} (fixed, uniform, lognormal)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_samples_in_range() {
        assert_eq!(
            "15".parse::<LatencyDist>().unwrap(),
            LatencyDist::Fixed(Duration::from_millis(15))
        );
        let u: LatencyDist = "uniform:10..20".parse().unwrap();
        for _ in 0..100 {
            let d = u.sample();
            assert!(d >= Duration::from_millis(10) && d <= Duration::from_millis(20));
        }
        let l: LatencyDist = "lognormal:20,0.3".parse().unwrap();
        assert!(l.sample() < Duration::from_secs(61));
        assert!("weird:1".parse::<LatencyDist>().is_err());
    }
}

//! One run of `pixguard bench` split over several generator processes (`--part I/N`): the
//! processes of one machine when one process cannot offer the rate, or the pods of a Kubernetes
//! Indexed Job when one pod cannot (k8s/loadtest). The load figures on the command line are the
//! whole run's; each part offers its share and keeps its histograms in its report, so that
//! `pixguard bench-merge` adds them into the percentiles one generator would have measured, not
//! an average of percentiles. `--start-at` starts every part at one wall-clock instant.

use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use base64::Engine;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use serde::{Deserialize, Serialize};

/// Which share of a split run a generator offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// This generator's index, from 0.
    pub index: u32,
    /// Generators in the run.
    pub count: u32,
}

impl FromStr for Part {
    type Err = String;

    fn from_str(text: &str) -> Result<Part, String> {
        let bad = || format!("{text:?} is not I/N with 0 ≤ I < N (e.g. 0/4)");
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse::<u32>().map_err(|_| bad())?,
            n.trim().parse::<u32>().map_err(|_| bad())?,
        );
        if index >= count {
            return Err(bad());
        }
        Ok(Part { index, count })
    }
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Part {
    /// This part's share of `total` connections: an equal share, the remainder to the first
    /// parts, so the shares add up to `total`. `what` names the option in the error.
    pub fn share(&self, total: usize, what: &str) -> anyhow::Result<usize> {
        let n = self.count as usize;
        anyhow::ensure!(
            total >= n,
            "{what} {total} is fewer than the {n} parts: each part needs at least one"
        );
        Ok(total / n + usize::from((self.index as usize) < total % n))
    }

    /// This part's share of the whole run's `rate`.
    pub fn rate(&self, rate: f64) -> f64 {
        rate / f64::from(self.count)
    }

    /// Constant arrivals: how far this part's releases sit after the run's first, so that the
    /// parts' evenly spaced releases interleave into the whole rate's.
    pub fn phase(&self, rate: f64) -> Duration {
        Duration::from_secs_f64(f64::from(self.index) / rate.max(1e-9))
    }
}

/// How late past `--start-at` a part may still start: later, its steps would not line up with
/// the others' and the merged figures would mix different loads.
const START_SLACK: Duration = Duration::from_secs(1);

/// Parses `--start-at`: RFC 3339 (`2026-12-07T14:00:00Z`) or Unix seconds.
pub fn parse_start_at(text: &str) -> anyhow::Result<SystemTime> {
    if let Ok(seconds) = text.trim().parse::<f64>() {
        anyhow::ensure!(
            seconds.is_finite() && seconds >= 0.0,
            "--start-at {text}: not a time"
        );
        return Ok(SystemTime::UNIX_EPOCH + Duration::from_secs_f64(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc3339(text.trim())
        .with_context(|| format!("--start-at {text}: neither RFC 3339 nor Unix seconds"))?;
    let nanos = at
        .timestamp_nanos_opt()
        .filter(|n| *n >= 0)
        .with_context(|| format!("--start-at {text}: out of range"))?;
    Ok(SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos as u64))
}

/// How far ahead `--start-at` may be: further is a mistyped date, not a wait.
const LONGEST_WAIT: Duration = Duration::from_secs(3600);

/// The monotonic instant of the wall-clock time `at`, refused when `at` passed more than a
/// second ago (a part that started late would measure a different load than the others) or is
/// more than an hour ahead.
pub fn instant_of(
    at: SystemTime,
    now: SystemTime,
    now_instant: Instant,
) -> anyhow::Result<Instant> {
    match at.duration_since(now) {
        Ok(ahead) if ahead > LONGEST_WAIT => anyhow::bail!(
            "--start-at is {:.0} minutes ahead: at most an hour",
            ahead.as_secs_f64() / 60.0
        ),
        Ok(ahead) => Ok(now_instant + ahead),
        Err(passed) if passed.duration() <= START_SLACK => Ok(now_instant),
        Err(passed) => anyhow::bail!(
            "--start-at passed {:.1} s ago: every part must be running before it",
            passed.duration().as_secs_f64()
        ),
    }
}

/// A histogram as text for report.json: HdrHistogram's V2 deflate encoding, in base64, as
/// HdrHistogram's own interval logs carry them.
pub fn encode(h: &Histogram<u64>) -> anyhow::Result<String> {
    let mut bytes = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut bytes)
        .map_err(|e| anyhow::anyhow!("encoding a histogram: {e:?}"))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// Reads back what [`encode`] wrote.
pub fn decode(text: &str) -> anyhow::Result<Histogram<u64>> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .context("a histogram that is not base64")?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| anyhow::anyhow!("a histogram that does not decode: {e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_parse_and_share_out_the_whole_run() {
        assert_eq!("1/4".parse(), Ok(Part { index: 1, count: 4 }));
        for bad in ["4/4", "1", "a/2", "1/0", "-1/2", ""] {
            assert!(bad.parse::<Part>().is_err(), "{bad:?} accepted");
        }
        // 10 connections over 4 parts: 3, 3, 2, 2.
        let shares: Vec<usize> = (0..4)
            .map(|index| Part { index, count: 4 }.share(10, "--connections").unwrap())
            .collect();
        assert_eq!(shares, [3, 3, 2, 2]);
        let error = Part { index: 0, count: 4 }
            .share(3, "--connections")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("--connections 3 is fewer than the 4 parts"),
            "{error}"
        );
        // Constant arrivals at 1,000/s over 4 parts: each at 250/s, 1 ms after the previous
        // part, so the run's releases are 1 ms apart.
        let part = Part { index: 3, count: 4 };
        assert_eq!(part.rate(1000.0), 250.0);
        assert_eq!(part.phase(1000.0), Duration::from_millis(3));
    }

    #[test]
    fn start_times_are_rfc3339_or_unix_seconds_and_not_long_past() {
        let at = parse_start_at("2026-12-07T14:00:00.5Z").unwrap();
        assert_eq!(
            at.duration_since(SystemTime::UNIX_EPOCH).unwrap(),
            Duration::from_secs_f64(1_796_652_000.5)
        );
        assert_eq!(parse_start_at("1796652000.5").unwrap(), at);
        assert!(parse_start_at("tomorrow").is_err());

        let now = Instant::now();
        let later = instant_of(at, at - Duration::from_secs(3), now).unwrap();
        assert_eq!(later - now, Duration::from_secs(3));
        assert_eq!(instant_of(at, at + START_SLACK, now).unwrap(), now);
        let error = instant_of(at, at + Duration::from_secs(5), now).unwrap_err();
        assert!(error.to_string().contains("passed 5.0 s ago"), "{error}");
        let error = instant_of(at, at - Duration::from_secs(7200), now).unwrap_err();
        assert!(error.to_string().contains("120 minutes ahead"), "{error}");
    }

    #[test]
    fn a_histogram_survives_the_report() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).unwrap();
        for v in [1, 17, 250, 1_000, 1_001, 99_999, 5_000_000] {
            h.record(v).unwrap();
        }
        let back = decode(&encode(&h).unwrap()).unwrap();
        assert_eq!(back, h);
        assert!(decode("not base64!").is_err());
        assert!(decode("aGVsbG8=").is_err());
    }
}

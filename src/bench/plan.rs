//! The steps a run's options describe: each step's load shape, this process's share of it (a
//! part of a split run), and for a replay the recording its releases follow.

use std::sync::Arc;

use anyhow::Context;

use super::args::{BenchArgs, Mode, parse_steps};
use super::load::{Arrivals, Replay, Replayed, Shape};
use super::part::Part;
use crate::transaction::Transaction;

/// `--rate`'s steps when none are given.
pub const DEFAULT_RATE: &str = "1000:10000:1000";

/// One step: its shape, and the replay speed it runs at.
pub struct Planned {
    /// What the step offers.
    pub shape: Shape,
    /// A replay's speed.
    pub speed: Option<f64>,
}

/// Puts the transactions in the order a replay sends them (by `accepted_at`; equal times keep
/// their order). Any other run sends them as given.
pub fn order(args: &BenchArgs, txs: &mut [Transaction]) {
    if args.arrivals == Arrivals::Replay {
        // Instants compared whole: Unix seconds as f64 blur below a microsecond.
        txs.sort_by_key(|tx| tx.accepted_at.0);
    }
}

/// The steps of `args`, for `part` of the run, over requests of `rows` of `txs` each (in
/// [`order`]).
pub fn steps(
    args: &BenchArgs,
    part: Part,
    txs: &[Transaction],
    rows: usize,
) -> anyhow::Result<Vec<Planned>> {
    let replaying = args.arrivals == Arrivals::Replay && args.mode == Mode::Open;
    anyhow::ensure!(
        !(replaying && args.rate.is_some()),
        "--arrivals replay takes its rate from the transactions' times: give --speed, not --rate"
    );
    anyhow::ensure!(
        replaying || args.speed.is_none(),
        "--speed is for --arrivals replay"
    );
    let connections = || part.share(args.connections, "--connections");
    if replaying {
        // Request b carries transactions b × rows onwards: it comes when its first one came,
        // counted from the first (as a difference of instants: exact to the nanosecond).
        let requests = (txs.len() / rows).max(1);
        let first = txs.first().map(|tx| tx.accepted_at.0);
        let times: Vec<f64> = (0..requests)
            .map(|b| {
                let at = txs[(b * rows) % txs.len()].accepted_at.0;
                first.map_or(0.0, |f| {
                    (at - f).num_nanoseconds().unwrap_or(i64::MAX) as f64 * 1e-9
                })
            })
            .collect();
        let replay = Arc::new(Replay::new(&times).context("--arrivals replay")?);
        return parse_steps(args.speed.as_deref().unwrap_or("1"))
            .context("--speed")?
            .into_iter()
            .map(|speed| {
                Ok(Planned {
                    shape: Shape::Open {
                        rate: part.rate(replay.rate(speed)),
                        arrivals: Arrivals::Replay,
                        connections: connections()?,
                        schedulers: args.threads,
                        phase: std::time::Duration::ZERO,
                        // The parts take every N-th release, from their index.
                        replay: Some(Replayed {
                            replay: replay.clone(),
                            speed,
                            first: part.index as usize,
                            stride: part.count as usize,
                        }),
                    },
                    speed: Some(speed),
                })
            })
            .collect();
    }
    match args.mode {
        Mode::Open => parse_steps(args.rate.as_deref().unwrap_or(DEFAULT_RATE))
            .context("--rate")?
            .into_iter()
            .map(|rate| {
                Ok(Planned {
                    shape: Shape::Open {
                        rate: part.rate(rate),
                        arrivals: args.arrivals,
                        connections: connections()?,
                        schedulers: args.threads,
                        phase: part.phase(rate),
                        replay: None,
                    },
                    speed: None,
                })
            })
            .collect(),
        Mode::Closed => parse_steps(&args.concurrency)
            .context("--concurrency")?
            .into_iter()
            .map(|c| {
                Ok(Planned {
                    shape: Shape::Closed {
                        concurrency: part.share(c as usize, "--concurrency")?,
                    },
                    speed: None,
                })
            })
            .collect(),
    }
}

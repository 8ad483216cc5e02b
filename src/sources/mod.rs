//! Inputs other than the request/response front ends: each a folder with its configuration, its
//! run loop and its tests.

pub mod kafka;

use crate::config::Config;
use crate::scoring::Scoring;

/// What a source needs from the process it runs in (`serve` or `stream`): the one scoring path
/// and the effective configuration. A trait, so that a source depends on the scoring layer and not
/// on the server that hosts it.
pub trait Host: Send + Sync + 'static {
    /// The one path of a payment.
    fn scoring(&self) -> &Scoring;
    /// The effective configuration.
    fn config(&self) -> &Config;
}

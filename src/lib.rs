//! pixguard: real-time fraud scoring of Brazilian Pix payments.
//!
//! This crate holds the Pix transaction and its validation ([`transaction`]), deterministic
//! synthetic traffic with labelled fraud typologies ([`synth`]) and the feature pipeline that turns
//! transactions into model inputs ([`features`]). See `../shared/DESIGN.md` for where it is going.

pub mod cli;
pub mod config;
pub mod engine;
pub mod features;
pub mod jsonl;
pub mod model;
pub mod server;
pub mod synth;
pub mod transaction;

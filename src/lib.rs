//! pixguard: real-time fraud scoring of Brazilian Pix payments.
//!
//! A payment travels: [`transaction`] (parse and validate) → [`features`] (the package's feature
//! spec) → [`engine`] (bounded queue, micro-batcher, device workers) → [`model`] (the Candle DCN-v2
//! from an MLflow-format package) → back through [`server`] (HTTP) with a score and a decision.
//! [`config`] is the one typed configuration, [`synth`] generates labelled traffic, [`jsonl`] reads
//! transactions for the offline commands and [`cli`] is the `pixguard` command line.

pub mod bench;
pub mod cli;
pub mod config;
pub mod engine;
pub mod features;
pub mod jsonl;
pub mod logging;
pub mod model;
pub mod server;
pub mod synth;
pub mod transaction;

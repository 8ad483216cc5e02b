//! pixguard: real-time fraud scoring of Brazilian Pix payments.
//!
//! A payment travels: a front end ([`server`]: /v1, OIP over HTTP and gRPC) decodes its wire form
//! ([`protocol`]) into [`transaction`]s, and hands them to [`scoring`], the one path every front end
//! shares: admission, [`features`] (the package's feature spec), [`engine`] (bounded queue,
//! micro-batcher, device workers) running the [`model`] (the Candle DCN-v2 from an MLflow-format
//! package), decisions, and one error type. `docs/architecture.md` tells the whole path.
//! [`config`] is the one typed configuration, [`synth`] generates labelled traffic, [`jsonl`] reads
//! transactions for the offline commands and [`cli`] is the `pixguard` command line.

pub mod batch;
pub mod bench;
pub mod cli;
pub mod config;
pub mod engine;
pub mod features;
pub mod histogram;
pub mod jsonl;
pub mod logging;
pub mod memory;
pub mod model;
pub mod monitoring;
pub mod parallel;
pub mod protocol;
pub mod registry;
pub mod scoring;
pub mod server;
pub mod sources;
pub mod synth;
pub mod threads;
pub mod transaction;

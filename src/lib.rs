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
pub mod kafka;
pub mod logging;
pub mod memory;
pub mod model;
pub mod monitoring;
pub mod parallel;
pub mod process;
pub mod protocol;
pub mod registry;
pub mod scoring;
pub mod server;
pub mod sources;
pub mod synth;
pub mod threads;
pub mod traces;
pub mod transaction;

/// An error and its causes joined by `: `, each once: a cause whose text the message already
/// holds is left out (thiserror's `{source}` ends a message with its cause's; object_store's
/// GCS errors carry their whole chain, which printed it three times over).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let cause = s.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
        source = s.source();
    }
    text
}

/// Whether two paths name one file: the same path, or two names that resolve to one existing
/// file (`./tx.jsonl` and `tx.jsonl`, a link). A command whose output is its input would truncate
/// it before reading a row.
pub fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    a == b
        || matches!(
            (std::fs::canonicalize(a), std::fs::canonicalize(b)),
            (Ok(a), Ok(b)) if a == b
        )
}

#[cfg(test)]
mod tests {
    /// A test error: its text, and its source.
    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);

    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn each_cause_is_told_once() {
        // reqwest: each level says only its own part.
        let apart = E(
            "error sending request",
            Some(Box::new(E(
                "client error (Connect)",
                Some(Box::new(E("Connection refused", None))),
            ))),
        );
        assert_eq!(
            super::error_chain(&apart),
            "error sending request: client error (Connect): Connection refused"
        );
        // object_store's GCS errors: each level's text holds everything below it.
        let nested = E(
            "bucket unreachable: token request: GET 403: denied",
            Some(Box::new(E(
                "token request: GET 403: denied",
                Some(Box::new(E(
                    "GET 403: denied",
                    Some(Box::new(E("denied", None))),
                ))),
            ))),
        );
        assert_eq!(
            super::error_chain(&nested),
            "bucket unreachable: token request: GET 403: denied"
        );
    }
}

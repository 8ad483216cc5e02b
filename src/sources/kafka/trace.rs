//! A consumed message's span: in the producer's trace when the message carries a sampled W3C
//! `traceparent` header (or, without one, `traces.sample_ratio` of them), from its receipt to the
//! hand-over of its score or dead-letter record, which carries this span as its `traceparent` so
//! that whoever consumes the scores continues the trace (OpenTelemetry's messaging conventions).

use std::time::Instant;

use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};

use super::message::Unscorable;
use crate::scoring::{Scores, Served};
use crate::traces::{Recording, Tracer, otlp};

/// The span of `message` (from `group`), when it is traced.
pub fn start(
    tracer: Option<&std::sync::Arc<Tracer>>,
    message: &BorrowedMessage<'_>,
    source: (&str, i32, i64),
    group: &str,
) -> Option<Box<Recording>> {
    use rdkafka::Message;
    let tracer = tracer?;
    let header = |name: &str| {
        message
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == name).and_then(|h| h.value))
    };
    let trace = tracer.sample(header("traceparent"))?;
    let (topic, partition, offset) = source;
    let mut span = Recording::new(
        trace,
        format!("process {topic}"),
        otlp::kind::CONSUMER,
        Instant::now(),
    );
    // The record it writes keeps the `tracestate` header as it came.
    span.trace_state(header("tracestate"));
    span.attribute("messaging.system", "kafka");
    span.attribute("messaging.operation.type", "process");
    span.attribute("messaging.destination.name", topic.to_string());
    span.attribute("messaging.destination.partition.id", partition.to_string());
    span.attribute("messaging.kafka.offset", offset);
    span.attribute("messaging.consumer.group.name", group.to_string());
    Some(Box::new(span))
}

/// Ends a scored message's span (row `row` of `scores`) and sends it; answers the `traceparent`
/// its score record carries.
pub fn scored(
    tracer: Option<&std::sync::Arc<Tracer>>,
    mut span: Recording,
    served: &Served,
    scores: &Scores,
    row: usize,
) -> String {
    span.attribute("pixguard.outcome", "ok");
    crate::scoring::describe(&mut span, served, scores, Some(row));
    send(tracer, span, None)
}

/// Ends the span of a message sent to the dead-letter topic, as failed with `why`; answers the
/// `traceparent` its dead-letter record carries.
pub fn dead_lettered(
    tracer: Option<&std::sync::Arc<Tracer>>,
    mut span: Recording,
    why: &Unscorable,
) -> String {
    span.attribute("pixguard.outcome", why.class);
    if let Some(field) = &why.field {
        span.attribute("pixguard.field", field.clone());
    }
    send(tracer, span, Some(why.message.clone()))
}

fn send(tracer: Option<&std::sync::Arc<Tracer>>, span: Recording, error: Option<String>) -> String {
    let traceparent = span.traceparent();
    if let Some(tracer) = tracer {
        tracer.submit(span.end(error));
    }
    traceparent
}

/// `headers` with its `traceparent` replaced by `traceparent` (added when it had none).
pub fn with_traceparent(headers: Option<OwnedHeaders>, traceparent: &str) -> OwnedHeaders {
    let mut out = OwnedHeaders::new();
    if let Some(headers) = &headers {
        for h in headers.iter().filter(|h| h.key != "traceparent") {
            out = out.insert(Header {
                key: h.key,
                value: h.value,
            });
        }
    }
    out.insert(Header {
        key: "traceparent",
        value: Some(traceparent.as_bytes()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traceparent_is_replaced_and_every_other_header_kept_in_order() {
        let original = OwnedHeaders::new()
            .insert(Header {
                key: "a",
                value: Some(b"1"),
            })
            .insert(Header {
                key: "traceparent",
                value: Some(b"old"),
            })
            .insert(Header::<&[u8]> {
                key: "b",
                value: None,
            });
        let out = with_traceparent(Some(original), "new");
        let pairs: Vec<(&str, Option<&[u8]>)> = out.iter().map(|h| (h.key, h.value)).collect();
        assert_eq!(
            pairs,
            [
                ("a", Some(&b"1"[..])),
                ("b", None),
                ("traceparent", Some(&b"new"[..]))
            ]
        );
        let added = with_traceparent(None, "new");
        assert_eq!(added.count(), 1);
    }
}

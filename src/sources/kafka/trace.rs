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

/// Ends a scored message's span (row `row` of `scores`), if it is traced, and sends it; answers
/// the headers of its score record: `headers`, naming the span as the `traceparent` when there is
/// one.
pub fn scored(
    tracer: Option<&std::sync::Arc<Tracer>>,
    span: Option<Box<Recording>>,
    headers: Option<OwnedHeaders>,
    (served, scores, row): (&Served, &Scores, usize),
) -> Option<OwnedHeaders> {
    let Some(mut span) = span else {
        return headers;
    };
    span.attribute("pixguard.outcome", "ok");
    crate::scoring::describe(&mut span, served, scores, Some(row));
    Some(send(tracer, *span, None, headers))
}

/// Ends the span of a message sent to the dead-letter topic, if it is traced, as failed with
/// `why`; answers the headers of its dead-letter record, as [`scored`] does.
pub fn dead_lettered(
    tracer: Option<&std::sync::Arc<Tracer>>,
    span: Option<Box<Recording>>,
    headers: Option<OwnedHeaders>,
    why: &Unscorable,
) -> Option<OwnedHeaders> {
    let Some(mut span) = span else {
        return headers;
    };
    span.attribute("pixguard.outcome", why.class);
    if let Some(field) = &why.field {
        span.attribute("pixguard.field", field.clone());
    }
    Some(send(tracer, *span, Some(why.message.clone()), headers))
}

/// Sends the ended span and answers `headers` naming it as the `traceparent`.
fn send(
    tracer: Option<&std::sync::Arc<Tracer>>,
    span: Recording,
    error: Option<String>,
    headers: Option<OwnedHeaders>,
) -> OwnedHeaders {
    let traceparent = span.traceparent();
    if let Some(tracer) = tracer {
        tracer.submit(span.end(error));
    }
    with_traceparent(headers, &traceparent)
}

/// `headers` with its `traceparent` replaced by `traceparent` (added when it had none).
fn with_traceparent(headers: Option<OwnedHeaders>, traceparent: &str) -> OwnedHeaders {
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

//! `ModelInfer`, the hot method, served as plain HTTP/2 by hand instead of through tonic's
//! streaming codec: the body collected as it arrived (one DATA frame: no copy), its 5-byte gRPC
//! prefix checked, the request read in place ([`InferCall`]), and the answer written as one DATA
//! frame and the `grpc-status` trailer; a message compressed with gzip or deflate
//! (`grpc-encoding`) is inflated first. Errors are tonic's own trailers-only answers
//! ([`Status::into_http`]); every other method stays with tonic's generated service.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use tonic::codegen::http::{self, HeaderMap, HeaderValue};
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

use super::Inference;
use crate::protocol::grpc::infer::InferCall;
use crate::protocol::grpc::{FrameError, unframe_encoded};
use crate::scoring::{Api, ScoreError};
use crate::server::encoding::Coding;
use crate::server::error::grpc_status;

/// The largest request message taken, as tonic's default (4 MiB).
const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// Answers one `ModelInfer` call.
pub async fn call(
    inference: Arc<Inference>,
    call: http::Request<Incoming>,
) -> http::Response<tonic::body::Body> {
    match answer(inference, call).await {
        Ok(response) => response,
        Err(status) => status.into_http(),
    }
}

async fn answer(
    inference: Arc<Inference>,
    call: http::Request<Incoming>,
) -> Result<http::Response<tonic::body::Body>, Status> {
    let (mut parts, body) = call.into_parts();
    let coding = match parts.headers.get("grpc-encoding") {
        None => None,
        Some(value) => Coding::from_header(value.as_bytes())
            .map_err(|reason| Status::unimplemented(format!("grpc-encoding {reason}")))?,
    };
    // The body arrives within the call's deadline (grpc-timeout, else engine.default_deadline_ms)
    // from its head, as on the HTTP APIs: a client trickling its message holds a stream no longer.
    let arrived = parts
        .extensions
        .get::<super::Arrival>()
        .map_or_else(std::time::Instant::now, |a| a.0);
    let scoring = &inference.0.scoring;
    let timeout = super::CallTimeout::of(&parts.headers);
    let wait = timeout.0.unwrap_or(scoring.limits().default_deadline);
    let read = http_body_util::Limited::new(body, MAX_MESSAGE + 5).collect();
    let Ok(read) = tokio::time::timeout_at((arrived + wait).into(), read).await else {
        let e = ScoreError::BodyTimeout {
            waited_ms: arrived.elapsed().as_millis() as u64,
        };
        scoring.metrics.refused(Api::OipGrpc, e.code());
        return Err(grpc_status(&e));
    };
    let body = read
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                Status::resource_exhausted(format!(
                    "the request is larger than the limit of {MAX_MESSAGE} bytes"
                ))
            } else {
                Status::cancelled(format!("reading the request: {e}"))
            }
        })?
        .to_bytes();
    let message = message(body, coding)?;
    let call = InferCall::decode(message).map_err(|e| Status::internal(e.to_string()))?;
    parts.extensions.insert(timeout);
    let request = Request::from_parts(
        MetadataMap::from_headers(parts.headers),
        parts.extensions,
        call,
    );
    let answer = inference.model_infer_call(request).await?;
    let mut data = BytesMut::with_capacity(256);
    answer
        .encode(&mut data)
        .map_err(|_| Status::internal("the answer is larger than a gRPC message can be"))?;
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let frames = [
        Ok::<_, Status>(Frame::data(data.freeze())),
        Ok(Frame::trailers(trailers)),
    ];
    let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
    let mut response = http::Response::new(tonic::body::Body::new(body));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    Ok(response)
}

/// The one message of a unary call's body, its prefix refused as tonic refuses it, inflated when
/// the call's `coding` compressed it (at most [`MAX_MESSAGE`] bytes inflated, as plain).
fn message(mut body: Bytes, coding: Option<Coding>) -> Result<Bytes, Status> {
    let (range, compressed) = match unframe_encoded(&body, MAX_MESSAGE, coding.is_some()) {
        Ok(framed) => framed,
        Err(e @ FrameError::TooLarge(..)) => return Err(Status::resource_exhausted(e.to_string())),
        Err(e) => return Err(Status::internal(e.to_string())),
    };
    let message = body.split_off(range.start);
    match coding.filter(|_| compressed) {
        None => Ok(message),
        Some(coding) => match coding.inflate(&message, MAX_MESSAGE) {
            Ok(Some(inflated)) => Ok(inflated.into()),
            Ok(None) => Err(Status::resource_exhausted(format!(
                "the request inflates past the limit of {MAX_MESSAGE} bytes"
            ))),
            Err(e) => Err(Status::internal(format!("inflating the request: {e}"))),
        },
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;
    use crate::server::encoding::tests::gzip;

    /// `message` behind a prefix whose flag says compressed.
    fn compressed_frame(message: &[u8]) -> Bytes {
        let packed = gzip(message);
        let mut body = vec![1];
        body.extend_from_slice(&(packed.len() as u32).to_be_bytes());
        body.extend_from_slice(&packed);
        body.into()
    }

    #[test]
    fn a_gzip_message_is_inflated_only_under_its_grpc_encoding() {
        let text = b"a request message".repeat(100);
        let framed = compressed_frame(&text);
        assert_eq!(message(framed.clone(), Some(Coding::Gzip)).unwrap(), text);
        // The flag without a grpc-encoding, as tonic answers it.
        let err = message(framed, None).unwrap_err();
        assert_eq!(err.code(), Code::Internal, "{err:?}");
        // A plain message under a grpc-encoding passes as it is.
        let plain = crate::protocol::grpc::frame(&text).unwrap();
        assert_eq!(message(plain, Some(Coding::Gzip)).unwrap(), text);
        // A few kilobytes that inflate past the 4 MiB message limit.
        let bomb = compressed_frame(&vec![0u8; MAX_MESSAGE + 1]);
        assert!(bomb.len() < 10_000);
        let err = message(bomb, Some(Coding::Gzip)).unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
        let err = message(compressed_frame(&text), Some(Coding::Deflate)).unwrap_err();
        assert_eq!(err.code(), Code::Internal, "{err:?}");
    }
}

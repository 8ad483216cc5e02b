//! `ModelInfer`, the hot method, served as plain HTTP/2 by hand instead of through tonic's
//! streaming codec: the body collected as it arrived (one DATA frame: no copy), its 5-byte gRPC
//! prefix checked, the request read in place ([`InferCall`]), and the answer written as one DATA
//! frame and the `grpc-status` trailer. Errors are tonic's own trailers-only answers
//! ([`Status::into_http`]); every other method stays with tonic's generated service.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use tonic::codegen::http::{self, HeaderMap, HeaderValue};
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

use super::Inference;
use crate::protocol::grpc::FrameError;
use crate::protocol::grpc::infer::InferCall;

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
    let (parts, body) = call.into_parts();
    if let Some(encoding) = parts.headers.get("grpc-encoding")
        && encoding != "identity"
    {
        return Err(Status::unimplemented(format!(
            "grpc-encoding {encoding:?} is not supported; send uncompressed messages"
        )));
    }
    let body = http_body_util::Limited::new(body, MAX_MESSAGE + 5)
        .collect()
        .await
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
    let message = message(body)?;
    let call = InferCall::decode(message).map_err(|e| Status::internal(e.to_string()))?;
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

/// The one message of a unary call's body, its prefix refused as tonic refuses it.
fn message(mut body: Bytes) -> Result<Bytes, Status> {
    match crate::protocol::grpc::unframe(&body, MAX_MESSAGE) {
        Ok(range) => Ok(body.split_off(range.start)),
        Err(e @ FrameError::TooLarge(..)) => Err(Status::resource_exhausted(e.to_string())),
        Err(e) => Err(Status::internal(e.to_string())),
    }
}

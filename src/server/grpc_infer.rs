//! `ModelInfer` with the request read in place ([`InferCall`]) instead of prost's generated
//! decoder: the tonic codec and unary service the gRPC server routes that one method to. Every
//! other method, and the answer's encoding, stay prost's.

use std::sync::Arc;

use bytes::Buf;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Request, Response, Status};

use super::grpc::Inference;
use crate::protocol::grpc::ModelInferResponse;
use crate::protocol::grpc::infer::InferCall;

/// The method's path, as gRPC clients call it.
pub const PATH: &str = "/inference.GRPCInferenceService/ModelInfer";

/// Reads an [`InferCall`], writes a prost [`ModelInferResponse`].
#[derive(Debug, Default, Clone, Copy)]
pub struct InferCodec;

/// The decoding half of [`InferCodec`].
#[derive(Debug, Default, Clone, Copy)]
pub struct CallDecoder;

/// The encoding half of [`InferCodec`].
#[derive(Debug, Default, Clone, Copy)]
pub struct ResponseEncoder;

impl Codec for InferCodec {
    type Encode = ModelInferResponse;
    type Decode = InferCall;
    type Encoder = ResponseEncoder;
    type Decoder = CallDecoder;

    fn encoder(&mut self) -> ResponseEncoder {
        ResponseEncoder
    }

    fn decoder(&mut self) -> CallDecoder {
        CallDecoder
    }
}

impl Decoder for CallDecoder {
    type Item = InferCall;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<InferCall>, Status> {
        // The message's bytes as one `Bytes` (a split of tonic's buffer, not a copy).
        let bytes = src.copy_to_bytes(src.remaining());
        InferCall::decode(bytes)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

impl Encoder for ResponseEncoder {
    type Item = ModelInferResponse;
    type Error = Status;

    fn encode(&mut self, item: ModelInferResponse, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encoding the answer: {e}")))
    }
}

/// The unary service tonic runs for [`PATH`].
#[derive(Clone)]
pub struct InferService(pub Arc<Inference>);

impl tonic::server::UnaryService<InferCall> for InferService {
    type Response = ModelInferResponse;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response<ModelInferResponse>, Status>> + Send>,
    >;

    fn call(&mut self, request: Request<InferCall>) -> Self::Future {
        let inference = self.0.clone();
        Box::pin(async move { inference.model_infer_call(request).await })
    }
}

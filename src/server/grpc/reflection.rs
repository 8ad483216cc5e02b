//! gRPC server reflection (`grpc.reflection.v1`, and the older `v1alpha` that grpcurl before 1.9
//! and Python's grpcio-reflection ask): lists `inference.GRPCInferenceService` and
//! `grpc.health.v1.Health` and answers their descriptors, so a fraud team can explore and call
//! the port with grpcurl, Postman or Evans without a copy of `inference.proto`.

/// The HTTP/2 path prefix of each version's one method.
pub(super) const V1: &str = "/grpc.reflection.v1.ServerReflection/";
/// See [`V1`].
pub(super) const V1ALPHA: &str = "/grpc.reflection.v1alpha.ServerReflection/";

/// A reflection service builder over pixguard's two services (and reflection itself).
pub(super) fn builder() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::protocol::grpc::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

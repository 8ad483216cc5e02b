//! gRPC server reflection (`grpc.reflection.v1`, and the older `v1alpha` that grpcurl before 1.9
//! and Python's grpcio-reflection ask): lists `inference.GRPCInferenceService`,
//! `grpc.health.v1.Health` and reflection itself, and answers their descriptors, so a fraud team
//! can explore and call the port with grpcurl, Postman or Evans without a copy of
//! `inference.proto`.
//!
//! Served here rather than by tonic-reflection, which ends the whole stream with a NOT_FOUND
//! status when a symbol is unknown. The protocol answers an `ErrorResponse` in the stream and
//! carries on, as grpc-go's server does. Python's `ProtoReflectionDescriptorDatabase` relies on
//! that: it turns the `ErrorResponse` into the `KeyError` its `DescriptorPool` expects, and got an
//! `RpcError` instead. A file is sent with the files it imports that this stream has not yet
//! been sent, as grpc-go does.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use prost::Message;
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorProto, FileDescriptorSet};
use tonic::{Request, Response, Status, Streaming};
use tonic_reflection::pb::{v1, v1alpha};
use v1::server_reflection_request::MessageRequest as Ask;
use v1::server_reflection_response::MessageResponse as Answer;

/// The HTTP/2 path prefix of each version's one method.
pub(super) const V1: &str = "/grpc.reflection.v1.ServerReflection/";
/// See [`V1`].
pub(super) const V1ALPHA: &str = "/grpc.reflection.v1alpha.ServerReflection/";

/// gRPC's NOT_FOUND, as an `ErrorResponse` carries it.
const NOT_FOUND: i32 = tonic::Code::NotFound as i32;

/// Every file the port's services are described by, by name and by the symbols each defines.
#[derive(Debug, Default)]
pub(super) struct Index {
    /// File name → (its descriptor, encoded; the files it imports).
    files: HashMap<String, (Vec<u8>, Vec<String>)>,
    /// Fully qualified symbol (`inference.ModelInferRequest.InferInputTensor`) → its file.
    symbols: HashMap<String, String>,
    /// Message types, for `AllExtensionNumbersOfType`.
    messages: HashSet<String>,
    /// Fully qualified service names, sorted.
    services: Vec<String>,
}

impl Index {
    /// The index of pixguard's gRPC port: inference, health and reflection (both versions).
    pub(super) fn of_the_port() -> Result<Index, prost::DecodeError> {
        Index::new(&[
            crate::protocol::grpc::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            v1::FILE_DESCRIPTOR_SET,
            v1alpha::FILE_DESCRIPTOR_SET,
        ])
    }

    /// Indexes encoded `FileDescriptorSet`s; a file named twice is taken once.
    pub(super) fn new(sets: &[&[u8]]) -> Result<Index, prost::DecodeError> {
        let mut index = Index::default();
        for set in sets {
            for file in FileDescriptorSet::decode(*set)?.file {
                index.add_file(file);
            }
        }
        index.services.sort();
        Ok(index)
    }

    fn add_file(&mut self, file: FileDescriptorProto) {
        let name = file.name().to_string();
        if self.files.contains_key(&name) {
            return;
        }
        let package = file.package();
        let scope = |local: &str| {
            if package.is_empty() {
                local.to_string()
            } else {
                format!("{package}.{local}")
            }
        };
        for service in &file.service {
            let full = scope(service.name());
            for method in &service.method {
                self.symbols
                    .insert(format!("{full}.{}", method.name()), name.clone());
            }
            self.symbols.insert(full.clone(), name.clone());
            self.services.push(full);
        }
        for message in &file.message_type {
            self.add_message(&scope(message.name()), message, &name);
        }
        for enumeration in &file.enum_type {
            self.add_enum(package, enumeration, &name);
        }
        self.files
            .insert(name, (file.encode_to_vec(), file.dependency.clone()));
    }

    /// A message, its fields, and the messages and enums nested in it.
    fn add_message(&mut self, full: &str, message: &DescriptorProto, file: &str) {
        self.symbols.insert(full.to_string(), file.to_string());
        self.messages.insert(full.to_string());
        for field in &message.field {
            self.symbols
                .insert(format!("{full}.{}", field.name()), file.to_string());
        }
        for nested in &message.nested_type {
            self.add_message(&format!("{full}.{}", nested.name()), nested, file);
        }
        for enumeration in &message.enum_type {
            self.add_enum(full, enumeration, file);
        }
    }

    /// An enum in `scope`, and its values, which protobuf scopes beside the enum, not in it.
    fn add_enum(&mut self, scope: &str, enumeration: &EnumDescriptorProto, file: &str) {
        let within = |local: &str| {
            if scope.is_empty() {
                local.to_string()
            } else {
                format!("{scope}.{local}")
            }
        };
        self.symbols
            .insert(within(enumeration.name()), file.to_string());
        for value in &enumeration.value {
            self.symbols.insert(within(value.name()), file.to_string());
        }
    }

    /// The answer to one request of a stream that has been sent the files in `sent`.
    fn answer(&self, ask: Ask, sent: &mut HashSet<String>) -> Answer {
        let not_found = |what: String| {
            Answer::ErrorResponse(v1::ErrorResponse {
                error_code: NOT_FOUND,
                error_message: format!("{what} not found"),
            })
        };
        match ask {
            Ask::ListServices(_) => Answer::ListServicesResponse(v1::ListServiceResponse {
                service: self
                    .services
                    .iter()
                    .map(|name| v1::ServiceResponse { name: name.clone() })
                    .collect(),
            }),
            Ask::FileByFilename(name) => match self.files.contains_key(&name) {
                true => self.file_with_imports(&name, sent),
                false => not_found(format!("file {name}")),
            },
            Ask::FileContainingSymbol(symbol) => match self.symbols.get(&symbol) {
                Some(file) => self.file_with_imports(file, sent),
                None => not_found(format!("symbol {symbol}")),
            },
            // No file of the port declares an extension.
            Ask::FileContainingExtension(e) => not_found(format!(
                "extension {} of {}",
                e.extension_number, e.containing_type
            )),
            Ask::AllExtensionNumbersOfType(message) => match self.messages.contains(&message) {
                true => Answer::AllExtensionNumbersResponse(v1::ExtensionNumberResponse {
                    base_type_name: message,
                    extension_number: Vec::new(),
                }),
                false => not_found(format!("message type {message}")),
            },
        }
    }

    /// File `name`, then the files it imports, directly or not, that `sent` does not hold yet.
    fn file_with_imports(&self, name: &str, sent: &mut HashSet<String>) -> Answer {
        let mut files = Vec::new();
        let mut next = vec![name.to_string()];
        let mut seen = HashSet::new();
        while let Some(file) = next.pop() {
            if !seen.insert(file.clone()) {
                continue;
            }
            let Some((encoded, imports)) = self.files.get(&file) else {
                continue;
            };
            if file == name || !sent.contains(&file) {
                files.push(encoded.clone());
                sent.insert(file);
            }
            next.extend(imports.iter().cloned());
        }
        Answer::FileDescriptorResponse(v1::FileDescriptorResponse {
            file_descriptor_proto: files,
        })
    }

    /// The response to `request`; only a request with no question in it ends the stream (with
    /// INVALID_ARGUMENT, as grpc-go does).
    fn respond(
        &self,
        request: v1::ServerReflectionRequest,
        sent: &mut HashSet<String>,
    ) -> Result<v1::ServerReflectionResponse, Status> {
        let Some(ask) = request.message_request.clone() else {
            return Err(Status::invalid_argument(
                "a reflection request with no question",
            ));
        };
        Ok(v1::ServerReflectionResponse {
            valid_host: request.host.clone(),
            message_response: Some(self.answer(ask, sent)),
            original_request: Some(request),
        })
    }
}

/// The reflection service, for both versions.
#[derive(Debug, Clone)]
pub(super) struct Reflection(Arc<Index>);

impl Reflection {
    /// The service over `index`.
    pub(super) fn new(index: Index) -> Reflection {
        Reflection(Arc::new(index))
    }
}

type Answers<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl v1::server_reflection_server::ServerReflection for Reflection {
    type ServerReflectionInfoStream = Answers<v1::ServerReflectionResponse>;

    async fn server_reflection_info(
        &self,
        request: Request<Streaming<v1::ServerReflectionRequest>>,
    ) -> Result<Response<Self::ServerReflectionInfoStream>, Status> {
        let index = self.0.clone();
        let mut sent = HashSet::new();
        let answers = request
            .into_inner()
            .map(move |asked| asked.and_then(|r| index.respond(r, &mut sent)));
        Ok(Response::new(Box::pin(answers)))
    }
}

#[tonic::async_trait]
impl v1alpha::server_reflection_server::ServerReflection for Reflection {
    type ServerReflectionInfoStream = Answers<v1alpha::ServerReflectionResponse>;

    async fn server_reflection_info(
        &self,
        request: Request<Streaming<v1alpha::ServerReflectionRequest>>,
    ) -> Result<Response<Self::ServerReflectionInfoStream>, Status> {
        let index = self.0.clone();
        let mut sent = HashSet::new();
        // v1 is v1alpha under another package name, field for field: one answers for both.
        let answers = request.into_inner().map(move |asked| {
            let request = same_message(&asked?)?;
            same_message(&index.respond(request, &mut sent)?)
        });
        Ok(Response::new(Box::pin(answers)))
    }
}

/// A message re-read as its twin of the other version.
fn same_message<A: Message, B: Message + Default>(message: &A) -> Result<B, Status> {
    B::decode(message.encode_to_vec().as_slice())
        .map_err(|e| Status::internal(format!("reflection: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names of the files an answer holds, in order.
    fn files_of(answer: &Answer) -> Vec<String> {
        let Answer::FileDescriptorResponse(r) = answer else {
            panic!("not files: {answer:?}");
        };
        r.file_descriptor_proto
            .iter()
            .map(|f| {
                FileDescriptorProto::decode(f.as_slice())
                    .unwrap()
                    .name()
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn symbols_of_every_kind_name_their_file_and_unknown_ones_are_an_error_answer() {
        let index = Index::of_the_port().unwrap();
        let mut sent = HashSet::new();
        for symbol in [
            "inference.GRPCInferenceService",
            "inference.GRPCInferenceService.ModelInfer",
            "inference.ModelInferRequest",
            "inference.ModelInferRequest.InferInputTensor",
            "inference.ModelInferRequest.InferInputTensor.datatype",
        ] {
            let answer = index.answer(Ask::FileContainingSymbol(symbol.into()), &mut sent);
            assert_eq!(files_of(&answer), ["inference.proto"], "{symbol}");
        }
        // An enum value is scoped beside its enum.
        let answer = index.answer(
            Ask::FileContainingSymbol("grpc.health.v1.HealthCheckResponse.SERVING".into()),
            &mut sent,
        );
        assert_eq!(files_of(&answer), ["health.proto"]);
        let Answer::ErrorResponse(e) = index.answer(
            Ask::FileContainingSymbol("inference.Nope".into()),
            &mut sent,
        ) else {
            panic!("an unknown symbol is an error answer");
        };
        assert_eq!(e.error_code, NOT_FOUND);
        assert_eq!(e.error_message, "symbol inference.Nope not found");
    }

    #[test]
    fn a_file_comes_with_the_imports_the_stream_has_not_been_sent() {
        // a imports b, b imports c.
        let set =
            |files: Vec<FileDescriptorProto>| FileDescriptorSet { file: files }.encode_to_vec();
        let proto = |name: &str, imports: &[&str]| FileDescriptorProto {
            name: Some(name.into()),
            package: Some("t".into()),
            dependency: imports.iter().map(|s| s.to_string()).collect(),
            message_type: vec![DescriptorProto {
                name: Some(name.trim_end_matches(".proto").to_uppercase()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let encoded = set(vec![
            proto("a.proto", &["b.proto"]),
            proto("b.proto", &["c.proto"]),
            proto("c.proto", &[]),
        ]);
        let index = Index::new(&[&encoded]).unwrap();
        let mut sent = HashSet::new();
        let first = index.answer(Ask::FileContainingSymbol("t.B".into()), &mut sent);
        assert_eq!(files_of(&first), ["b.proto", "c.proto"]);
        // b and c were sent on this stream: a comes alone; b asked again comes again.
        let then = index.answer(Ask::FileByFilename("a.proto".into()), &mut sent);
        assert_eq!(files_of(&then), ["a.proto"]);
        let again = index.answer(Ask::FileByFilename("b.proto".into()), &mut sent);
        assert_eq!(files_of(&again), ["b.proto"]);
        assert!(matches!(
            index.answer(Ask::AllExtensionNumbersOfType("t.C".into()), &mut sent),
            Answer::AllExtensionNumbersResponse(r) if r.base_type_name == "t.C" && r.extension_number.is_empty()
        ));
    }
}

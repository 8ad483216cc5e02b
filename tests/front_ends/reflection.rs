//! gRPC server reflection, as grpcurl and Postman ask it: the services listed, and the
//! descriptor of `inference.GRPCInferenceService` holding every method `inference.proto` declares,
//! over both versions of the protocol; an unknown symbol is a NOT_FOUND `ErrorResponse` and the
//! stream goes on. And as Google's Python client reads it (grpcio-reflection behind protobuf's
//! `DescriptorPool`): every method with its message types, and a `KeyError` for an unknown symbol.

use prost::Message;
use tonic_reflection::pb::{v1, v1alpha};

use super::*;

/// Each `rpc Name(Request) returns (Response)` of `inference.proto`, read from the file itself:
/// (name, request type, response type).
fn declared_rpcs() -> Vec<(String, String, String)> {
    let proto = std::fs::read_to_string(format!("{}/src/protocol/inference.proto", server::ROOT))
        .expect("inference.proto");
    proto
        .lines()
        .filter_map(|l| l.trim().strip_prefix("rpc "))
        .map(|l| {
            let words: Vec<&str> = l
                .split(|c: char| c == '(' || c == ')' || c.is_whitespace())
                .filter(|w| !w.is_empty())
                .collect();
            // [Name, Request, returns, Response, {}]
            (
                words[0].to_string(),
                words[1].to_string(),
                words[3].to_string(),
            )
        })
        .collect()
}

/// The `rpc` names `inference.proto` declares, sorted.
fn declared_methods() -> Vec<String> {
    let mut names: Vec<String> = declared_rpcs()
        .into_iter()
        .map(|(name, _, _)| name)
        .collect();
    names.sort();
    names
}

/// The methods of `service` in the file descriptors a reflection answer holds.
fn methods_of(files: &[Vec<u8>], service: &str) -> Vec<String> {
    let mut names: Vec<String> = files
        .iter()
        .map(|f| prost_types::FileDescriptorProto::decode(f.as_slice()).expect("a descriptor"))
        .flat_map(|file| file.service)
        .filter(|s| s.name() == service)
        .flat_map(|s| s.method)
        .map(|m| m.name().to_string())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_services_and_describes_their_methods() {
    let server = Server::start(&[]);
    let channel = grpc_channel(&server).await;
    let declared = declared_methods();
    assert!(declared.contains(&"ModelInfer".to_string()), "{declared:?}");

    // v1: one stream, three questions.
    use v1::server_reflection_request::MessageRequest as Ask;
    use v1::server_reflection_response::MessageResponse as Answer;
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let ask = |request: Ask| v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let asked = tokio_stream::iter(vec![
        ask(Ask::ListServices(String::new())),
        ask(Ask::FileContainingSymbol(
            "inference.GRPCInferenceService".into(),
        )),
        ask(Ask::FileContainingSymbol("inference.NoSuchService".into())),
        ask(Ask::FileByFilename("health.proto".into())),
    ]);
    let mut answers = client
        .server_reflection_info(asked)
        .await
        .unwrap()
        .into_inner();
    let mut next = async || answers.message().await.unwrap().unwrap().message_response;
    let Some(Answer::ListServicesResponse(listed)) = next().await else {
        panic!("not a list of services");
    };
    let services: Vec<String> = listed.service.into_iter().map(|s| s.name).collect();
    assert_eq!(
        services,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
            "inference.GRPCInferenceService",
        ]
    );
    let Some(Answer::FileDescriptorResponse(files)) = next().await else {
        panic!("no descriptor for the inference service");
    };
    assert_eq!(
        methods_of(&files.file_descriptor_proto, "GRPCInferenceService"),
        declared
    );
    // An unknown symbol is an answer in the stream, as grpc-go gives it, not the stream's end.
    let Some(Answer::ErrorResponse(unknown)) = next().await else {
        panic!("an unknown symbol is not an ErrorResponse");
    };
    assert_eq!(
        unknown.error_code,
        tonic::Code::NotFound as i32,
        "{unknown:?}"
    );
    let Some(Answer::FileDescriptorResponse(files)) = next().await else {
        panic!("the stream did not go on after the unknown symbol");
    };
    assert_eq!(
        methods_of(&files.file_descriptor_proto, "Health"),
        ["Check", "Watch"]
    );

    // v1alpha, which grpcurl before 1.9 and Python's grpcio-reflection ask.
    use v1alpha::server_reflection_request::MessageRequest as AskAlpha;
    use v1alpha::server_reflection_response::MessageResponse as AnswerAlpha;
    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let asked = tokio_stream::iter(vec![v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(AskAlpha::FileContainingSymbol(
            "inference.GRPCInferenceService".into(),
        )),
    }]);
    let answer = client
        .server_reflection_info(asked)
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap();
    let Some(AnswerAlpha::FileDescriptorResponse(files)) = answer.message_response else {
        panic!("no v1alpha descriptor for the inference service");
    };
    assert_eq!(
        methods_of(&files.file_descriptor_proto, "GRPCInferenceService"),
        declared
    );
}

#[test]
fn googles_python_client_reads_every_method_and_a_key_error_for_an_unknown_symbol() {
    let Some(python) = registry::python("the reflection test (grpcio-reflection)") else {
        return;
    };
    let server = Server::start(&[]);
    let read = python_json(
        std::process::Command::new(&python)
            .arg(format!(
                "{}/tests/python/reflection_client.py",
                server::ROOT
            ))
            .arg(server.grpc_address().trim_start_matches("http://")),
    );
    // Each `rpc` of inference.proto with its message types, as the client resolved it.
    let declared: serde_json::Map<String, Value> = declared_rpcs()
        .into_iter()
        .map(|(name, request, response)| {
            let types = json!([
                format!("inference.{request}"),
                format!("inference.{response}")
            ]);
            (name, types)
        })
        .collect();
    assert_eq!(read["inference"], Value::Object(declared));
    assert_eq!(
        read["health"]["Check"],
        json!([
            "grpc.health.v1.HealthCheckRequest",
            "grpc.health.v1.HealthCheckResponse"
        ])
    );
    assert_eq!(
        read["input_tensor_fields"],
        json!(["name", "datatype", "shape", "parameters", "contents"])
    );
    assert_eq!(read["unknown"], "KeyError");
    assert_eq!(read["file_of_method"], "inference.proto");
    assert!(
        read["services"]
            .as_array()
            .unwrap()
            .contains(&json!("inference.GRPCInferenceService")),
        "{read}"
    );
}

//! gRPC server reflection, as grpcurl and Postman ask it: the services listed, and the
//! descriptor of `inference.GRPCInferenceService` holding every method `inference.proto` declares,
//! over both versions of the protocol; an unknown symbol is NOT_FOUND.

use prost::Message;
use tonic_reflection::pb::{v1, v1alpha};

use super::*;

/// The `rpc` names `inference.proto` declares, read from the file itself.
fn declared_methods() -> Vec<String> {
    let proto = std::fs::read_to_string(format!("{}/src/protocol/inference.proto", server::ROOT))
        .expect("inference.proto");
    let mut names: Vec<String> = proto
        .lines()
        .filter_map(|l| l.trim().strip_prefix("rpc "))
        .map(|l| l.split('(').next().unwrap_or("").trim().to_string())
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
    for service in ["inference.GRPCInferenceService", "grpc.health.v1.Health"] {
        assert!(services.iter().any(|s| s == service), "{services:?}");
    }
    let Some(Answer::FileDescriptorResponse(files)) = next().await else {
        panic!("no descriptor for the inference service");
    };
    assert_eq!(
        methods_of(&files.file_descriptor_proto, "GRPCInferenceService"),
        declared
    );
    // tonic-reflection ends the stream with the status (grpc-go answers an ErrorResponse in it).
    let unknown = answers.message().await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");

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

//! Connections to the target: HTTP/1.1 keep-alive or gRPC over HTTP/2 (hyper, both), one per load
//! task, over TLS for `https://` targets (a public endpoint: Cloud Endpoints behind a load
//! balancer).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use crate::protocol::v1::MODEL_VERSION_HEADER;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderName, HeaderValue};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::rustls::pki_types::ServerName;
use tonic::metadata::{MetadataKey, MetadataValue};

use super::requests::Bodies;
use crate::protocol::grpc::grpc_inference_service_client::GrpcInferenceServiceClient;
use crate::protocol::grpc::{MODEL_INFER_PATH, unframe};

/// Pause after a failed connection attempt.
const CONNECT_BACKOFF: Duration = Duration::from_millis(20);

/// A successful answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answered {
    /// The model version that scored it, when the server says.
    pub version: Option<String>,
}

/// Where the load goes and what it sends.
pub struct Target {
    /// The Host header: `host[:port]` as the URL spells it.
    authority: String,
    /// `host:port`, the port defaulted from the scheme.
    address: String,
    /// For gRPC: `scheme://host:port/` and `ModelInfer`'s path.
    infer_uri: hyper::Uri,
    /// `https://`: TLS with the platform's roots, for the server name in the URL; the second
    /// connector offers HTTP/2 (gRPC), the first HTTP/1.1.
    tls: Option<(TlsConnector, TlsConnector, ServerName<'static>)>,
    /// Extra request headers (`--header`), e.g. an API key; gRPC sends them as metadata.
    headers: Vec<(HeaderName, HeaderValue)>,
    bodies: Arc<Bodies>,
    timeout: Duration,
}

/// One connection, opened lazily and reopened after an error.
pub enum Conn {
    /// HTTP/1.1.
    Http(Option<SendRequest<Full<Bytes>>>),
    /// gRPC over one HTTP/2 connection.
    Grpc(Option<h2::client::SendRequest<Bytes>>),
}

impl Target {
    /// A target at `url` (`http[s]://host[:port]`) sending `bodies` with `headers` (`Name: value`).
    pub fn new(
        url: &str,
        bodies: Bodies,
        timeout: Duration,
        headers: &[String],
    ) -> anyhow::Result<Self> {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| anyhow::anyhow!("--url {url:?} is not a URL: {e}"))?;
        let secure = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => anyhow::bail!("--url {url:?}: the scheme must be http:// or https://"),
        };
        let host = uri
            .host()
            .ok_or_else(|| anyhow::anyhow!("--url {url:?} has no host"))?;
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let authority = uri
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_else(|| host.to_string());
        let address = format!("{host}:{port}");
        let tls = if secure {
            let connector = |alpn: &[u8]| {
                let mut config = <ClientConfig as rustls_platform_verifier::ConfigVerifierExt>::with_platform_verifier()
                    .map_err(|e| anyhow::anyhow!("TLS for {url:?}: {e}"))?;
                config.alpn_protocols = vec![alpn.to_vec()];
                Ok::<_, anyhow::Error>(TlsConnector::from(Arc::new(config)))
            };
            let name = ServerName::try_from(host.trim_matches(['[', ']']).to_string())
                .map_err(|e| anyhow::anyhow!("--url {url:?}: {e}"))?;
            Some((connector(b"http/1.1")?, connector(b"h2")?, name))
        } else {
            None
        };
        let mut parsed = Vec::new();
        for h in headers {
            let (name, value) = h
                .split_once(':')
                .ok_or_else(|| anyhow::anyhow!("--header {h:?} is not `Name: value`"))?;
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            let header_name = HeaderName::try_from(name.as_str())
                .map_err(|e| anyhow::anyhow!("--header {name:?}: {e}"))?;
            let header_value = HeaderValue::try_from(value)
                .map_err(|e| anyhow::anyhow!("--header {name:?}: {e}"))?;
            parsed.push((header_name, header_value));
        }
        anyhow::ensure!(!bodies.is_empty(), "no requests to send");
        let scheme = if secure { "https" } else { "http" };
        let infer_uri = format!("{scheme}://{authority}{MODEL_INFER_PATH}")
            .parse()
            .map_err(|e| anyhow::anyhow!("--url {url:?}: {e}"))?;
        Ok(Target {
            infer_uri,
            authority,
            address,
            tls,
            headers: parsed,
            bodies: Arc::new(bodies),
            timeout,
        })
    }

    /// Distinct requests available.
    pub fn requests(&self) -> usize {
        self.bodies.len()
    }

    /// A connection of the right kind, not yet open.
    pub fn conn(&self) -> Conn {
        match *self.bodies {
            Bodies::Http { .. } => Conn::Http(None),
            Bodies::Grpc(_) => Conn::Grpc(None),
        }
    }

    /// Sends request `i` (modulo the number of requests) and waits for the whole answer; `Ok`
    /// carries the model version that answered (`x-model-version`, or the gRPC answer's field)
    /// when the server names one. `Err` carries the outcome's label: an HTTP status, a gRPC code,
    /// or a transport failure.
    pub async fn call(&self, conn: &mut Conn, i: usize) -> Result<Answered, String> {
        match tokio::time::timeout(self.timeout, self.call_inner(conn, i)).await {
            Ok(result) => result,
            Err(_) => {
                // The connection may still carry the late answer: start afresh.
                *conn = self.conn();
                Err("timeout".into())
            }
        }
    }

    async fn call_inner(&self, conn: &mut Conn, i: usize) -> Result<Answered, String> {
        let result = self.exchange(conn, i).await;
        if matches!(&result, Err(e) if e == "connect") {
            // A refused connection fails in microseconds; retrying at once would only spin.
            tokio::time::sleep(CONNECT_BACKOFF).await;
        }
        result
    }

    async fn exchange(&self, conn: &mut Conn, i: usize) -> Result<Answered, String> {
        match (&*self.bodies, conn) {
            (
                Bodies::Http {
                    path,
                    content_type,
                    bodies,
                },
                Conn::Http(slot),
            ) => {
                if slot.as_ref().is_none_or(|s| s.is_closed()) {
                    *slot = Some(handshake(self.open(false).await?).await?);
                }
                let Some(sender) = slot.as_mut() else {
                    return Err("connect".into());
                };
                let mut request = hyper::Request::post(path.as_str())
                    .header(hyper::header::HOST, self.authority.as_str())
                    .header(hyper::header::CONTENT_TYPE, *content_type)
                    .body(Full::new(bodies[i % bodies.len()].clone()))
                    .map_err(|e| format!("request: {e}"))?;
                for (name, value) in &self.headers {
                    request.headers_mut().insert(name, value.clone());
                }
                let outcome = async {
                    sender.ready().await?;
                    let response = sender.send_request(request).await?;
                    let status = response.status();
                    let version = response.headers().get(MODEL_VERSION_HEADER).cloned();
                    let closing = response
                        .headers()
                        .get(hyper::header::CONNECTION)
                        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
                    response.into_body().collect().await?;
                    Ok::<_, hyper::Error>((status, version, closing))
                }
                .await;
                // The server closes the connection after an answer that says so (its age limit,
                // or a drain): the next request opens a new one instead of failing on it.
                if matches!(outcome, Ok((_, _, true))) {
                    *slot = None;
                }
                match outcome {
                    Ok((status, version, _)) if status.is_success() => Ok(Answered {
                        version: version.map(|v| String::from_utf8_lossy(v.as_bytes()).into()),
                    }),
                    Ok((status, _, _)) => Err(status.as_u16().to_string()),
                    Err(_) => {
                        *slot = None;
                        Err("io".into())
                    }
                }
            }
            (Bodies::Grpc(requests), Conn::Grpc(slot)) => {
                let body = requests[i % requests.len()].clone();
                let mut retried = false;
                let outcome = loop {
                    if slot.is_none() {
                        *slot = Some(handshake_h2(self.open(true).await?).await?);
                    }
                    let Some(sender) = slot.as_mut() else {
                        return Err("connect".into());
                    };
                    let mut request = hyper::Request::post(self.infer_uri.clone())
                        .header(hyper::header::CONTENT_TYPE, "application/grpc")
                        .header(hyper::header::TE, "trailers")
                        .body(())
                        .map_err(|e| format!("request: {e}"))?;
                    for (name, value) in &self.headers {
                        request.headers_mut().insert(name, value.clone());
                    }
                    match grpc_call(sender, request, body.clone()).await {
                        // Turned away unprocessed by the server's GOAWAY (the connection was
                        // old or idle, or the server is stopping): sent again on a new
                        // connection, as gRPC's own clients retry such a call transparently.
                        Err(e) if turned_away(&e) && !retried => {
                            *slot = None;
                            retried = true;
                        }
                        other => break other,
                    }
                };
                match outcome {
                    Ok((head, body, trailers)) if head.status.is_success() => {
                        grpc_answer(&head, &body, trailers.as_ref())
                    }
                    Ok((head, _, _)) => Err(head.status.as_u16().to_string()),
                    Err(_) => {
                        *slot = None;
                        Err("io".into())
                    }
                }
            }
            (_, conn) => {
                *conn = self.conn();
                Err("internal: connection kind".into())
            }
        }
    }

    /// A connection to the target: TCP, and TLS over it for `https://`, offering HTTP/2 or
    /// HTTP/1.1 by ALPN.
    async fn open(&self, http2: bool) -> Result<Box<dyn Io>, String> {
        let stream = tokio::net::TcpStream::connect(&self.address)
            .await
            .map_err(|_| "connect".to_string())?;
        let _ = stream.set_nodelay(true);
        let Some((http1_tls, http2_tls, name)) = &self.tls else {
            return Ok(Box::new(stream));
        };
        let connector = if http2 { http2_tls } else { http1_tls };
        let stream = connector
            .connect(name.clone(), stream)
            .await
            .map_err(|_| "tls".to_string())?;
        Ok(Box::new(stream))
    }
}

/// A connection's byte stream: TCP, or TLS over it.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Io for T {}

/// HTTP/1.1 over an open stream; the connection task runs until the sender is dropped.
async fn handshake<S>(stream: S) -> Result<SendRequest<Full<Bytes>>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = hyper_util::rt::TokioIo::new(stream);
    let (sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|_| "connect".to_string())?;
    tokio::spawn(connection);
    Ok(sender)
}

/// HTTP/2 over an open stream, as gRPC clients speak it (prior knowledge on cleartext).
async fn handshake_h2<S>(stream: S) -> Result<h2::client::SendRequest<Bytes>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = h2::client::handshake(stream)
        .await
        .map_err(|_| "connect".to_string())?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One unary call: the head and the whole body queued together, so that they leave in one write
/// as gRPC's own clients send a call (hyper's client flushes the head before the body: two
/// segments per call, which the server then reads and acknowledges apart).
async fn grpc_call(
    sender: &mut h2::client::SendRequest<Bytes>,
    request: hyper::Request<()>,
    body: Bytes,
) -> Result<
    (
        hyper::http::response::Parts,
        bytes::BytesMut,
        Option<hyper::HeaderMap>,
    ),
    h2::Error,
> {
    std::future::poll_fn(|cx| sender.poll_ready(cx)).await?;
    let (response, mut send) = sender.send_request(request, false)?;
    send.send_data(body, true)?;
    let (head, mut received) = response.await?.into_parts();
    let mut body = bytes::BytesMut::new();
    while let Some(data) = received.data().await {
        let data = data?;
        let _ = received.flow_control().release_capacity(data.len());
        body.extend_from_slice(&data);
    }
    Ok((head, body, received.trailers().await?))
}

/// Whether a call failed because the server's graceful GOAWAY came before it was taken: the
/// connection refuses new calls once one arrives, and calls above the last one the server names
/// fail with it. Such a call never reached the service, so sending it again is safe.
fn turned_away(e: &h2::Error) -> bool {
    e.is_go_away() && e.is_remote() && e.reason() == Some(h2::Reason::NO_ERROR)
}

/// A gRPC answer's outcome: `grpc-status` from the trailers (or the headers, for a trailers-only
/// answer), and on success the model version from the one message in the body.
fn grpc_answer(
    head: &hyper::http::response::Parts,
    body: &[u8],
    trailers: Option<&hyper::HeaderMap>,
) -> Result<Answered, String> {
    let status = trailers
        .and_then(|t| t.get("grpc-status"))
        .or_else(|| head.headers.get("grpc-status"))
        .map(|v| tonic::Code::from_bytes(v.as_bytes()))
        .unwrap_or(tonic::Code::Unknown);
    if status != tonic::Code::Ok {
        return Err(format!("grpc:{status:?}"));
    }
    let answer = unframe(body, usize::MAX)
        .ok()
        .and_then(|m| <AnswerVersion as prost::Message>::decode(&body[m]).ok())
        .ok_or_else(|| format!("grpc:{:?}", tonic::Code::Internal))?;
    Ok(Answered {
        version: Some(answer.model_version),
    })
}

/// A GET of `url` with the run's `headers` (`Name: value`: an API key), for the reads beside the
/// load (the model's metadata, its statistics).
pub(super) fn http_get(url: &str, headers: &[String]) -> reqwest::RequestBuilder {
    let mut request = reqwest::Client::new().get(url);
    for (name, value) in headers.iter().filter_map(|h| h.split_once(':')) {
        request = request.header(name.trim(), value.trim());
    }
    request
}

/// `message` as a gRPC call carrying the run's `headers` as metadata, for the same reads.
pub(super) fn grpc_request<T>(message: T, headers: &[String]) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    for (name, value) in headers.iter().filter_map(|h| h.split_once(':')) {
        if let (Ok(k), Ok(v)) = (
            MetadataKey::from_bytes(name.trim().to_ascii_lowercase().as_bytes()),
            MetadataValue::try_from(value.trim()),
        ) {
            request.metadata_mut().insert(k, v);
        }
    }
    request
}

/// The datatypes the server's model metadata declares for the transaction's fields
/// (`GET /v2/models/{model}`, or gRPC `ModelMetadata`), for `--oip-types metadata`. Refuses a
/// model that declares none of them, or a type pixguard cannot encode.
pub async fn declared_input_types(
    api: super::requests::Api,
    url: &str,
    model: &str,
    headers: &[String],
) -> anyhow::Result<super::requests::InputTypes> {
    use super::requests::Api;
    use crate::protocol::grpc::ModelMetadataRequest;
    use crate::protocol::oip::{Datatype, FIELD_INPUTS};

    let declared: Vec<(String, String)> = match api {
        Api::OipHttp => {
            let request = http_get(&format!("{url}/v2/models/{model}"), headers);
            let metadata: serde_json::Value =
                request.send().await?.error_for_status()?.json().await?;
            metadata["inputs"]
                .as_array()
                .ok_or_else(|| anyhow::anyhow!("{url}: model {model}'s metadata has no inputs"))?
                .iter()
                .map(|i| {
                    (
                        i["name"].as_str().unwrap_or_default().to_string(),
                        i["datatype"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        }
        Api::OipGrpc => {
            let mut client = GrpcInferenceServiceClient::connect(url.to_string()).await?;
            let request = grpc_request(
                ModelMetadataRequest {
                    name: model.into(),
                    version: String::new(),
                },
                headers,
            );
            client
                .model_metadata(request)
                .await?
                .into_inner()
                .inputs
                .into_iter()
                .map(|i| (i.name, i.datatype))
                .collect()
        }
        _ => anyhow::bail!("--oip-types metadata applies to --api oip-http and oip-grpc"),
    };
    let mut types = super::requests::InputTypes::new();
    // Inputs other than the fields belong to another input mode (pixguard's features and
    // categories): not what this run sends.
    for (name, datatype) in declared
        .into_iter()
        .filter(|(name, _)| FIELD_INPUTS.iter().any(|(n, _, _)| n == name))
    {
        let datatype = Datatype::from_name(&datatype).ok_or_else(|| {
            anyhow::anyhow!(
                "model {model} declares {name} as {datatype}, which pixguard cannot encode"
            )
        })?;
        types.insert(name, datatype);
    }
    anyhow::ensure!(
        !types.is_empty(),
        "model {model}'s metadata declares none of the transaction's fields as inputs"
    );
    Ok(types)
}

/// The one field of a `ModelInferResponse` the bench tallies (prost skips the others).
#[derive(Clone, PartialEq, prost::Message)]
struct AnswerVersion {
    #[prost(string, tag = "2")]
    model_version: String,
}

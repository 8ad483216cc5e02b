//! Connections to the target: HTTP/1.1 keep-alive (hyper) or gRPC (tonic), one per load task.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use crate::protocol::v1::MODEL_VERSION_HEADER;
use hyper::client::conn::http1::SendRequest;
use tonic::transport::{Channel, Endpoint};

use super::requests::Bodies;
use crate::protocol::grpc::grpc_inference_service_client::GrpcInferenceServiceClient;

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
    /// `host:port`.
    authority: String,
    /// For gRPC: `http://host:port`.
    url: String,
    bodies: Arc<Bodies>,
    timeout: Duration,
}

/// One connection, opened lazily and reopened after an error.
pub enum Conn {
    /// HTTP/1.1.
    Http(Option<SendRequest<Full<Bytes>>>),
    /// gRPC over one HTTP/2 connection.
    Grpc(Option<GrpcInferenceServiceClient<Channel>>),
}

impl Target {
    /// A target at `url` (`http://host:port`) sending `bodies`.
    pub fn new(url: &str, bodies: Bodies, timeout: Duration) -> anyhow::Result<Self> {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| anyhow::anyhow!("--url {url:?} is not a URL: {e}"))?;
        anyhow::ensure!(
            uri.scheme_str() == Some("http"),
            "--url {url:?}: only http:// targets are supported"
        );
        let authority = uri
            .authority()
            .map(|a| a.to_string())
            .ok_or_else(|| anyhow::anyhow!("--url {url:?} has no host"))?;
        anyhow::ensure!(!bodies.is_empty(), "no requests to send");
        Ok(Target {
            url: format!("http://{authority}"),
            authority,
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
                    *slot = Some(self.connect_http().await?);
                }
                let Some(sender) = slot.as_mut() else {
                    return Err("connect".into());
                };
                let request = hyper::Request::post(path.as_str())
                    .header(hyper::header::HOST, self.authority.as_str())
                    .header(hyper::header::CONTENT_TYPE, *content_type)
                    .body(Full::new(bodies[i % bodies.len()].clone()))
                    .map_err(|e| format!("request: {e}"))?;
                let outcome = async {
                    sender.ready().await?;
                    let response = sender.send_request(request).await?;
                    let status = response.status();
                    let version = response.headers().get(MODEL_VERSION_HEADER).cloned();
                    response.into_body().collect().await?;
                    Ok::<_, hyper::Error>((status, version))
                }
                .await;
                match outcome {
                    Ok((status, version)) if status.is_success() => Ok(Answered {
                        version: version.map(|v| String::from_utf8_lossy(v.as_bytes()).into()),
                    }),
                    Ok((status, _)) => Err(status.as_u16().to_string()),
                    Err(_) => {
                        *slot = None;
                        Err("io".into())
                    }
                }
            }
            (Bodies::Grpc(requests), Conn::Grpc(slot)) => {
                if slot.is_none() {
                    let channel = Endpoint::from_shared(self.url.clone())
                        .map_err(|_| "connect".to_string())?
                        .tcp_nodelay(true)
                        .connect()
                        .await
                        .map_err(|_| "connect".to_string())?;
                    *slot = Some(GrpcInferenceServiceClient::new(channel));
                }
                let Some(client) = slot.as_mut() else {
                    return Err("connect".into());
                };
                match client
                    .model_infer(requests[i % requests.len()].clone())
                    .await
                {
                    Ok(answer) => Ok(Answered {
                        version: Some(answer.into_inner().model_version),
                    }),
                    Err(status) => Err(format!("grpc:{:?}", status.code())),
                }
            }
            (_, conn) => {
                *conn = self.conn();
                Err("internal: connection kind".into())
            }
        }
    }

    async fn connect_http(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let stream = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|_| "connect".to_string())?;
        let _ = stream.set_nodelay(true);
        let io = hyper_util::rt::TokioIo::new(stream);
        let (sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|_| "connect".to_string())?;
        tokio::spawn(connection);
        Ok(sender)
    }
}

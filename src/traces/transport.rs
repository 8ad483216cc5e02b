//! How an export reaches the collector: OTLP/gRPC (`TraceService/Export`) or OTLP/HTTP (the same
//! message as binary protobuf, POSTed to the traces URL), with the exporter's headers and
//! optional gzip. Both answer with the collector's `ExportTraceServiceResponse`, or say whether a
//! failure is one the OTLP specification says to retry. The request is encoded once and sent as
//! those bytes, so a retry does not encode (or copy) its spans again.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use bytes::{BufMut, Bytes};
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::codegen::http::{HeaderMap, HeaderName, HeaderValue};
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::otlp::ExportTraceServiceResponse;
use crate::config::{OTLP_HEADER_VARIABLES, OtlpCompression, OtlpProtocol, TracesConfig};

/// The OTLP/gRPC export method.
const EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// OTLP/HTTP's binary protobuf content type.
const PROTOBUF: &str = "application/x-protobuf";
/// How much of a refusing collector's answer goes into the log.
const ERROR_BODY: usize = 200;

/// A connection to the collector; its first use connects (and a later one reconnects).
pub enum Transport {
    /// OTLP/gRPC.
    Grpc {
        /// The client over a lazily connected channel.
        grpc: tonic::client::Grpc<Channel>,
        /// The exporter's headers, as metadata on every call.
        metadata: MetadataMap,
    },
    /// OTLP/HTTP with binary protobuf.
    Http {
        /// The client, with the export timeout.
        client: reqwest::Client,
        /// The traces URL.
        url: String,
        /// The exporter's headers.
        headers: HeaderMap,
        /// Whether bodies are gzipped.
        gzip: bool,
    },
}

/// The exporter's headers: `OTEL_EXPORTER_OTLP_TRACES_HEADERS`, else `OTEL_EXPORTER_OTLP_HEADERS`
/// (`key=value,…`, values percent-encoded). Credentials, so an error names the entry, never its
/// value.
pub fn headers_from_environment() -> anyhow::Result<HeaderMap> {
    let found = OTLP_HEADER_VARIABLES
        .iter()
        .find_map(|name| match std::env::var(name) {
            Ok(v) if !v.trim().is_empty() => Some((*name, v)),
            _ => None,
        });
    let Some((name, text)) = found else {
        return Ok(HeaderMap::new());
    };
    headers(&text).context(name)
}

/// `key=value,…` as HTTP headers (names lowercased, as gRPC metadata needs them).
pub fn headers(text: &str) -> anyhow::Result<HeaderMap> {
    let mut map = HeaderMap::new();
    for (key, value) in crate::config::otel_pairs(text).map_err(anyhow::Error::msg)? {
        let name = HeaderName::from_bytes(key.to_ascii_lowercase().as_bytes())
            .with_context(|| format!("{key} is not a header name"))?;
        let mut value = HeaderValue::from_str(&value)
            .with_context(|| format!("the value of {key} is not a header value"))?;
        value.set_sensitive(true);
        map.append(name, value);
    }
    Ok(map)
}

impl Transport {
    /// The transport `config` names, not yet connected; must be called inside a tokio runtime.
    pub fn new(config: &TracesConfig, headers: HeaderMap) -> anyhow::Result<Transport> {
        let timeout = Duration::from_millis(config.export_timeout_ms);
        let gzip = config.compression == OtlpCompression::Gzip;
        Ok(match config.protocol {
            OtlpProtocol::Grpc => {
                let mut endpoint = Endpoint::from_shared(config.otlp_endpoint.clone())
                    .with_context(|| format!("traces.otlp_endpoint: {}", config.otlp_endpoint))?
                    .connect_timeout(timeout)
                    .timeout(timeout);
                if config.otlp_endpoint.starts_with("https://") {
                    endpoint = endpoint
                        .tls_config(ClientTlsConfig::new().with_native_roots())
                        .context("traces.otlp_endpoint: TLS")?;
                }
                let mut grpc = tonic::client::Grpc::new(endpoint.connect_lazy());
                if gzip {
                    grpc = grpc.send_compressed(tonic::codec::CompressionEncoding::Gzip);
                }
                Transport::Grpc {
                    grpc,
                    metadata: MetadataMap::from_headers(headers),
                }
            }
            OtlpProtocol::HttpProtobuf => Transport::Http {
                client: reqwest::Client::builder()
                    .connect_timeout(timeout)
                    .timeout(timeout)
                    .build()
                    .context("traces: the OTLP/HTTP client")?,
                url: config.otlp_endpoint.clone(),
                headers,
                gzip,
            },
        })
    }

    /// One export call of an encoded `ExportTraceServiceRequest`: the collector's answer, or why
    /// there was none.
    pub async fn send(&mut self, request: Bytes) -> Result<ExportTraceServiceResponse, Failure> {
        match self {
            Transport::Grpc { grpc, metadata } => {
                grpc.ready()
                    .await
                    .map_err(|e| Failure::retryable(e.to_string(), None))?;
                let mut call = tonic::Request::new(request);
                *call.metadata_mut() = metadata.clone();
                grpc.unary(call, PathAndQuery::from_static(EXPORT), Encoded)
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(|status| grpc_failure(&status))
            }
            Transport::Http {
                client,
                url,
                headers,
                gzip,
            } => {
                let mut call = client
                    .post(url.as_str())
                    .headers(headers.clone())
                    .header(reqwest::header::CONTENT_TYPE, PROTOBUF);
                let body = if *gzip {
                    call = call.header(reqwest::header::CONTENT_ENCODING, "gzip");
                    Bytes::from(
                        gzipped(&request).map_err(|e| Failure::fatal(format!("gzip: {e}")))?,
                    )
                } else {
                    request
                };
                let answer = call
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| Failure::retryable(e.to_string(), None))?;
                let status = answer.status();
                let retry_after = answer
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let bytes = answer
                    .bytes()
                    .await
                    .map_err(|e| Failure::retryable(e.to_string(), None))?;
                if !status.is_success() {
                    let text = String::from_utf8_lossy(&bytes);
                    let text: String = text.chars().take(ERROR_BODY).collect();
                    let message = format!("HTTP {status}: {text}");
                    // The specification's retryable statuses.
                    return Err(match status.as_u16() {
                        429 | 502 | 503 | 504 => Failure::retryable(message, retry_after),
                        _ => Failure::fatal(message),
                    });
                }
                // An empty body is an empty message: every span taken.
                ExportTraceServiceResponse::decode(bytes.as_ref()).map_err(|e| {
                    Failure::fatal(format!(
                        "HTTP {status} with an answer that is not OTLP: {e}"
                    ))
                })
            }
        }
    }
}

/// `google.rpc.Status`, as a gRPC answer's `grpc-status-details-bin` carries it.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

/// `google.rpc.RetryInfo`: how long the server asks the client to wait.
#[derive(Clone, PartialEq, prost::Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<prost_types::Duration>,
}

const RETRY_INFO: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// The delay a gRPC answer's `google.rpc.RetryInfo` detail asks for, if it has one.
fn retry_delay(status: &tonic::Status) -> Option<Duration> {
    let details = RpcStatus::decode(status.details()).ok()?;
    let info = details.details.iter().find(|d| d.type_url == RETRY_INFO)?;
    let delay = RetryInfo::decode(info.value.as_slice()).ok()?.retry_delay?;
    let nanos = u64::try_from(delay.seconds)
        .ok()?
        .checked_mul(1_000_000_000)?;
    Some(Duration::from_nanos(
        nanos.checked_add(u64::try_from(delay.nanos).ok()?)?,
    ))
}

/// What a refused gRPC export means: the specification's retryable codes are retried;
/// RESOURCE_EXHAUSTED only when the collector says when (a `RetryInfo` detail: it can take the
/// spans later), and any code's `RetryInfo` delay is waited for as HTTP's `Retry-After` is.
fn grpc_failure(status: &tonic::Status) -> Failure {
    use tonic::Code as C;
    let delay = retry_delay(status);
    let retryable = match status.code() {
        C::Cancelled
        | C::DeadlineExceeded
        | C::Aborted
        | C::OutOfRange
        | C::Unavailable
        | C::DataLoss => true,
        C::ResourceExhausted => delay.is_some(),
        _ => false,
    };
    Failure {
        message: format!("{}: {}", status.code(), status.message()),
        retryable,
        retry_after: delay.filter(|_| retryable),
    }
}

/// Why an export got no answer that took its spans.
#[derive(Debug)]
pub struct Failure {
    /// What happened, for the log.
    pub message: String,
    /// Whether the specification says to send the same request again (the collector is
    /// restarting, overloaded, or the connection failed).
    pub retryable: bool,
    /// How long the collector asked to be left alone (HTTP's `Retry-After`, in seconds).
    pub retry_after: Option<Duration>,
}

impl Failure {
    fn retryable(message: String, retry_after: Option<Duration>) -> Failure {
        Failure {
            message,
            retryable: true,
            retry_after,
        }
    }

    fn fatal(message: String) -> Failure {
        Failure {
            message,
            retryable: false,
            retry_after: None,
        }
    }
}

/// A gRPC codec whose request is already an encoded message, and whose answer is OTLP's.
#[derive(Debug, Clone, Copy, Default)]
struct Encoded;

impl Codec for Encoded {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = Encoded;
    type Decoder = Encoded;

    fn encoder(&mut self) -> Encoded {
        Encoded
    }

    fn decoder(&mut self) -> Encoded {
        Encoded
    }
}

impl Encoder for Encoded {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Encoded {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut DecodeBuf<'_>,
    ) -> Result<Option<ExportTraceServiceResponse>, tonic::Status> {
        ExportTraceServiceResponse::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(format!("an answer that is not OTLP: {e}")))
    }
}

fn gzipped(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 4),
        flate2::Compression::fast(),
    );
    encoder.write_all(bytes)?;
    encoder.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_lowercased_decoded_and_marked_sensitive() {
        let map = headers("Authorization=Bearer%20t0k3n,x-scope-orgid=pix").unwrap();
        let auth = map.get("authorization").unwrap();
        assert_eq!(auth, "Bearer t0k3n");
        assert!(auth.is_sensitive());
        assert_eq!(map.get("x-scope-orgid").unwrap(), "pix");
        assert!(
            MetadataMap::from_headers(map)
                .get("authorization")
                .is_some()
        );
    }

    #[test]
    fn a_bad_header_is_named_without_its_value() {
        let e = format!("{:#}", headers("ok=1,bad name=secret").unwrap_err());
        assert!(e.starts_with("bad name is not a header name"), "{e}");
        assert!(!e.contains("secret"), "{e}");
        let e = format!("{:#}", headers("k=line%0Abreak").unwrap_err());
        assert!(e.starts_with("the value of k is not a header value"), "{e}");
        assert!(!e.contains("break"), "{e}");
    }

    #[test]
    fn gzip_round_trips() {
        use std::io::Read;
        let body = b"an OTLP request, many times over".repeat(50);
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(gzipped(&body).unwrap().as_slice())
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, body);
    }

    /// A status with a `RetryInfo` detail of `delay`, as a collector would send it.
    fn status(code: tonic::Code, delay: Option<prost_types::Duration>) -> tonic::Status {
        let details = RpcStatus {
            code: code as i32,
            message: "busy".into(),
            details: delay
                .map(|d| prost_types::Any {
                    type_url: RETRY_INFO.into(),
                    value: RetryInfo {
                        retry_delay: Some(d),
                    }
                    .encode_to_vec(),
                })
                .into_iter()
                .collect(),
        };
        tonic::Status::with_details(code, "busy", details.encode_to_vec().into())
    }

    #[test]
    fn resource_exhausted_is_retried_only_when_the_collector_says_when() {
        let later = prost_types::Duration {
            seconds: 1,
            nanos: 500_000_000,
        };
        let f = grpc_failure(&status(tonic::Code::ResourceExhausted, Some(later)));
        assert!(f.retryable);
        assert_eq!(f.retry_after, Some(Duration::from_millis(1500)));
        let f = grpc_failure(&status(tonic::Code::ResourceExhausted, None));
        assert!(!f.retryable && f.retry_after.is_none());
        // UNAVAILABLE is retried either way, after the delay asked for when there is one.
        let f = grpc_failure(&status(tonic::Code::Unavailable, None));
        assert!(f.retryable && f.retry_after.is_none());
        let f = grpc_failure(&status(tonic::Code::Unavailable, Some(later)));
        assert_eq!(f.retry_after, Some(Duration::from_millis(1500)));
        // Never a retry for what the specification does not list, whatever the detail.
        let f = grpc_failure(&status(tonic::Code::InvalidArgument, Some(later)));
        assert!(!f.retryable && f.retry_after.is_none());
        // A negative delay is no delay.
        let f = grpc_failure(&status(
            tonic::Code::ResourceExhausted,
            Some(prost_types::Duration {
                seconds: -1,
                nanos: 0,
            }),
        ));
        assert!(!f.retryable);
    }
}

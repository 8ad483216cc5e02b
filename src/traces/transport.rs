//! How an export reaches the collector: OTLP/gRPC (`TraceService/Export`) or OTLP/HTTP (the same
//! message as binary protobuf, POSTed to the traces URL), with the exporter's headers and
//! optional gzip. Both answer with the collector's `ExportTraceServiceResponse`.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use prost::Message;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::codegen::http::{HeaderMap, HeaderName, HeaderValue};
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::otlp::{ExportTraceServiceRequest, ExportTraceServiceResponse};
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

    /// One export call: the collector's answer, or why there was none.
    pub async fn send(
        &mut self,
        request: ExportTraceServiceRequest,
    ) -> Result<ExportTraceServiceResponse, String> {
        match self {
            Transport::Grpc { grpc, metadata } => {
                grpc.ready().await.map_err(|e| e.to_string())?;
                let codec = tonic_prost::ProstCodec::<
                    ExportTraceServiceRequest,
                    ExportTraceServiceResponse,
                >::default();
                let mut call = tonic::Request::new(request);
                *call.metadata_mut() = metadata.clone();
                grpc.unary(call, PathAndQuery::from_static(EXPORT), codec)
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(|status| format!("{}: {}", status.code(), status.message()))
            }
            Transport::Http {
                client,
                url,
                headers,
                gzip,
            } => {
                let mut body = request.encode_to_vec();
                let mut call = client
                    .post(url.as_str())
                    .headers(headers.clone())
                    .header(reqwest::header::CONTENT_TYPE, PROTOBUF);
                if *gzip {
                    body = gzipped(&body).map_err(|e| format!("gzip: {e}"))?;
                    call = call.header(reqwest::header::CONTENT_ENCODING, "gzip");
                }
                let answer = call.body(body).send().await.map_err(|e| e.to_string())?;
                let status = answer.status();
                let bytes = answer.bytes().await.map_err(|e| e.to_string())?;
                if !status.is_success() {
                    let text = String::from_utf8_lossy(&bytes);
                    let text: String = text.chars().take(ERROR_BODY).collect();
                    return Err(format!("HTTP {status}: {text}"));
                }
                // An empty body is an empty message: every span taken.
                ExportTraceServiceResponse::decode(bytes.as_ref())
                    .map_err(|e| format!("HTTP {status} with an answer that is not OTLP: {e}"))
            }
        }
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
}

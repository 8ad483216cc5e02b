//! Request bodies sent compressed (`content-encoding: gzip` / `deflate`, as tritonclient sends
//! them): scored as the plain body is, on both HTTP APIs; an unknown coding, a broken stream and a
//! body that inflates past `server.body_limit_bytes` are refused.

use std::io::Write;

use flate2::Compression;
use flate2::write::{GzEncoder, ZlibEncoder};

use super::*;

fn compress(encoding: &str, data: &[u8]) -> Vec<u8> {
    match encoding {
        "gzip" => {
            let mut e = GzEncoder::new(Vec::new(), Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        _ => {
            let mut e = ZlibEncoder::new(Vec::new(), Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_bodies_score_as_plain_ones_on_both_http_apis() {
    let server = Server::start(&["--set", "server.body_limit_bytes=200000"]);
    let client = reqwest::Client::new();
    let batch = json!({ "transactions": transactions(50, 73) }).to_string();
    let (oip, _) = oip_forms(&transactions(1, 74).remove(0), MODEL);
    for (path, body) in [
        ("/v1/score".to_string(), batch.into_bytes()),
        (infer_path(MODEL), oip),
    ] {
        let post = |encoding: Option<&str>, body: Vec<u8>| {
            let mut r = client
                .post(server.url(&path))
                .header("content-type", "application/json");
            if let Some(e) = encoding {
                r = r.header("content-encoding", e);
            }
            r.body(body).send()
        };
        let plain = post(None, body.clone()).await.unwrap();
        assert_eq!(plain.status(), 200, "{path}");
        let plain: Value = plain.json().await.unwrap();
        for encoding in ["gzip", "deflate"] {
            let r = post(Some(encoding), compress(encoding, &body))
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{path} {encoding}");
            let mut v: Value = r.json().await.unwrap();
            if let Some(id) = v.get_mut("id") {
                *id = plain["id"].clone();
            }
            assert_eq!(v, plain, "{path} {encoding}");
        }
        let refused = [
            (Some("br"), body.clone(), 400, "malformed_request"),
            (
                Some("gzip"),
                compress("gzip", &body)[..20].to_vec(),
                400,
                "malformed_request",
            ),
            // A few hundred bytes that inflate past the 200,000-byte limit.
            (
                Some("gzip"),
                compress("gzip", &vec![b' '; 300_000]),
                413,
                "payload_too_large",
            ),
        ];
        for (encoding, body, status, code) in refused {
            let r = post(encoding, body).await.unwrap();
            assert_eq!(r.status().as_u16(), status, "{path} {encoding:?}");
            assert_eq!(r.json::<Value>().await.unwrap()["code"], code, "{path}");
        }
    }
}

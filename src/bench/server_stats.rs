//! The server's own view of each step, as perf_analyzer gives it: Triton's statistics of the model
//! (`GET /v2/models/{m}/stats`, gRPC `ModelStatistics`) read as the step's window opens and after
//! its last answer, so the client's latency can be told into the server's queue and compute and
//! what it spent outside them (the network, the client, the front end before the queue).

use tokio::task::JoinHandle;

use super::client::{grpc_request, http_get};
use super::requests::Api;
use crate::protocol::grpc::ModelStatisticsRequest;
use crate::protocol::grpc::grpc_inference_service_client::GrpcInferenceServiceClient;

/// What the server counted over a step's window, summed over the versions it lists.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ServerSide {
    /// Requests the server answered.
    pub requests: u64,
    /// Rows it scored.
    pub rows: u64,
    /// Batches it ran.
    pub batches: u64,
    /// Per request answered, µs: the server's whole time (admission to answer).
    pub request_us: f64,
    /// Per request its engine answered, µs: the wait in the queue.
    pub queue_us: f64,
    /// Per request its engine answered, µs: the model's time of its batches.
    pub compute_us: f64,
}

/// Cumulative counts and nanoseconds, as the statistics extension reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Snapshot {
    requests: u64,
    request_ns: u64,
    rows: u64,
    batches: u64,
    engine_requests: u64,
    queue_ns: u64,
    compute_ns: u64,
}

impl Snapshot {
    /// What the server did between `self` and `later`; `None` when a count went back (the two
    /// reads reached different replicas, or a swap started a version at 0) or nothing was
    /// answered.
    pub fn until(&self, later: &Snapshot) -> Option<ServerSide> {
        let d = |a: u64, b: u64| b.checked_sub(a);
        let requests = d(self.requests, later.requests)?;
        let request_ns = d(self.request_ns, later.request_ns)?;
        let rows = d(self.rows, later.rows)?;
        let batches = d(self.batches, later.batches)?;
        let engine = d(self.engine_requests, later.engine_requests)?;
        let queue_ns = d(self.queue_ns, later.queue_ns)?;
        let compute_ns = d(self.compute_ns, later.compute_ns)?;
        let mean = |ns: u64, n: u64| ns as f64 / n.max(1) as f64 / 1000.0;
        (requests > 0).then(|| ServerSide {
            requests,
            rows,
            batches,
            request_us: mean(request_ns, requests),
            queue_us: mean(queue_ns, engine),
            compute_us: mean(compute_ns, engine),
        })
    }

    /// The sums of `/v2/models/{m}/stats`' JSON `model_stats`.
    fn of_json(stats: &serde_json::Value) -> anyhow::Result<Snapshot> {
        let entries = stats["model_stats"]
            .as_array()
            .ok_or_else(|| anyhow::anyhow!("no model_stats"))?;
        let mut total = Snapshot::default();
        for s in entries {
            let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
            let i = &s["inference_stats"];
            total.add(
                (n(&s["inference_count"]), n(&s["execution_count"])),
                (n(&i["success"]["count"]), n(&i["success"]["ns"])),
                (n(&i["queue"]["count"]), n(&i["queue"]["ns"])),
                ["compute_input", "compute_infer", "compute_output"].map(|k| n(&i[k]["ns"])),
            );
        }
        Ok(total)
    }

    fn add(
        &mut self,
        (rows, batches): (u64, u64),
        (requests, request_ns): (u64, u64),
        (engine_requests, queue_ns): (u64, u64),
        compute_ns: [u64; 3],
    ) {
        self.rows += rows;
        self.batches += batches;
        self.requests += requests;
        self.request_ns += request_ns;
        self.engine_requests += engine_requests;
        self.queue_ns += queue_ns;
        self.compute_ns += compute_ns.iter().sum::<u64>();
    }
}

/// Where a run reads the server's statistics.
#[derive(Debug, Clone)]
pub struct Source {
    /// The protocol the run speaks (its statistics are read over the same one).
    pub api: Api,
    /// The server's base URL.
    pub url: String,
    /// The model.
    pub model: String,
    /// The run's extra headers (an API key).
    pub headers: Vec<String>,
}

impl Source {
    /// The window's first read, once a step's `warmup` has passed.
    pub fn open(&self, warmup: std::time::Duration) -> JoinHandle<Option<Snapshot>> {
        let source = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(warmup).await;
            source.read().await.ok()
        })
    }

    /// The step's figures: a second read, after its last answer, against the first.
    pub async fn close(&self, opened: JoinHandle<Option<Snapshot>>) -> Option<ServerSide> {
        let closed = self.read().await.ok()?;
        opened.await.ok().flatten()?.until(&closed)
    }

    async fn read(&self) -> anyhow::Result<Snapshot> {
        read(self.api, &self.url, &self.model, &self.headers).await
    }
}

/// Reads model `model`'s statistics at `url` over `api`'s protocol, with `headers` (an API key).
pub async fn read(
    api: Api,
    url: &str,
    model: &str,
    headers: &[String],
) -> anyhow::Result<Snapshot> {
    let timeout = std::time::Duration::from_secs(5);
    match api {
        Api::V1 | Api::OipHttp => {
            let request = http_get(&format!("{url}/v2/models/{model}/stats"), headers);
            let stats: serde_json::Value = request
                .timeout(timeout)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            Snapshot::of_json(&stats)
        }
        Api::OipGrpc => {
            let mut client = GrpcInferenceServiceClient::connect(url.to_string()).await?;
            let message = ModelStatisticsRequest {
                name: model.into(),
                version: String::new(),
            };
            let mut request = grpc_request(message, headers);
            request.set_timeout(timeout);
            let mut total = Snapshot::default();
            for s in client
                .model_statistics(request)
                .await?
                .into_inner()
                .model_stats
            {
                let i = s.inference_stats.unwrap_or_default();
                let d = |d: Option<crate::protocol::grpc::StatisticDuration>| {
                    d.map_or((0, 0), |d| (d.count, d.ns))
                };
                total.add(
                    (s.inference_count, s.execution_count),
                    d(i.success),
                    d(i.queue),
                    [i.compute_input, i.compute_infer, i.compute_output].map(|x| d(x).1),
                );
            }
            Ok(total)
        }
        Api::Mlflow => anyhow::bail!("MLflow's scoring server keeps no statistics"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(requests: u64, rows: u64, queue_ns: u64) -> Snapshot {
        Snapshot {
            requests,
            request_ns: requests * 100_000,
            rows,
            batches: rows / 2,
            engine_requests: requests,
            queue_ns,
            compute_ns: requests * 20_000,
        }
    }

    #[test]
    fn a_window_is_the_difference_of_two_reads() {
        let side = snapshot(10, 20, 1_000_000)
            .until(&snapshot(110, 220, 6_000_000))
            .unwrap();
        assert_eq!((side.requests, side.rows, side.batches), (100, 200, 100));
        assert_eq!(
            (side.request_us, side.queue_us, side.compute_us),
            (100.0, 50.0, 20.0)
        );
    }

    #[test]
    fn a_count_that_went_back_or_nothing_answered_is_no_window() {
        // Another replica answered the second read, or a swap started the version at 0.
        assert_eq!(snapshot(110, 220, 6).until(&snapshot(10, 20, 1)), None);
        assert_eq!(snapshot(10, 220, 1).until(&snapshot(20, 20, 6)), None);
        assert_eq!(snapshot(10, 20, 1).until(&snapshot(10, 20, 1)), None);
    }

    #[test]
    fn the_json_form_is_summed_over_the_versions_listed() {
        let entry = |count: u64, ns: u64| {
            serde_json::json!({
                "inference_count": count * 2,
                "execution_count": count,
                "inference_stats": {
                    "success": {"count": count, "ns": ns},
                    "queue": {"count": count, "ns": ns / 2},
                    "compute_input": {"count": count, "ns": 0},
                    "compute_infer": {"count": count, "ns": ns / 4},
                    "compute_output": {"count": count, "ns": 0},
                },
            })
        };
        let stats = serde_json::json!({"model_stats": [entry(3, 400), entry(1, 800)]});
        let s = Snapshot::of_json(&stats).unwrap();
        assert_eq!(
            (
                s.requests,
                s.request_ns,
                s.rows,
                s.batches,
                s.queue_ns,
                s.compute_ns
            ),
            (4, 1200, 8, 4, 600, 300)
        );
        assert!(Snapshot::of_json(&serde_json::json!({"error": "x"})).is_err());
    }
}

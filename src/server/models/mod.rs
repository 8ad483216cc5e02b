//! The served model's life: the first load, then following the source (poll and admin reload),
//! and swapping a new version in without dropping a request.
//!
//! A new version is fetched, loaded (digests, shapes, thresholds), self-tested (the package's
//! golden rows scored on the serving device must match the stored scores), given its own engine,
//! warmed up, and only then swapped in. Requests hold the version they started on to their end,
//! so batches already running finish on the old one; its engine stops and its replicas are freed
//! when the last of them lets go. A version that fails any step is refused and the old one keeps
//! serving; the refusal is logged, counted and shown in `GET /admin/model`.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use arc_swap::ArcSwap;
use candle_core::Device;
use serde::Serialize;

use crate::config::Config;
use crate::engine::{Metrics, Priority};
use crate::protocol::oip::features_mode_change;
use crate::registry::{RegistryError, Resolver, Target};
use crate::scoring::{Scoring, Served};

mod load;

use load::build;
pub use load::{SELF_TEST_TOLERANCE, warm_up};

/// How many load attempts `GET /admin/model` remembers.
const HISTORY: usize = 32;

/// One load attempt, for `/admin/model` and the log.
#[derive(Debug, Clone, Serialize)]
pub struct LoadEvent {
    /// When it ended (RFC 3339).
    pub at: String,
    /// The configured source.
    pub source: String,
    /// The version it resolved to, when it got that far.
    pub identity: Option<String>,
    /// `serving` or `refused`.
    pub outcome: &'static str,
    /// Why it was refused.
    pub reason: Option<String>,
    /// Resolve to ready, ms.
    pub duration_ms: u64,
}

/// What a check found.
#[derive(Debug, Clone, Serialize)]
pub struct Checked {
    /// `swapped`, `unchanged`, or `refused`.
    pub outcome: &'static str,
    /// The version serving after the check, `name:version`.
    pub serving: String,
    /// Why the new version was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

struct Status {
    history: VecDeque<LoadEvent>,
    last_error: Option<LoadEvent>,
    /// Versions already refused are not fetched again on every poll; `reload?force=true` retries.
    refused: VecDeque<String>,
}

/// Which version a follower keeps up to date (the same role names its monitor's metrics).
pub use crate::monitoring::Role;

/// How a version's engine threads are scheduled: a challenger only on otherwise idle cores (a
/// canary answers, as the champion does).
fn priority(role: Role) -> Priority {
    match role {
        Role::Champion | Role::Canary => Priority::Normal,
        Role::Challenger => Priority::Idle,
    }
}

/// Warns when `next`, about to answer as `role` beside the champion (a canary) or instead of the
/// last champion, takes precomputed features (Open Inference Protocol features mode) other than
/// `other` does: a feature store's requests built for one are refused by the other (a canary
/// hands those of its share to the champion), or scored on other features. A shadow challenger
/// counts such requests as `incompatible` instead.
pub fn warn_on_features_mode_change(role: Role, next: &Served, other: &Served) {
    let Some(change) = features_mode_change(next.extractor().spec(), other.extractor().spec())
    else {
        return;
    };
    match role {
        Role::Canary => tracing::warn!(
            %change,
            champion = %other.model().version,
            canary = %next.model().version,
            "the canary takes other precomputed features than the champion: features-mode requests \
             of its share that it refuses are answered by the champion (the canary's \
             `declined`); when only names or encodings differ it takes them, and scores them on \
             values they do not mean"
        ),
        Role::Champion => tracing::warn!(
            %change,
            from = %other.model().version,
            to = %next.model().version,
            "the new version takes other precomputed features: clients sending features-mode \
             requests must follow it"
        ),
        Role::Challenger => {}
    }
}

/// Loads versions and swaps them in; one check at a time.
pub struct Models {
    role: Role,
    /// The source followed now (an admin pin changes it).
    source: Mutex<String>,
    config: Config,
    device: Device,
    metrics: Arc<Metrics>,
    resolver: tokio::sync::Mutex<Resolver>,
    status: Mutex<Status>,
    /// Versions swapped in since start.
    pub swaps: AtomicU64,
    /// Versions refused since start (first load included).
    pub failures: AtomicU64,
}

impl Models {
    /// Loads the configured source and answers the follower and the first version (with its
    /// engine started but not warmed up). Unreachable at start: the last good cached version of
    /// the same source when `model.use_cached_on_error`, else an error.
    pub async fn start(
        role: Role,
        source: &str,
        config: &Config,
        device: Device,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<(Models, Served)> {
        let resolver = Resolver::new(
            source,
            config.model.registry_uri.as_deref(),
            &config.model.cache_dir,
        )?;
        let models = Models {
            role,
            source: Mutex::new(source.to_string()),
            config: config.clone(),
            device,
            metrics,
            resolver: tokio::sync::Mutex::new(resolver),
            status: Mutex::new(Status {
                history: VecDeque::new(),
                last_error: None,
                refused: VecDeque::new(),
            }),
            swaps: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        };
        let started = Instant::now();
        let resolver = models.resolver.lock().await;
        let fetched = async {
            let target = resolver.resolve().await?;
            let dir = resolver.fetch(&target).await?;
            Ok::<_, RegistryError>((target, dir))
        }
        .await;
        let (target, dir) = match fetched {
            Ok(found) => found,
            Err(e) if e.is_unreachable() && config.model.use_cached_on_error => {
                let (target, dir) = resolver.last_good().ok_or_else(|| {
                    anyhow::Error::new(e).context(format!(
                        "{} is unreachable and the cache holds no good version of it",
                        resolver.source()
                    ))
                })?;
                tracing::warn!(
                    source = %resolver.source(),
                    version = %target.identity,
                    "the model source is unreachable: serving the last good cached version"
                );
                (target, dir)
            }
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("resolving model source {}", resolver.source())));
            }
        };
        let source = resolver.source().to_string();
        drop(resolver);
        let served = models
            .build(&dir, &target, &source)
            .await
            .with_context(|| format!("loading model {source} ({})", target.identity))?;
        models.resolver.lock().await.remember_good(&target, &dir);
        models.record(LoadEvent {
            at: now(),
            source,
            identity: Some(target.identity),
            outcome: "serving",
            reason: None,
            duration_ms: started.elapsed().as_millis() as u64,
        });
        Ok((models, served))
    }

    /// Checks the source now and swaps in a new version if it names one. With `force`, a version
    /// refused before is tried again.
    pub async fn check(&self, scoring: &Scoring, force: bool) -> Checked {
        let resolver = self.resolver.lock().await;
        self.check_with(&resolver, scoring, force).await
    }

    /// Follows `source` from now on (an admin pin), swapping to it at once.
    pub async fn pin(&self, scoring: &Scoring, source: &str) -> Result<Checked, String> {
        let next = Resolver::new(
            source,
            self.config.model.registry_uri.as_deref(),
            &self.config.model.cache_dir,
        )
        .map_err(|e| e.to_string())?;
        let mut resolver = self.resolver.lock().await;
        let checked = self.check_with(&next, scoring, true).await;
        if checked.outcome == "refused" {
            return Err(checked.reason.unwrap_or_default());
        }
        *self.source.lock().unwrap_or_else(|p| p.into_inner()) = next.source().to_string();
        *resolver = next;
        Ok(checked)
    }

    /// Loads the package in `dir` into a started version, off the async threads.
    async fn build(&self, dir: &Path, target: &Target, source: &str) -> anyhow::Result<Served> {
        let (config, device, metrics) = (
            self.config.clone(),
            self.device.clone(),
            self.metrics.clone(),
        );
        let (dir, target, source) = (dir.to_path_buf(), target.clone(), source.to_string());
        let role = self.role;
        tokio::task::spawn_blocking(move || {
            build(role, &config, &device, metrics, &dir, &target, &source)
        })
        .await
        .map_err(anyhow::Error::from)
        .and_then(|r| r)
    }

    /// The slot this follower keeps up to date.
    fn slot<'a>(&self, scoring: &'a Scoring) -> Option<&'a ArcSwap<Served>> {
        match self.role {
            Role::Champion => Some(scoring.champion()),
            Role::Challenger => scoring.shadow().map(|s| s.slot()),
            Role::Canary => scoring.canary().map(|c| c.slot()),
        }
    }

    async fn check_with(&self, resolver: &Resolver, scoring: &Scoring, force: bool) -> Checked {
        let started = Instant::now();
        let source = resolver.source().to_string();
        let Some(slot) = self.slot(scoring) else {
            return Checked {
                outcome: "unchanged",
                serving: String::new(),
                reason: None,
            };
        };
        let current = slot.load_full();
        let serving = |s: &Served| format!("{}:{}", s.model().name, s.model().version);
        let target = match resolver.resolve().await {
            Ok(t) => t,
            Err(e) => return self.refuse(&source, None, e.to_string(), started, &current),
        };
        if target.identity == current.origin.identity {
            return Checked {
                outcome: "unchanged",
                serving: serving(&current),
                reason: None,
            };
        }
        {
            let status = self.status.lock().unwrap_or_else(|p| p.into_inner());
            if !force && status.refused.contains(&target.identity) {
                // Not fetched again every poll; but the source still names a refused version,
                // and an operator who asks is told so (409 on /admin/model/reload), whether the
                // poller or this request met it first.
                let before = status.last_error.as_ref().and_then(|e| e.reason.clone());
                return Checked {
                    outcome: "refused",
                    serving: serving(&current),
                    reason: Some(format!(
                        "version {} was refused{}; ?force=true tries it again",
                        target.identity,
                        before.map(|r| format!(": {r}")).unwrap_or_default()
                    )),
                };
            }
        }
        tracing::info!(role = ?self.role, %source, version = %target.identity, "new model version: loading");
        let dir = match resolver.fetch(&target).await {
            Ok(d) => d,
            Err(e) => {
                return self.refuse(&source, Some(&target), e.to_string(), started, &current);
            }
        };
        let built = self.build(&dir, &target, &source).await;
        let next = match built {
            Ok(s) => s,
            Err(e) => {
                return self.refuse(&source, Some(&target), format!("{e:#}"), started, &current);
            }
        };
        if let Err(e) = warm_up(&next, &self.config).await {
            return self.refuse(&source, Some(&target), format!("{e:#}"), started, &current);
        }
        if next.model().name != current.model().name {
            tracing::warn!(
                from = %current.model().name,
                to = %next.model().name,
                "the new version has another model name: clients must use the new one"
            );
        }
        let beside = match self.role {
            Role::Canary => scoring.served(),
            _ => current.clone(),
        };
        warn_on_features_mode_change(self.role, &next, &beside);
        let now_serving = serving(&next);
        let old = slot.swap(Arc::new(next));
        resolver.remember_good(&target, &dir);
        self.swaps.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            from = %serving(&old),
            to = %now_serving,
            %source,
            ms = started.elapsed().as_millis() as u64,
            role = ?self.role,
            "model swapped"
        );
        drop(old);
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .refused
            .retain(|r| *r != target.identity);
        self.record(LoadEvent {
            at: now(),
            source,
            identity: Some(target.identity),
            outcome: "serving",
            reason: None,
            duration_ms: started.elapsed().as_millis() as u64,
        });
        Checked {
            outcome: "swapped",
            serving: now_serving,
            reason: None,
        }
    }

    fn refuse(
        &self,
        source: &str,
        target: Option<&Target>,
        reason: String,
        started: Instant,
        current: &Served,
    ) -> Checked {
        self.failures.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            %source,
            version = target.map_or("?", |t| t.identity.as_str()),
            %reason,
            serving = %current.model().version,
            "model version refused; the serving version is unchanged"
        );
        let event = LoadEvent {
            at: now(),
            source: source.to_string(),
            identity: target.map(|t| t.identity.clone()),
            outcome: "refused",
            reason: Some(reason.clone()),
            duration_ms: started.elapsed().as_millis() as u64,
        };
        {
            let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(t) = target
                && !status.refused.contains(&t.identity)
            {
                if status.refused.len() == HISTORY {
                    status.refused.pop_front();
                }
                status.refused.push_back(t.identity.clone());
            }
            status.last_error = Some(event.clone());
        }
        self.record(event);
        Checked {
            outcome: "refused",
            serving: format!("{}:{}", current.model().name, current.model().version),
            reason: Some(reason),
        }
    }

    fn record(&self, event: LoadEvent) {
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        if status.history.len() == HISTORY {
            status.history.pop_front();
        }
        status.history.push_back(event);
    }

    /// `GET /admin/model`: what serves, from where, the last refusal, the recent loads.
    pub fn describe(&self, scoring: &Scoring) -> serde_json::Value {
        let Some(served) = self.slot(scoring).map(|s| s.load_full()) else {
            return serde_json::Value::Null;
        };
        let status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        serde_json::json!({
            "serving": {
                "name": served.model().name,
                "version": served.model().version,
                "origin": served.origin,
            },
            "source": self.config_source(),
            "poll_interval_s": self.config.model.poll_interval_s,
            "swaps": self.swaps.load(Ordering::Relaxed),
            "failures": self.failures.load(Ordering::Relaxed),
            "last_error": status.last_error,
            "history": status.history,
        })
    }

    fn config_source(&self) -> String {
        self.source
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Checks the source every `model.poll_interval_s` until the process ends.
    pub async fn follow(self: Arc<Self>, state: Arc<super::AppState>) {
        let every = self.config.model.poll_interval_s;
        if every == 0 {
            return;
        }
        let mut tick = tokio::time::interval(Duration::from_secs(every));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            if state.scoring.lifecycle.draining() {
                return;
            }
            self.check(&state.scoring, false).await;
        }
    }
}

pub(super) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

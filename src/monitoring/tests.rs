use std::collections::BTreeMap;

use super::*;
use crate::model::training_reference::NumericBins;

/// Two numeric features, one categorical, score bins: small enough to count by hand.
fn reference() -> Reference {
    Reference {
        format: 1,
        rows: 100,
        source: "by hand".into(),
        features: vec![
            FeatureReference::Numeric {
                name: "a".into(),
                bins: NumericBins {
                    edges: vec![0.0],
                    proportions: vec![0.5, 0.5],
                },
            },
            FeatureReference::Numeric {
                name: "b".into(),
                bins: NumericBins {
                    edges: vec![-1.0, 1.0],
                    proportions: vec![0.25, 0.5, 0.25],
                },
            },
            FeatureReference::Categorical {
                name: "c".into(),
                categories: vec![1, 3],
                labels: vec!["one".into(), "three".into()],
                proportions: vec![0.4, 0.4, 0.2],
            },
        ],
        score: NumericBins {
            edges: vec![0.5],
            proportions: vec![0.9, 0.1],
        },
        decisions: BTreeMap::from([
            ("ALLOW".into(), 0.9),
            ("HOLD".into(), 0.05),
            ("REJECT".into(), 0.05),
        ]),
    }
}

fn setup(reference: Option<Reference>) -> Setup {
    Setup {
        model: "m".into(),
        version: "1".into(),
        role: Role::Champion,
        reference,
        thresholds: Thresholds {
            hold: 0.5,
            reject: 0.9,
        },
    }
}

#[tokio::test]
async fn every_row_lands_in_its_bins_and_the_psi_is_computed_on_them() {
    let monitor = Monitor::start(setup(Some(reference())), crate::threads::Priority::Normal)
        .expect("monitor thread");
    let tap = monitor.tap();
    // Not observing yet: a warm-up batch is not counted.
    tap.offer([(&[9.0f32, 9.0][..], &[3u32][..])].into_iter(), &[0.99]);
    monitor.start_observing();
    // Rows as two parts of one batch: (a, b), c, score.
    let numeric = [-1.0f32, -2.0, 0.0, 0.0, 1.0, 1.0, 2.0, 5.0];
    let categorical = [1u32, 0, 3, 7];
    let scores = [0.1f32, 0.5, 0.95, 0.2];
    tap.offer(
        [
            (&numeric[..4], &categorical[..2]),
            (&numeric[4..], &categorical[2..]),
        ]
        .into_iter(),
        &scores,
    );
    let report = monitor.report().await;
    assert_eq!(report.dropped_rows, 0);
    for name in ["10m", "24h", ALL] {
        let w = report.window(name).expect("window");
        assert_eq!(w.rows, 4, "{name}");
        let by_name: BTreeMap<&str, &Drift> =
            w.features.iter().map(|d| (d.name.as_str(), d)).collect();
        // a: -1, 0 (on the edge: bin 0), 1, 2.
        assert_eq!(by_name["a"].counts, vec![2, 2]);
        // b: -2, 0, 1 (on the edge: bin 1), 5.
        assert_eq!(by_name["b"].counts, vec![1, 2, 1]);
        // c: 1, 0 → other, 3, 7 → other.
        assert_eq!(by_name["c"].counts, vec![1, 1, 2]);
        let score = w.score.as_ref().expect("score drift");
        assert_eq!(score.counts, vec![3, 1]);
        assert_eq!(score.psi, psi(&[3, 1], &[0.9, 0.1]));
        assert_eq!(by_name["c"].psi, psi(&[1, 1, 2], &[0.4, 0.4, 0.2]));
        assert_eq!(w.decisions["ALLOW"], Some(0.5));
        assert_eq!(w.decisions["HOLD"], Some(0.25));
        assert_eq!(w.decisions["REJECT"], Some(0.25));
        // Sorted by PSI, largest first.
        assert!(w.features.windows(2).all(|p| p[0].psi >= p[1].psi));
    }
}

#[tokio::test]
async fn without_a_reference_only_decision_rates_are_kept() {
    let monitor =
        Monitor::start(setup(None), crate::threads::Priority::Normal).expect("monitor thread");
    monitor.start_observing();
    monitor
        .tap()
        .offer([(&[0.0f32, 0.0][..], &[0u32][..])].into_iter(), &[0.7]);
    let report = monitor.report().await;
    assert!(report.reference.is_none());
    let all = report.window(ALL).expect("all");
    assert_eq!(all.rows, 1);
    assert!(all.features.is_empty() && all.score.is_none());
    assert_eq!(all.decisions["HOLD"], Some(1.0));
}

#[test]
fn the_bundled_reference_fits_its_package_and_a_broken_one_is_refused() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/pix-fraud");
    let config: crate::model::ModelConfig =
        serde_json::from_slice(&std::fs::read(dir.join("model.json")).expect("model.json"))
            .expect("model.json parses");
    let good: Reference =
        serde_json::from_slice(&std::fs::read(dir.join("reference.json")).expect("reference"))
            .expect("reference.json parses");
    let spec = &config.features;
    assert_eq!(good.check(spec), Ok(()));
    let refused = |edit: &dyn Fn(&mut Reference), why: &str| {
        let mut bad = good.clone();
        edit(&mut bad);
        let err = bad.check(spec).expect_err(why);
        assert!(err.contains(why), "{err}");
    };
    refused(&|r| r.features.swap(0, 1), "do not match");
    refused(&|r| r.score.proportions[0] += 0.01, "sum to");
    refused(&|r| r.score.edges.reverse(), "strictly increasing");
    refused(
        &|r| {
            if let Some(FeatureReference::Categorical { categories, .. }) = r.features.last_mut() {
                *categories.last_mut().expect("a category") = 10_000;
            }
        },
        "outside the vocabulary",
    );
    refused(
        &|r| {
            r.decisions.remove("HOLD");
        },
        "no share for HOLD",
    );
    // Another model's spec (the built-in one has other features) does not fit.
    assert!(good.check(&crate::features::default_spec()).is_err());
}

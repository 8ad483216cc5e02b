//! `pixguard bench-merge`: the reports of a run split over generators (`pixguard bench --part
//! I/N`) added up into the report one generator offering the whole load would have written. The
//! percentiles come from the parts' histograms added together (a p99 of p99s is not a p99); the
//! counts, rates and errors are sums; the timeline's seconds line up because the parts started
//! at one `--start-at`.

use std::collections::BTreeMap;

use anyhow::Context;
use hdrhistogram::Histogram;

use super::args::MergeArgs;
use super::part::decode;
use super::report::{Latency, Report, Step, Tick};

/// Reads the parts, merges them, writes the merged report and applies the gate.
pub fn run(args: MergeArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let parts = runtime.block_on(super::reports::read_parts(&args.parts))?;
    let (report, notes) = merge(parts)?;
    let (json, html) = super::write_report(&report, &args.out)?;
    let mut text = super::summary(&report);
    for note in notes {
        text.push_str(&format!("note: {note}\n"));
    }
    text.push_str(&format!(
        "merged {} parts; wrote {} and {}\n",
        report.generators.unwrap_or(0),
        json.display(),
        html.display()
    ));
    super::say(&text)?;
    super::gate(&report, args.fail_p99_ms, args.fail_error_rate)
}

/// Adds up the parts of one split run; with notes on what was left out (steps that not every
/// part ran). Refuses reports that are not the parts of one run.
pub fn merge(mut parts: Vec<(String, Report)>) -> anyhow::Result<(Report, Vec<String>)> {
    anyhow::ensure!(!parts.is_empty(), "no reports to merge");
    for (name, r) in &parts {
        anyhow::ensure!(
            r.part.is_some(),
            "{name} is not a part's report: run pixguard bench with --part I/N"
        );
    }
    parts.sort_by_key(|(_, r)| r.part.map(|p| p.index));
    let count = parts[0].1.part.map_or(0, |p| p.count);
    for (name, r) in &parts {
        let p = r.part.unwrap_or(super::part::Part { index: 0, count });
        anyhow::ensure!(
            p.count == count,
            "{name} is part {p}, {} a part of {count}: not one run",
            parts[0].0
        );
    }
    let mut missing = Vec::new();
    for index in 0..count {
        let holders: Vec<&str> = parts
            .iter()
            .filter(|(_, r)| r.part.is_some_and(|p| p.index == index))
            .map(|(n, _)| n.as_str())
            .collect();
        anyhow::ensure!(
            holders.len() <= 1,
            "{} are all part {index}/{count}",
            holders.join(" and ")
        );
        if holders.is_empty() {
            missing.push(format!("{index}/{count}"));
        }
    }
    anyhow::ensure!(
        missing.is_empty(),
        "part {} missing: a merge of some parts would report a load nobody offered",
        missing.join(", ")
    );

    let (first_name, first) = &parts[0];
    for (name, r) in &parts[1..] {
        let same = [
            ("label", &r.label, &first.label),
            ("api", &r.api, &first.api),
            ("url", &r.url, &first.url),
            ("mode", &r.mode, &first.mode),
        ];
        for (what, theirs, ours) in same {
            anyhow::ensure!(
                theirs == ours,
                "{name}: {what} {theirs:?}, {first_name}: {ours:?}: not one run"
            );
        }
        anyhow::ensure!(
            r.arrivals == first.arrivals
                && r.warmup_s == first.warmup_s
                && r.duration_s == first.duration_s,
            "{name}: arrivals, warm-up or duration differ from {first_name}'s: not one run"
        );
    }

    let mut notes = Vec::new();
    let steps = parts.iter().map(|(_, r)| r.steps.len()).min().unwrap_or(0);
    for (name, r) in &parts {
        if r.steps.len() > steps {
            notes.push(format!(
                "{name} ran {} steps, another part {steps}: the merge has the first {steps}",
                r.steps.len()
            ));
        }
    }
    let merged_steps = (0..steps)
        .map(|k| merge_step(&parts, k))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for k in 0..steps {
        notes.extend(generator_bound(&parts, k));
    }
    let timeline = merge_timeline(&parts, steps)?;

    let mut machines: Vec<&str> = parts.iter().map(|(_, r)| r.machine.as_str()).collect();
    machines.sort_unstable();
    machines.dedup();
    let first = &parts[0].1;
    let report = Report {
        label: first.label.clone(),
        api: first.api.clone(),
        url: first.url.clone(),
        mode: first.mode.clone(),
        arrivals: first.arrivals.clone(),
        warmup_s: first.warmup_s,
        duration_s: first.duration_s,
        requests: first.requests,
        started_at: parts
            .iter()
            .map(|(_, r)| r.started_at.clone())
            .min()
            .unwrap_or_default(),
        machine: format!("{count} generators: {}", machines.join("; ")),
        command: first.command.clone(),
        pixguard_version: first.pixguard_version.clone(),
        steps: merged_steps,
        timeline,
        part: None,
        generators: Some(count),
    };
    Ok((report, notes))
}

/// A generator's scheduler releasing this late (p99) is itself the limit: its requests left late.
const LATE_P99_US: u64 = 1_000;
/// Parts' p99s this far apart on one server: a generator's node, not the server, differs.
const P99_SPREAD: f64 = 3.0;

/// Parts whose step began this far apart did not offer one load together.
const START_SPREAD_MS: u64 = 250;

/// Signs in step `k` that a generator, not the server, set the figures: parts that began the
/// step apart, a part whose scheduler released late, or parts whose p99s are far apart.
fn generator_bound(parts: &[(String, Report)], k: usize) -> Vec<String> {
    let mut notes = Vec::new();
    let starts: Vec<u64> = parts
        .iter()
        .filter_map(|(_, r)| r.steps[k].started_ms)
        .collect();
    if let (Some(first), Some(last)) = (starts.iter().min(), starts.iter().max())
        && last - first > START_SPREAD_MS
    {
        notes.push(format!(
            "step {}: the parts began it {} ms apart (one drained its previous step late): \
             they offered the whole rate together for less than the step",
            k + 1,
            last - first
        ));
    }
    let part_name = |r: &Report| r.part.map_or_else(|| "?".into(), |p| p.to_string());
    for (_, r) in parts {
        if let Some(late) = r.steps[k].scheduler_lateness_us
            && late.p99 > LATE_P99_US
        {
            notes.push(format!(
                "step {}: part {} released its requests late (p99 {:.2} ms): that generator may be the limit",
                k + 1,
                part_name(r),
                late.p99 as f64 / 1000.0
            ));
        }
    }
    let p99 = |r: &Report| r.steps[k].latency_us.p99;
    let answered = parts.iter().filter(|(_, r)| r.steps[k].ok > 0);
    if let (Some((_, fast)), Some((_, slow))) = (
        answered.clone().min_by_key(|(_, r)| p99(r)),
        answered.max_by_key(|(_, r)| p99(r)),
    ) && p99(slow) as f64 > P99_SPREAD * p99(fast).max(1) as f64
    {
        notes.push(format!(
            "step {}: part {}'s p99 ({:.2} ms) is {:.1}× part {}'s ({:.2} ms): check that generator's node",
            k + 1,
            part_name(slow),
            p99(slow) as f64 / 1000.0,
            p99(slow) as f64 / p99(fast).max(1) as f64,
            part_name(fast),
            p99(fast) as f64 / 1000.0
        ));
    }
    notes
}

/// A part's histogram, or why it has none.
fn histogram(name: &str, what: &str, text: Option<&String>) -> anyhow::Result<Histogram<u64>> {
    let text =
        text.with_context(|| format!("{name}: no {what} histogram (written before --part?)"))?;
    decode(text).with_context(|| format!("{name}: {what}"))
}

/// Adds `name`'s histogram `h` to what `into` holds so far (the first one is taken as it is).
fn add(into: &mut Option<Histogram<u64>>, h: Histogram<u64>, name: &str) -> anyhow::Result<()> {
    match into {
        Some(all) => all
            .add(&h)
            .map_err(|e| anyhow::anyhow!("{name}: adding its histogram: {e:?}")),
        None => {
            *into = Some(h);
            Ok(())
        }
    }
}

fn merge_step(parts: &[(String, Report)], k: usize) -> anyhow::Result<Step> {
    let (first_name, first) = (&parts[0].0, &parts[0].1.steps[k]);
    let open = first.offered_rps.is_some();
    let mut latency: Option<Histogram<u64>> = None;
    let mut lateness: Option<Histogram<u64>> = None;
    let mut step = Step {
        offered_rps: open.then_some(0.0),
        concurrency: first.concurrency.map(|_| 0),
        achieved_rps: 0.0,
        ok: 0,
        errors: BTreeMap::new(),
        versions: BTreeMap::new(),
        latency_us: Latency::default(),
        scheduler_lateness_us: None,
        starts_at_s: first.starts_at_s,
        speed: first.speed,
        started_ms: None,
        latency_hdr: None,
        lateness_hdr: None,
        server: None,
    };
    for (name, r) in parts {
        let s = &r.steps[k];
        // Every part offers the same share of a step's rate: another rate is another run.
        if let (Some(ours), Some(theirs)) = (first.offered_rps, s.offered_rps) {
            anyhow::ensure!(
                (ours - theirs).abs() <= 1e-9 * ours.abs().max(1.0),
                "step {}: {name} offered {theirs}/s, {first_name} {ours}/s: not one run",
                k + 1
            );
        }
        anyhow::ensure!(
            s.speed == first.speed,
            "step {}: {name} replayed at {:?}×, {first_name} at {:?}×: not one run",
            k + 1,
            s.speed,
            first.speed
        );
        anyhow::ensure!(
            s.offered_rps.is_some() == open,
            "step {}: {name} and {first_name} ran different loops",
            k + 1
        );
        step.offered_rps = step.offered_rps.map(|o| o + s.offered_rps.unwrap_or(0.0));
        step.concurrency = step.concurrency.map(|c| c + s.concurrency.unwrap_or(0));
        step.achieved_rps += s.achieved_rps;
        step.ok += s.ok;
        step.starts_at_s = step.starts_at_s.min(s.starts_at_s);
        for (label, n) in &s.errors {
            *step.errors.entry(label.clone()).or_default() += n;
        }
        for (version, n) in &s.versions {
            *step.versions.entry(version.clone()).or_default() += n;
        }
        let h = histogram(name, "latency", s.latency_hdr.as_ref())?;
        add(&mut latency, h, name)?;
        if open {
            let h = histogram(name, "scheduler lateness", s.lateness_hdr.as_ref())?;
            add(&mut lateness, h, name)?;
        }
    }
    step.latency_us = latency.as_ref().map(Latency::of).unwrap_or_default();
    step.scheduler_lateness_us = lateness.as_ref().map(Latency::of);
    Ok(step)
}

/// The parts' seconds added up, second by second (the first `steps` steps').
fn merge_timeline(parts: &[(String, Report)], steps: usize) -> anyhow::Result<Vec<Tick>> {
    let mut seconds: BTreeMap<u64, (Tick, Option<Histogram<u64>>)> = BTreeMap::new();
    for (name, r) in parts {
        for tick in r.timeline.iter().filter(|t| t.step < steps) {
            let h = histogram(
                name,
                &format!("second {}", tick.t),
                tick.latency_hdr.as_ref(),
            )?;
            let (merged, all) = seconds.entry(tick.t).or_insert_with(|| {
                let first = Tick {
                    ok: 0,
                    errors: 0,
                    latency_hdr: None,
                    ..tick.clone()
                };
                (first, None)
            });
            merged.ok += tick.ok;
            merged.errors += tick.errors;
            add(all, h, name)?;
        }
    }
    Ok(seconds
        .into_values()
        .map(|(mut tick, h)| {
            let l = h.as_ref().map(Latency::of).unwrap_or_default();
            (tick.p50_us, tick.p99_us, tick.max_us) = (l.p50, l.p99, l.max);
            tick
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::part::{Part, encode};

    fn hist(values: impl IntoIterator<Item = u64>) -> Histogram<u64> {
        let mut h = Histogram::new_with_bounds(1, 600_000_000, 3).unwrap();
        for v in values {
            h.record(v).unwrap();
        }
        h
    }

    /// Part `index` of `count`, one open-loop step whose answers took `values` µs.
    fn part(index: u32, count: u32, values: &[u64], errors: u64) -> (String, Report) {
        let h = hist(values.iter().copied());
        let lateness = hist([u64::from(index) + 1]);
        let step = Step {
            offered_rps: Some(500.0),
            concurrency: None,
            achieved_rps: values.len() as f64 / 2.0,
            ok: values.len() as u64,
            errors: (errors > 0)
                .then(|| ("503".to_string(), errors))
                .into_iter()
                .collect(),
            versions: [("v1".to_string(), values.len() as u64)].into(),
            latency_us: Latency::of(&h),
            scheduler_lateness_us: Some(Latency::of(&lateness)),
            starts_at_s: 0,
            speed: None,
            started_ms: Some(0),
            latency_hdr: Some(encode(&h).unwrap()),
            lateness_hdr: Some(encode(&lateness).unwrap()),
            server: None,
        };
        let tick = Tick {
            t: 1,
            step: 0,
            warmup: false,
            ok: values.len() as u64,
            errors,
            p50_us: 0,
            p99_us: 0,
            max_us: 0,
            latency_hdr: Some(encode(&h).unwrap()),
        };
        let report = Report {
            label: "v1 http://pixguard".into(),
            api: "v1".into(),
            url: "http://pixguard".into(),
            mode: "open".into(),
            arrivals: Some("constant".into()),
            warmup_s: 1.0,
            duration_s: 2.0,
            requests: 100,
            started_at: format!("2026-12-07T14:00:00.00{index}Z"),
            machine: format!("pod-{index}"),
            command: format!("pixguard bench --part {index}/{count}"),
            pixguard_version: "0.1.0".into(),
            steps: vec![step],
            timeline: vec![tick],
            part: Some(Part { index, count }),
            generators: None,
        };
        (format!("part-{index}/report.json"), report)
    }

    #[test]
    fn parts_add_up_to_the_percentiles_of_one_generator() {
        // Two very different shares: the merged percentiles must be those of one histogram that
        // recorded every answer, not an average of the parts' percentiles.
        let fast: Vec<u64> = (1..=990).map(|i| 100 + i).collect();
        let slow: Vec<u64> = (1..=10).map(|i| 50_000 + 1_000 * i).collect();
        let (merged, notes) = merge(vec![part(1, 2, &slow, 3), part(0, 2, &fast, 0)]).unwrap();
        // So different a part is named (below: `a_generator_that_set_the_figures_is_named`).
        assert_eq!(notes.len(), 1, "{notes:?}");
        let one = Latency::of(&hist(fast.iter().chain(&slow).copied()));
        let step = &merged.steps[0];
        assert_eq!(step.latency_us, one);
        // 1 % of the answers are slow: p99 is still a fast one, p99.9 a slow one. The mean of the
        // parts' p99s (about 30 ms) would be neither.
        assert!(step.latency_us.p99 < 2_000 && step.latency_us.p999 > 50_000);
        assert_eq!(step.ok, 1000);
        assert_eq!(step.offered_rps, Some(1000.0));
        assert_eq!(step.achieved_rps, 500.0);
        assert_eq!(step.errors, [("503".to_string(), 3)].into());
        assert_eq!(step.versions, [("v1".to_string(), 1000)].into());
        assert_eq!(step.scheduler_lateness_us.unwrap().max, 2);
        assert_eq!(merged.timeline.len(), 1);
        let tick = &merged.timeline[0];
        assert_eq!((tick.ok, tick.errors, tick.p99_us), (1000, 3, one.p99));
        assert_eq!(merged.generators, Some(2));
        assert_eq!(merged.part, None);
        assert_eq!(merged.started_at, "2026-12-07T14:00:00.000Z");
        assert_eq!(merged.machine, "2 generators: pod-0; pod-1");
        assert!(merged.steps[0].latency_hdr.is_none());
    }

    #[test]
    fn reports_that_are_not_the_parts_of_one_run_are_refused() {
        let err = |parts: Vec<(String, Report)>| merge(parts).unwrap_err().to_string();
        let values = [100, 200, 300];
        let e = err(vec![part(0, 3, &values, 0), part(2, 3, &values, 0)]);
        assert!(e.contains("part 1/3 missing"), "{e}");
        let e = err(vec![part(0, 2, &values, 0), part(0, 2, &values, 0)]);
        assert!(e.contains("are all part 0/2"), "{e}");
        let e = err(vec![part(0, 2, &values, 0), part(1, 3, &values, 0)]);
        assert!(e.contains("is part 1/3"), "{e}");
        let mut whole = part(0, 1, &values, 0);
        whole.1.part = None;
        let e = err(vec![whole]);
        assert!(e.contains("not a part's report"), "{e}");
        let mut elsewhere = part(1, 2, &values, 0);
        elsewhere.1.url = "http://other".into();
        let e = err(vec![part(0, 2, &values, 0), elsewhere]);
        assert!(e.contains("url \"http://other\""), "{e}");
        let mut faster = part(1, 2, &values, 0);
        faster.1.steps[0].offered_rps = Some(600.0);
        let e = err(vec![part(0, 2, &values, 0), faster]);
        assert!(e.contains("offered 600/s"), "{e}");
        let mut bare = part(1, 2, &values, 0);
        bare.1.steps[0].latency_hdr = None;
        let e = err(vec![part(0, 2, &values, 0), bare]);
        assert!(e.contains("no latency histogram"), "{e}");
    }

    #[test]
    fn a_generator_that_set_the_figures_is_named() {
        let fast: Vec<u64> = (1..=100).map(|i| 1_000 + i).collect();
        let slow: Vec<u64> = (1..=100).map(|i| 9_000 + i).collect();
        // Part 1's answers took 8× part 0's, and its scheduler released late (lateness 2 µs is
        // on time; 1.5 ms is not).
        let mut late = part(1, 2, &slow, 0);
        let lateness = hist([1_500]);
        late.1.steps[0].scheduler_lateness_us = Some(Latency::of(&lateness));
        late.1.steps[0].lateness_hdr = Some(encode(&lateness).unwrap());
        let (_, notes) = merge(vec![part(0, 2, &fast, 0), late]).unwrap();
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(
            notes[0].contains("part 1/2 released its requests late (p99 1.50 ms)"),
            "{notes:?}"
        );
        assert!(
            notes[1].contains("part 1/2's p99 (9.10 ms) is 8.3× part 0/2's (1.10 ms)"),
            "{notes:?}"
        );
        // Parts alike: nothing to say.
        let (_, notes) = merge(vec![part(0, 2, &fast, 0), part(1, 2, &fast, 0)]).unwrap();
        assert!(notes.is_empty(), "{notes:?}");
        // The same parts, one of which began the step 400 ms after the other.
        let mut behind = part(1, 2, &fast, 0);
        behind.1.steps[0].started_ms = Some(400);
        let (_, notes) = merge(vec![part(0, 2, &fast, 0), behind]).unwrap();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].starts_with("step 1: the parts began it 400 ms apart"),
            "{notes:?}"
        );
    }

    #[test]
    fn a_part_that_ran_more_steps_is_cut_to_the_common_ones() {
        let values = [100, 200, 300];
        let mut longer = part(1, 2, &values, 0);
        let mut second = longer.1.steps[0].clone();
        second.starts_at_s = 3;
        longer.1.steps.push(second);
        let (merged, notes) = merge(vec![part(0, 2, &values, 0), longer]).unwrap();
        assert_eq!(merged.steps.len(), 1);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("ran 2 steps"), "{notes:?}");
    }
}

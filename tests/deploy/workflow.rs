//! The GitHub Actions deploy workflow and `k8s/render.sh`.

use super::runbook::{assert_pixguard_accepts, commands_in};
use super::*;

/// The deploy workflow: on push to production only, one at a time, checks before images before
/// deploy, keyless auth, images pinned by digest, the promotion before the apply, a smoke test
/// that gates, and both rollbacks on failure; every pixguard command it runs is one pixguard
/// accepts and every Deployment it waits for or undoes exists in the production render.
#[test]
fn the_deploy_workflow_checks_deploys_smoke_tests_and_rolls_back() {
    let text =
        std::fs::read_to_string(format!("{ROOT}/.github/workflows/deploy.yml")).expect("deploy");
    let wf: Value = serde_yaml_ng::from_str(&text).expect("YAML");
    assert_eq!(
        wf["on"]["push"]["branches"],
        serde_yaml_ng::from_str::<Value>("[production]").unwrap()
    );
    assert_eq!(wf["concurrency"]["cancel-in-progress"], false);
    assert!(wf["permissions"].as_mapping().is_some_and(|m| m.is_empty()));
    let jobs = &wf["jobs"];
    assert_eq!(jobs["checks"]["uses"], "./.github/workflows/ci.yml");
    let ci: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(format!("{ROOT}/.github/workflows/ci.yml")).expect("ci"),
    )
    .expect("YAML");
    assert!(
        ci["on"].get("workflow_call").is_some(),
        "ci.yml is callable"
    );
    assert_eq!(jobs["images"]["needs"], "checks");
    assert_eq!(jobs["deploy"]["needs"], "images");
    assert_eq!(jobs["deploy"]["environment"], "production");
    for job in ["images", "deploy"] {
        assert_eq!(jobs[job]["permissions"]["id-token"], "write", "{job}");
    }
    assert_actions_pinned(&text);
    let files: Vec<&str> = jobs["images"]["steps"]
        .as_sequence()
        .expect("steps")
        .iter()
        .filter(|s| s["with"]["push"] == true)
        .map(|s| str_of(&s["with"]["file"]))
        .collect();
    assert_eq!(files, ["Dockerfile", "Dockerfile.cuda"]);

    let steps = jobs["deploy"]["steps"].as_sequence().expect("steps");
    let at = |id: &str| {
        steps
            .iter()
            .position(|s| s["id"] == id)
            .unwrap_or_else(|| panic!("no step {id}"))
    };
    let run_at = |needle: &str| {
        steps
            .iter()
            .position(|s| str_of(&s["run"]).contains(needle))
            .unwrap_or_else(|| panic!("no step runs {needle}"))
    };
    let (promote, apply) = (at("promote"), at("apply"));
    let rendering = run_at("k8s/render.sh production");
    let smoke = run_at(" bench ");
    let undo = run_at("rollout undo");
    let unalias = run_at("model rollback");
    assert!(
        promote < apply && rendering < apply && apply < smoke,
        "order"
    );
    assert!(smoke < undo && smoke < unalias, "rollbacks come last");
    let if_of = |i: usize| str_of(&steps[i]["if"]).to_string();
    assert!(
        if_of(undo).contains("failure()") && if_of(undo).contains("steps.apply"),
        "{}",
        if_of(undo)
    );
    assert!(
        if_of(unalias).contains("failure()") && if_of(unalias).contains("steps.promote"),
        "{}",
        if_of(unalias)
    );
    let smoke_run = str_of(&steps[smoke]["run"]);
    for gate in ["--fail-error-rate", "--fail-p99-ms", "--header \"x-api-key"] {
        assert!(smoke_run.contains(gate), "the smoke test lacks {gate}");
    }

    // pixguard runs from the pushed image: `docker run … "$IMAGE" <args>`.
    let mut runs = 0;
    for job in ["images", "deploy"] {
        for step in jobs[job]["steps"].as_sequence().expect("steps") {
            let script = format!("```\n{}\n```", str_of(&step["run"]));
            for cmd in commands_in(&script, "") {
                let Some((_, args)) = cmd
                    .split_once("docker run")
                    .and_then(|(_, rest)| rest.split_once("IMAGE\" "))
                else {
                    continue;
                };
                // `moved=$(docker run … "$IMAGE" model promote …)`: the command substitution's end.
                let args = args.trim_end().trim_end_matches(')');
                assert_pixguard_accepts(&format!("pixguard {args}"), "deploy.yml");
                runs += 1;
            }
        }
    }
    assert!(runs >= 5, "{runs} pixguard commands found");
    // Its kubectl commands and flags, likewise (cobra refuses an unknown flag before help).
    let kubectl: Vec<String> = ["images", "deploy"]
        .iter()
        .flat_map(|job| jobs[*job]["steps"].as_sequence().expect("steps"))
        .flat_map(|step| commands_in(&format!("```\n{}\n```", str_of(&step["run"])), "kubectl "))
        .collect();
    assert!(kubectl.len() >= 5, "{kubectl:#?}");
    if render("dev").is_some() {
        for c in &kubectl {
            let out = Command::new("bash")
                .args(["-c", &format!("{c} --help")])
                .output()
                .expect("bash runs");
            assert!(
                out.status.success(),
                "deploy.yml: `{c}` is refused:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    let Some(docs) = render("production") else {
        return;
    };
    let deployments: Vec<&str> = kind(&docs, "Deployment")
        .iter()
        .map(|d| str_of(&d["metadata"]["name"]))
        .collect();
    let namespace = str_of(&kind(&docs, "Deployment")[0]["metadata"]["namespace"]).to_string();
    for (i, part) in text.match_indices("deployment/") {
        let name: String = text[i + part.len()..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        assert!(deployments.contains(&name.as_str()), "deployment/{name}");
    }
    assert!(text.contains(&format!("kubectl -n {namespace} rollout")));
}

/// `k8s/render.sh` fills in the project and region and pins every pixguard image by digest, or
/// refuses; the certificate's domain is the Endpoints host.
#[test]
fn render_pins_images_by_digest_and_leaves_no_placeholder() {
    if render("production").is_none() {
        return;
    }
    let digest = format!("sha256:{}", "ab".repeat(32));
    let image = format!("southamerica-east1-docker.pkg.dev/p-1/pixguard/pixguard-cuda@{digest}");
    let text = rendered_by(Command::new(format!("{ROOT}/k8s/render.sh")).args([
        "production",
        "p-1",
        "southamerica-east1",
        &image,
    ]));
    assert!(!text.contains("PROJECT_ID") && !text.contains("REGION-"));
    let docs: Vec<Value> = text
        .split("\n---\n")
        .map(|doc| serde_yaml_ng::from_str(doc).expect("a YAML document"))
        .collect();
    let mut pinned = 0;
    for (name, spec) in pod_specs(&docs) {
        for c in spec["containers"].as_sequence().expect("containers") {
            let img = str_of(&c["image"]);
            if img.contains("/pixguard") {
                assert_eq!(img, image, "{name}");
                pinned += 1;
            }
        }
    }
    assert!(pinned >= 3, "{pinned}");
    let cert = kind(&docs, "ManagedCertificate")[0];
    let openapi: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(format!("{ROOT}/k8s/endpoints/openapi.yaml")).expect("document"),
    )
    .expect("YAML");
    assert_eq!(
        str_of(&cert["spec"]["domains"][0]),
        str_of(&openapi["host"]).replace("PROJECT_ID", "p-1")
    );
    // A tag instead of a digest is refused.
    let refused = Command::new(format!("{ROOT}/k8s/render.sh"))
        .args(["production", "p-1", "southamerica-east1"])
        .output()
        .expect("render.sh runs");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not pinned"));
}

/// Every action a workflow uses is pinned by commit (a tag can be moved).
fn assert_actions_pinned(text: &str) {
    for line in text.lines().map(str::trim) {
        if let Some(uses) = line
            .strip_prefix("- uses: ")
            .or(line.strip_prefix("uses: "))
        {
            let uses = uses.split_whitespace().next().unwrap_or("");
            if uses.starts_with("./") {
                continue;
            }
            let sha = uses.rsplit('@').next().unwrap_or("");
            assert!(
                sha.len() == 40 && sha.chars().all(|c| c.is_ascii_hexdigit()),
                "{uses} is not pinned by commit"
            );
        }
    }
}

/// The load-test workflow: by hand only, keyless, its actions pinned; it renders k8s/loadtest
/// with `render.sh` (which leaves no placeholder and takes the inputs as --rate and --duration),
/// starts the Job the render holds, merges the parts with `pixguard bench-merge` behind a gate,
/// and removes the Job whatever happened.
#[test]
fn the_load_test_workflow_runs_the_job_and_gates_the_merged_report() {
    let text = std::fs::read_to_string(format!("{ROOT}/.github/workflows/loadtest.yml"))
        .expect("loadtest.yml");
    let wf: Value = serde_yaml_ng::from_str(&text).expect("YAML");
    let on = wf["on"].as_mapping().expect("on");
    assert_eq!(on.len(), 1, "by hand only");
    assert!(wf["on"].get("workflow_dispatch").is_some());
    assert!(wf["permissions"].as_mapping().is_some_and(|m| m.is_empty()));
    assert_actions_pinned(&text);
    let job = &wf["jobs"]["loadtest"];
    assert_eq!(job["permissions"]["id-token"], "write");
    let steps = job["steps"].as_sequence().expect("steps");
    let run_at = |needle: &str| {
        steps
            .iter()
            .position(|s| str_of(&s["run"]).contains(needle))
            .unwrap_or_else(|| panic!("no step runs {needle}"))
    };
    let (render_at, apply, wait, merge, remove) = (
        run_at("k8s/loadtest/render.sh"),
        run_at("kubectl apply"),
        run_at("--for=condition=complete"),
        run_at("bench-merge"),
        steps
            .iter()
            .rposition(|s| str_of(&s["run"]).contains("delete job pixguard-loadtest"))
            .expect("a step removes the Job"),
    );
    assert!(render_at <= apply && apply < wait && wait < merge && merge < remove);
    assert_eq!(str_of(&steps[remove]["if"]), "always()");
    let merge_run = str_of(&steps[merge]["run"]);
    assert!(
        merge_run.contains("set -o pipefail"),
        "the gate's exit status survives tee"
    );
    // The merge as it runs in the image: a command pixguard accepts, with its gates.
    let script = format!("```\n{merge_run}\n```");
    let merges: Vec<String> = commands_in(&script, "docker run")
        .iter()
        .filter_map(|c| {
            c.split_once("\"$IMAGE\" ")
                .map(|(_, args)| args.to_string())
        })
        .collect();
    assert_eq!(merges.len(), 1, "{merge_run}");
    // The workflow's input, as the step's environment gives it.
    let args = merges[0]
        .split(" |")
        .next()
        .unwrap_or_default()
        .trim()
        .replace("\"$P99_MS\"", "50");
    for gate in ["--fail-p99-ms", "--fail-error-rate"] {
        assert!(args.contains(gate), "{args}");
    }
    assert_pixguard_accepts(&format!("pixguard {args}"), "loadtest.yml");
    assert!(args.starts_with("bench-merge /parts "), "{args}");

    // The render the workflow applies: placeholders filled, the inputs in, the Job and namespace
    // the workflow names.
    let Some(_) = render_dir("k8s/loadtest") else {
        return;
    };
    let rendered = rendered_by(
        Command::new(format!("{ROOT}/k8s/loadtest/render.sh"))
            .args([
                "p-1",
                "southamerica-east1",
                "b-1",
                "17-1",
                "2026-12-07T14:00:00Z",
            ])
            .env("LOADTEST_RATE", "20000:80000:20000")
            .env("LOADTEST_DURATION", "30"),
    );
    let job_doc: Value = serde_yaml_ng::from_str(&rendered).expect("one YAML document");
    assert_eq!(job_doc["kind"], "Job");
    let name = str_of(&job_doc["metadata"]["name"]);
    let namespace = str_of(&job_doc["metadata"]["namespace"]);
    assert!(text.contains(&format!(
        "kubectl -n {namespace} wait --for=condition=complete job/{name}"
    )));
    let c = &job_doc["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        c["image"],
        "southamerica-east1-docker.pkg.dev/p-1/pixguard/pixguard:staging"
    );
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(str_of)
        .collect();
    for wanted in [
        "--rate=20000:80000:20000",
        "--duration=30",
        "--out=gs://b-1/loadtest/17-1/part-$(PART_INDEX)",
    ] {
        assert!(args.contains(&wanted), "{wanted} in {args:?}");
    }
    let start = c["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "START_AT")
        .expect("START_AT");
    assert_eq!(start["value"], "2026-12-07T14:00:00Z");
    // The parts the workflow copies are the ones the pods write, and nothing else of the run.
    assert!(
        merge_run.contains("loadtest/${RUN_ID}/part-*"),
        "{merge_run}"
    );
    // A value that could break out of the render is refused.
    let bad = Command::new(format!("{ROOT}/k8s/loadtest/render.sh"))
        .args(["p-1", "r", "b/../x", "1", "now"])
        .output()
        .expect("render.sh runs");
    assert!(!bad.status.success());
}

/// What a render script printed; its stderr when it failed.
fn rendered_by(command: &mut Command) -> String {
    let out = command.output().expect("the render script runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

//! docs/deploy.md's commands: every `pixguard`, `kubectl` and `gcloud` line is one the tool
//! accepts; and every `pixguard` line in README.md and the rest of docs/.

use super::*;

/// Shell commands in a text's fenced blocks (continuation lines joined) that start with `prefix`.
pub(super) fn commands_in(text: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    let mut current = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            continue;
        }
        let line = line.trim();
        match line.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                if current.starts_with(prefix) {
                    out.push(std::mem::take(&mut current));
                }
                current.clear();
            }
        }
    }
    out
}

/// Runs `pixguard <args> --help` through bash (its quoting and variables): clap refuses a
/// subcommand or flag it does not know before it prints help.
pub(super) fn assert_pixguard_accepts(command: &str, where_: &str) {
    let line = format!("{command} --help");
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_pixguard"))
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args(["-c", &line])
        .env("PATH", path)
        .env("PROJECT_ID", "my-psp-fraud")
        .env("SMOKE_API_KEY", "k")
        .env("GCP_PROJECT", "my-psp-fraud")
        .env("API_KEY", "k")
        .env("API", "v1")
        .env("PORT", "18080")
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "{where_}: `{command}` is refused:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_pixguard_command_in_the_runbook_is_one_pixguard_accepts() {
    let doc = std::fs::read_to_string(format!("{ROOT}/docs/deploy.md")).expect("docs/deploy.md");
    let commands = commands_in(&doc, "pixguard ");
    assert!(commands.len() >= 4, "{commands:#?}");
    for c in &commands {
        assert_pixguard_accepts(c, "docs/deploy.md");
    }
    // kubectl's commands and flags (cobra refuses an unknown flag before it prints help); the
    // gcloud ones are checked by the test below.
    if render("dev").is_some() {
        let kubectl = commands_in(&doc, "kubectl ");
        assert!(kubectl.len() >= 5, "{kubectl:#?}");
        for c in &kubectl {
            let out = Command::new("bash")
                .args(["-c", &format!("{c} --help")])
                .env("MLFLOW_TRACKING_URI", "http://mlflow:5000")
                .env("MLFLOW_TRACKING_TOKEN", "t")
                .output()
                .expect("bash runs");
            assert!(
                out.status.success(),
                "docs/deploy.md: `{c}` is refused:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    // The paths it names exist.
    for path in [
        "k8s/render.sh",
        "k8s/endpoints/openapi.yaml",
        "k8s/endpoints/grpc.yaml",
        "tests/python/endpoints_grpc.py",
        "k8s/overlays/production/ingress.yaml",
        ".github/workflows/deploy.yml",
    ] {
        assert!(doc.contains(path), "the runbook does not mention {path}");
        assert!(
            std::path::Path::new(&format!("{ROOT}/{path}")).exists(),
            "{path}"
        );
    }
}

/// The `pixguard` invocation in a shell line, if it has one: leading `VAR=value` assignments and
/// `taskset -c CPUS` dropped, `cargo run --release --` and `target/release/pixguard` read as
/// `pixguard`, and cut before a comment, pipe, background `&` or redirection (so `--help` lands
/// on pixguard, and nothing is written).
fn pixguard_invocation(line: &str) -> Option<String> {
    let mut rest = line.trim();
    while let Some((word, tail)) = rest.split_once(' ')
        && word.contains('=')
        && !word.starts_with('-')
    {
        rest = tail.trim_start();
    }
    if let Some(tail) = rest.strip_prefix("taskset -c ")
        && let Some((_cpus, tail)) = tail.split_once(' ')
    {
        rest = tail.trim_start();
    }
    let rest = match rest.strip_prefix("cargo run --release -- ") {
        Some(args) => format!("pixguard {args}"),
        None => rest
            .trim_start_matches("./")
            .trim_start_matches("target/release/")
            .to_string(),
    };
    if !rest.starts_with("pixguard ") && rest != "pixguard" {
        return None;
    }
    let end = [" #", " |", " &", " >", " 2>"]
        .iter()
        .filter_map(|stop| rest.find(stop))
        .min()
        .unwrap_or(rest.len());
    Some(rest[..end].trim_end().to_string())
}

#[test]
fn every_pixguard_command_in_the_readme_and_docs_is_one_pixguard_accepts() {
    let mut files = vec![format!("{ROOT}/README.md")];
    let mut docs: Vec<String> = std::fs::read_dir(format!("{ROOT}/docs"))
        .expect("docs/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .map(|p| p.display().to_string())
        .collect();
    docs.sort();
    files.extend(docs);
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable");
        let name = file.strip_prefix(&format!("{ROOT}/")).unwrap_or(file);
        for command in commands_in(&text, "")
            .iter()
            .filter_map(|l| pixguard_invocation(l))
        {
            assert_pixguard_accepts(&command, name);
            checked += 1;
        }
    }
    // 68 on 2026-12-06: a much lower count means the extraction broke, not that docs shrank.
    assert!(checked >= 60, "only {checked} pixguard commands found");
}

#[test]
fn a_pixguard_invocation_is_cut_out_of_its_shell_line() {
    for (line, expected) in [
        ("cargo run --release -- serve", Some("pixguard serve")),
        (
            "PIXGUARD__ENGINE__MAX_BATCH_SIZE=64 pixguard serve --port 9000   # a comment",
            Some("pixguard serve --port 9000"),
        ),
        (
            "pixguard synth --rows 1 | pixguard produce --topic t",
            Some("pixguard synth --rows 1"),
        ),
        (
            "pixguard serve --port 18300 &",
            Some("pixguard serve --port 18300"),
        ),
        (
            "pixguard features traffic.jsonl > out.jsonl",
            Some("pixguard features traffic.jsonl"),
        ),
        (
            "pixguard bench --header \"x-api-key: $K\" --rate 200",
            Some("pixguard bench --header \"x-api-key: $K\" --rate 200"),
        ),
        ("pixguard --help", Some("pixguard --help")),
        (
            "PIXGUARD__SERVER__HTTP_THREADS=1 taskset -c 0 target/release/pixguard serve --port 1 &",
            Some("pixguard serve --port 1"),
        ),
        (
            "./target/release/pixguard synth --rows 1 | python3 -c 'x'",
            Some("pixguard synth --rows 1"),
        ),
        (
            ".ci-venv/bin/python bench.py --pixguard target/release/pixguard",
            None,
        ),
        ("curl -s localhost:8080/v1/score", None),
    ] {
        assert_eq!(pixguard_invocation(line).as_deref(), expected, "{line}");
    }
}

/// Runs a gcloud command line through bash with no credentials and a scratch configuration: gcloud
/// parses the whole line (command path, flag names, choices) before it asks for an account, so a
/// misspelling exits 2 and a line spelled right stops at "no active account" (or succeeds, for a
/// local command such as `gcloud config set`).
fn assert_gcloud_accepts(command: &str, where_: &str, scratch: &std::path::Path) {
    // In the scratch folder, with the folders the workflows create before they copy into them.
    std::fs::create_dir_all(scratch.join("parts")).expect("scratch/parts");
    let out = Command::new("bash")
        .args(["-c", command])
        .current_dir(scratch)
        .env("HOME", scratch)
        .env("CLOUDSDK_CONFIG", scratch.join("gcloud"))
        .env("CLOUDSDK_CORE_DISABLE_PROMPTS", "1")
        .env("CLOUDSDK_CORE_CHECK_GCE_METADATA", "false")
        // What the runbook exports and the workflow's variables hold.
        .env("PROJECT_ID", "my-psp-fraud")
        .env("PROJECT_NUMBER", "123456789012")
        .env("REGION", "southamerica-east1")
        .env("GPU_ZONES", "southamerica-east1-a,southamerica-east1-c")
        .env("CLUSTER", "pixguard")
        .env("POD_SA", "pixguard@my-psp-fraud.iam.gserviceaccount.com")
        .env(
            "DEPLOYER",
            "github-deployer@my-psp-fraud.iam.gserviceaccount.com",
        )
        .env("GITHUB_REPO", "my-psp/pixguard")
        .env("ADDRESS", "203.0.113.7")
        .env("GCP_PROJECT", "my-psp-fraud")
        .env("GCP_REGION", "southamerica-east1")
        .env("GKE_CLUSTER", "pixguard")
        .env("GKE_LOCATION", "southamerica-east1")
        .env("BUCKET", "my-psp-fraud-loadtest")
        .env("RUN_ID", "1234567890-1")
        .output()
        .expect("bash runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() || stderr.contains("You do not currently have an active account"),
        "{where_}: `{command}` is refused by gcloud (exit {:?}):\n{stderr}",
        out.status.code()
    );
}

#[test]
fn every_gcloud_command_in_the_runbook_and_the_workflow_is_one_gcloud_accepts() {
    // The Google Cloud CLI is on this kind of machine, but no registry `.ci/run` installs from
    // (PyPI, npm, Debian) carries it: where it is missing the test says so and checks nothing.
    if Command::new("gcloud").arg("--version").output().is_err() {
        eprintln!("skipped: the Google Cloud CLI (gcloud) is not installed");
        return;
    }
    let scratch = std::env::temp_dir().join(format!("pixguard-gcloud-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("scratch");
    let doc = std::fs::read_to_string(format!("{ROOT}/docs/deploy.md")).expect("docs/deploy.md");
    let runbook = commands_in(&doc, "gcloud ");
    assert!(runbook.len() >= 25, "{runbook:#?}");
    for c in &runbook {
        assert_gcloud_accepts(c, "docs/deploy.md", &scratch);
    }
    let mut workflow = Vec::new();
    for file in ["deploy.yml", "loadtest.yml"] {
        let path = format!("{ROOT}/.github/workflows/{file}");
        let wf: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&path).expect("workflow"))
            .expect("YAML");
        for job in wf["jobs"].as_mapping().expect("jobs").values() {
            for step in job["steps"].as_sequence().into_iter().flatten() {
                if let Some(run) = step["run"].as_str() {
                    for c in commands_in(&format!("```\n{run}\n```"), "gcloud ") {
                        assert_gcloud_accepts(&c, &path, &scratch);
                        workflow.push(c);
                    }
                }
            }
        }
    }
    assert!(workflow.len() >= 7, "{workflow:#?}");
    println!(
        "gcloud accepts {} runbook and {} workflow command lines",
        runbook.len(),
        workflow.len()
    );
    let _ = std::fs::remove_dir_all(&scratch);
}

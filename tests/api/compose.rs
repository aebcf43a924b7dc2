//! `docker-compose.yml` as Compose would judge it, without a container
//! engine (CI has none). The file is read by PyYAML, anchors and merge keys
//! resolved as Compose resolves them, and validated by `jsonschema` against
//! the Compose Specification's own schema (`tests/fixtures/compose-spec.json`),
//! with the interpreter of `CALLVAULT_TEST_PYTHON`. Then the checks a schema
//! cannot make, those `docker compose config` and `up` make across the file:
//! dependencies name services and wait only for what can happen, volumes are
//! declared and used, bind-mounted files exist, images pulled are pinned,
//! published ports do not collide, the nodes' variables are ones the binary
//! reads (from its own man pages) and the ones `scripts/compose-topology.sh`
//! sets, and the state of every backend (the KMS emulator's keys above all)
//! is on a volume. Each check is shown to catch its mistake on a broken copy
//! of the file. Running the topology is `scripts/compose-topology.sh`'s job.

mod checks;
mod file;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use checks::{Context, problems};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Loads argv[1] with PyYAML and validates it against the schema in
/// argv[2]; prints `{"document": …, "schema_errors": ["path: message", …]}`.
const LOAD: &str = r#"
import json, sys
import jsonschema, yaml
with open(sys.argv[1]) as f:
    document = yaml.safe_load(f)
with open(sys.argv[2]) as f:
    schema = json.load(f)
jsonschema.Draft7Validator.check_schema(schema)
errors = sorted(
    "/".join(str(p) for p in e.absolute_path) + ": " + e.message
    for e in jsonschema.Draft7Validator(schema).iter_errors(document)
)
json.dump({"document": document, "schema_errors": errors}, sys.stdout)
"#;

/// The Python with PyYAML and jsonschema (`CALLVAULT_TEST_PYTHON`, which
/// scripts/test.sh sets to its venv). Missing under CI is a failure.
fn python() -> Option<PathBuf> {
    let found = std::env::var_os("CALLVAULT_TEST_PYTHON").map(PathBuf::from);
    if found.is_none() {
        let why = "CALLVAULT_TEST_PYTHON is not set (scripts/test.sh sets it to a venv with PyYAML and jsonschema)";
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("skipped: {why}");
    }
    found
}

struct Loaded {
    document: Value,
    schema_errors: Vec<String>,
}

async fn load(python: &Path, file: &Path) -> Loaded {
    let schema = Path::new(REPO).join("tests/fixtures/compose-spec.json");
    let out = tokio::process::Command::new(python)
        .arg("-c")
        .arg(LOAD)
        .arg(file)
        .arg(&schema)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "loading {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v: Value = serde_json::from_slice(&out.stdout).unwrap();
    Loaded {
        document: v["document"].take(),
        schema_errors: serde_json::from_value(v["schema_errors"].take()).unwrap(),
    }
}

/// Every `CALLVAULT_*` variable the binary reads, from the man pages it
/// generates from its clap tree (`[env: CALLVAULT_…]` on every flag).
async fn known_variables() -> BTreeSet<String> {
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_callvault"))
        .args(["man", "--dir"])
        .arg(dir.path())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names = BTreeSet::new();
    for page in std::fs::read_dir(dir.path()).unwrap() {
        let text = std::fs::read_to_string(page.unwrap().path()).unwrap();
        for (at, _) in text.match_indices("CALLVAULT_") {
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            names.insert(name);
        }
    }
    assert!(
        names.contains("CALLVAULT_DATABASE_URL") && names.len() > 50,
        "the man pages name only {names:?}"
    );
    // The log filter, read beside clap (README: `CALLVAULT_LOG=info`).
    names.insert("CALLVAULT_LOG".to_owned());
    names
}

async fn context() -> Context {
    Context {
        known_variables: known_variables().await,
        topology_script: std::fs::read_to_string(
            Path::new(REPO).join("scripts/compose-topology.sh"),
        )
        .unwrap(),
    }
}

#[tokio::test]
async fn docker_compose_yml_is_valid_compose() {
    let Some(python) = python() else { return };
    let loaded = load(&python, &Path::new(REPO).join("docker-compose.yml")).await;
    let found = problems(&loaded.document, &context().await);
    assert!(
        loaded.schema_errors.is_empty() && found.is_empty(),
        "docker-compose.yml\n- against the Compose Specification's schema:\n{}\n- across services:\n{}",
        loaded.schema_errors.join("\n"),
        found.join("\n")
    );
}

/// A `docker compose` on this machine (a developer's) also gets the last
/// word; CI has none, and then the schema and the checks above stand in.
#[tokio::test]
async fn docker_compose_config_accepts_it_where_compose_is_installed() {
    let available = tokio::process::Command::new("docker")
        .args(["compose", "version"])
        .output()
        .await
        .is_ok_and(|o| o.status.success());
    if !available {
        eprintln!(
            "skipped: no `docker compose` here (docker_compose_yml_is_valid_compose checks the file)"
        );
        return;
    }
    let out = tokio::process::Command::new("docker")
        .args(["compose", "config", "--quiet"])
        .current_dir(REPO)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "docker compose config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A mutation of the file, and what the complaint about it must say.
type Breakage = (&'static str, fn(&mut Value), &'static str);

/// Each check catches the mistake it is for: a broken copy of the real file
/// is refused with the words that name the mistake.
#[tokio::test]
async fn every_check_catches_its_mistake() {
    let Some(python) = python() else { return };
    let good = load(&python, &Path::new(REPO).join("docker-compose.yml"))
        .await
        .document;
    let cx = context().await;
    let node_env = |d: &mut Value, k: &str, v: &str| {
        d["services"]["callvault"]["environment"][k] = json!(v);
    };
    let semantic: &[Breakage] = &[
        (
            "a version key",
            |d| d["version"] = json!("3.8"),
            "`version`",
        ),
        (
            "an image on latest",
            |d| d["services"]["postgres"]["image"] = json!("postgres:latest"),
            "postgres: image postgres:latest is not pinned",
        ),
        (
            "an image without a tag",
            |d| d["services"]["kms"]["image"] = json!("nsmithuk/local-kms"),
            "kms: image nsmithuk/local-kms has no tag",
        ),
        (
            "a dependency on no service",
            |d| {
                d["services"]["bootstrap"]["depends_on"]["postgresql"] =
                    json!({"condition": "service_healthy"})
            },
            "bootstrap: depends on postgresql, which is not a service",
        ),
        (
            "waiting for the health of a service without a health check",
            |d| d["services"]["kms"]["healthcheck"] = Value::Null,
            "waits for kms to be healthy, but kms has no healthcheck",
        ),
        (
            "waiting for a job that restarts",
            |d| d["services"]["bootstrap"]["restart"] = json!("unless-stopped"),
            "waits for bootstrap to complete, but bootstrap restarts",
        ),
        (
            "an undeclared volume",
            |d| {
                d["volumes"].as_object_mut().unwrap().remove("kms");
            },
            "kms: volume kms is not declared",
        ),
        (
            "an unused volume",
            |d| d["volumes"]["spare"] = Value::Null,
            "volume spare is declared but no service mounts it",
        ),
        (
            "a bind mount of a missing file",
            |d| {
                d["services"]["bootstrap"]["volumes"][1] =
                    json!("./scripts/compose-bootstrap.bash:/scripts/compose-bootstrap.sh:ro")
            },
            "bootstrap: bind-mounts ./scripts/compose-bootstrap.bash, which does not exist",
        ),
        (
            "a port published twice",
            |d| d["services"]["callvault-2"]["ports"][0] = json!("127.0.0.1:50051:50051"),
            "publishes 127.0.0.1:50051, which callvault publishes too",
        ),
        (
            "the KMS keys in the container",
            |d| d["services"]["kms"]["volumes"] = json!([]),
            "kms: its state in /data is not on a named volume",
        ),
        (
            "the catalog in the container",
            |d| d["services"]["postgres"]["environment"]["PGDATA"] = json!("/pgdata"),
            "postgres: its state in /pgdata is not on a named volume",
        ),
        (
            "the recordings in the container",
            |d| d["services"]["minio"]["command"] = json!(["server", "/export"]),
            "minio: its state in /export is not on a named volume",
        ),
    ];
    let mut failures = Vec::new();
    let mut check = |what: &str, doc: &Value, want: &str| {
        let found = problems(doc, &cx);
        if !found.iter().any(|p| p.contains(want)) {
            failures.push(format!(
                "{what}: wanted a problem with `{want}`, got {found:?}"
            ));
        }
    };
    for (what, breaks, want) in semantic {
        let mut doc = good.clone();
        breaks(&mut doc);
        check(what, &doc, want);
    }
    for (what, variable, want) in [
        (
            "a misspelt setting",
            "CALLVAULT_LISTN",
            "callvault: callvault reads no variable CALLVAULT_LISTN",
        ),
        (
            "a variable no node reads",
            "RUST_LOG",
            "callvault: RUST_LOG is neither a callvault setting",
        ),
        (
            "a setting the topology script lacks",
            "CALLVAULT_ROLES",
            "callvault: CALLVAULT_ROLES is not set by scripts/compose-topology.sh",
        ),
    ] {
        let mut doc = good.clone();
        node_env(&mut doc, variable, "x");
        check(what, &doc, want);
    }
    // What only the schema knows, named by the path and the word at fault
    // (jsonschema's wording varies between releases): written as JSON,
    // which YAML reads.
    type SchemaBreakage = (&'static str, fn(&mut Value), [&'static str; 2]);
    let schema: &[SchemaBreakage] = &[
        (
            "a condition Compose does not know",
            |d| {
                d["services"]["callvault"]["depends_on"]["bootstrap"]["condition"] =
                    json!("service_done")
            },
            ["services/callvault/depends_on", "service_done"],
        ),
        (
            "a misspelt key",
            |d| d["services"]["postgres"]["healthcheck"]["intervall"] = json!("2s"),
            ["services/postgres/healthcheck: ", "'intervall'"],
        ),
        (
            "a service key that does not exist",
            |d| d["services"]["kms"]["depends"] = json!(["postgres"]),
            ["services/kms: ", "'depends'"],
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (what, breaks, want) in schema {
        let mut doc = good.clone();
        breaks(&mut doc);
        let file = dir.path().join("docker-compose.yml");
        std::fs::write(&file, serde_json::to_vec(&doc).unwrap()).unwrap();
        let errors = load(&python, &file).await.schema_errors;
        if !errors.iter().any(|e| want.iter().all(|w| e.contains(w))) {
            failures.push(format!(
                "{what}: wanted a schema error with {want:?}, got {errors:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

//! The checks `docker compose config` and `up` make across a Compose file
//! that its JSON schema cannot: one function per rule, each appending one
//! line per problem.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::{Value, json};

use super::REPO;
use super::file::{
    dependencies, environment, is_node, mounts, published_ports, services, state_dir,
};

/// Variables of the nodes that the topology script does not set, and why.
const NOT_IN_TOPOLOGY: &[(&str, &str)] = &[(
    "CALLVAULT_ALLOW_INSECURE",
    "the script's nodes listen on loopback, where cleartext needs no permission",
)];

/// What the checks compare the file with.
pub struct Context {
    pub known_variables: BTreeSet<String>,
    pub topology_script: String,
}

/// A check: appends one line per problem found.
type Check = fn(&Value, &Context, &mut Vec<String>);

/// What `docker compose config` and `up` would refuse or get wrong, one
/// line per problem; empty for a good file.
pub fn problems(doc: &Value, cx: &Context) -> Vec<String> {
    const CHECKS: &[Check] = &[
        no_version,
        pinned_images,
        dependencies_can_happen,
        volumes_declared_and_used,
        ports_do_not_collide,
        variables_are_callvaults,
        topology_script_sets_them,
        state_on_volumes,
    ];
    let mut out = Vec::new();
    for check in CHECKS {
        check(doc, cx, &mut out);
    }
    out
}

fn no_version(doc: &Value, _: &Context, out: &mut Vec<String>) {
    if doc.get("version").is_some() {
        out.push(
            "top-level `version`: obsolete in the Compose Specification, ignored with a warning"
                .into(),
        );
    }
}

/// Images that are pulled, not built here, name a tag other than `latest`
/// (or a digest): `up` next month must start what was tested.
fn pinned_images(doc: &Value, _: &Context, out: &mut Vec<String>) {
    for (name, service) in services(doc) {
        if !service["build"].is_null() {
            continue;
        }
        let Some(image) = service["image"].as_str() else {
            out.push(format!("{name}: neither `image` nor `build`"));
            continue;
        };
        if image.contains('@') {
            continue;
        }
        match image.rsplit('/').next().unwrap_or(image).split_once(':') {
            None => out.push(format!(
                "{name}: image {image} has no tag (it means `latest`)"
            )),
            Some((_, "latest")) => {
                out.push(format!("{name}: image {image} is not pinned (`latest`)"))
            }
            Some(_) => {}
        }
    }
}

/// Every dependency is a service, and what is waited for can happen: a
/// health check to become healthy, an exit that is not restarted.
fn dependencies_can_happen(doc: &Value, _: &Context, out: &mut Vec<String>) {
    for (name, service) in services(doc) {
        for (dependency, condition) in dependencies(service) {
            let target = &doc["services"][&dependency];
            if target.is_null() {
                out.push(format!(
                    "{name}: depends on {dependency}, which is not a service"
                ));
                continue;
            }
            let check = &target["healthcheck"];
            if condition == "service_healthy"
                && (check["test"].is_null() || check["disable"] == json!(true))
            {
                out.push(format!(
                    "{name}: waits for {dependency} to be healthy, but {dependency} has no healthcheck"
                ));
            }
            let restarts = matches!(
                target["restart"].as_str(),
                Some("always" | "unless-stopped")
            );
            if condition == "service_completed_successfully" && restarts {
                out.push(format!(
                    "{name}: waits for {dependency} to complete, but {dependency} restarts whenever it exits"
                ));
            }
        }
    }
}

/// Named volumes are declared and every declared one is used; bind-mounted
/// files exist (Compose would create a missing one as a directory).
fn volumes_declared_and_used(doc: &Value, _: &Context, out: &mut Vec<String>) {
    let declared: BTreeSet<&String> = doc["volumes"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| k)
        .collect();
    let mut used = BTreeSet::new();
    for (name, service) in services(doc) {
        for mount in mounts(service) {
            match (mount.source, mount.bind) {
                (Some(source), true) => {
                    if !Path::new(REPO).join(&source).exists() {
                        out.push(format!(
                            "{name}: bind-mounts {source}, which does not exist"
                        ));
                    }
                }
                (Some(source), false) => {
                    if !declared.contains(&source) {
                        out.push(format!(
                            "{name}: volume {source} is not declared under `volumes`"
                        ));
                    }
                    used.insert(source);
                }
                (None, _) => {}
            }
        }
    }
    for volume in declared {
        if !used.contains(volume) {
            out.push(format!(
                "volume {volume} is declared but no service mounts it"
            ));
        }
    }
}

fn ports_do_not_collide(doc: &Value, _: &Context, out: &mut Vec<String>) {
    let mut taken: BTreeMap<String, &String> = BTreeMap::new();
    for (name, service) in services(doc) {
        for port in published_ports(service) {
            if let Some(other) = taken.insert(port.clone(), name) {
                out.push(format!(
                    "{name}: publishes {port}, which {other} publishes too"
                ));
            }
        }
    }
}

/// A `CALLVAULT_*` variable is one the binary reads (a typo is silently
/// ignored otherwise), and a node is configured by nothing else but AWS
/// credentials.
fn variables_are_callvaults(doc: &Value, cx: &Context, out: &mut Vec<String>) {
    for (name, service) in services(doc) {
        for variable in environment(service).keys() {
            if variable.starts_with("CALLVAULT_") {
                if !cx.known_variables.contains(variable) {
                    out.push(format!("{name}: callvault reads no variable {variable}"));
                }
            } else if is_node(service) && !variable.starts_with("AWS_") {
                out.push(format!(
                    "{name}: {variable} is neither a callvault setting (CALLVAULT_*) nor an AWS credential (AWS_*)"
                ));
            }
        }
    }
}

/// The services built here (the bootstrap and the nodes) have their
/// variables set by the script that runs the topology in CI too.
fn topology_script_sets_them(doc: &Value, cx: &Context, out: &mut Vec<String>) {
    for (name, service) in services(doc) {
        if service["build"].is_null() {
            continue;
        }
        for variable in environment(service).keys() {
            let exempt = NOT_IN_TOPOLOGY.iter().any(|(v, _)| v == variable);
            if !exempt && !cx.topology_script.contains(&format!("{variable}=")) {
                out.push(format!(
                    "{name}: {variable} is not set by scripts/compose-topology.sh, which runs this topology in CI"
                ));
            }
        }
    }
}

/// The catalog, the objects and the KMS keys survive a new container: a KMS
/// emulator that forgets its keys makes every recording unreadable.
fn state_on_volumes(doc: &Value, _: &Context, out: &mut Vec<String>) {
    for (name, service) in services(doc) {
        let Some(dir) = state_dir(service) else {
            continue;
        };
        let on_volume = mounts(service)
            .iter()
            .any(|m| !m.bind && m.source.is_some() && m.target == dir);
        if !on_volume {
            out.push(format!(
                "{name}: its state in {dir} is not on a named volume: a new container starts empty"
            ));
        }
    }
}

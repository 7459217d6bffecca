//! The deployment files of `deploy/` checked without a cluster: every YAML document parses
//! (yaml-rust2); the Kubernetes objects fit together (the StatefulSet's headless Service, its
//! selector and labels, the ports its probes name); and every `THEMIS_*` variable and
//! configuration file they hand to `themis node` is one the binary takes (its `--print-config`
//! names each variable as the source of a setting).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};

use themis_testkit::process::{run, text};
use themis_testkit::within;
use yaml_rust2::{Yaml, YamlLoader};

const BIN: &str = env!("CARGO_BIN_EXE_themis");

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn docs(file: &str) -> Vec<Yaml> {
    let path = deploy().join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Resolves YAML merge keys (`<<: *anchor`, which compose files use and YAML 1.2 parsers
/// leave as a plain key): the merged entries under the explicit ones, recursively.
fn merged(y: &Yaml) -> Yaml {
    match y {
        Yaml::Hash(h) => {
            let mut out = yaml_rust2::yaml::Hash::new();
            for (k, v) in h {
                if k.as_str() != Some("<<") {
                    out.insert(k.clone(), merged(v));
                }
            }
            if let Some(Yaml::Hash(base)) = h.get(&Yaml::String("<<".into())).map(merged) {
                for (k, v) in base {
                    match (out.get_mut(&k), v) {
                        (Some(Yaml::Hash(mine)), Yaml::Hash(theirs)) => {
                            for (kk, vv) in theirs {
                                mine.entry(kk).or_insert(vv);
                            }
                        }
                        (Some(_), _) => {}
                        (None, v) => {
                            out.insert(k, v);
                        }
                    }
                }
            }
            Yaml::Hash(out)
        }
        Yaml::Array(a) => Yaml::Array(a.iter().map(merged).collect()),
        other => other.clone(),
    }
}

fn s(y: &Yaml) -> &str {
    y.as_str().unwrap_or_else(|| panic!("not a string: {y:?}"))
}

/// The `THEMIS_*` variables of a container (or compose service) environment, with their
/// values (a `$(POD_IP)` reference becomes an address).
fn themis_env(env: &Yaml) -> Vec<(String, String)> {
    let pairs: Vec<(String, String)> = match env {
        Yaml::Array(list) => list
            .iter()
            .map(|e| {
                (
                    s(&e["name"]).to_owned(),
                    e["value"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect(),
        Yaml::Hash(h) => h
            .iter()
            .filter_map(|(k, v)| {
                Some((k.as_str()?.to_owned(), v.as_str().unwrap_or("").to_owned()))
            })
            .collect(),
        _ => Vec::new(),
    };
    pairs
        .into_iter()
        .filter(|(k, _)| k.starts_with("THEMIS_"))
        .map(|(k, v)| (k, v.replace("$(POD_IP)", "10.0.0.7")))
        .collect()
}

/// Runs `themis node --print-config` with `env` (and a config file if given): every variable
/// must be the source of a setting.
async fn accepted(env: &[(String, String)], config: Option<&Path>, what: &str) {
    let mut args = vec!["node", "--print-config"];
    if let Some(c) = config {
        args.extend(["--config", c.to_str().unwrap()]);
    }
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    // The required settings, when neither the file nor the environment gives them.
    if config.is_none() && !env.iter().any(|(k, _)| *k == "THEMIS_NET") {
        env.push(("THEMIS_NET", "x"));
    }
    if config.is_none() && !env.iter().any(|(k, _)| *k == "THEMIS_LISTEN") {
        env.push(("THEMIS_LISTEN", "0.0.0.0:7946"));
    }
    let out = run(BIN, &args, &env).await;
    assert!(out.status.success(), "{what}: {}", text(&out.stderr));
    let printed = text(&out.stdout);
    for (k, _) in &env {
        assert!(
            printed.contains(&format!("# {k}")),
            "{what}: {k} is not a setting:\n{printed}"
        );
    }
}

#[tokio::test]
async fn the_kubernetes_manifests_fit_together_and_configure_real_settings() {
    within(60, "kubernetes manifests", async {
        let ring = docs("kubernetes/themis.yaml");
        let service = ring.iter().find(|d| s(&d["kind"]) == "Service").unwrap();
        let set = ring
            .iter()
            .find(|d| s(&d["kind"]) == "StatefulSet")
            .unwrap();
        assert_eq!(s(&service["spec"]["clusterIP"]), "None");
        assert_eq!(
            service["spec"]["publishNotReadyAddresses"].as_bool(),
            Some(true)
        );
        assert_eq!(
            s(&set["spec"]["serviceName"]),
            s(&service["metadata"]["name"])
        );
        let labels = &set["spec"]["template"]["metadata"]["labels"];
        for (k, v) in set["spec"]["selector"]["matchLabels"].as_hash().unwrap() {
            assert_eq!(&labels[s(k)], v, "the selector matches the pod labels");
            assert_eq!(&service["spec"]["selector"][s(k)], v);
        }
        let c = &set["spec"]["template"]["spec"]["containers"][0];
        let ports: Vec<&str> = c["ports"]
            .as_vec()
            .unwrap()
            .iter()
            .map(|p| s(&p["name"]))
            .collect();
        for probe in ["readinessProbe", "livenessProbe"] {
            let port = s(&c[probe]["httpGet"]["port"]);
            assert!(ports.contains(&port), "{probe} names port {port}");
            let path = s(&c[probe]["httpGet"]["path"]);
            assert!(path.starts_with("/v1/health/"), "{path}");
        }
        let env = themis_env(&c["env"]);
        let bootstrap = env.iter().find(|(k, _)| k == "THEMIS_BOOTSTRAP").unwrap();
        assert!(
            bootstrap
                .1
                .contains(&format!("0.{}:", s(&set["spec"]["serviceName"])))
        );
        accepted(&env, None, "themis.yaml").await;

        let sidecar = docs("kubernetes/sidecar.yaml");
        let map = sidecar
            .iter()
            .find(|d| s(&d["kind"]) == "ConfigMap")
            .unwrap();
        let deployment = sidecar
            .iter()
            .find(|d| s(&d["kind"]) == "Deployment")
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("themis.toml");
        std::fs::write(&file, s(&map["data"]["themis.toml"])).unwrap();
        let containers = deployment["spec"]["template"]["spec"]["containers"]
            .as_vec()
            .unwrap();
        let node = containers
            .iter()
            .find(|c| s(&c["name"]) == "themis")
            .unwrap();
        accepted(&themis_env(&node["env"]), Some(&file), "sidecar.yaml").await;
        let printed = text(
            &run(
                BIN,
                &["node", "--print-config", "--config", file.to_str().unwrap()],
                &[],
            )
            .await
            .stdout,
        );
        assert!(printed.contains("name = \"hello\""), "{printed}");
        // The app the sidecar forwards to is where its service definition says.
        let app = containers.iter().find(|c| s(&c["name"]) == "app").unwrap();
        let app_args: Vec<&str> = app["args"].as_vec().unwrap().iter().map(s).collect();
        assert!(
            printed.contains(&format!("http://{}/", app_args[2])),
            "{app_args:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn the_compose_file_has_five_nodes_and_an_upstream_with_real_settings() {
    within(60, "compose file", async {
        let compose = &merged(&docs("compose.yaml")[0]);
        let services = compose["services"].as_hash().unwrap();
        let nodes: Vec<&str> = services
            .keys()
            .map(s)
            .filter(|n| n.starts_with("themis-"))
            .collect();
        assert_eq!(nodes.len(), 5, "{nodes:?}");
        assert!(services.contains_key(&Yaml::String("upstream".into())));
        for n in &nodes {
            let svc = &compose["services"][*n];
            let env = themis_env(&svc["environment"]);
            let bootstrap = env.iter().find(|(k, _)| k == "THEMIS_BOOTSTRAP").unwrap();
            let seed = bootstrap.1.split(':').next().unwrap();
            assert!(
                nodes.contains(&seed),
                "{n} bootstraps by a container name: {seed}"
            );
            assert!(s(&svc["volumes"][0]).ends_with(":/data"));
            accepted(&env, None, n).await;
        }
    })
    .await;
}

#[tokio::test]
async fn the_systemd_unit_and_the_example_configuration_are_real_settings() {
    within(60, "systemd unit", async {
        let unit = std::fs::read_to_string(deploy().join("themis.service")).unwrap();
        let exec = unit
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap();
        let args: Vec<&str> = exec.split_whitespace().collect();
        assert_eq!(&args[1..3], ["node", "--config"]);
        let env: Vec<(String, String)> = unit
            .lines()
            .filter_map(|l| l.strip_prefix("Environment="))
            .filter_map(|kv| kv.split_once('='))
            .filter(|(k, _)| k.starts_with("THEMIS_"))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        assert!(!env.is_empty());
        accepted(&env, Some(&deploy().join("themis.toml")), "themis.service").await;
    })
    .await;
}

#[test]
fn the_two_runtime_stages_of_the_dockerfile_are_the_same_image() {
    let file = std::fs::read_to_string(deploy().join("Dockerfile")).unwrap();
    // The instructions of a stage after its COPY of the binary (comments and blank lines out).
    let stage = |name: &str| -> Vec<String> {
        let start = file
            .lines()
            .position(|l| l.starts_with("FROM ") && l.ends_with(&format!(" AS {name}")))
            .unwrap_or_else(|| panic!("no stage {name}"));
        let rest: Vec<&str> = file.lines().skip(start + 1).collect();
        let end = rest
            .iter()
            .position(|l| l.starts_with("FROM "))
            .unwrap_or(rest.len());
        let body: Vec<String> = rest[..end]
            .iter()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| (*l).to_owned())
            .collect();
        assert!(
            body[0].starts_with("COPY ") && body[0].ends_with(" /themis"),
            "{name}: {body:?}"
        );
        body[1..].to_vec()
    };
    assert_eq!(stage("host"), stage("runtime"));
    assert!(stage("host").contains(&"USER 65534:65534".to_owned()));
    assert!(file.contains("FROM scratch AS runtime") && file.contains("FROM scratch AS host"));
}

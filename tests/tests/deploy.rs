//! deploy/ stays true to the binaries: the units verify, the manifests parse, and the
//! configurations they ship are the documented ones (which the binaries' own unit tests
//! parse with their config schema).

use std::{path::PathBuf, process::Command};

fn deploy() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

#[test]
fn kubernetes_configs_are_the_documented_ones() {
    for name in ["coordinator.toml", "agent.toml"] {
        let shipped = std::fs::read_to_string(deploy().join("k8s").join(name)).unwrap();
        let documented = std::fs::read_to_string(deploy().join(name)).unwrap();
        assert_eq!(
            shipped, documented,
            "deploy/k8s/{name} differs from deploy/{name}; copy it over"
        );
    }
}

#[test]
fn manifests_are_valid_yaml_with_the_expected_objects() {
    let script = r#"
import sys, yaml
kinds = []
for f in sys.argv[1:]:
    for doc in yaml.safe_load_all(open(f)):
        if doc:
            kinds.append(doc.get("kind", "Kustomization"))
print(" ".join(sorted(kinds)))
"#;
    let k8s = deploy().join("k8s");
    let out = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .args(
            [
                "namespace.yaml",
                "coordinator.yaml",
                "agent.yaml",
                "kustomization.yaml",
                "workload-example.yaml",
            ]
            .map(|f| k8s.join(f)),
        )
        .output()
        .expect("python3 with PyYAML (python3-yaml, installed by scripts/install-deps.sh)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "DaemonSet Job Kustomization Namespace Service StatefulSet"
    );
}

const VALIDATOR: &str = "/opt/rdmaq-tools/bin/kubernetes-validate";

/// `kubernetes-validate --strict` (Kubernetes' own JSON schemas, offline) on a YAML stream.
fn validate(yaml: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(VALIDATOR)
        .args(["--strict", "--quiet", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{VALIDATOR}: {e} (installed by scripts/install-deps.sh into a venv)")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn the_kustomization_renders_and_every_manifest_passes_the_kubernetes_schemas() {
    let rendered = Command::new("kubectl")
        .arg("kustomize")
        .arg(deploy().join("k8s"))
        .output()
        .expect("kubectl (Debian's kubernetes-client, installed by scripts/install-deps.sh)");
    assert!(
        rendered.status.success(),
        "kubectl kustomize deploy/k8s: {}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let rendered = String::from_utf8(rendered.stdout).unwrap();
    for object in [
        "kind: Namespace",
        "kind: StatefulSet",
        "kind: DaemonSet",
        "name: rdmaq-agent-config",
        "name: rdmaq-coordinator-config",
        "tenant_from = \"pod-namespace\"",
    ] {
        assert!(
            rendered.contains(object),
            "{object} not rendered:\n{rendered}"
        );
    }
    let workload = std::fs::read_to_string(deploy().join("k8s/workload-example.yaml")).unwrap();
    let all = format!("{rendered}\n---\n{workload}");
    let out = validate(&all);
    assert!(
        out.status.success(),
        "kubernetes-validate --strict:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The validator is strict for real: a misspelt field fails it.
    let misspelt = workload.replace(
        "readOnly: true",
        "readOnly: true\n              redOnly: true",
    );
    assert!(
        !validate(&misspelt).status.success(),
        "kubernetes-validate passed a misspelt field"
    );
}

/// The shipped manifests agree with each other and with the image and the agent config:
/// the image tag is the workspace version (what scripts/build-image.sh tags), the agent
/// mounts the pod directory its rules read, and the example workload's library path is
/// where the image keeps it.
#[test]
fn manifests_agree_with_the_image_and_the_agent_config() {
    let version = env!("CARGO_PKG_VERSION");
    let k8s = deploy().join("k8s");
    let read = |f: &str| std::fs::read_to_string(k8s.join(f)).unwrap();
    for f in ["agent.yaml", "coordinator.yaml", "workload-example.yaml"] {
        let text = read(f);
        let images: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("image: "))
            .filter(|i| i.starts_with("rdmaq"))
            .collect();
        assert!(!images.is_empty(), "{f} runs no rdmaq image");
        for image in images {
            assert_eq!(image, format!("rdmaq:{version}"), "{f}");
        }
    }
    let agent_cfg = read("agent.toml");
    assert!(agent_cfg.contains("pod_log_dir = \"/var/log/pods\""));
    let agent = read("agent.yaml");
    assert!(agent.contains("mountPath: /var/log/pods") && agent.contains("path: /var/log/pods"));
    let workload = read("workload-example.yaml");
    assert!(workload.contains("/usr/lib/rdmaq/librdmaq_intercept.so"));
    assert!(workload.contains("value: /rdmaq/lib/librdmaq_intercept.so"));
    assert!(workload.contains("path: /run/rdmaq"));
}

#[test]
fn systemd_units_verify() {
    let units = [
        "rdmaq-coordinator.service",
        "rdmaq-agent.service",
        "rdmaq-agent.socket",
    ]
    .map(|u| deploy().join("systemd").join(u));
    let Ok(out) = Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .output()
    else {
        // No systemd on this machine: check the sections by hand instead.
        for u in &units {
            let text = std::fs::read_to_string(u).unwrap();
            let sections: &[&str] = if u.extension().is_some_and(|e| e == "socket") {
                &[
                    "[Unit]",
                    "[Socket]",
                    "[Install]",
                    "ListenStream=/run/rdmaq/",
                ]
            } else {
                &[
                    "[Unit]",
                    "[Service]",
                    "[Install]",
                    "ExecStart=/usr/bin/rdmaq-",
                ]
            };
            for section in sections {
                assert!(text.contains(section), "{} lacks {section}", u.display());
            }
        }
        return;
    };
    let errors = String::from_utf8_lossy(&out.stderr);
    // The binaries are not installed under /usr/bin on a build machine: that complaint is
    // expected, any other is a broken unit.
    let real: Vec<&str> = errors
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !(l.contains("Command /usr/bin/rdmaq-") && l.contains("is not executable")))
        .collect();
    assert!(real.is_empty(), "systemd-analyze verify:\n{errors}");
}

/// Every `rdmaq_*` metric a dashboard expression names.
fn metrics_queried(dashboard: &serde_json::Value) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("an expression");
            let mut rest = expr;
            while let Some(at) = rest.find("rdmaq_") {
                let tail = &rest[at..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(tail.len());
                names.insert(tail[..end].to_string());
                rest = &tail[end..];
            }
        }
    }
    names
}

/// The metric families a `/metrics` page declares (`# TYPE name ...`).
fn metrics_exported(page: &str) -> std::collections::BTreeSet<String> {
    page.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The Grafana dashboard parses, every panel says what it shows, and every metric it queries
/// is one a real coordinator member or agent exports (so a renamed metric fails here).
#[test]
fn the_grafana_dashboard_queries_metrics_that_exist() {
    use rdmaq_lab::{coordinator::CoordinatorCluster, host_agent, http};

    let text = std::fs::read_to_string(deploy().join("grafana/rdmaq.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    for panel in dashboard["panels"].as_array().unwrap() {
        if panel["type"] != "row" {
            assert!(
                panel["description"].as_str().is_some_and(|d| d.len() > 20),
                "panel {} says nothing of what it shows",
                panel["title"]
            );
        }
    }
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let metrics = free_port();
    let c = CoordinatorCluster::start(1, &["--metrics-listen", &metrics.to_string()]);
    c.cli_ok(&["quota", "set", "t1", "--max-qp", "3"]);
    let mut exported = metrics_exported(&http::get(metrics, "/metrics"));
    // An agent leasing from that member, driven until every family the dashboard reads has
    // a sample: admissions, a denial and a refused acquisition (beyond the cap of 3), a
    // connection refused (over the per-uid limit).
    let status = free_port();
    let agent = host_agent::HostAgent::start(&format!(
        "node = \"n1\"\nendpoints = [\"{}\"]\ndefault_tenant = \"t1\"\nstatus_listen = \"{status}\"\n\
         max_connections_per_uid = 2\n{}",
        c.addr(1),
        c.pki.agent("n1").toml()
    ));
    let mut s = host_agent::connect(&agent.sock());
    host_agent::hello(&mut s);
    for seq in 1..=5 {
        host_agent::admit_qps(&mut s, seq, 1);
    }
    let _second = host_agent::connect(&agent.sock());
    let mut third = host_agent::connect(&agent.sock());
    assert!(
        host_agent::closed(&mut third),
        "the per-uid limit let a third connection in"
    );
    exported.extend(metrics_exported(&http::get(status, "/metrics")));
    for name in metrics_queried(&dashboard) {
        let family = name.strip_suffix("_total").unwrap_or(&name);
        assert!(
            exported.contains(family),
            "the dashboard queries {name}, which nothing exports; exported: {exported:?}"
        );
    }
}

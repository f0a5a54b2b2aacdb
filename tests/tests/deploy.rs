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
        "DaemonSet Kustomization Namespace Service StatefulSet"
    );
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

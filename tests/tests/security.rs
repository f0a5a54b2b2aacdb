//! Mutual TLS and roles on a real coordinator (loopback): who is refused, who may do what,
//! that refusals change nothing and are counted, the audit trail, and certificate reload.

use std::time::Duration;

use rdmaq_lab::{coordinator::CoordinatorCluster, pki::Cert, pki::Pki};
use rdmaq_proto::v1::{self as pb, agent_client::AgentClient};
use tonic::Code;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// What the cluster holds, as the admin sees it: quotas, usage and the audit trail.
fn state(c: &CoordinatorCluster) -> String {
    ["quota list", "usage", "nodes list", "audit"]
        .iter()
        .map(|cmd| {
            let args: Vec<&str> = cmd.split(' ').chain(["-o", "json"]).collect();
            c.cli_ok(&args)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn refused(c: &CoordinatorCluster, who: &Cert, args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.extend(["--timeout", "2"]);
    let out = c.cli_as(who, &c.endpoints(), &all);
    assert!(
        !out.status.success(),
        "{args:?} was allowed: {}",
        text(&out)
    );
    text(&out)
}

fn acquire(node: &str) -> pb::AcquireRequest {
    pb::AcquireRequest {
        node: node.into(),
        tenant: "t1".into(),
        want: Some(pb::Amounts {
            qp: 1,
            ..Default::default()
        }),
        min: None,
    }
}

#[test]
fn strangers_are_refused_at_the_handshake() {
    let c = CoordinatorCluster::start(1, &[]);
    c.cli_ok(&["quota", "set", "t1", "--max-qp", "4"]);
    let before = state(&c);

    // No certificate at all: plain text to a TLS member.
    let out = c
        .command(&rdmaq_lab::bins::bin("rdmaq"))
        .args([
            "--endpoints",
            &c.endpoints(),
            "--insecure",
            "--timeout",
            "2",
        ])
        .args(["quota", "set", "t1", "--max-qp", "400"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));

    // A certificate from another CA, with the admin role in it.
    let other = Pki::new(&c.dir.join("other-pki"));
    let mallory = other.admin();
    // It must trust our CA to get as far as presenting its certificate.
    let mallory = Cert {
        ca: c.pki.ca(),
        ..mallory
    };
    let msg = refused(&c, &mallory, &["quota", "set", "t1", "--max-qp", "400"]);
    assert!(!msg.contains("quota"), "{msg}");

    // Our CA, but expired.
    let expired = c.pki.issue(
        "admin",
        "expired",
        &["--not-before", "2020-01-01", "--not-after", "2021-01-01"],
    );
    refused(&c, &expired, &["quota", "set", "t1", "--max-qp", "400"]);

    assert_eq!(state(&c), before, "a refused call changed the state");
}

#[test]
fn roles_decide_what_a_caller_may_do_and_refusals_change_nothing() {
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let c = CoordinatorCluster::start(1, &["--metrics-listen", &metrics.to_string()]);
    // The admin can.
    c.cli_ok(&["quota", "set", "t1", "--max-qp", "4"]);
    let before = state(&c);

    // A viewer reads but cannot write.
    let viewer = c.pki.viewer();
    let out = c.cli_as(
        &viewer,
        &c.endpoints(),
        &["quota", "get", "t1", "-o", "json"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let msg = refused(&c, &viewer, &["quota", "set", "t1", "--max-qp", "400"]);
    assert!(
        msg.contains("role viewer") && msg.contains("Admin/SetQuota"),
        "{msg}"
    );
    refused(&c, &viewer, &["quota", "delete", "t1"]);
    refused(&c, &viewer, &["nodes", "remove", "n1"]);
    refused(&c, &viewer, &["cluster", "remove-member", "1"]);

    // An agent certificate for n1: not an admin, and not n2.
    let n1 = c.pki.agent("n1");
    let msg = refused(&c, &n1, &["quota", "set", "t1", "--max-qp", "400"]);
    assert!(msg.contains("role agent"), "{msg}");
    refused(&c, &n1, &["usage"]);
    let addr = c.addr(1).to_string();
    rt().block_on(async {
        let mut a = AgentClient::new(n1.channel(&addr, Duration::from_secs(5)));
        let register = |node: &str| pb::RegisterRequest {
            node: node.into(),
            address: String::new(),
        };
        for call in ["register", "acquire", "heartbeat", "release"] {
            let err = match call {
                "register" => a.register(register("n2")).await.map(|_| ()),
                "acquire" => a.acquire(acquire("n2")).await.map(|_| ()),
                "heartbeat" => a
                    .heartbeat(pb::HeartbeatRequest {
                        node: "n2".into(),
                        ..Default::default()
                    })
                    .await
                    .map(|_| ()),
                _ => a
                    .release(pb::ReleaseRequest {
                        node: "n2".into(),
                        tenant: "t1".into(),
                        amounts: None,
                    })
                    .await
                    .map(|_| ()),
            }
            .unwrap_err();
            assert_eq!(err.code(), Code::PermissionDenied, "{call}: {err:?}");
            assert!(err.message().contains("node \"n2\""), "{}", err.message());
        }
    });
    // A member certificate is for Raft traffic only.
    let member = c.pki.member(9, &["127.0.0.1".into()]);
    refused(&c, &member, &["quota", "set", "t1", "--max-qp", "400"]);

    assert_eq!(state(&c), before, "a refused call changed the state");

    // The agent for n1 may act for n1, and the refusals were counted.
    rt().block_on(async {
        let mut a = AgentClient::new(n1.channel(&addr, Duration::from_secs(5)));
        a.register(pb::RegisterRequest {
            node: "n1".into(),
            address: String::new(),
        })
        .await
        .unwrap();
        a.acquire(acquire("n1")).await.unwrap();
    });
    let metrics = rdmaq_lab::http::get(metrics, "/metrics");
    assert!(
        metrics.contains(r#"rdmaq_rpc_denied_total{role="viewer",method="Admin/SetQuota"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"rdmaq_rpc_denied_total{role="agent",method="Agent/Acquire"} 1"#),
        "{metrics}"
    );
}

#[test]
fn the_audit_trail_names_who_changed_what() {
    let c = CoordinatorCluster::start(1, &[]);
    c.cli_ok(&["quota", "set", "t1", "--max-qp", "4"]);
    let other = c.pki.issue("admin", "bob", &[]);
    let out = c.cli_as(&other, &c.endpoints(), &["quota", "delete", "t1"]);
    assert!(out.status.success(), "{}", text(&out));
    let audit: serde_json::Value =
        serde_json::from_str(&c.cli_ok(&["audit", "-o", "json"])).unwrap();
    let records = audit.as_array().unwrap();
    let find = |what: &str| {
        records
            .iter()
            .find(|r| r["action"].as_str().unwrap().starts_with(what))
            .unwrap_or_else(|| panic!("no {what:?} in {audit:#}"))
    };
    let set = find("quota set t1");
    assert!(
        set["actor"].as_str().unwrap().contains("CN=test-admin"),
        "{set}"
    );
    let delete = find("quota delete t1");
    assert!(
        delete["actor"].as_str().unwrap().contains("CN=bob"),
        "{delete}"
    );
    // Viewers may read it.
    let out = c.cli_as(&c.pki.viewer(), &c.endpoints(), &["audit"]);
    assert!(text(&out).contains("quota delete t1"), "{}", text(&out));
}

#[test]
fn a_reloaded_ca_bundle_admits_new_clients_and_keeps_allotments() {
    let c = CoordinatorCluster::start(1, &[]);
    c.cli_ok(&["quota", "set", "t1", "--max-qp", "4"]);
    let addr = c.addr(1).to_string();
    let n1 = c.pki.agent("n1");
    rt().block_on(async {
        let mut a = AgentClient::new(n1.channel(&addr, Duration::from_secs(5)));
        a.register(pb::RegisterRequest {
            node: "n1".into(),
            address: String::new(),
        })
        .await
        .unwrap();
        a.acquire(acquire("n1")).await.unwrap();
    });
    // An admin from a second CA is refused until the member trusts that CA too.
    let second = Pki::new(&c.dir.join("second-pki"));
    let carol = Cert {
        ca: c.pki.ca(),
        ..second.issue("admin", "carol", &[])
    };
    refused(&c, &carol, &["usage"]);
    let bundle = format!(
        "{}{}",
        std::fs::read_to_string(c.pki.ca()).unwrap(),
        std::fs::read_to_string(second.ca()).unwrap()
    );
    std::fs::write(c.pki.ca(), bundle).unwrap();
    let pid = c.pid(1).expect("member 1 runs");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::SIGHUP,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let out = c.cli_as(
            &carol,
            &c.endpoints(),
            &["usage", "-o", "json", "--timeout", "2"],
        );
        if out.status.success() {
            // The allotment made before the reload is still there.
            let usage: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(
                usage["tenants"][0]["nodes"][0]["allotted"]["qp"], 1,
                "{usage:#}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still refused after the reload: {}",
            text(&out)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A client whose TLS setting differs from the member's is told so at once, in both
/// directions, instead of an HTTP/2 or TLS record error from deep in the stack.
#[test]
fn a_tls_mismatch_is_named_in_both_directions() {
    let c = CoordinatorCluster::start(1, &[]);
    let rdmaq = rdmaq_lab::bins::bin("rdmaq");
    // Plain text against a TLS member.
    let out = c
        .command(&rdmaq)
        .args(["--endpoints", &c.endpoints(), "--insecure", "quota", "list"])
        .output()
        .unwrap();
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("requires mutual TLS") && said.contains("--tls-ca"),
        "{said}"
    );

    // Certificates against a plain-text (--dev) member.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let mut dev = std::process::Command::new(rdmaq_lab::bins::bin("rdmaq-coordinator"))
        .args(["--dev", "--listen", &addr, "--data-dir"])
        .arg(c.dir.join("dev"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let up = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        std::process::Command::new(&rdmaq)
            .args([
                "--endpoints",
                &addr,
                "--insecure",
                "--timeout",
                "1",
                "quota",
                "list",
            ])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let started = std::time::Instant::now();
    let out = c.cli_at(&addr, &["--timeout", "30", "quota", "list"]);
    let elapsed = started.elapsed();
    let _ = dev.kill();
    let _ = dev.wait();
    assert!(up, "the dev member did not start");
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("speaks plain text") && said.contains("--insecure"),
        "{said}"
    );
    // Named at the first answer, not after 30 s of retries.
    assert!(elapsed < Duration::from_secs(15), "took {elapsed:?}");
}

/// A copy of `cert`'s files under another name (before they are re-issued in place).
fn keep_copy(cert: &Cert, tag: &str) -> Cert {
    let copy = |p: &std::path::Path| {
        let to = p.with_file_name(format!(
            "{tag}-{}",
            p.file_name().unwrap().to_string_lossy()
        ));
        std::fs::copy(p, &to).unwrap();
        to
    };
    Cert {
        ca: cert.ca.clone(),
        cert: copy(&cert.cert),
        key: copy(&cert.key),
    }
}

async fn register(who: &Cert, addr: std::net::SocketAddr) -> Result<(), tonic::Status> {
    AgentClient::new(who.channel(&addr.to_string(), Duration::from_secs(5)))
        .register(pb::RegisterRequest {
            node: "n1".into(),
            address: String::new(),
        })
        .await
        .map(|_| ())
}

#[test]
fn revoked_certificates_lose_every_power_on_every_member() {
    let c = CoordinatorCluster::start(3, &[]);
    let path = |cert: &Cert| cert.cert.display().to_string();
    // n1's certificate is rotated: the old one stays valid until revoked.
    let old = keep_copy(&c.pki.agent("n1"), "old");
    let new = c.pki.issue("agent", "n1", &["--days", "30"]);
    let addrs: Vec<_> = c.members.iter().map(|m| m.addr).collect();
    let rt = rt();
    // A connection opened before the revocation, kept open through it.
    let mut open_before = rt.block_on(async {
        for a in &addrs {
            register(&old, *a)
                .await
                .expect("the old certificate works until revoked");
        }
        let mut open = AgentClient::new(old.channel(&addrs[0].to_string(), Duration::from_secs(5)));
        open.register(pb::RegisterRequest {
            node: "n1".into(),
            address: String::new(),
        })
        .await
        .unwrap();
        open
    });

    c.cli_ok(&["certs", "revoke", "--cert", &path(&old)]);
    rt.block_on(async {
        for a in &addrs {
            let e = register(&old, *a).await.expect_err("a revoked certificate");
            assert_eq!(e.code(), Code::PermissionDenied, "{e}");
            assert!(e.message().contains("revoked"), "{e}");
            register(&new, *a)
                .await
                .expect("the new certificate is not revoked");
        }
        let e = open_before
            .register(pb::RegisterRequest {
                node: "n1".into(),
                address: String::new(),
            })
            .await
            .expect_err("an open connection is refused from its next call");
        assert!(e.message().contains("revoked"), "{e}");
    });

    // A serial as another tool prints it (upper case, colons, a leading zero octet) is the
    // same serial.
    let n2 = c.pki.agent("n2");
    let serial = rdmaq_common::tls::identity_of(&n2.cert).unwrap().serial;
    let printed = format!("00:{}", serial.to_uppercase());
    c.cli_ok(&["certs", "revoke", "--serial", &printed]);
    rt.block_on(async {
        let e = AgentClient::new(n2.channel(&addrs[0].to_string(), Duration::from_secs(5)))
            .register(pb::RegisterRequest {
                node: "n2".into(),
                address: String::new(),
            })
            .await
            .expect_err("revoked by its printed serial");
        assert!(e.message().contains("revoked"), "{e}");
    });

    // A decommissioned node: every certificate of it, until lifted.
    c.cli_ok(&["certs", "revoke", "--identity", "agent:n1"]);
    rt.block_on(async {
        let e = register(&new, addrs[1])
            .await
            .expect_err("its identity is revoked");
        assert!(e.message().contains("agent:n1 is revoked"), "{e}");
    });
    let listed = c.cli_ok(&["certs", "revoked", "-o", "json"]);
    assert!(listed.contains("agent:n1"), "{listed}");
    c.cli_ok(&["certs", "revoke", "--identity", "agent:n1", "--lift"]);
    rt.block_on(async { register(&new, addrs[2]).await.expect("lifted") });

    // An admin cannot lock itself out; a viewer cannot revoke at all.
    let admin = c.pki.admin();
    let out = refused(&c, &admin, &["certs", "revoke", "--cert", &path(&admin)]);
    assert!(out.contains("your own certificate"), "{out}");
    refused(
        &c,
        &c.pki.viewer(),
        &["certs", "revoke", "--identity", "agent:n2"],
    );

    // A revoked member can no longer relay anything to the leader (nor vote): a write
    // sent only to it fails; the others go on.
    let leader = c.wait_leader(Duration::from_secs(10));
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    let via_follower = c.addr(follower).to_string();
    let ok = c.cli_at(&via_follower, &["quota", "set", "t1", "--max-qp", "7"]);
    assert!(ok.status.success(), "{}", text(&ok));
    let audit = c.cli_ok(&["audit", "-o", "json"]);
    assert!(
        audit.contains("(relayed by O=rdmaq, OU=member") && audit.contains("max-qp=7"),
        "a relayed write names the member that relayed it: {audit}"
    );
    c.cli_ok(&[
        "certs",
        "revoke",
        "--identity",
        &format!("member:{follower}"),
    ]);
    let out = c.cli_at(
        &via_follower,
        &["quota", "set", "t1", "--max-qp", "8", "--timeout", "3"],
    );
    assert!(
        !out.status.success(),
        "a revoked member relayed a write: {}",
        text(&out)
    );
    let quota = c.cli_ok(&["quota", "get", "t1", "-o", "json"]);
    assert!(quota.contains("\"max_qp\": 7"), "{quota}");
}

//! Who is the tenant: the agent's decision from the peer's credentials (SO_PEERCRED) and
//! the configured rules, never the client's word — except a launcher-named tenant, and
//! only one the matching rule's `launcher_tenants` patterns allow.

use crate::{
    config::{Rule, TenantFrom},
    pod::PodDirectory,
};

/// The process's cgroup v2 path (`0::/path` in /proc/PID/cgroup).
pub fn cgroup_of(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
}

/// `*` matches any run of characters (including `/`); everything else literally.
pub fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || !text[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

pub struct Peer<'a> {
    pub uid: u32,
    pub gid: u32,
    pub cgroup: Option<&'a str>,
    /// What the launcher named (`RDMAQ_TENANT`), empty if nothing.
    pub launcher: &'a str,
    /// The node's pods, for rules that take the tenant from the pod.
    pub pods: Option<&'a PodDirectory>,
}

/// The agent's decision for a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The tenant to charge: the launcher's choice if the matching rule allows it, else the
    /// rule's own tenant, else the default. Always a valid name.
    pub tenant: String,
    /// Why the launcher's choice was refused, if it named one and it was.
    pub launcher_refused: Option<String>,
}

/// The tenant for `peer`: the first matching rule's (or the launcher's, where that rule's
/// patterns allow the name), else `default`.
pub fn resolve(rules: &[Rule], default: &str, peer: &Peer<'_>) -> Resolved {
    let mut refused = None;
    for (i, rule) in rules.iter().enumerate() {
        let matches = rule.uid.is_none_or(|u| u == peer.uid)
            && rule.gid.is_none_or(|g| g == peer.gid)
            && rule
                .cgroup
                .as_deref()
                .is_none_or(|p| peer.cgroup.is_some_and(|c| glob(p, c)));
        if !matches {
            continue;
        }
        // A rule that takes the tenant from the process matches only a process it can name
        // one for.
        let from = match rule.tenant_from {
            Some(TenantFrom::PodNamespace) => {
                let Some(pod) = peer
                    .pods
                    .zip(peer.cgroup)
                    .and_then(|(pods, cgroup)| pods.pod_of_cgroup(cgroup))
                else {
                    continue;
                };
                let tenant = format!("{}{}", rule.tenant_prefix, pod.namespace);
                if rdmaq_model::check_name(&tenant).is_err() {
                    continue;
                }
                Some(tenant)
            }
            None => None,
        };
        if !peer.launcher.is_empty() {
            match launcher_allowed(rule, peer.launcher) {
                Ok(()) => {
                    return Resolved {
                        tenant: peer.launcher.to_string(),
                        launcher_refused: None,
                    };
                }
                Err(why) => refused = Some(format!("rules[{i}]: {why}")),
            }
        }
        if let Some(tenant) = from.or_else(|| rule.tenant.clone()) {
            return Resolved {
                tenant,
                launcher_refused: refused,
            };
        }
    }
    Resolved {
        tenant: default.to_string(),
        launcher_refused: refused.or_else(|| {
            (!peer.launcher.is_empty()).then(|| {
                format!(
                    "launcher tenant {:?}: no rule matching this process allows a launcher",
                    peer.launcher
                )
            })
        }),
    }
}

/// Whether `rule` lets a launcher name `tenant`: a valid name matching one of its patterns.
fn launcher_allowed(rule: &Rule, tenant: &str) -> Result<(), String> {
    if rule.launcher_tenants.is_empty() {
        return Err(format!(
            "launcher tenant {tenant:?}: the rule allows no launcher tenant"
        ));
    }
    rdmaq_model::check_name(tenant).map_err(|why| format!("launcher tenant {why}"))?;
    if rule.launcher_tenants.iter().any(|p| glob(p, tenant)) {
        Ok(())
    } else {
        Err(format!(
            "launcher tenant {tenant:?} matches none of {:?}",
            rule.launcher_tenants
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob(
            "/kubepods.slice/*pod1234*",
            "/kubepods.slice/kubepods-pod1234.slice/cri-x"
        ));
        assert!(glob(
            "/system.slice/train.service",
            "/system.slice/train.service"
        ));
        assert!(!glob("/a/*/c", "/a/b/d"));
        assert!(glob("*", "/anything"));
    }

    #[test]
    fn rules_decide_and_the_launcher_only_where_its_patterns_allow() {
        let rules = vec![
            Rule {
                uid: Some(1000),
                tenant: Some("alice".into()),
                ..Rule::default()
            },
            Rule {
                cgroup: Some("/jobs/*".into()),
                launcher_tenants: vec!["team-a-*".into(), "t9".into()],
                tenant: Some("jobs".into()),
                ..Rule::default()
            },
        ];
        let peer = |uid, cgroup, launcher| Peer {
            uid,
            gid: 0,
            cgroup,
            launcher,
            pods: None,
        };
        let tenant = |p: &Peer<'_>| resolve(&rules, "default", p).tenant;
        // A rule without patterns ignores the launcher, and says so.
        let r = resolve(&rules, "default", &peer(1000, None, "mallory"));
        assert_eq!(r.tenant, "alice");
        assert!(r.launcher_refused.unwrap().contains("allows no launcher"));
        // Allowed names; refused ones fall back to the rule's tenant with the reason.
        assert_eq!(tenant(&peer(5, Some("/jobs/x"), "t9")), "t9");
        assert_eq!(tenant(&peer(5, Some("/jobs/x"), "team-a-7")), "team-a-7");
        for bad in ["team-b", "t9 ", "team-a-\n", "../etc", ""] {
            let r = resolve(&rules, "default", &peer(5, Some("/jobs/x"), bad));
            assert_eq!(r.tenant, "jobs", "{bad:?}");
            assert_eq!(r.launcher_refused.is_some(), !bad.is_empty(), "{bad:?}");
        }
        // A launcher name never applies where no rule matches.
        let r = resolve(&rules, "default", &peer(5, Some("/other"), "t9"));
        assert_eq!(r.tenant, "default");
        assert!(r.launcher_refused.is_some());
        assert_eq!(
            resolve(&rules, "default", &peer(5, Some("/other"), "")),
            Resolved {
                tenant: "default".into(),
                launcher_refused: None
            }
        );
    }

    #[test]
    fn a_pod_namespace_rule_charges_the_namespace_of_the_pod_a_process_runs_in() {
        let dir = std::env::temp_dir().join(format!("rdmaq-rule-pods-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("ml-team_trainer-0_0f5c3ad4-8f0e-4a0b-9c5e-2b1d7f3e6a91"))
            .unwrap();
        let pods = PodDirectory::new(&dir);
        let rules = vec![
            Rule {
                cgroup: Some("/kubepods*".into()),
                tenant_from: Some(TenantFrom::PodNamespace),
                tenant_prefix: "k8s:".into(),
                launcher_tenants: vec!["batch-*".into()],
                ..Rule::default()
            },
            // Pods the kubelet does not (yet) list fall through to the next rule.
            Rule {
                cgroup: Some("/kubepods*".into()),
                tenant: Some("k8s-unknown".into()),
                ..Rule::default()
            },
        ];
        let in_pod = "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0f5c3ad4_8f0e_4a0b_9c5e_2b1d7f3e6a91.slice/cri-containerd-5b0a.scope";
        let tenant = |cgroup: &str, launcher: &str| {
            resolve(
                &rules,
                "default",
                &Peer {
                    uid: 1000,
                    gid: 1000,
                    cgroup: Some(cgroup),
                    launcher,
                    pods: Some(&pods),
                },
            )
        };
        assert_eq!(tenant(in_pod, "").tenant, "k8s:ml-team");
        // The launcher still chooses only within the rule's patterns.
        assert_eq!(tenant(in_pod, "batch-7").tenant, "batch-7");
        let r = tenant(in_pod, "ops");
        assert_eq!(r.tenant, "k8s:ml-team");
        assert!(r.launcher_refused.is_some());
        assert_eq!(
            tenant(
                "/kubepods/besteffort/pod3c9d1e2f-aaaa-bbbb-cccc-123456789abc/x",
                ""
            )
            .tenant,
            "k8s-unknown"
        );
        // A user's own delegated cgroup named like that pod is not in the kubelet's tree.
        assert_eq!(
            tenant(
                "/user.slice/user-1000.slice/user@1000.service/kubepods-besteffort-pod0f5c3ad4_8f0e_4a0b_9c5e_2b1d7f3e6a91.slice/x",
                ""
            )
            .tenant,
            "default"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

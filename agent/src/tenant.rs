//! Who is the tenant: the agent's decision from the peer's credentials (SO_PEERCRED) and
//! the configured rules, never the client's word — except a launcher-named tenant, and
//! only one the matching rule's `launcher_tenants` patterns allow.

use crate::config::Rule;

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
        if let Some(t) = &rule.tenant {
            return Resolved {
                tenant: t.clone(),
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
}

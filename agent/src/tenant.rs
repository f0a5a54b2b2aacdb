//! Who is the tenant: the agent's decision from the peer's credentials (SO_PEERCRED) and
//! the configured rules, never the client's word — except a launcher-named tenant, and
//! only where the matching rule allows it.

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

/// The tenant for `peer`: the first matching rule's, else `default`.
pub fn resolve(rules: &[Rule], default: &str, peer: &Peer<'_>) -> String {
    for rule in rules {
        let matches = rule.uid.is_none_or(|u| u == peer.uid)
            && rule.gid.is_none_or(|g| g == peer.gid)
            && rule
                .cgroup
                .as_deref()
                .is_none_or(|p| peer.cgroup.is_some_and(|c| glob(p, c)));
        if !matches {
            continue;
        }
        if rule.allow_launcher && !peer.launcher.is_empty() {
            return peer.launcher.to_string();
        }
        if let Some(t) = &rule.tenant {
            return t.clone();
        }
    }
    default.to_string()
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
    fn rules_decide_and_the_launcher_only_where_allowed() {
        let rules = vec![
            Rule {
                uid: Some(1000),
                tenant: Some("alice".into()),
                ..Rule::default()
            },
            Rule {
                cgroup: Some("/jobs/*".into()),
                allow_launcher: true,
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
        assert_eq!(
            resolve(&rules, "default", &peer(1000, None, "mallory")),
            "alice"
        );
        assert_eq!(
            resolve(&rules, "default", &peer(5, Some("/jobs/x"), "t9")),
            "t9"
        );
        assert_eq!(
            resolve(&rules, "default", &peer(5, Some("/jobs/x"), "")),
            "jobs"
        );
        assert_eq!(
            resolve(&rules, "default", &peer(5, Some("/other"), "t9")),
            "default"
        );
    }
}

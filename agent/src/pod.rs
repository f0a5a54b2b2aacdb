//! Kubernetes pods on this node: which pod a process belongs to (from its cgroup path), and
//! that pod's namespace from what the kubelet itself keeps on the node — one directory per
//! pod, `/var/log/pods/<namespace>_<name>_<uid>` — so that admission never waits on the
//! API server.
//!
//! Trust: a cgroup path and `/var/log/pods` are written by root only (the kubelet and the
//! container runtime). An unprivileged user can make cgroups only inside a subtree systemd
//! delegated to them (under `/user.slice`), which is why the rule using this must anchor its
//! `cgroup` glob at the kubelet's cgroup root (`Config::validate` insists). The agent must
//! see host cgroup paths: it runs privileged, and privileged containers share the host's
//! cgroup namespace (containerd and CRI-O); a path seen through another namespace (`/..`)
//! is never taken for a pod.

use std::{collections::HashMap, path::PathBuf, sync::Mutex};

/// The pod UID in a process's cgroup path, the first pod component from the root:
/// - systemd driver: `.../kubepods-besteffort-pod<uid, '-' as '_'>.slice/cri-containerd-<id>.scope`
///   (also `kubepods-pod<uid>.slice` for Guaranteed pods, `crio-<id>.scope`, `docker-<id>.scope`);
/// - cgroupfs driver: `.../kubepods/burstable/pod<uid>/<id>`.
///
/// Static pods' UIDs are 32 hex digits without dashes; API pods' are dashed UUIDs.
pub fn pod_uid_of_cgroup(path: &str) -> Option<String> {
    if path.split('/').any(|c| c == "..") {
        return None;
    }
    path.split('/').find_map(|c| {
        let uid = match c.strip_suffix(".slice") {
            // systemd: the unit name's last `-pod` part.
            Some(unit) => unit
                .rsplit_once("-pod")
                .filter(|(prefix, _)| prefix.ends_with("kubepods") || prefix.contains("kubepods-"))
                .map(|(_, uid)| uid.replace('_', "-"))?,
            None => c.strip_prefix("pod")?.to_string(),
        };
        valid_uid(&uid).then_some(uid)
    })
}

fn valid_uid(uid: &str) -> bool {
    (1..=64).contains(&uid.len())
        && uid.starts_with(|c: char| c.is_ascii_hexdigit())
        && uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// A pod as the kubelet's log directory names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodName {
    pub namespace: String,
    pub name: String,
}

/// `<namespace>_<name>_<uid>`: neither a namespace (DNS label) nor a pod name (DNS
/// subdomain) may contain `_`, so the split is unambiguous.
fn parse_log_dir(entry: &str) -> Option<(String, PodName)> {
    let mut parts = entry.split('_');
    let (namespace, name, uid) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || namespace.is_empty() || name.is_empty() || !valid_uid(uid) {
        return None;
    }
    Some((
        uid.to_string(),
        PodName {
            namespace: namespace.to_string(),
            name: name.to_string(),
        },
    ))
}

/// The pods the kubelet keeps directories for, read again only when a UID is not known yet
/// (a pod's UID never changes its namespace, so a known one needs no refresh).
pub struct PodDirectory {
    dir: PathBuf,
    known: Mutex<HashMap<String, PodName>>,
}

impl PodDirectory {
    pub fn new(dir: impl Into<PathBuf>) -> PodDirectory {
        PodDirectory {
            dir: dir.into(),
            known: Mutex::new(HashMap::new()),
        }
    }

    /// The pod a process in `cgroup` belongs to, if it is a pod this node's kubelet runs.
    pub fn pod_of_cgroup(&self, cgroup: &str) -> Option<PodName> {
        let uid = pod_uid_of_cgroup(cgroup)?;
        if let Some(p) = self.known.lock().expect("pods").get(&uid) {
            return Some(p.clone());
        }
        // Unknown: read the directory again. What is gone is forgotten, so the map stays the
        // size of the node's pods.
        let fresh: HashMap<String, PodName> = std::fs::read_dir(&self.dir)
            .map_err(|e| {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot read the kubelet's pod directories")
            })
            .ok()?
            .filter_map(|e| parse_log_dir(e.ok()?.file_name().to_str()?))
            .collect();
        let found = fresh.get(&uid).cloned();
        *self.known.lock().expect("pods") = fresh;
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/proc/PID/cgroup` paths recorded on real nodes, with the pod UID each belongs to.
    const RECORDED: &[(&str, &str)] = &[
        // containerd, systemd cgroup driver, cgroup v2 (kubeadm default): BestEffort, Burstable,
        // Guaranteed.
        (
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0f5c3ad4_8f0e_4a0b_9c5e_2b1d7f3e6a91.slice/cri-containerd-5b0a2f1c9d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a.scope",
            "0f5c3ad4-8f0e-4a0b-9c5e-2b1d7f3e6a91",
        ),
        (
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod7a1e2b3c_4d5f_6a7b_8c9d_0e1f2a3b4c5d.slice/cri-containerd-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope",
            "7a1e2b3c-4d5f-6a7b-8c9d-0e1f2a3b4c5d",
        ),
        (
            "/kubepods.slice/kubepods-pod3c9d1e2f_aaaa_bbbb_cccc_123456789abc.slice/cri-containerd-fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210.scope",
            "3c9d1e2f-aaaa-bbbb-cccc-123456789abc",
        ),
        // CRI-O, systemd driver (OpenShift), the container and its conmon.
        (
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod5e6f7a8b_1c2d_3e4f_5a6b_7c8d9e0f1a2b.slice/crio-9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b.scope",
            "5e6f7a8b-1c2d-3e4f-5a6b-7c8d9e0f1a2b",
        ),
        (
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod5e6f7a8b_1c2d_3e4f_5a6b_7c8d9e0f1a2b.slice/crio-conmon-9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b.scope",
            "5e6f7a8b-1c2d-3e4f-5a6b-7c8d9e0f1a2b",
        ),
        // cri-dockerd, systemd driver.
        (
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod11112222_3333_4444_5555_666677778888.slice/docker-abcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcd.scope",
            "11112222-3333-4444-5555-666677778888",
        ),
        // cgroupfs driver (containerd or CRI-O), cgroup v2: BestEffort, Burstable, Guaranteed.
        (
            "/kubepods/besteffort/pod0f5c3ad4-8f0e-4a0b-9c5e-2b1d7f3e6a91/5b0a2f1c9d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a",
            "0f5c3ad4-8f0e-4a0b-9c5e-2b1d7f3e6a91",
        ),
        (
            "/kubepods/burstable/pod7a1e2b3c-4d5f-6a7b-8c9d-0e1f2a3b4c5d/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "7a1e2b3c-4d5f-6a7b-8c9d-0e1f2a3b4c5d",
        ),
        (
            "/kubepods/pod3c9d1e2f-aaaa-bbbb-cccc-123456789abc/fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210",
            "3c9d1e2f-aaaa-bbbb-cccc-123456789abc",
        ),
        // kind (a kubelet with --cgroup-root=/kubelet, systemd driver) and a static pod, whose
        // UID is the manifest's hash.
        (
            "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod0f5c3ad4_8f0e_4a0b_9c5e_2b1d7f3e6a91.slice/cri-containerd-5b0a2f1c9d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a.scope",
            "0f5c3ad4-8f0e-4a0b-9c5e-2b1d7f3e6a91",
        ),
        (
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod4b2f8e1d9c7a6b5e3f2d1c0b9a8e7f6d.slice/cri-containerd-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope",
            "4b2f8e1d9c7a6b5e3f2d1c0b9a8e7f6d",
        ),
        // A container that made cgroups of its own below its scope stays its pod's.
        (
            "/kubepods/burstable/pod7a1e2b3c-4d5f-6a7b-8c9d-0e1f2a3b4c5d/0123456789abcdef/kubepods-pod99999999_9999_9999_9999_999999999999.slice/worker",
            "7a1e2b3c-4d5f-6a7b-8c9d-0e1f2a3b4c5d",
        ),
    ];

    #[test]
    fn recorded_cgroup_paths_name_their_pod() {
        for (path, uid) in RECORDED {
            assert_eq!(pod_uid_of_cgroup(path).as_deref(), Some(*uid), "{path}");
        }
    }

    #[test]
    fn paths_outside_pods_name_none() {
        for path in [
            "/",
            "/system.slice/containerd.service",
            "/user.slice/user-1000.slice/session-3.scope",
            "/kubepods.slice",
            "/kubepods.slice/kubepods-besteffort.slice",
            "/kubepods/burstable",
            // Not a UID.
            "/kubepods/burstable/podcast/x",
            "/kubepods.slice/kubepods-besteffort-pod.slice/x",
            "/system.slice/mypod-1234.slice",
            // Seen through another cgroup namespace: never guessed at.
            "/../../kubepods-besteffort-pod0f5c3ad4_8f0e_4a0b_9c5e_2b1d7f3e6a91.slice/cri-containerd-5b0a.scope",
        ] {
            assert_eq!(pod_uid_of_cgroup(path), None, "{path}");
        }
    }

    #[test]
    fn the_kubelets_directories_give_the_namespace_and_new_pods_are_found() {
        let dir = std::env::temp_dir().join(format!("rdmaq-pods-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("team-a_trainer-0_0f5c3ad4-8f0e-4a0b-9c5e-2b1d7f3e6a91"))
            .unwrap();
        std::fs::create_dir_all(dir.join("not_a_pod_dir_at_all")).unwrap();
        std::fs::write(dir.join("README"), "").unwrap();
        let pods = PodDirectory::new(&dir);
        let a = "/kubepods/besteffort/pod0f5c3ad4-8f0e-4a0b-9c5e-2b1d7f3e6a91/5b0a";
        let b =
            "/kubepods.slice/kubepods-pod3c9d1e2f_aaaa_bbbb_cccc_123456789abc.slice/crio-1.scope";
        assert_eq!(
            pods.pod_of_cgroup(a),
            Some(PodName {
                namespace: "team-a".into(),
                name: "trainer-0".into()
            })
        );
        assert_eq!(pods.pod_of_cgroup(b), None);
        // A pod started after the first lookup is found on its first miss.
        std::fs::create_dir_all(dir.join("team-b_web.x-1_3c9d1e2f-aaaa-bbbb-cccc-123456789abc"))
            .unwrap();
        assert_eq!(pods.pod_of_cgroup(b).unwrap().namespace, "team-b");
        assert_eq!(pods.pod_of_cgroup(a).unwrap().namespace, "team-a");
        std::fs::remove_dir_all(&dir).unwrap();
        // Gone, but known: a pod's UID never changes namespace.
        assert_eq!(pods.pod_of_cgroup(a).unwrap().namespace, "team-a");
    }

    #[test]
    fn log_directory_names() {
        assert_eq!(
            parse_log_dir("kube-system_etcd-node1_4b2f8e1d9c7a6b5e3f2d1c0b9a8e7f6d")
                .unwrap()
                .1
                .namespace,
            "kube-system"
        );
        for bad in ["a_b", "a_b_c_d", "_b_0f5c", "a__0f5c", "a_b_zzzz", "a_b_"] {
            assert_eq!(parse_log_dir(bad), None, "{bad}");
        }
    }
}

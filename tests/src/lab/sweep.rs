//! The lab lock and the sweep of labs whose test process died without cleaning up
//! (SIGKILL, a CI timeout): their qemu processes, namespaces and directories.

use std::{
    fs::{self, File},
    path::PathBuf,
    process::Command,
};

use nix::{sys::signal, unistd::Pid};

use super::LabError;

/// `/tmp/rdmaq-lab`, or `RDMAQ_LAB_DIR`.
pub fn labs_dir() -> PathBuf {
    std::env::var_os("RDMAQ_LAB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/rdmaq-lab"))
}

/// One lab at a time on the machine (threads and processes alike).
pub struct LabLock {
    // Held for its flock: the lock is released when the file is closed.
    _file: File,
}

impl LabLock {
    pub fn acquire() -> Result<LabLock, LabError> {
        let dir = labs_dir();
        let path = dir.join("lock");
        let io = |source| LabError::Io {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(&dir).map_err(io)?;
        let file = File::create(&path).map_err(io)?;
        file.lock().map_err(io)?;
        Ok(LabLock { _file: file })
    }
}

/// Owner pid of a lab name `rdmaq-lab-<pid>-<seq>`.
fn owner(name: &str) -> Option<i32> {
    name.strip_prefix("rdmaq-lab-")?
        .split('-')
        .next()?
        .parse()
        .ok()
}

fn alive(pid: i32) -> bool {
    PathBuf::from(format!("/proc/{pid}")).exists()
}

/// Removes what dead test processes left behind. Called with the lab lock held.
pub fn sweep_stale() {
    if let Ok(entries) = fs::read_dir(labs_dir()) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = owner(&name) else { continue };
            if alive(pid) {
                continue;
            }
            kill_recorded_qemus(&entry.path());
            super::net::destroy(&name);
            let _ = fs::remove_dir_all(entry.path());
        }
    }
    if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            if owner(name).is_some_and(|pid| !alive(pid)) {
                super::net::destroy(name);
            }
        }
    }
}

/// Kills the qemu processes whose pid files a dead lab left, checking each is still qemu.
fn kill_recorded_qemus(dir: &std::path::Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.path().extension().is_none_or(|e| e != "pid") {
            continue;
        }
        let Some(pid) = fs::read_to_string(entry.path())
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        else {
            continue;
        };
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains("qemu-system") {
            let _ = signal::kill(Pid::from_raw(pid), signal::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::owner;

    #[test]
    fn owner_pid_is_parsed_from_lab_names() {
        assert_eq!(owner("rdmaq-lab-1234-0"), Some(1234));
        assert_eq!(owner("rdmaq-lab-x-0"), None);
        assert_eq!(owner("other-1234-0"), None);
    }
}

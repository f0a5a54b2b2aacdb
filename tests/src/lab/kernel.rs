//! The lab's guest kernels: Debian packages resolved and prepared by
//! `tests/lab/prepare-kernel.sh` into a cache shared by every lab on the machine.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use super::{LabError, run_host};

/// Which Debian 12 kernel the nodes boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// `linux-image-amd64`: Debian 12's default kernel (6.1).
    Debian61,
    /// `linux-image-6.12-amd64`: the newer kernel Debian 12 also carries.
    Debian612,
}

impl Kernel {
    /// The Debian meta package whose dependency names the real kernel package.
    pub fn meta_package(self) -> &'static str {
        match self {
            Kernel::Debian61 => "linux-image-amd64",
            Kernel::Debian612 => "linux-image-6.12-amd64",
        }
    }

    /// The kernel `RDMAQ_LAB_KERNEL` names (`6.1` or `6.12`), else the default one.
    pub fn from_env() -> Kernel {
        match std::env::var("RDMAQ_LAB_KERNEL").as_deref() {
            Ok("6.12") => Kernel::Debian612,
            _ => Kernel::Debian61,
        }
    }
}

/// A prepared kernel: its image, the lab initramfs, and its release string.
#[derive(Debug, Clone)]
pub struct Images {
    pub vmlinuz: PathBuf,
    pub initrd: PathBuf,
    pub release: String,
}

/// Where prepared kernels are kept: `RDMAQ_LAB_CACHE`, else `/var/cache/rdmaq-lab`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("RDMAQ_LAB_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/rdmaq-lab"))
}

pub fn prepare(kernel: Kernel) -> Result<Images, LabError> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("lab/prepare-kernel.sh");
    let stdout = run_host(
        &format!("prepare kernel {}", kernel.meta_package()),
        Command::new("bash")
            .arg(&script)
            .arg(kernel.meta_package())
            .arg(cache_dir()),
    )?;
    let dir = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    let release = std::fs::read_to_string(dir.join("release")).map_err(|source| LabError::Io {
        path: dir.join("release"),
        source,
    })?;
    Ok(Images {
        vmlinuz: dir.join("vmlinuz"),
        initrd: dir.join("initrd.img"),
        release: release.trim().to_string(),
    })
}

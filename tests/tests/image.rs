//! The OCI image `scripts/build-image.sh` makes from this machine's Debian packages and the
//! release binaries: unpacked from its OCI archive (what a node imports, not buildah's own
//! storage) and run — a dev coordinator and the CLI inside its root filesystem (chroot), the
//! init container's copy of the intercept library — and its size reported. Needs root
//! (chroot) and buildah (installed by scripts/install-deps.sh).

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

use serde_json::Value;

/// The most the compressed image may weigh: a few release binaries and glibc. Far above it
/// means something that does not belong was shipped (debug binaries, a distribution).
const MAX_IMAGE_BYTES: u64 = 100 << 20;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").expect("a sha256 digest"))
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A command run inside the image's root filesystem, with only the image's PATH.
fn inside(rootfs: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("/usr/sbin/chroot");
    c.arg(rootfs)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin");
    c
}

fn run_inside(rootfs: &Path, args: &[&str]) -> String {
    let out = inside(rootfs, args)
        .output()
        .unwrap_or_else(|e| panic!("chroot (needs root): {e}"));
    let text = said(&out);
    assert!(out.status.success(), "{args:?} in the image: {text}");
    text
}

#[test]
fn the_image_is_built_from_debian_and_the_release_binaries_and_runs_rdmaq() {
    let version = env!("CARGO_PKG_VERSION");
    let work = std::env::temp_dir().join(format!("rdmaq-image-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();

    let built = Command::new("bash")
        .arg(repo().join("scripts/build-image.sh"))
        .arg(work.join("out"))
        .stdin(Stdio::null())
        .output()
        .expect("bash");
    assert!(
        built.status.success(),
        "scripts/build-image.sh failed (buildah comes from scripts/install-deps.sh): {}",
        said(&built)
    );
    let archive = work.join(format!("out/rdmaq-{version}.oci.tar"));

    // The OCI layout: index -> manifest -> config and layers.
    let layout = work.join("layout");
    std::fs::create_dir_all(&layout).unwrap();
    let untar = |file: &Path, into: &Path| {
        let out = Command::new("tar")
            .arg("-xf")
            .arg(file)
            .arg("-C")
            .arg(into)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tar {}: {}",
            file.display(),
            said(&out)
        );
    };
    untar(&archive, &layout);
    let index = json(&layout.join("index.json"));
    let entry = &index["manifests"][0];
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"],
        format!("rdmaq:{version}"),
        "{index}"
    );
    let manifest = json(&blob(&layout, entry["digest"].as_str().unwrap()));
    let config = json(&blob(
        &layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ));
    assert_eq!(config["architecture"], "amd64", "{config}");
    assert_eq!(
        config["config"]["Labels"]["org.opencontainers.image.version"], version,
        "{config}"
    );
    assert!(
        config["config"]["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "PATH=/usr/bin:/bin"),
        "{config}"
    );
    let layers = manifest["layers"].as_array().unwrap();
    let compressed: u64 = layers
        .iter()
        .map(|l| l["size"].as_u64().unwrap())
        .sum::<u64>()
        + manifest["config"]["size"].as_u64().unwrap();

    let rootfs = work.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    for layer in layers {
        untar(&blob(&layout, layer["digest"].as_str().unwrap()), &rootfs);
    }
    let unpacked = Command::new("du")
        .args(["-sb"])
        .arg(&rootfs)
        .output()
        .unwrap();
    let unpacked: u64 = String::from_utf8_lossy(&unpacked.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap();
    println!(
        "image rdmaq:{version}: {} layer(s), {:.1} MiB compressed, {:.1} MiB unpacked",
        layers.len(),
        compressed as f64 / 1048576.0,
        unpacked as f64 / 1048576.0
    );
    assert!(
        compressed <= MAX_IMAGE_BYTES,
        "the image is {compressed} bytes compressed, more than {MAX_IMAGE_BYTES}"
    );

    // Every binary runs with only what the image carries.
    for bin in ["rdmaq-coordinator", "rdmaq-agent", "rdmaq"] {
        let v = run_inside(&rootfs, &[bin, "--version"]);
        assert!(v.contains(version), "{bin} --version: {v}");
    }
    run_inside(&rootfs, &["rdma", "-V"]);
    // The workload's init container: copy the library out; it loads into a program.
    run_inside(
        &rootfs,
        &["cp", "/usr/lib/rdmaq/librdmaq_intercept.so", "/tmp/"],
    );
    // (Set inside: on the chroot command itself the host's loader would take it.)
    let preloaded = inside(
        &rootfs,
        &[
            "sh",
            "-c",
            "LD_PRELOAD=/tmp/librdmaq_intercept.so exec rdmaq --version",
        ],
    )
    .output()
    .unwrap();
    assert!(preloaded.status.success(), "{}", said(&preloaded));
    assert!(
        !said(&preloaded).contains("cannot be preloaded"),
        "{}",
        said(&preloaded)
    );

    // A dev coordinator in the image, and the image's CLI setting and reading a quota.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let mut coordinator = inside(
        &rootfs,
        &[
            "rdmaq-coordinator",
            "--dev",
            "--listen",
            &addr,
            "--data-dir",
            "/var/lib/rdmaq/dev",
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let cli = |args: &[&str]| {
        let mut all = vec!["rdmaq", "--endpoints", &addr, "--insecure"];
        all.extend_from_slice(args);
        inside(&rootfs, &all).output().unwrap()
    };
    let up = (0..150).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        cli(&["--timeout", "1", "quota", "list"]).status.success()
    });
    let set = cli(&["quota", "set", "ml-team", "--max-qp", "4"]);
    let got = cli(&["quota", "get", "ml-team", "-o", "json"]);
    let _ = coordinator.kill();
    let _ = coordinator.wait();
    assert!(up, "the coordinator in the image did not answer");
    assert!(set.status.success(), "quota set: {}", said(&set));
    assert!(got.status.success(), "quota get: {}", said(&got));
    let got: Value = serde_json::from_slice(&got.stdout).unwrap();
    assert_eq!(got["limits"]["max_qp"], 4, "{got}");
    // The data went where the image keeps it.
    assert!(rootfs.join("var/lib/rdmaq/dev").is_dir());
    std::fs::remove_dir_all(&work).unwrap();
}

//! The components of a real node built from the Go module proxy by `tests/node/build.sh`
//! (containerd 2.x, runc, crictl, critest, kine, Kubernetes), at the versions pinned in
//! `tests/node/versions`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};

/// The directory holding the node's binaries: `$KWASI_NODE_BIN` (`tests/run-all.sh` sets it
/// from `tests/node/build.sh`), else what `tests/node/build.sh` prints, run once per process
/// (it builds what is not in its cache yet, which takes long only the first time).
pub fn bin_dir() -> Result<PathBuf> {
    static DIR: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| find_bin_dir().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn find_bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("KWASI_NODE_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let script = node_dir().join("build.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!("{} failed (its output is above)", script.display());
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = stdout.lines().last().unwrap_or_default().trim();
    if dir.is_empty() || !Path::new(dir).is_dir() {
        bail!("{} printed no directory: {stdout:?}", script.display());
    }
    Ok(PathBuf::from(dir))
}

/// `tests/node`.
fn node_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("node")
}

/// The version of `component` pinned in `tests/node/versions` (`CONTAINERD`, `KUBERNETES`...).
pub fn version(component: &str) -> String {
    let versions = std::fs::read_to_string(node_dir().join("versions")).unwrap_or_default();
    let key = format!("{component}_VERSION=");
    versions
        .lines()
        .find_map(|l| l.strip_prefix(&key))
        .unwrap_or("unknown")
        .trim()
        .to_string()
}

/// `name` in the node's binaries.
pub fn binary(name: &str) -> Result<PathBuf> {
    let path = bin_dir()?.join(name);
    if !path.exists() {
        bail!("{} is missing: run tests/node/build.sh", path.display());
    }
    Ok(path)
}

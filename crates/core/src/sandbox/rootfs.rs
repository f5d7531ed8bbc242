//! The container's root filesystem: containerd hands the shim the mounts (usually one overlay)
//! that make up `<bundle>/rootfs`; the shim mounts them at create and unmounts them at delete.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use nix::mount::{umount2, MntFlags};

/// One mount that containerd asks for at `<bundle>/rootfs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsMount {
    /// The filesystem type (`overlay`, `bind`...).
    pub typ: String,
    /// The source (a directory, a device, `overlay`).
    pub source: String,
    /// Mount options, as `mount -o` takes them.
    pub options: Vec<String>,
}

/// `<bundle>/rootfs`, mounted by us (and so to be unmounted by us) or not.
pub(crate) struct MountedRootfs {
    target: Option<PathBuf>,
}

impl MountedRootfs {
    /// Mounts `mounts` in order at `<bundle>/rootfs`. With no mounts, the rootfs is the
    /// directory already there and nothing will be unmounted.
    pub(crate) fn mount(bundle: &Path, mounts: &[RootfsMount]) -> Result<MountedRootfs> {
        if mounts.is_empty() {
            return Ok(MountedRootfs { target: None });
        }
        let target = bundle.join("rootfs");
        std::fs::create_dir_all(&target)
            .with_context(|| format!("creating {}", target.display()))?;
        let mounted = MountedRootfs {
            target: Some(target.clone()),
        };
        for m in mounts {
            if let Err(err) = containerd_shim::mount::mount_rootfs(
                Some(m.typ.as_str()),
                Some(m.source.as_str()),
                &m.options,
                &target,
            ) {
                mounted.unmount();
                return Err(anyhow!(
                    "mounting the rootfs ({} {}) at {}: {err}",
                    m.typ,
                    m.source,
                    target.display()
                ));
            }
        }
        Ok(mounted)
    }

    /// Unmounts the rootfs if this shim mounted it.
    pub(crate) fn unmount(&self) {
        if let Some(target) = &self.target {
            unmount_rootfs(target);
        }
    }
}

/// Unmounts everything stacked at `target`, detaching busy mounts; not being mounted is fine.
pub fn unmount_rootfs(target: &Path) {
    loop {
        match umount2(target, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => break,
            Err(err) => {
                log::warn!("unmounting {}: {err}", target.display());
                break;
            }
        }
    }
}

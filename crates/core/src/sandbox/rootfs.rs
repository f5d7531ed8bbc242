//! The container's root filesystem: containerd hands the shim the mounts (usually one overlay)
//! that make up `<bundle>/rootfs`; the shim mounts them at create and unmounts them at delete.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use libcontainer::rootfs::utils::parse_mount;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use oci_spec::runtime::MountBuilder;

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

impl RootfsMount {
    /// Mounts this at `target`: in this process when its options fit the kernel's one page of
    /// mount data, else through containerd-shim, which shortens an overlay's `lowerdir` in a
    /// forked child (it has to change directory, which a threaded server must not).
    fn mount_at(&self, target: &Path) -> Result<()> {
        match DirectMount::of(self) {
            Some(direct) => direct.mount(target),
            None => containerd_shim::mount::mount_rootfs(
                Some(self.typ.as_str()),
                Some(self.source.as_str()),
                &self.options,
                target,
            )
            .map_err(|e| anyhow!("{e}")),
        }
    }
}

/// The kernel reads at most a page of mount data; containerd-shim keeps 512 bytes of it spare.
const DIRECT_DATA_MAX: usize = 4096 - 512;

/// A rootfs mount the shim can make with plain mount(2) calls: its options parsed by
/// libcontainer into flags and data.
#[derive(Debug, PartialEq, Eq)]
struct DirectMount<'a> {
    typ: &'a str,
    source: &'a str,
    flags: MsFlags,
    data: String,
}

impl<'a> DirectMount<'a> {
    /// `None` when `m` needs more than plain mount(2): data longer than a page can take, or
    /// recursive attributes (`rro`...) that need mount_setattr(2).
    fn of(m: &'a RootfsMount) -> Option<DirectMount<'a>> {
        let spec = MountBuilder::default()
            .destination("/")
            .typ(m.typ.clone())
            .source(m.source.clone())
            .options(m.options.clone())
            .build()
            .ok()?;
        let parsed = parse_mount(&spec).ok()?;
        let data = parsed.data.join(",");
        if parsed.rec_attr.is_some() || data.len() >= DIRECT_DATA_MAX {
            return None;
        }
        Some(DirectMount {
            typ: &m.typ,
            source: &m.source,
            flags: MsFlags::from_bits_retain(parsed.flags.bits()),
            data,
        })
    }

    /// Mounts at `target` as `mount(8)` would: the mount itself, then its propagation, then a
    /// read-only bind's remount (a bind ignores `MS_RDONLY` on its first call).
    fn mount(&self, target: &Path) -> Result<()> {
        let flags = self.flags - PROPAGATION;
        let data = (!self.data.is_empty()).then_some(self.data.as_str());
        if !flags.contains(MsFlags::MS_REMOUNT) || data.is_some() {
            mount(Some(self.source), target, Some(self.typ), flags, data)?;
        }
        if self.flags.intersects(PROPAGATION) {
            let propagation = self.flags & (PROPAGATION | MsFlags::MS_REC | MsFlags::MS_SILENT);
            mount(
                None::<&str>,
                target,
                None::<&str>,
                propagation,
                None::<&str>,
            )
            .context("setting its propagation")?;
        }
        if flags.contains(MsFlags::MS_BIND | MsFlags::MS_RDONLY) {
            mount(
                None::<&str>,
                target,
                None::<&str>,
                flags | MsFlags::MS_REMOUNT,
                None::<&str>,
            )
            .context("making the bind read-only")?;
        }
        Ok(())
    }
}

/// The propagation types, set by a mount(2) call of their own (with `MS_REC` if asked).
const PROPAGATION: MsFlags = MsFlags::MS_SHARED
    .union(MsFlags::MS_PRIVATE)
    .union(MsFlags::MS_SLAVE)
    .union(MsFlags::MS_UNBINDABLE);

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
            if let Err(err) = m.mount_at(&target) {
                mounted.unmount();
                return Err(anyhow!(
                    "mounting the rootfs ({} {}) at {}: {err:#}",
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs_mount(typ: &str, source: &str, options: &[&str]) -> RootfsMount {
        RootfsMount {
            typ: typ.to_string(),
            source: source.to_string(),
            options: options.iter().map(|o| o.to_string()).collect(),
        }
    }

    #[test]
    fn a_read_only_rbind_is_flags_without_data() {
        let m = rootfs_mount("bind", "/snapshots/1/fs", &["rbind", "ro"]);
        let direct = DirectMount::of(&m).unwrap();
        assert_eq!(
            direct.flags,
            MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY
        );
        assert_eq!(direct.data, "");
    }

    #[test]
    fn an_overlays_directories_are_its_data() {
        let m = rootfs_mount(
            "overlay",
            "overlay",
            &[
                "index=off",
                "workdir=/s/2/work",
                "upperdir=/s/2/fs",
                "lowerdir=/s/1/fs",
            ],
        );
        let direct = DirectMount::of(&m).unwrap();
        assert_eq!(direct.flags, MsFlags::empty());
        assert_eq!(
            direct.data,
            "index=off,workdir=/s/2/work,upperdir=/s/2/fs,lowerdir=/s/1/fs"
        );
    }

    #[test]
    fn an_overlay_of_many_layers_is_left_to_containerd_shim() {
        let lower = (0..200)
            .map(|i| format!("/var/lib/containerd/snapshots/{i}/fs"))
            .collect::<Vec<_>>()
            .join(":");
        let lowerdir = format!("lowerdir={lower}");
        let m = rootfs_mount("overlay", "overlay", &["index=off", lowerdir.as_str()]);
        assert_eq!(DirectMount::of(&m), None);
    }

    #[test]
    fn a_read_only_bind_rootfs_refuses_writes_and_unmounts() {
        let source = tempfile::tempdir().unwrap();
        std::fs::write(source.path().join("hello"), "hi").unwrap();
        let bundle = tempfile::tempdir().unwrap();
        let source_path = source.path().to_str().unwrap();
        let m = rootfs_mount("bind", source_path, &["rbind", "ro"]);

        let mounted = MountedRootfs::mount(bundle.path(), &[m]).unwrap();
        let rootfs = bundle.path().join("rootfs");
        let written = std::fs::write(rootfs.join("new"), "x");
        let seen = std::fs::read_to_string(rootfs.join("hello"));
        mounted.unmount();

        assert_eq!(written.unwrap_err().raw_os_error(), Some(libc::EROFS));
        assert_eq!(seen.unwrap(), "hi");
        assert!(!rootfs.join("hello").exists());
    }

    #[test]
    fn a_mount_of_a_missing_source_names_the_mount_and_the_reason() {
        let bundle = tempfile::tempdir().unwrap();
        let missing = bundle.path().join("no-such-snapshot");
        let m = rootfs_mount("bind", missing.to_str().unwrap(), &["rbind", "rw"]);

        let err = MountedRootfs::mount(bundle.path(), &[m]).err().unwrap();

        let message = format!("{err:#}");
        assert!(message.contains("no-such-snapshot"), "{message}");
        assert!(message.contains("No such file or directory"), "{message}");
    }
}

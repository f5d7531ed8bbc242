//! The guest's view of the container's filesystem.
//!
//! wasmer-wasix opens every regular file for reading *and* writing first, so that later file
//! descriptors can share one handle, and falls back to the access the guest asked for only when
//! that open is refused with "permission denied". On a read-only filesystem (a `ro` bind mount,
//! `root.readonly`) the kernel answers EROFS instead, which WASIX reports to the guest as an
//! I/O error: no file there could even be read. [`ContainerRoot`] reports EROFS as "permission
//! denied".
//!
//! It also does on disk what wasmer-wasix's host filesystem does not: symlinks and hard links
//! (which wasmer-wasix otherwise keeps in the guest's memory), and a rename as one `rename(2)`
//! (not a copy and a delete). Its calls keep the errno's meaning (`ENOTEMPTY`, `ENOTDIR`),
//! which the generic conversion turns into an I/O error.

use std::fs;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use nix::unistd::{access, AccessFlags};
use wasmer_wasix::virtual_fs::{
    host_fs, FileOpener, FileSystem, FsError, Metadata, OpenOptions, OpenOptionsConfig, ReadDir,
    VirtualFile,
};

type FsResult<T> = Result<T, FsError>;

/// The container's root filesystem (the process's `/`, already confined by the sandbox).
#[derive(Debug)]
pub struct ContainerRoot(pub host_fs::FileSystem);

impl FileOpener for ContainerRoot {
    fn open(
        &self,
        path: &Path,
        conf: &OpenOptionsConfig,
    ) -> FsResult<Box<dyn VirtualFile + Send + Sync + 'static>> {
        self.0
            .new_open_options()
            .options(conf.clone())
            .open(path)
            .map_err(|err| {
                let read_only = conf.write
                    && matches!(
                        access(path, AccessFlags::W_OK),
                        Err(nix::errno::Errno::EROFS)
                    );
                if read_only {
                    FsError::PermissionDenied
                } else {
                    err
                }
            })
    }
}

impl FileSystem for ContainerRoot {
    fn readlink(&self, path: &Path) -> FsResult<PathBuf> {
        self.0.readlink(path)
    }
    fn read_dir(&self, path: &Path) -> FsResult<ReadDir> {
        self.0.read_dir(path)
    }
    fn create_dir(&self, path: &Path) -> FsResult<()> {
        fs::create_dir(host(path)).map_err(fs_error)
    }
    /// A symlink on disk, where every process of the container sees it (without this,
    /// wasmer-wasix keeps it in the guest's memory only). Its target must be relative, as under
    /// every WASI runtime: an absolute one would name the host's root, not the guest's.
    fn create_symlink(&self, source: &Path, target: &Path) -> FsResult<()> {
        if source.is_absolute() {
            return Err(FsError::PermissionDenied);
        }
        std::os::unix::fs::symlink(source, host(target)).map_err(fs_error)
    }
    /// A hard link on disk (without this, wasmer-wasix makes a second name for the same file
    /// in the guest's memory only).
    fn hard_link(&self, source: &Path, target: &Path) -> FsResult<()> {
        fs::hard_link(host(source), host(target)).map_err(fs_error)
    }
    fn remove_dir(&self, path: &Path) -> FsResult<()> {
        fs::remove_dir(host(path)).map_err(fs_error)
    }
    /// One `rename(2)`: atomic, and within one filesystem never a copy (wasmer-wasix's host
    /// filesystem copies and deletes when the parents differ).
    fn rename<'a>(
        &'a self,
        from: &'a Path,
        to: &'a Path,
    ) -> Pin<Box<dyn Future<Output = FsResult<()>> + Send + 'a>> {
        Box::pin(async move { fs::rename(host(from), host(to)).map_err(fs_error) })
    }
    fn metadata(&self, path: &Path) -> FsResult<Metadata> {
        self.0.metadata(path)
    }
    fn symlink_metadata(&self, path: &Path) -> FsResult<Metadata> {
        self.0.symlink_metadata(path)
    }
    fn remove_file(&self, path: &Path) -> FsResult<()> {
        fs::remove_file(host(path)).map_err(fs_error)
    }
    fn new_open_options(&self) -> OpenOptions<'_> {
        OpenOptions::new(self)
    }
}

/// Where a path of wasmer-wasix's (absolute, or relative to the root) is in the container.
fn host(path: &Path) -> PathBuf {
    Path::new("/").join(path.strip_prefix("/").unwrap_or(path))
}

/// The error a failed call of the host's gives the guest: the generic conversion, but for the
/// errnos it would turn into an I/O error ("directory not empty", "not a directory",
/// "read-only filesystem", "cross-device link").
fn fs_error(err: io::Error) -> FsError {
    use nix::errno::Errno;
    match err.raw_os_error().map(Errno::from_raw) {
        Some(Errno::ENOTEMPTY) => FsError::DirectoryNotEmpty,
        Some(Errno::ENOTDIR) => FsError::BaseNotDirectory,
        Some(Errno::EROFS) => FsError::PermissionDenied,
        Some(Errno::EXDEV) => FsError::Unsupported,
        _ => FsError::from(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_root(test: impl FnOnce(&ContainerRoot, &Path, &tokio::runtime::Runtime)) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let root = ContainerRoot(host_fs::FileSystem::new(runtime.handle().clone(), "/").unwrap());
        let dir = tempfile::tempdir().unwrap();
        test(&root, dir.path(), &runtime);
    }

    #[test]
    fn a_symlink_is_made_on_disk() {
        with_root(|root, dir, _| {
            root.create_symlink(Path::new("target"), &dir.join("link"))
                .unwrap();
            assert_eq!(
                fs::read_link(dir.join("link")).unwrap(),
                Path::new("target")
            );
        });
    }

    #[test]
    fn a_symlink_to_an_absolute_path_is_refused() {
        with_root(|root, dir, _| {
            let made = root.create_symlink(Path::new("/"), &dir.join("link"));
            assert_eq!(made, Err(FsError::PermissionDenied));
            assert!(fs::symlink_metadata(dir.join("link")).is_err());
        });
    }

    #[test]
    fn a_hard_link_is_a_second_name_for_the_same_file() {
        use std::os::unix::fs::MetadataExt;
        with_root(|root, dir, _| {
            fs::write(dir.join("file"), "x").unwrap();
            root.hard_link(&dir.join("file"), &dir.join("link"))
                .unwrap();
            let (a, b) = (
                fs::metadata(dir.join("file")).unwrap(),
                fs::metadata(dir.join("link")).unwrap(),
            );
            assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
        });
    }

    #[test]
    fn renaming_a_directory_over_a_non_empty_one_is_refused_as_not_empty() {
        with_root(|root, dir, rt| {
            fs::create_dir_all(dir.join("target/inside")).unwrap();
            fs::create_dir(dir.join("source")).unwrap();
            let renamed = rt.block_on(root.rename(&dir.join("source"), &dir.join("target")));
            assert_eq!(renamed, Err(FsError::DirectoryNotEmpty));
        });
    }

    #[test]
    fn a_file_is_renamed_into_another_directory_as_the_same_inode() {
        use std::os::unix::fs::MetadataExt;
        with_root(|root, dir, rt| {
            fs::create_dir(dir.join("other")).unwrap();
            fs::write(dir.join("file"), "x").unwrap();
            let ino = fs::metadata(dir.join("file")).unwrap().ino();
            rt.block_on(root.rename(&dir.join("file"), &dir.join("other/file")))
                .unwrap();
            assert_eq!(fs::metadata(dir.join("other/file")).unwrap().ino(), ino);
        });
    }

    #[test]
    fn a_path_below_a_file_is_not_a_directory() {
        with_root(|root, dir, _| {
            fs::write(dir.join("file"), "x").unwrap();
            let made = root.create_dir(&dir.join("file/sub"));
            assert_eq!(made, Err(FsError::BaseNotDirectory));
        });
    }
}

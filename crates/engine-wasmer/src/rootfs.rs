//! The guest's view of the container's filesystem.
//!
//! wasmer-wasix opens every regular file for reading *and* writing first, so that later file
//! descriptors can share one handle, and falls back to the access the guest asked for only when
//! that open is refused with "permission denied". On a read-only filesystem (a `ro` bind mount,
//! `root.readonly`) the kernel answers EROFS instead, which WASIX reports to the guest as an
//! I/O error: no file there could even be read. [`ContainerRoot`] reports EROFS as "permission
//! denied", and everything else as the host filesystem does.

use std::future::Future;
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
        self.0.create_dir(path)
    }
    fn create_symlink(&self, source: &Path, target: &Path) -> FsResult<()> {
        self.0.create_symlink(source, target)
    }
    fn hard_link(&self, source: &Path, target: &Path) -> FsResult<()> {
        self.0.hard_link(source, target)
    }
    fn remove_dir(&self, path: &Path) -> FsResult<()> {
        self.0.remove_dir(path)
    }
    fn rename<'a>(
        &'a self,
        from: &'a Path,
        to: &'a Path,
    ) -> Pin<Box<dyn Future<Output = FsResult<()>> + Send + 'a>> {
        self.0.rename(from, to)
    }
    fn metadata(&self, path: &Path) -> FsResult<Metadata> {
        self.0.metadata(path)
    }
    fn symlink_metadata(&self, path: &Path) -> FsResult<Metadata> {
        self.0.symlink_metadata(path)
    }
    fn remove_file(&self, path: &Path) -> FsResult<()> {
        self.0.remove_file(path)
    }
    fn new_open_options(&self) -> OpenOptions<'_> {
        OpenOptions::new(self)
    }
}

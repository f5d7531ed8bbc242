//! Component files, as Spin gives them: each component's files laid out in a directory of its
//! own, which every instance of the component sees read-only as `/`. Their bytes come from
//! the image's data layers (by digest), from its archive layers (gzipped tars, whose files are
//! found by their digest), inline from the locked app, or from the container's filesystem
//! (a `spin.toml` app).

use std::collections::HashMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use kwasi_core::image::layers::WasmLayer;
use kwasi_core::image::WASM_ARCHIVE;

/// Where the components' directories are made, in the container's filesystem (Spin's shim
/// keeps its state under `/.spin` too).
pub const FILES_ROOT: &str = "/.spin/files";

/// One file of a component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentFile {
    /// Its path in the component's filesystem, relative to `/`.
    pub path: String,
    /// Its bytes, or where they are.
    pub content: FileContent,
}

/// Where a file's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileContent {
    /// In memory (a layer, an archive, or the locked app).
    Bytes(Vec<u8>),
    /// A file of the container's filesystem.
    Host(PathBuf),
}

/// The files of an image's archive layers, by digest (`sha256:<hex>`).
pub fn archived_files(layers: &[WasmLayer]) -> Result<HashMap<String, Vec<u8>>, String> {
    let mut files = HashMap::new();
    for layer in layers.iter().filter(|l| l.media_type == WASM_ARCHIVE) {
        let bad = |e: std::io::Error| format!("archive layer {}: {e}", layer.digest);
        let gz = flate2::read::GzDecoder::new(layer.bytes.as_slice());
        let mut archive = tar::Archive::new(gz);
        for entry in archive.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(bad)?;
            files.insert(crate::oci::digest(&bytes), bytes);
        }
    }
    Ok(files)
}

/// `path`, relative to `/`, if it stays inside the component's filesystem.
pub fn relative_path(path: &str) -> Option<PathBuf> {
    let relative = Path::new(path.trim_start_matches('/'));
    let mut clean = PathBuf::new();
    for part in relative.components() {
        match part {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!clean.as_os_str().is_empty()).then_some(clean)
}

/// Lays `files` out in `root/<component>`, emptied first, and returns that directory.
pub fn lay_out(root: &Path, component: &str, files: &[ComponentFile]) -> Result<PathBuf, String> {
    let dir = root.join(component);
    let fail = |what: &str, path: &Path, e: std::io::Error| {
        format!(
            "laying out its files: {what} {}: {e} (component files need a writable {})",
            path.display(),
            root.display()
        )
    };
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| fail("emptying", &dir, e))?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| fail("creating", &dir, e))?;
    for file in files {
        let relative = relative_path(&file.path)
            .ok_or_else(|| format!("file {:?} is outside the component's filesystem", file.path))?;
        let dest = dir.join(relative);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| fail("creating", parent, e))?;
        }
        match &file.content {
            FileContent::Bytes(bytes) => {
                std::fs::write(&dest, bytes).map_err(|e| fail("writing", &dest, e))?
            }
            FileContent::Host(source) => {
                std::fs::copy(source, &dest)
                    .map(drop)
                    .map_err(|e| fail("copying to", &dest, e))?;
            }
        }
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_component_filesystem() {
        assert_eq!(relative_path("/a/b.txt"), Some(PathBuf::from("a/b.txt")));
        assert_eq!(relative_path("./a"), Some(PathBuf::from("a")));
        assert_eq!(relative_path("a/../../etc/passwd"), None);
        assert_eq!(relative_path("/"), None);
    }

    #[test]
    fn files_are_laid_out_under_the_component_directory_replacing_what_was_there() {
        let root = tempfile::tempdir().unwrap();
        let host = root.path().join("host.txt");
        std::fs::write(&host, "from the rootfs").unwrap();
        std::fs::create_dir_all(root.path().join("web")).unwrap();
        std::fs::write(root.path().join("web/stale.txt"), "old").unwrap();
        let files = [
            ComponentFile {
                path: "static/index.html".into(),
                content: FileContent::Bytes(b"<h1>hi</h1>".to_vec()),
            },
            ComponentFile {
                path: "/notes.txt".into(),
                content: FileContent::Host(host),
            },
        ];
        let dir = lay_out(root.path(), "web", &files).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("static/index.html")).unwrap(),
            "<h1>hi</h1>"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("notes.txt")).unwrap(),
            "from the rootfs"
        );
        assert!(!dir.join("stale.txt").exists());
    }

    #[test]
    fn an_archive_layer_gives_its_files_by_digest() {
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(5);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, "a/hello.txt", &b"hello"[..])
            .unwrap();
        let tar = tar.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        let layer = WasmLayer {
            digest: "sha256:archive".into(),
            media_type: WASM_ARCHIVE.into(),
            title: None,
            bytes: gz.finish().unwrap(),
        };
        let files = archived_files(&[layer]).unwrap();
        let hello = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        assert_eq!(files[hello], b"hello");
    }
}

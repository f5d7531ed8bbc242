//! Packing a wasm module (and any extra files) into an OCI image archive that
//! `ctr images import` accepts and `ctr run` runs with a kwasi shim.
//!
//! The archive is an OCI image layout in a tar: `oci-layout`, `index.json` and
//! `blobs/sha256/…`. Its one layer is an uncompressed tar holding the module at `/app.wasm`
//! (or where [`ImageRecipe::module_dest`] says) and the extra files; the image's entrypoint
//! points at the module. The image's platform is the host's (`linux/amd64` here), so that
//! containerd's default platform matcher unpacks it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, DescriptorBuilder, Digest, ImageConfigurationBuilder,
    ImageIndexBuilder, ImageManifestBuilder, MediaType, Os, PlatformBuilder, RootFsBuilder,
};
use sha2::{Digest as _, Sha256};

/// The annotation containerd's importer names an image by.
const IMAGE_NAME_ANNOTATION: &str = "io.containerd.image.name";
/// The OCI annotation for a tag within a layout.
const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// What goes into an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecipe {
    /// The image reference, e.g. `example.com/hello:v1` (`:latest` is added when no tag).
    pub name: String,
    /// The `.wasm` file to ship.
    pub module: PathBuf,
    /// Where the module goes in the image (absolute).
    pub module_dest: String,
    /// Extra files: (file on this machine, absolute path in the image).
    pub files: Vec<(PathBuf, String)>,
    /// Arguments after the module in the entrypoint.
    pub args: Vec<String>,
    /// `KEY=VALUE` environment entries.
    pub env: Vec<String>,
    /// The working directory, if not `/`.
    pub workdir: Option<String>,
}

impl ImageRecipe {
    /// A recipe for `module` at `/app.wasm`, named `name`, with nothing else.
    pub fn new(name: impl Into<String>, module: impl Into<PathBuf>) -> ImageRecipe {
        ImageRecipe {
            name: name.into(),
            module: module.into(),
            module_dest: "/app.wasm".to_string(),
            files: Vec::new(),
            args: Vec::new(),
            env: Vec::new(),
            workdir: None,
        }
    }

    /// The reference the image is imported as.
    pub fn reference(&self) -> String {
        let last = self.name.rsplit('/').next().unwrap_or(&self.name);
        if last.contains(':') || last.contains('@') {
            self.name.clone()
        } else {
            format!("{}:latest", self.name)
        }
    }

    /// Writes the image archive to `out`.
    pub fn write_archive(&self, out: &Path) -> Result<()> {
        let file =
            std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
        let mut archive = tar::Builder::new(std::io::BufWriter::new(file));
        let layer = self.layer()?;
        let layer_desc = descriptor(MediaType::ImageLayer, &layer)?;
        let arch = host_arch();
        let mut config = ConfigBuilder::default();
        config = config.entrypoint(
            std::iter::once(self.module_dest.clone())
                .chain(self.args.iter().cloned())
                .collect::<Vec<_>>(),
        );
        if !self.env.is_empty() {
            config = config.env(self.env.clone());
        }
        if let Some(dir) = &self.workdir {
            config = config.working_dir(dir.clone());
        }
        let image_config = ImageConfigurationBuilder::default()
            .architecture(arch.clone())
            .os(Os::Linux)
            .config(config.build()?)
            .rootfs(
                RootFsBuilder::default()
                    .typ("layers")
                    .diff_ids(vec![layer_desc.digest().to_string()])
                    .build()?,
            )
            .build()?;
        let config_bytes = serde_json::to_vec(&image_config)?;
        let config_desc = descriptor(MediaType::ImageConfig, &config_bytes)?;
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(config_desc)
            .layers(vec![layer_desc])
            .build()?;
        let manifest_bytes = serde_json::to_vec(&manifest)?;
        let reference = self.reference();
        let tag = reference
            .rsplit_once(':')
            .map(|(_, t)| t.to_string())
            .unwrap_or_else(|| "latest".to_string());
        let mut manifest_desc = descriptor(MediaType::ImageManifest, &manifest_bytes)?;
        manifest_desc.set_platform(Some(
            PlatformBuilder::default()
                .architecture(arch)
                .os(Os::Linux)
                .build()?,
        ));
        manifest_desc.set_annotations(Some(
            [
                (IMAGE_NAME_ANNOTATION.to_string(), reference.clone()),
                (REF_NAME_ANNOTATION.to_string(), tag),
            ]
            .into_iter()
            .collect(),
        ));
        let index = ImageIndexBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageIndex)
            .manifests(vec![manifest_desc])
            .build()?;
        append(
            &mut archive,
            "oci-layout",
            br#"{"imageLayoutVersion":"1.0.0"}"#,
            0o644,
        )?;
        append(&mut archive, "blobs/", &[], 0o755)?;
        append(&mut archive, "blobs/sha256/", &[], 0o755)?;
        for blob in [&layer, &config_bytes, &manifest_bytes] {
            append(
                &mut archive,
                &format!("blobs/sha256/{}", sha256_hex(blob)),
                blob,
                0o644,
            )?;
        }
        append(
            &mut archive,
            "index.json",
            &serde_json::to_vec(&index)?,
            0o644,
        )?;
        archive
            .into_inner()
            .context("finishing the archive")?
            .flush()
            .context("writing the archive")?;
        Ok(())
    }

    /// The image's one layer: an uncompressed tar of the module and the extra files, with
    /// the directories above them.
    fn layer(&self) -> Result<Vec<u8>> {
        // The module is executable, so that the same recipe also packs a native entrypoint.
        let mut entries = vec![(self.module.clone(), self.module_dest.clone(), 0o755)];
        entries.extend(
            self.files
                .iter()
                .map(|(src, dest)| (src.clone(), dest.clone(), 0o644)),
        );
        let mut layer = tar::Builder::new(Vec::new());
        let mut dirs = std::collections::BTreeSet::new();
        for (src, dest, mode) in &entries {
            let Some(rel) = dest.strip_prefix('/') else {
                bail!("path in the image must be absolute: {dest}");
            };
            if rel.is_empty() || rel.split('/').any(|c| c == ".." || c.is_empty()) {
                bail!("invalid path in the image: {dest}");
            }
            let mut prefix = String::new();
            for component in rel
                .split('/')
                .collect::<Vec<_>>()
                .iter()
                .rev()
                .skip(1)
                .rev()
            {
                prefix.push_str(component);
                prefix.push('/');
                if dirs.insert(prefix.clone()) {
                    append(&mut layer, &prefix, &[], 0o755)?;
                }
            }
            let data = std::fs::read(src).with_context(|| format!("reading {}", src.display()))?;
            append(&mut layer, rel, &data, *mode)?;
        }
        layer.into_inner().context("finishing the layer")
    }
}

/// Appends a file (or, when `path` ends in `/`, a directory) with fixed owner and time, so
/// that the same inputs give the same image.
fn append<W: Write>(
    archive: &mut tar::Builder<W>,
    path: &str,
    data: &[u8],
    mode: u32,
) -> Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(if path.ends_with('/') {
        tar::EntryType::Directory
    } else {
        tar::EntryType::Regular
    });
    header.set_size(data.len() as u64);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    archive
        .append_data(&mut header, path, data)
        .with_context(|| format!("adding {path}"))
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn descriptor(media_type: MediaType, data: &[u8]) -> Result<Descriptor> {
    let digest = Digest::from_str(&format!("sha256:{}", sha256_hex(data)))?;
    Ok(DescriptorBuilder::default()
        .media_type(media_type)
        .digest(digest)
        .size(data.len() as u64)
        .build()?)
}

fn host_arch() -> Arch {
    match std::env::consts::ARCH {
        "x86_64" => Arch::Amd64,
        "aarch64" => Arch::ARM64,
        other => Arch::Other(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_without_tag_gets_latest() {
        assert_eq!(
            ImageRecipe::new("a.io/x/hello", "m").reference(),
            "a.io/x/hello:latest"
        );
        assert_eq!(
            ImageRecipe::new("localhost:5000/h", "m").reference(),
            "localhost:5000/h:latest"
        );
        assert_eq!(
            ImageRecipe::new("a.io/hello:v1", "m").reference(),
            "a.io/hello:v1"
        );
    }

    #[test]
    fn the_archive_is_an_oci_layout_whose_layer_holds_the_module_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let module = dir.path().join("m.wasm");
        std::fs::write(&module, b"\0asm\x01\0\0\0").unwrap();
        let extra = dir.path().join("greeting.txt");
        std::fs::write(&extra, b"hi").unwrap();
        let mut recipe = ImageRecipe::new("kwasi.test/m", &module);
        recipe.files.push((extra, "/etc/app/greeting.txt".into()));
        let out = dir.path().join("image.tar");
        recipe.write_archive(&out).unwrap();

        let mut names = Vec::new();
        let mut index = None;
        let mut archive = tar::Archive::new(std::fs::File::open(&out).unwrap());
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().display().to_string();
            if name == "index.json" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut entry, &mut s).unwrap();
                index = Some(s);
            }
            names.push(name);
        }
        assert!(names.contains(&"oci-layout".to_string()));
        assert_eq!(
            names
                .iter()
                .filter(|n| n.starts_with("blobs/sha256/") && n.len() > 20)
                .count(),
            3
        );
        let index = index.unwrap();
        assert!(index.contains("\"io.containerd.image.name\":\"kwasi.test/m:latest\""));

        let layer = recipe.layer().unwrap();
        let mut paths = Vec::new();
        for entry in tar::Archive::new(&layer[..]).entries().unwrap() {
            paths.push(entry.unwrap().path().unwrap().display().to_string());
        }
        assert_eq!(
            paths,
            vec!["app.wasm", "etc/", "etc/app/", "etc/app/greeting.txt"]
        );
    }

    #[test]
    fn relative_or_escaping_paths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let module = dir.path().join("m.wasm");
        std::fs::write(&module, b"\0asm").unwrap();
        let mut recipe = ImageRecipe::new("x", &module);
        recipe.module_dest = "app.wasm".into();
        assert!(recipe.layer().is_err());
        recipe.module_dest = "/a/../../b".into();
        assert!(recipe.layer().is_err());
    }
}

//! Packing a wasm module (and any extra files) into an OCI image archive that
//! `ctr images import` accepts, in one of three forms ([`Packing`]):
//!
//! - the module as a file in an ordinary image's tar layer, with the extra files: `ctr run`
//!   runs it with a kwasi shim like any image;
//! - the module as a layer of its own of a wasm media type, with an ordinary image config
//!   (the extra files, if any, in a tar layer before it): containerd unpacks the tar layers to
//!   the rootfs and leaves the wasm layer to the shim;
//! - a CNCF wasm OCI artifact (config `application/vnd.wasm.config.v0+json`, one
//!   `application/wasm` layer), behind an image index whose one manifest is for platform
//!   `wasm`/`wasip1`. containerd 1.6 imports it only with `--all-platforms --no-unpack`, and
//!   `ctr run` cannot run it: a CRI client (or the containerd API) creates the container.
//!
//! The archive is an OCI image layout in a tar: `oci-layout`, `index.json` and
//! `blobs/sha256/…`. Ordinary images are for the host's platform (`linux/amd64` here), so that
//! containerd's default platform matcher unpacks them; their entrypoint is the module's path
//! (and the arguments).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, DescriptorBuilder, Digest, ImageConfigurationBuilder,
    ImageIndexBuilder, ImageManifestBuilder, MediaType, Os, Platform, PlatformBuilder,
    RootFsBuilder,
};

use super::{WasmLayerType, WASM_ARTIFACT_CONFIG};
use crate::sha256_hex;

/// The annotation containerd's importer names an image by.
const IMAGE_NAME_ANNOTATION: &str = "io.containerd.image.name";
/// The OCI annotation for a tag within a layout.
const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// The OCI annotation for a blob's file name.
const TITLE_ANNOTATION: &str = "org.opencontainers.image.title";

/// How the module goes into the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Packing {
    /// As a file ([`ImageRecipe::module_dest`]) in a tar layer, with the extra files.
    #[default]
    File,
    /// As a layer of its own, of this media type, after a tar layer of the extra files (if
    /// any), with an ordinary image config.
    Layer(WasmLayerType),
    /// As a CNCF wasm OCI artifact behind an image index: the module only.
    Artifact,
}

/// What goes into an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecipe {
    /// The image reference, e.g. `example.com/hello:v1` (`:latest` is added when no tag).
    pub name: String,
    /// The `.wasm` file to ship.
    pub module: PathBuf,
    /// Where the module goes in the image (absolute); with a wasm layer, its name (the
    /// layer's title and the guest's `argv[0]`).
    pub module_dest: String,
    /// How the module is packed.
    pub packing: Packing,
    /// Extra files: (file on this machine, absolute path in the image).
    pub files: Vec<(PathBuf, String)>,
    /// Arguments after the module in the entrypoint.
    pub args: Vec<String>,
    /// `KEY=VALUE` environment entries.
    pub env: Vec<String>,
    /// The working directory, if not `/`.
    pub workdir: Option<String>,
}

/// A blob of the layout and its descriptor.
struct Blob {
    descriptor: Descriptor,
    bytes: Vec<u8>,
}

impl Blob {
    fn new(media_type: MediaType, bytes: Vec<u8>) -> Result<Blob> {
        let digest = Digest::from_str(&format!("sha256:{}", sha256_hex(&bytes)))?;
        let descriptor = DescriptorBuilder::default()
            .media_type(media_type)
            .digest(digest)
            .size(bytes.len() as u64)
            .build()?;
        Ok(Blob { descriptor, bytes })
    }

    fn json(media_type: MediaType, value: &impl serde::Serialize) -> Result<Blob> {
        Blob::new(media_type, serde_json::to_vec(value)?)
    }
}

impl ImageRecipe {
    /// A recipe for `module` at `/app.wasm`, named `name`, with nothing else.
    pub fn new(name: impl Into<String>, module: impl Into<PathBuf>) -> ImageRecipe {
        ImageRecipe {
            name: name.into(),
            module: module.into(),
            module_dest: "/app.wasm".to_string(),
            packing: Packing::File,
            files: Vec::new(),
            args: Vec::new(),
            env: Vec::new(),
            workdir: None,
        }
    }

    /// The reference the image is imported as.
    pub fn reference(&self) -> String {
        full_reference(&self.name)
    }

    /// Writes the image archive to `out`.
    pub fn write_archive(&self, out: &Path) -> Result<()> {
        let mut blobs = Vec::new();
        let (top, platform) = match self.packing {
            Packing::Artifact => (self.artifact(&mut blobs)?, None),
            Packing::File | Packing::Layer(_) => {
                let platform = PlatformBuilder::default()
                    .architecture(host_arch())
                    .os(Os::Linux)
                    .build()?;
                (self.image(&mut blobs)?, Some(platform))
            }
        };
        write_index(out, &self.reference(), top, platform, &blobs)
    }

    /// An ordinary image: its blobs go to `blobs`; returns its manifest's descriptor.
    fn image(&self, blobs: &mut Vec<Blob>) -> Result<Descriptor> {
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        let mut files = self.files.clone();
        if self.packing == Packing::File {
            // Executable, so that the same recipe also packs a native entrypoint.
            files.insert(0, (self.module.clone(), self.module_dest.clone()));
        }
        if !files.is_empty() {
            let tar = Blob::new(MediaType::ImageLayer, tar_layer(&files, self.packing)?)?;
            diff_ids.push(tar.descriptor.digest().to_string());
            layers.push(tar);
        }
        if let Packing::Layer(layer_type) = self.packing {
            layers.push(self.wasm_layer(MediaType::Other(layer_type.media_type().to_string()))?);
        }
        let mut config = ConfigBuilder::default().entrypoint(
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
            .architecture(host_arch())
            .os(Os::Linux)
            .config(config.build()?)
            .rootfs(
                RootFsBuilder::default()
                    .typ("layers")
                    .diff_ids(diff_ids)
                    .build()?,
            )
            .build()?;
        let config = Blob::json(MediaType::ImageConfig, &image_config)?;
        push_manifest(blobs, config, layers, None)
    }

    /// A CNCF wasm artifact behind an image index: its blobs go to `blobs`; returns the
    /// index's descriptor.
    fn artifact(&self, blobs: &mut Vec<Blob>) -> Result<Descriptor> {
        if !self.files.is_empty()
            || !self.args.is_empty()
            || !self.env.is_empty()
            || self.workdir.is_some()
        {
            bail!(
                "a wasm artifact carries only the module: extra files, environment, working \
                 directory and arguments need an image (drop --artifact)"
            );
        }
        let layer = self.wasm_layer(MediaType::Other(
            WasmLayerType::Wasm.media_type().to_string(),
        ))?;
        let config = Blob::new(
            MediaType::Other(WASM_ARTIFACT_CONFIG.to_string()),
            serde_json::to_vec(&serde_json::json!({
                "created": "1970-01-01T00:00:00Z",
                "architecture": "wasm",
                "os": "wasip1",
                "layerDigests": [layer.descriptor.digest().to_string()],
            }))?,
        )?;
        let mut manifest = push_manifest(blobs, config, vec![layer], None)?;
        manifest.set_platform(Some(wasm_platform()?));
        let index = ImageIndexBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageIndex)
            .manifests(vec![manifest])
            .build()?;
        let index = Blob::json(MediaType::ImageIndex, &index)?;
        let descriptor = index.descriptor.clone();
        blobs.push(index);
        Ok(descriptor)
    }

    /// The module as a layer of `media_type`, titled with its name.
    fn wasm_layer(&self, media_type: MediaType) -> Result<Blob> {
        let bytes = std::fs::read(&self.module)
            .with_context(|| format!("reading {}", self.module.display()))?;
        let mut layer = Blob::new(media_type, bytes)?;
        let title = self
            .module_dest
            .rsplit('/')
            .next()
            .unwrap_or(&self.module_dest)
            .to_string();
        layer
            .descriptor
            .set_annotations(Some([(TITLE_ANNOTATION.to_string(), title)].into()));
        Ok(layer)
    }
}

/// A manifest of `config` and `layers`, with `annotations`: all go to `blobs`; returns its
/// descriptor.
fn push_manifest(
    blobs: &mut Vec<Blob>,
    config: Blob,
    layers: Vec<Blob>,
    annotations: Option<std::collections::HashMap<String, String>>,
) -> Result<Descriptor> {
    let mut manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config.descriptor.clone())
        .layers(
            layers
                .iter()
                .map(|l| l.descriptor.clone())
                .collect::<Vec<_>>(),
        )
        .build()?;
    manifest.set_annotations(annotations);
    let manifest = Blob::json(MediaType::ImageManifest, &manifest)?;
    let descriptor = manifest.descriptor.clone();
    blobs.push(config);
    blobs.extend(layers);
    blobs.push(manifest);
    Ok(descriptor)
}

/// A blob of an image, as is: a layer or a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawBlob {
    /// Its media type.
    pub media_type: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// Writes to `out` the archive of an image named `reference` (`:latest` when it has no tag)
/// whose manifest has `config`, `layers` in order and `annotations`, for `ctr images import`
/// (`--all-platforms --no-unpack` when the image has no filesystem). Returns the reference.
pub fn write_image(
    out: &Path,
    reference: &str,
    config: RawBlob,
    layers: Vec<RawBlob>,
    annotations: std::collections::BTreeMap<String, String>,
) -> Result<String> {
    let raw = |b: RawBlob| Blob::new(MediaType::Other(b.media_type), b.bytes);
    let config = raw(config)?;
    let layers = layers.into_iter().map(raw).collect::<Result<Vec<_>>>()?;
    let annotations = (!annotations.is_empty()).then(|| annotations.into_iter().collect());
    let mut blobs = Vec::new();
    let top = push_manifest(&mut blobs, config, layers, annotations)?;
    let reference = full_reference(reference);
    write_index(out, &reference, top, None, &blobs)?;
    Ok(reference)
}

/// `name` with `:latest` when it has no tag or digest.
fn full_reference(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') || last.contains('@') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

/// Writes the layout of `blobs` with an index naming `top` (for `platform`) `reference`.
fn write_index(
    out: &Path,
    reference: &str,
    mut top: Descriptor,
    platform: Option<Platform>,
    blobs: &[Blob],
) -> Result<()> {
    let tag = reference
        .rsplit_once(':')
        .map(|(_, t)| t.to_string())
        .unwrap_or_else(|| "latest".to_string());
    top.set_platform(platform);
    top.set_annotations(Some(
        [
            (IMAGE_NAME_ANNOTATION.to_string(), reference.to_string()),
            (REF_NAME_ANNOTATION.to_string(), tag),
        ]
        .into_iter()
        .collect(),
    ));
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![top])
        .build()?;
    write_layout(out, blobs, &serde_json::to_vec(&index)?)
}

/// Writes the OCI layout of `blobs` and `index` as a tar to `out`.
fn write_layout(out: &Path, blobs: &[Blob], index: &[u8]) -> Result<()> {
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut archive = tar::Builder::new(std::io::BufWriter::new(file));
    append(
        &mut archive,
        "oci-layout",
        br#"{"imageLayoutVersion":"1.0.0"}"#,
        0o644,
    )?;
    append(&mut archive, "blobs/", &[], 0o755)?;
    append(&mut archive, "blobs/sha256/", &[], 0o755)?;
    for blob in blobs {
        let path = format!("blobs/sha256/{}", sha256_hex(&blob.bytes));
        append(&mut archive, &path, &blob.bytes, 0o644)?;
    }
    append(&mut archive, "index.json", index, 0o644)?;
    archive
        .into_inner()
        .context("finishing the archive")?
        .flush()
        .context("writing the archive")
}

fn wasm_platform() -> Result<Platform> {
    Ok(PlatformBuilder::default()
        .architecture(Arch::Wasm)
        .os(Os::Other("wasip1".to_string()))
        .build()?)
}

/// An uncompressed tar of `files` (source, absolute destination), with the directories above
/// them; the module, when packed as a file, is the first and executable.
fn tar_layer(files: &[(PathBuf, String)], packing: Packing) -> Result<Vec<u8>> {
    let mut layer = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    for (i, (src, dest)) in files.iter().enumerate() {
        let mode = if i == 0 && packing == Packing::File {
            0o755
        } else {
            0o644
        };
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
        append(&mut layer, rel, &data, mode)?;
    }
    layer.into_inner().context("finishing the layer")
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

    use std::collections::HashMap;

    use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};

    use crate::image::layers::{choose_manifest, wasm_layer_of};

    /// An archive's files by name.
    struct Layout(HashMap<String, Vec<u8>>);

    impl Layout {
        fn read(path: &Path) -> Layout {
            let mut files = HashMap::new();
            let mut archive = tar::Archive::new(std::fs::File::open(path).unwrap());
            for entry in archive.entries().unwrap() {
                let mut entry = entry.unwrap();
                let name = entry.path().unwrap().display().to_string();
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
                files.insert(name, bytes);
            }
            Layout(files)
        }

        fn blob(&self, d: &Descriptor) -> &[u8] {
            let hex = d.digest().to_string().replace("sha256:", "");
            &self.0[&format!("blobs/sha256/{hex}")]
        }

        /// The one entry of index.json.
        fn top(&self) -> Descriptor {
            let index = ImageIndex::from_reader(&self.0["index.json"][..]).unwrap();
            assert_eq!(index.manifests().len(), 1);
            index.manifests()[0].clone()
        }

        fn manifest(&self, d: &Descriptor) -> ImageManifest {
            ImageManifest::from_reader(self.blob(d)).unwrap()
        }

        fn tar_paths(&self, d: &Descriptor) -> Vec<String> {
            tar::Archive::new(self.blob(d))
                .entries()
                .unwrap()
                .map(|e| e.unwrap().path().unwrap().display().to_string())
                .collect()
        }
    }

    struct Fixture {
        dir: tempfile::TempDir,
        recipe: ImageRecipe,
    }

    /// A recipe for a module with an extra file.
    fn fixture(packing: Packing) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let module = dir.path().join("m.wasm");
        std::fs::write(&module, b"\0asm\x01\0\0\0").unwrap();
        let extra = dir.path().join("greeting.txt");
        std::fs::write(&extra, b"hi").unwrap();
        let mut recipe = ImageRecipe::new("kwasi.test/m", &module);
        recipe.packing = packing;
        recipe.files.push((extra, "/etc/app/greeting.txt".into()));
        Fixture { dir, recipe }
    }

    impl Fixture {
        fn write(&self) -> Layout {
            let out = self.dir.path().join("image.tar");
            self.recipe.write_archive(&out).unwrap();
            Layout::read(&out)
        }
    }

    #[test]
    fn a_file_image_is_one_tar_layer_holding_the_module_and_files() {
        let layout = fixture(Packing::File).write();
        assert!(layout.0.contains_key("oci-layout"));
        let top = layout.top();
        assert_eq!(
            top.annotations().as_ref().unwrap()["io.containerd.image.name"],
            "kwasi.test/m:latest"
        );
        let manifest = layout.manifest(&top);
        assert_eq!(manifest.layers().len(), 1);
        assert_eq!(
            layout.tar_paths(&manifest.layers()[0]),
            vec!["app.wasm", "etc/", "etc/app/", "etc/app/greeting.txt"]
        );
        assert_eq!(wasm_layer_of(&manifest), Ok(None));
    }

    #[test]
    fn a_layer_image_has_the_files_as_rootfs_and_the_module_as_its_wasm_layer() {
        let layout = fixture(Packing::Layer(WasmLayerType::Component)).write();
        let manifest = layout.manifest(&layout.top());
        let [files, module] = manifest.layers().as_slice() else {
            panic!("{manifest:?}")
        };
        assert_eq!(
            layout.tar_paths(files),
            vec!["etc/", "etc/app/", "etc/app/greeting.txt"]
        );
        assert_eq!(layout.blob(module), b"\0asm\x01\0\0\0");
        assert_eq!(wasm_layer_of(&manifest), Ok(Some(module)));
        assert_eq!(
            module.annotations().as_ref().unwrap()[TITLE_ANNOTATION],
            "app.wasm"
        );
        let config = ImageConfiguration::from_reader(layout.blob(manifest.config())).unwrap();
        assert_eq!(
            config.rootfs().diff_ids(),
            &vec![files.digest().to_string()]
        );
        assert_eq!(
            config.config().as_ref().unwrap().entrypoint(),
            &Some(vec!["/app.wasm".to_string()])
        );
    }

    #[test]
    fn an_artifact_is_a_wasm_manifest_behind_an_index_that_the_reader_finds() {
        let mut f = fixture(Packing::Artifact);
        f.recipe.files.clear();
        let layout = f.write();
        let top = layout.top();
        assert_eq!(top.media_type(), &MediaType::ImageIndex);
        let index = ImageIndex::from_reader(layout.blob(&top)).unwrap();
        let chosen = choose_manifest(&index).unwrap();
        let manifest = layout.manifest(chosen);
        assert_eq!(
            manifest.config().media_type().to_string(),
            WASM_ARTIFACT_CONFIG
        );
        let layer = wasm_layer_of(&manifest).unwrap().unwrap();
        assert_eq!(layer.media_type().to_string(), "application/wasm");
        assert_eq!(layout.blob(layer), b"\0asm\x01\0\0\0");
    }

    #[test]
    fn an_artifact_refuses_extra_files() {
        let f = fixture(Packing::Artifact);
        let err = f
            .recipe
            .write_archive(&f.dir.path().join("x.tar"))
            .unwrap_err();
        assert!(err.to_string().contains("drop --artifact"), "{err}");
    }

    #[test]
    fn relative_or_escaping_paths_are_refused() {
        let mut f = fixture(Packing::File);
        let out = f.dir.path().join("x.tar");
        f.recipe.module_dest = "app.wasm".into();
        assert!(f.recipe.write_archive(&out).is_err());
        f.recipe.module_dest = "/a/../../b".into();
        assert!(f.recipe.write_archive(&out).is_err());
    }
}

//! Reading a container's module from its image's wasm layer, through containerd's API
//! (containers, images and content services over gRPC, at the address containerd gave the
//! shim).
//!
//! The shim does this at `create`, before it builds the sandbox, and hands the bytes to the
//! container process: a wasm layer is not unpacked into the rootfs, which may then be empty.
//! A module's layer is read in two steps: first its descriptor and wasm header, then, only if
//! the compile cache has no compiled form of it, the whole of it.

use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::{GetContainerRequest, GetImageRequest, ReadContentRequest};
use containerd_client::tonic::metadata::MetadataValue;
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Code, Request, Status};
use oci_spec::image::{Arch, Descriptor, ImageIndex, ImageManifest};

use super::{WasmLayerType, SPIN_APPLICATION, WASM_ARTIFACT_CONFIG, WASM_PLATFORM_OS};

/// How deep image indexes may nest before kwasi gives up.
const MAX_INDEX_DEPTH: usize = 4;

/// A layer of a wasm image, read from containerd's content store: a module, or, in an
/// application's image, any of its layers (wasm, data, archive, locked app).
#[derive(Debug, Clone)]
pub struct WasmLayer {
    /// The layer's digest (`sha256:…`): the SHA-256 of [`WasmLayer::bytes`], which
    /// containerd's content store checked when it stored the blob.
    pub digest: String,
    /// The layer's media type.
    pub media_type: String,
    /// The layer's `org.opencontainers.image.title` annotation, if any.
    pub title: Option<String>,
    /// The layer's bytes.
    pub bytes: Vec<u8>,
}

impl WasmLayer {
    /// The SHA-256 of the layer's bytes in hex: its digest without the `sha256:` prefix.
    pub fn sha256(&self) -> Option<&str> {
        self.digest.strip_prefix("sha256:")
    }

    /// The layer, as error messages name where a module came from.
    pub fn origin(&self) -> String {
        format!("wasm layer {}", self.digest)
    }
}

/// What a container's image holds besides its rootfs.
#[derive(Debug, Clone)]
pub enum ImageContent {
    /// One module or component, in a wasm layer.
    Module(WasmLayer),
    /// One module whose layer was not read but for its wasm header: `bytes` holds only the
    /// first 8 bytes (enough to tell a core module from a component). A shim reads the rest
    /// ([`ImageReader::read_module`]) only when the compile cache has no compiled form of it.
    UnreadModule(WasmLayer),
    /// An application of several components (Spin's layout, with a
    /// [`SPIN_APPLICATION`] layer): every layer that is not a rootfs tar, in manifest order.
    Application(Vec<WasmLayer>),
}

/// Why a container's image cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// containerd could not be asked.
    #[error("reading the image from containerd at {address}: {reason}")]
    Containerd {
        /// containerd's address.
        address: String,
        /// What went wrong.
        reason: String,
    },
    /// The image is malformed or breaks kwasi's rules.
    #[error("image {image}: {problem}")]
    Image {
        /// The image's name.
        image: String,
        /// What is wrong with it.
        problem: ImageProblem,
    },
}

/// What is wrong with an image that has (or claims to have) wasm layers.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImageProblem {
    /// A wasm artifact must have exactly one layer.
    #[error("a wasm artifact must have exactly one application/wasm layer; this one has {0}")]
    ArtifactLayerCount(usize),
    /// A wasm artifact's layer is of another media type.
    #[error("layer {digest} of the wasm artifact is {media_type}, not application/wasm")]
    NotAWasmLayer {
        /// The layer's digest.
        digest: String,
        /// Its media type.
        media_type: String,
    },
    /// More than one wasm layer: kwasi would not know which to run.
    #[error(
        "{} wasm layers ({}) and no application layer saying how they fit together; kwasi runs \
         one module per container, or a Spin application",
        .0.len(), .0.join(", ")
    )]
    SeveralWasmLayers(Vec<String>),
    /// A blob the image names is not in the content store.
    #[error("blob {0} is not in containerd's content store (import or pull the whole image)")]
    MissingBlob(String),
    /// A manifest or index cannot be parsed.
    #[error("{digest} is not a valid {what}: {reason}")]
    Malformed {
        /// The blob's digest.
        digest: String,
        /// What it should be (`image index`, `image manifest`).
        what: &'static str,
        /// Why it is not.
        reason: String,
    },
    /// The wasm layer's bytes are not a wasm binary.
    #[error("wasm layer {0} is not a WebAssembly binary")]
    NotWasm(String),
    /// Nested image indexes deeper than [`MAX_INDEX_DEPTH`].
    #[error("image indexes nested more than {MAX_INDEX_DEPTH} deep")]
    TooDeep,
}

/// How many bytes of a module's layer say what it is: the magic and the version/layer field.
const WASM_HEADER: usize = 8;

/// A connection to containerd's API, to read one container's image: its wasm layer or the
/// layers of its application ([`ImageReader::content`]), then, if needed, the whole of a module
/// it left unread ([`ImageReader::read_module`]).
pub struct ImageReader {
    /// A runtime on this thread only, gone with the reader: the shim's threads are few and
    /// its zygote is forked before any starts.
    runtime: tokio::runtime::Runtime,
    store: Store,
    address: String,
    /// The image's name, once [`ImageReader::content`] found it.
    image: String,
}

impl ImageReader {
    /// Connects to containerd at `address`, in `namespace`.
    pub fn connect(address: &str, namespace: &str) -> Result<ImageReader, LayerError> {
        let containerd_error = |reason: String| LayerError::Containerd {
            address: address.to_string(),
            reason,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| containerd_error(format!("starting an I/O runtime: {e}")))?;
        let channel = runtime
            .block_on(containerd_client::connect(address))
            .map_err(|e| containerd_error(format!("connecting: {e}")))?;
        let store = Store::new(channel, namespace).map_err(containerd_error)?;
        Ok(ImageReader {
            runtime,
            store,
            address: address.to_string(),
            image: String::new(),
        })
    }

    /// The module in the wasm layer of container `container_id`'s image, or the layers of the
    /// application it is, if its image has either. With `defer_module`, a module's layer is
    /// left in the content store but for its header ([`ImageContent::UnreadModule`]).
    ///
    /// `None` when the container has no image, the image is gone, or it has no wasm layer (an
    /// ordinary image, whose module is a file in the rootfs).
    pub fn content(
        &mut self,
        container_id: &str,
        defer_module: bool,
    ) -> Result<Option<ImageContent>, LayerError> {
        let store = &self.store;
        let image = self
            .runtime
            .block_on(store.image_of(container_id))
            .map_err(|s| self.containerd_error(s))?;
        let Some(image) = image else {
            return Ok(None);
        };
        self.image = image.name.clone();
        let content = self.runtime.block_on(store.content(&image, defer_module));
        content.map_err(|fetch| self.fetch_error(fetch))
    }

    /// The whole of `layer`, a module's layer that [`ImageReader::content`] left unread.
    pub fn read_module(&self, layer: &WasmLayer) -> Result<WasmLayer, LayerError> {
        let bytes = self
            .runtime
            .block_on(self.store.read_digest(&layer.digest, 0, 0))
            .map_err(|fetch| self.fetch_error(fetch))?;
        Ok(WasmLayer {
            bytes,
            ..layer.clone()
        })
    }

    fn containerd_error(&self, status: Status) -> LayerError {
        LayerError::Containerd {
            address: self.address.clone(),
            reason: status.message().to_string(),
        }
    }

    fn fetch_error(&self, fetch: Fetch) -> LayerError {
        match fetch {
            Fetch::Problem(problem) => LayerError::Image {
                image: self.image.clone(),
                problem,
            },
            Fetch::Status(status) => self.containerd_error(status),
        }
    }
}

/// An image's name and the descriptor it points at.
struct ImageRef {
    name: String,
    target: Descriptor,
}

/// Why a fetch failed: the image, or the conversation with containerd.
enum Fetch {
    Problem(ImageProblem),
    Status(Status),
}

impl From<ImageProblem> for Fetch {
    fn from(problem: ImageProblem) -> Fetch {
        Fetch::Problem(problem)
    }
}

/// containerd's metadata and content stores, in one namespace.
struct Store {
    channel: Channel,
    namespace: MetadataValue<containerd_client::tonic::metadata::Ascii>,
}

impl Store {
    fn new(channel: Channel, namespace: &str) -> Result<Store, String> {
        let namespace = MetadataValue::try_from(namespace)
            .map_err(|_| format!("invalid namespace {namespace:?}"))?;
        Ok(Store { channel, namespace })
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert("containerd-namespace", self.namespace.clone());
        request
    }

    /// The image container `id` was created from: `None` when it has none or it is gone.
    async fn image_of(&self, id: &str) -> Result<Option<ImageRef>, Status> {
        let request = self.request(GetContainerRequest { id: id.to_string() });
        let container = match ContainersClient::new(self.channel.clone())
            .get(request)
            .await
        {
            Ok(response) => response.into_inner().container,
            Err(status) if status.code() == Code::NotFound => None,
            Err(status) => return Err(status),
        };
        let Some(name) = container.map(|c| c.image).filter(|name| !name.is_empty()) else {
            return Ok(None);
        };
        let request = self.request(GetImageRequest { name: name.clone() });
        let image = match ImagesClient::new(self.channel.clone()).get(request).await {
            Ok(response) => response.into_inner().image,
            Err(status) if status.code() == Code::NotFound => {
                log::debug!("container {id}: image {name} is gone; no wasm layer");
                None
            }
            Err(status) => return Err(status),
        };
        Ok(image
            .and_then(|image| image.target)
            .and_then(|target| descriptor(&target))
            .map(|target| ImageRef { name, target }))
    }

    /// The wasm layer of `image`'s manifest (through its indexes), or its application's
    /// layers, read from the content store; with `defer_module`, only a module layer's header.
    async fn content(
        &self,
        image: &ImageRef,
        defer_module: bool,
    ) -> Result<Option<ImageContent>, Fetch> {
        let mut target = image.target.clone();
        let mut depth = 0;
        while is_index(&target) {
            depth += 1;
            if depth > MAX_INDEX_DEPTH {
                return Err(ImageProblem::TooDeep.into());
            }
            let blob = self.read(&target).await?;
            let index = ImageIndex::from_reader(&blob[..])
                .map_err(|e| malformed(&target, "image index", e))?;
            match choose_manifest(&index) {
                Some(manifest) => target = manifest.clone(),
                None => return Ok(None),
            }
        }
        if !is_manifest(&target) {
            return Ok(None);
        }
        let blob = self.read(&target).await?;
        let manifest = ImageManifest::from_reader(&blob[..])
            .map_err(|e| malformed(&target, "image manifest", e))?;
        if let Some(layers) = application_layers_of(&manifest) {
            let mut read = Vec::with_capacity(layers.len());
            for layer in layers {
                read.push(self.layer(layer, 0).await?);
            }
            return Ok(Some(ImageContent::Application(read)));
        }
        let Some(layer) = wasm_layer_of(&manifest)? else {
            return Ok(None);
        };
        Ok(Some(if defer_module {
            ImageContent::UnreadModule(self.layer(layer, WASM_HEADER).await?)
        } else {
            ImageContent::Module(self.layer(layer, 0).await?)
        }))
    }

    /// A layer, its first `size` bytes or (0) all of it; a wasm layer must hold a wasm binary.
    async fn layer(&self, layer: &Descriptor, size: usize) -> Result<WasmLayer, Fetch> {
        let bytes = match size {
            0 => self.read(layer).await?,
            size => {
                self.read_digest(layer.digest().as_ref(), size, size)
                    .await?
            }
        };
        let digest = layer.digest().to_string();
        let media_type = layer.media_type().to_string();
        if WasmLayerType::from_media_type(&media_type).is_some() && !bytes.starts_with(b"\0asm") {
            return Err(ImageProblem::NotWasm(digest).into());
        }
        Ok(WasmLayer {
            digest,
            media_type,
            title: layer
                .annotations()
                .as_ref()
                .and_then(|a| a.get("org.opencontainers.image.title"))
                .cloned(),
            bytes,
        })
    }

    /// A whole blob from the content store.
    async fn read(&self, blob: &Descriptor) -> Result<Vec<u8>, Fetch> {
        let capacity = usize::try_from(blob.size()).unwrap_or(0);
        self.read_digest(blob.digest().as_ref(), 0, capacity).await
    }

    /// The first `size` bytes (0: all) of blob `digest` from the content store, into a buffer
    /// of `capacity`.
    async fn read_digest(
        &self,
        digest: &str,
        size: usize,
        capacity: usize,
    ) -> Result<Vec<u8>, Fetch> {
        let digest = digest.to_string();
        let missing = |status: Status| {
            if status.code() == Code::NotFound {
                Fetch::Problem(ImageProblem::MissingBlob(digest.clone()))
            } else {
                Fetch::Status(status)
            }
        };
        let request = self.request(ReadContentRequest {
            digest: digest.clone(),
            offset: 0,
            size: i64::try_from(size).unwrap_or(0),
        });
        let mut stream = ContentClient::new(self.channel.clone())
            .read(request)
            .await
            .map_err(missing)?
            .into_inner();
        let mut bytes = Vec::with_capacity(capacity);
        while let Some(chunk) = stream.message().await.map_err(missing)? {
            bytes.extend_from_slice(&chunk.data);
        }
        Ok(bytes)
    }
}

/// The OCI descriptor for one of containerd's.
fn descriptor(d: &containerd_client::types::Descriptor) -> Option<Descriptor> {
    let json = serde_json::json!({
        "mediaType": d.media_type,
        "digest": d.digest,
        "size": d.size,
        "annotations": d.annotations,
    });
    serde_json::from_value(json).ok()
}

fn malformed(blob: &Descriptor, what: &'static str, err: impl std::fmt::Display) -> Fetch {
    Fetch::Problem(ImageProblem::Malformed {
        digest: blob.digest().to_string(),
        what,
        reason: err.to_string(),
    })
}

fn is_index(d: &Descriptor) -> bool {
    matches!(
        d.media_type().to_string().as_str(),
        "application/vnd.oci.image.index.v1+json"
            | "application/vnd.docker.distribution.manifest.list.v2+json"
    )
}

fn is_manifest(d: &Descriptor) -> bool {
    matches!(
        d.media_type().to_string().as_str(),
        "application/vnd.oci.image.manifest.v1+json"
            | "application/vnd.docker.distribution.manifest.v2+json"
    )
}

/// The manifest of an index to run: the one for a wasm platform, else the only one.
pub(crate) fn choose_manifest(index: &ImageIndex) -> Option<&Descriptor> {
    let manifests = index.manifests();
    let wasm = manifests.iter().find(|m| {
        m.platform().as_ref().is_some_and(|p| {
            *p.architecture() == Arch::Wasm
                || WASM_PLATFORM_OS.contains(&p.os().to_string().as_str())
        })
    });
    match (wasm, manifests.as_slice()) {
        (Some(m), _) => Some(m),
        (None, [only]) => Some(only),
        (None, _) => None,
    }
}

/// The layers of an application image (one with a [`SPIN_APPLICATION`] layer): every layer
/// but the rootfs tars, in order. `None` for any other image.
pub(crate) fn application_layers_of(manifest: &ImageManifest) -> Option<Vec<&Descriptor>> {
    let layers = manifest.layers();
    if !layers
        .iter()
        .any(|l| l.media_type().to_string() == SPIN_APPLICATION)
    {
        return None;
    }
    let rootfs = |d: &&Descriptor| {
        let media_type = d.media_type().to_string();
        media_type.starts_with("application/vnd.oci.image.layer.")
            || media_type.starts_with("application/vnd.docker.image.rootfs.")
    };
    Some(layers.iter().filter(|l| !rootfs(l)).collect())
}

/// The layer holding the module, if the manifest has one; an error when the manifest is a
/// wasm artifact that breaks its rules, or has several wasm layers.
pub(crate) fn wasm_layer_of(manifest: &ImageManifest) -> Result<Option<&Descriptor>, ImageProblem> {
    let layers = manifest.layers();
    if manifest.config().media_type().to_string() == WASM_ARTIFACT_CONFIG {
        let [layer] = layers.as_slice() else {
            return Err(ImageProblem::ArtifactLayerCount(layers.len()));
        };
        let media_type = layer.media_type().to_string();
        if media_type != WasmLayerType::Wasm.media_type() {
            return Err(ImageProblem::NotAWasmLayer {
                digest: layer.digest().to_string(),
                media_type,
            });
        }
        return Ok(Some(layer));
    }
    let wasm: Vec<&Descriptor> = layers
        .iter()
        .filter(|l| WasmLayerType::from_media_type(l.media_type().as_ref()).is_some())
        .collect();
    match wasm.as_slice() {
        [] => Ok(None),
        [layer] => Ok(Some(layer)),
        several => Err(ImageProblem::SeveralWasmLayers(
            several.iter().map(|l| l.digest().to_string()).collect(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST_A: &str =
        "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const DIGEST_B: &str =
        "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const DIGEST_C: &str =
        "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

    fn manifest(config_type: &str, layers: &[(&str, &str)]) -> ImageManifest {
        let layers: Vec<_> = layers
            .iter()
            .map(|(t, d)| serde_json::json!({"mediaType": t, "digest": d, "size": 8}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": config_type, "digest": DIGEST_C, "size": 2},
            "layers": layers,
        }))
        .unwrap()
    }

    fn index(platforms: &[(&str, &str, &str)]) -> ImageIndex {
        let manifests: Vec<_> = platforms
            .iter()
            .map(|(os, arch, digest)| {
                serde_json::json!({
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": digest, "size": 100,
                    "platform": {"os": os, "architecture": arch},
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({"schemaVersion": 2, "manifests": manifests}))
            .unwrap()
    }

    const IMAGE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    const TAR: &str = "application/vnd.oci.image.layer.v1.tar";

    #[test]
    fn an_artifact_runs_its_one_wasm_layer() {
        let m = manifest(WASM_ARTIFACT_CONFIG, &[("application/wasm", DIGEST_A)]);
        assert_eq!(
            wasm_layer_of(&m).unwrap().map(|d| d.digest().to_string()),
            Some(DIGEST_A.to_string())
        );
    }

    #[test]
    fn an_artifact_with_two_layers_is_refused() {
        let m = manifest(
            WASM_ARTIFACT_CONFIG,
            &[
                ("application/wasm", DIGEST_A),
                ("application/wasm", DIGEST_B),
            ],
        );
        assert_eq!(wasm_layer_of(&m), Err(ImageProblem::ArtifactLayerCount(2)));
    }

    #[test]
    fn an_artifact_layer_that_is_not_wasm_is_refused() {
        let m = manifest(WASM_ARTIFACT_CONFIG, &[(TAR, DIGEST_A)]);
        assert_eq!(
            wasm_layer_of(&m),
            Err(ImageProblem::NotAWasmLayer {
                digest: DIGEST_A.into(),
                media_type: TAR.into()
            })
        );
    }

    #[test]
    fn component_and_spin_layers_of_an_ordinary_image_are_wasm_layers() {
        for t in [WasmLayerType::Component, WasmLayerType::Spin] {
            let m = manifest(IMAGE_CONFIG, &[(TAR, DIGEST_B), (t.media_type(), DIGEST_A)]);
            assert_eq!(
                wasm_layer_of(&m).unwrap().map(|d| d.digest().to_string()),
                Some(DIGEST_A.to_string()),
                "{t:?}"
            );
        }
    }

    #[test]
    fn an_image_of_tar_layers_has_no_wasm_layer() {
        let m = manifest(IMAGE_CONFIG, &[(TAR, DIGEST_A)]);
        assert_eq!(wasm_layer_of(&m), Ok(None));
    }

    #[test]
    fn an_image_with_two_wasm_layers_is_refused() {
        let m = manifest(
            IMAGE_CONFIG,
            &[
                (WasmLayerType::Spin.media_type(), DIGEST_A),
                (WasmLayerType::Component.media_type(), DIGEST_B),
            ],
        );
        assert_eq!(
            wasm_layer_of(&m),
            Err(ImageProblem::SeveralWasmLayers(vec![
                DIGEST_A.into(),
                DIGEST_B.into()
            ]))
        );
    }

    #[test]
    fn a_spin_application_is_every_layer_but_the_rootfs_tars() {
        let m = manifest(
            IMAGE_CONFIG,
            &[
                (WasmLayerType::Spin.media_type(), DIGEST_A),
                (TAR, DIGEST_C),
                (WasmLayerType::Spin.media_type(), DIGEST_B),
                (SPIN_APPLICATION, DIGEST_C),
            ],
        );
        let digests: Vec<String> = application_layers_of(&m)
            .unwrap()
            .iter()
            .map(|d| d.digest().to_string())
            .collect();
        assert_eq!(digests, [DIGEST_A, DIGEST_B, DIGEST_C]);
    }

    #[test]
    fn an_image_without_a_locked_app_is_no_application() {
        let m = manifest(
            IMAGE_CONFIG,
            &[(WasmLayerType::Spin.media_type(), DIGEST_A)],
        );
        assert!(application_layers_of(&m).is_none());
    }

    #[test]
    fn an_index_yields_its_wasm_platform_manifest() {
        for (os, arch) in [("wasip1", "wasm"), ("wasip2", "wasm"), ("wasip1", "amd64")] {
            let i = index(&[("linux", "amd64", DIGEST_A), (os, arch, DIGEST_B)]);
            assert_eq!(
                choose_manifest(&i).map(|d| d.digest().to_string()),
                Some(DIGEST_B.to_string()),
                "{os}/{arch}"
            );
        }
    }

    #[test]
    fn an_index_of_one_manifest_yields_it() {
        let i = index(&[("linux", "amd64", DIGEST_A)]);
        assert_eq!(
            choose_manifest(&i).map(|d| d.digest().to_string()),
            Some(DIGEST_A.to_string())
        );
    }

    #[test]
    fn a_multi_platform_index_without_wasm_yields_nothing() {
        let i = index(&[("linux", "amd64", DIGEST_A), ("linux", "arm64", DIGEST_B)]);
        assert!(choose_manifest(&i).is_none());
    }
}

//! OCI images of wasm workloads: the media types kwasi knows, building image archives for
//! `ctr images import` ([`archive`]), and reading a container's module from its image's wasm
//! layer in containerd's content store ([`layers`]).
//!
//! Three ways to ship a module as a layer are recognised (see [`WasmLayerType`]), and Spin's
//! application layout (wasm, data and archive layers with a locked app, [`SPIN_APPLICATION`]); a CNCF wasm
//! artifact is a manifest whose config has the media type [`WASM_ARTIFACT_CONFIG`] and whose
//! one layer is `application/wasm`. Behind an image index, the manifest for the wasm platform
//! (`os` `wasip1`/`wasip2` or architecture `wasm`) is used, or the only manifest there is.

pub mod archive;
pub mod layers;

pub use archive::{write_image, ImageRecipe, Packing, RawBlob};

/// The config media type of a CNCF wasm OCI artifact.
pub const WASM_ARTIFACT_CONFIG: &str = "application/vnd.wasm.config.v0+json";

/// A media type of a layer that holds a wasm module or component as is (not in a tar).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WasmLayerType {
    /// `application/wasm`: the CNCF wasm artifact's layer.
    Wasm,
    /// `application/vnd.bytecodealliance.wasm.component.layer.v0+wasm` (runwasi's builder).
    Component,
    /// `application/vnd.wasm.content.layer.v1+wasm` (Spin).
    Spin,
}

impl WasmLayerType {
    /// Every wasm layer type.
    pub const ALL: [WasmLayerType; 3] = [
        WasmLayerType::Wasm,
        WasmLayerType::Component,
        WasmLayerType::Spin,
    ];

    /// The layer's media type.
    pub fn media_type(self) -> &'static str {
        match self {
            WasmLayerType::Wasm => "application/wasm",
            WasmLayerType::Component => {
                "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm"
            }
            WasmLayerType::Spin => "application/vnd.wasm.content.layer.v1+wasm",
        }
    }

    /// The wasm layer type with this media type, if it is one.
    pub fn from_media_type(media_type: &str) -> Option<WasmLayerType> {
        WasmLayerType::ALL
            .into_iter()
            .find(|t| t.media_type() == media_type)
    }
}

/// The media type of the layer holding a Spin application's locked app (`spin.lock` JSON).
/// An image with such a layer is an application of several components: every layer of it
/// that is not a rootfs tar is read, and the engine loads them as one
/// ([`crate::engine::Engine::load_app`]).
pub const SPIN_APPLICATION: &str = "application/vnd.fermyon.spin.application.v1+config";

/// The media type of a Spin application's archive layer: a directory of static files, as a
/// gzipped tar.
pub const WASM_ARCHIVE: &str = "application/vnd.wasm.content.bundle.v1.tar+gzip";

/// The `os` values of a wasm platform in an image index.
pub const WASM_PLATFORM_OS: [&str; 2] = ["wasip1", "wasip2"];

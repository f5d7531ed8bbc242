//! Packaging an app the way `spin registry push` (Spin 3.x) lays it out: one
//! `application/vnd.wasm.content.layer.v1+wasm` layer per distinct component source, one
//! `application/vnd.wasm.content.layer.v1+data` layer per distinct file content, the
//! locked app (with each source replaced by its layer's digest) as the last layer, and an
//! image config with architecture `wasm`, os `wasip1` and the locked app's digest as a label.

use std::collections::BTreeMap;
use std::path::Path;

use kwasi_core::image::layers::WasmLayer;
use kwasi_core::image::{RawBlob, SPIN_APPLICATION};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::locked::{ContentRef, LockedApp};

/// The media type of a component's layer.
pub const WASM_LAYER: &str = "application/vnd.wasm.content.layer.v1+wasm";
/// The media type of a component file's layer.
pub const DATA_LAYER: &str = "application/vnd.wasm.content.layer.v1+data";
/// The media type of the image config.
pub const IMAGE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// The config label naming the locked app's layer.
pub const LOCKED_APP_DIGEST_LABEL: &str = "com.fermyon.spin.lockedAppDigest";

/// An app's image: its config, layers and manifest annotations.
#[derive(Debug)]
pub struct SpinImage {
    /// The image config.
    pub config: RawBlob,
    /// The component layers, then the locked app.
    pub layers: Vec<RawBlob>,
    /// The manifest's `org.opencontainers.image.*` annotations.
    pub annotations: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct ImageConfig<'a> {
    architecture: &'a str,
    os: &'a str,
    config: Labels<'a>,
    rootfs: RootFs<'a>,
}

#[derive(Serialize)]
struct Labels<'a> {
    #[serde(rename = "Labels")]
    labels: BTreeMap<&'a str, String>,
}

#[derive(Serialize)]
struct RootFs<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    diff_ids: [&'a str; 0],
}

/// `sha256:<hex>` of `bytes`: how layers and the locked app name content.
pub(crate) fn digest(bytes: &[u8]) -> String {
    let hex: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// The image of the app whose `spin.toml` is at `manifest`.
pub fn package(manifest: &Path) -> Result<SpinImage, String> {
    let app = crate::manifest::load(manifest).map_err(|e| e.to_string())?;
    package_app(app)
}

/// The image of locked app `app`, whose sources are `file://` URIs.
pub fn package_app(mut app: LockedApp) -> Result<SpinImage, String> {
    let mut layers: Vec<RawBlob> = Vec::new();
    for component in &mut app.components {
        let wasm = crate::app::source_bytes(&component.id, &component.source.content, &[])
            .map_err(|e| e.to_string())?;
        let layer_digest = digest(&wasm.bytes);
        if !layers.iter().any(|l| l.bytes == wasm.bytes) {
            layers.push(RawBlob {
                media_type: WASM_LAYER.to_string(),
                bytes: wasm.bytes,
            });
        }
        component.source.content = ContentRef {
            digest: Some(layer_digest),
            ..ContentRef::default()
        };
        for file in &mut component.files {
            let bytes = crate::app::source_bytes(&component.id, &file.content, &[])
                .map_err(|e| format!("file {:?}: {e}", file.path))?
                .bytes;
            let file_digest = digest(&bytes);
            if !layers.iter().any(|l| l.bytes == bytes) {
                layers.push(RawBlob {
                    media_type: DATA_LAYER.to_string(),
                    bytes,
                });
            }
            file.content = ContentRef {
                digest: Some(file_digest),
                ..ContentRef::default()
            };
        }
    }
    app.metadata.remove("origin");
    let locked = serde_json::to_vec(&app).map_err(|e| e.to_string())?;
    let locked_digest = digest(&locked);
    layers.push(RawBlob {
        media_type: SPIN_APPLICATION.to_string(),
        bytes: locked,
    });
    let config = ImageConfig {
        architecture: "wasm",
        os: "wasip1",
        config: Labels {
            labels: [(LOCKED_APP_DIGEST_LABEL, locked_digest)].into(),
        },
        rootfs: RootFs {
            kind: "layers",
            diff_ids: [],
        },
    };
    let mut annotations = BTreeMap::new();
    for (key, annotation) in [
        ("name", "title"),
        ("version", "version"),
        ("description", "description"),
    ] {
        if let Some(value) = app.metadata.get(key).and_then(|v| v.as_str()) {
            annotations.insert(
                format!("org.opencontainers.image.{annotation}"),
                value.to_string(),
            );
        }
    }
    if let Some(authors) = app.metadata.get("authors").and_then(|v| v.as_array()) {
        let authors: Vec<&str> = authors.iter().filter_map(|a| a.as_str()).collect();
        annotations.insert(
            "org.opencontainers.image.authors".into(),
            authors.join(", "),
        );
    }
    Ok(SpinImage {
        config: RawBlob {
            media_type: IMAGE_CONFIG.to_string(),
            bytes: serde_json::to_vec(&config).map_err(|e| e.to_string())?,
        },
        layers,
        annotations,
    })
}

/// The layers of `image` as containerd would hand them to the shim (for tests).
pub fn as_layers(image: &SpinImage) -> Vec<WasmLayer> {
    image
        .layers
        .iter()
        .map(|l| WasmLayer {
            digest: digest(&l.bytes),
            media_type: l.media_type.clone(),
            title: None,
            bytes: l.bytes.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str = r#"spin_manifest_version = 2
[application]
name = "two"
version = "1.2.3"
authors = ["A <a@example.com>", "B"]
[[trigger.http]]
route = "/..."
component = "a"
[[trigger.http]]
route = "/b"
component = "b"
[component.a]
source = "same.wasm"
[component.b]
source = "same.wasm"
"#;

    fn packaged() -> SpinImage {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("same.wasm"), b"\0asm\x01\0\0\0").unwrap();
        std::fs::write(dir.path().join("spin.toml"), TOML).unwrap();
        package(&dir.path().join("spin.toml")).unwrap()
    }

    #[test]
    fn components_of_one_source_share_one_layer_and_the_locked_app_comes_last() {
        let image = packaged();
        let types: Vec<&str> = image.layers.iter().map(|l| l.media_type.as_str()).collect();
        assert_eq!(types, [WASM_LAYER, SPIN_APPLICATION]);
    }

    #[test]
    fn the_packaged_app_resolves_from_its_own_layers() {
        let image = packaged();
        let layers = as_layers(&image);
        let locked = crate::app::locked_app_of(&layers).unwrap();
        let resolved = crate::app::resolve(&locked, &layers).unwrap();
        assert_eq!(resolved.components.len(), 2);
        assert_eq!(resolved.components[0].wasm.bytes, b"\0asm\x01\0\0\0");
        assert!(locked
            .components
            .iter()
            .all(|c| c.source.content.source.is_none()));
    }

    #[test]
    fn the_config_is_spins_and_labels_the_locked_app() {
        let image = packaged();
        let locked_digest = digest(&image.layers[1].bytes);
        assert_eq!(
            String::from_utf8(image.config.bytes).unwrap(),
            format!(
                r#"{{"architecture":"wasm","os":"wasip1","config":{{"Labels":{{"com.fermyon.spin.lockedAppDigest":"{locked_digest}"}}}},"rootfs":{{"type":"layers","diff_ids":[]}}}}"#
            )
        );
        assert_eq!(image.annotations["org.opencontainers.image.title"], "two");
        assert_eq!(
            image.annotations["org.opencontainers.image.version"],
            "1.2.3"
        );
        assert_eq!(
            image.annotations["org.opencontainers.image.authors"],
            "A <a@example.com>, B"
        );
    }
}

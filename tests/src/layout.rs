//! Hand-made OCI image layouts, for images that `kwasi image build` refuses to make (an
//! artifact with two layers, or with a layer that is not wasm).

use std::path::Path;

use anyhow::Result;
use serde_json::json;
use sha2::{Digest, Sha256};

/// A blob: its media type and bytes.
pub struct Part<'a> {
    /// The media type its descriptor gives.
    pub media_type: &'a str,
    /// Its content.
    pub bytes: Vec<u8>,
}

impl Part<'_> {
    /// `sha256:<hex>`.
    pub fn digest(&self) -> String {
        let hex: String = Sha256::digest(&self.bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("sha256:{hex}")
    }

    fn descriptor(&self) -> serde_json::Value {
        json!({"mediaType": self.media_type, "digest": self.digest(), "size": self.bytes.len()})
    }
}

/// Writes, as an OCI layout tar at `out`, an image named `name` whose manifest has `config`
/// and `layers`.
pub fn write(out: &Path, name: &str, config: Part, layers: Vec<Part>) -> Result<()> {
    let manifest = Part {
        media_type: "application/vnd.oci.image.manifest.v1+json",
        bytes: serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config.descriptor(),
            "layers": layers.iter().map(Part::descriptor).collect::<Vec<_>>(),
        }))?,
    };
    let mut top = manifest.descriptor();
    top["annotations"] = json!({"io.containerd.image.name": name});
    let index = json!({"schemaVersion": 2, "manifests": [top]});
    let mut tar = tar::Builder::new(std::fs::File::create(out)?);
    let mut add = |path: &str, bytes: &[u8]| -> Result<()> {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        tar.append_data(&mut header, path, bytes)?;
        Ok(())
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    for part in layers.iter().chain([&config, &manifest]) {
        let hex = part.digest().replace("sha256:", "");
        add(&format!("blobs/sha256/{hex}"), &part.bytes)?;
    }
    add("index.json", &serde_json::to_vec(&index)?)?;
    tar.finish()?;
    Ok(())
}

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

/// What goes into the one layer of a Linux image ([`write_linux_image`]).
#[derive(Debug, Clone, Copy)]
pub enum Entry<'a> {
    /// A file of this machine, copied to the path in the image with the mode.
    File(&'a Path, &'a str, u32),
    /// A symbolic link at the path, pointing at the target.
    Symlink(&'a str, &'a str),
}

/// Writes, as an OCI layout tar at `out`, a Linux image named `name` for this machine's
/// architecture: one tar layer of `entries`, `entrypoint` as its entrypoint, `PATH=/bin`.
/// For the native containers of the suites (pause, busybox).
pub fn write_linux_image(
    out: &Path,
    name: &str,
    entries: &[Entry],
    entrypoint: &[&str],
) -> Result<()> {
    let mut layer = tar::Builder::new(Vec::new());
    let mut dirs: Vec<String> = Vec::new();
    for entry in entries {
        let path = match entry {
            Entry::File(_, path, _) | Entry::Symlink(path, _) => path.trim_start_matches('/'),
        };
        if let Some((dir, _)) = path.rsplit_once('/') {
            if !dirs.iter().any(|d| d == dir) {
                let mut header = tar::Header::new_ustar();
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                layer.append_data(&mut header, format!("{dir}/"), std::io::empty())?;
                dirs.push(dir.to_string());
            }
        }
        let mut header = tar::Header::new_ustar();
        match entry {
            Entry::File(src, _, mode) => {
                let bytes = std::fs::read(src)?;
                header.set_mode(*mode);
                header.set_size(bytes.len() as u64);
                layer.append_data(&mut header, path, bytes.as_slice())?;
            }
            Entry::Symlink(_, target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                layer.append_link(&mut header, path, target)?;
            }
        }
    }
    let layer = Part {
        media_type: "application/vnd.oci.image.layer.v1.tar",
        bytes: layer.into_inner()?,
    };
    let architecture = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let config = Part {
        media_type: "application/vnd.oci.image.config.v1+json",
        bytes: serde_json::to_vec(&json!({
            "architecture": architecture,
            "os": "linux",
            "config": {"Entrypoint": entrypoint, "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [layer.digest()]},
        }))?,
    };
    write(out, name, config, vec![layer])
}

/// Debian's static busybox (package busybox-static).
pub const BUSYBOX: &str = "/bin/busybox";

/// Writes a busybox image (`/bin/busybox`, `/bin/sh` and a few applets linked to it, `/bin/sh`
/// as entrypoint) with `extra` entries.
pub fn write_busybox_image(out: &Path, name: &str, extra: &[Entry]) -> Result<()> {
    let mut entries = vec![Entry::File(Path::new(BUSYBOX), "/bin/busybox", 0o755)];
    for applet in ["/bin/sh", "/bin/sleep", "/bin/echo", "/bin/cat"] {
        entries.push(Entry::Symlink(applet, "busybox"));
    }
    entries.extend_from_slice(extra);
    write_linux_image(out, name, &entries, &["/bin/sh"])
}

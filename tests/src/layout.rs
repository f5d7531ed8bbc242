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

/// What goes into the one layer of a Linux image ([`LinuxImage`]). Everything is owned by
/// root.
#[derive(Debug, Clone, Copy)]
pub enum Entry<'a> {
    /// A file of this machine, copied to the path in the image with the mode.
    File(&'a Path, &'a str, u32),
    /// A file with this content at the path, with the mode.
    Data(&'a str, &'a [u8], u32),
    /// A directory at the path, with the mode.
    Dir(&'a str, u32),
    /// A symbolic link at the path, pointing at the target.
    Symlink(&'a str, &'a str),
    /// A hard link at the path to the file at the target (an earlier entry).
    Hardlink(&'a str, &'a str),
}

impl Entry<'_> {
    fn path(&self) -> &str {
        match self {
            Entry::File(_, path, _)
            | Entry::Data(path, _, _)
            | Entry::Dir(path, _)
            | Entry::Symlink(path, _)
            | Entry::Hardlink(path, _) => path.trim_start_matches('/'),
        }
    }
}

/// A Linux image for this machine's architecture with one tar layer: for the native
/// containers of the suites (pause, busybox, the web servers critest asks for).
#[derive(Debug, Clone, Default)]
pub struct LinuxImage<'a> {
    /// The image's name (`kwasi.test/busybox:1`).
    pub name: &'a str,
    /// What its layer holds (parent directories are added as needed).
    pub entries: Vec<Entry<'a>>,
    /// The config's `Entrypoint`.
    pub entrypoint: &'a [&'a str],
    /// The config's `Cmd`.
    pub cmd: &'a [&'a str],
    /// The config's `User`, when set.
    pub user: &'a str,
}

impl LinuxImage<'_> {
    /// Writes the image, as an OCI layout tar, at `out`.
    pub fn write(&self, out: &Path) -> Result<()> {
        let mut layer = tar::Builder::new(Vec::new());
        let mut dirs: Vec<String> = Vec::new();
        for entry in &self.entries {
            let path = entry.path();
            // Every parent first, once (list a `Dir` before what it holds to give it a mode).
            let parts: Vec<&str> = path.split('/').collect();
            let mut parent = String::new();
            for part in &parts[..parts.len() - 1] {
                if !parent.is_empty() {
                    parent.push('/');
                }
                parent.push_str(part);
                if !dirs.contains(&parent) {
                    append_dir(&mut layer, &parent, 0o755)?;
                    dirs.push(parent.clone());
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
                Entry::Data(_, bytes, mode) => {
                    header.set_mode(*mode);
                    header.set_size(bytes.len() as u64);
                    layer.append_data(&mut header, path, *bytes)?;
                }
                Entry::Dir(_, mode) => {
                    if !dirs.iter().any(|d| d == path) {
                        append_dir(&mut layer, path, *mode)?;
                        dirs.push(path.to_string());
                    }
                }
                Entry::Symlink(_, target) => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    header.set_size(0);
                    layer.append_link(&mut header, path, target)?;
                }
                Entry::Hardlink(_, target) => {
                    // Unpacking applies a link's mode to the file it shares: give the file's.
                    let target = target.trim_start_matches('/');
                    let mode = self.entries.iter().find_map(|e| match e {
                        Entry::File(_, p, mode) | Entry::Data(p, _, mode)
                            if p.trim_start_matches('/') == target =>
                        {
                            Some(*mode)
                        }
                        _ => None,
                    });
                    header.set_entry_type(tar::EntryType::Link);
                    header.set_mode(mode.unwrap_or(0o644));
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
        let mut config =
            json!({"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]});
        if !self.entrypoint.is_empty() {
            config["Entrypoint"] = json!(self.entrypoint);
        }
        if !self.cmd.is_empty() {
            config["Cmd"] = json!(self.cmd);
        }
        if !self.user.is_empty() {
            config["User"] = json!(self.user);
        }
        let config = Part {
            media_type: "application/vnd.oci.image.config.v1+json",
            bytes: serde_json::to_vec(&json!({
                "architecture": architecture,
                "os": "linux",
                "config": config,
                "rootfs": {"type": "layers", "diff_ids": [layer.digest()]},
            }))?,
        };
        write(out, self.name, config, vec![layer])
    }
}

/// Appends a directory entry (owned by root) to a layer.
fn append_dir(layer: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32) -> Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_mode(mode);
    header.set_size(0);
    layer.append_data(&mut header, format!("{path}/"), std::io::empty())?;
    Ok(())
}

/// Debian's static busybox (package busybox-static).
pub const BUSYBOX: &str = "/bin/busybox";

/// Writes a busybox image (`/bin/busybox`, `/bin/sh` and a few applets linked to it, `/bin/sh`
/// as entrypoint) with `extra` entries.
pub fn write_busybox_image(out: &Path, name: &str, extra: &[Entry]) -> Result<()> {
    let mut entries = vec![Entry::File(Path::new(BUSYBOX), "/bin/busybox", 0o755)];
    for applet in [
        "/bin/sh",
        "/bin/sleep",
        "/bin/echo",
        "/bin/cat",
        "/bin/stty",
        "/bin/test",
        "/bin/tty",
    ] {
        entries.push(Entry::Symlink(applet, "busybox"));
    }
    entries.extend_from_slice(extra);
    LinuxImage {
        name,
        entries,
        entrypoint: &["/bin/sh"],
        ..Default::default()
    }
    .write(out)
}

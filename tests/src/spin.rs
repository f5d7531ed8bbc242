//! Spin applications as `spin registry push` (Spin 3.x) lays them out in an OCI image, made by
//! hand for the Spin and Kubernetes suites: an image config with architecture `wasm` and os
//! `wasip1` naming the locked app's digest, one wasm layer per distinct component source, and
//! the locked app last.

use anyhow::Result;
use serde_json::{json, Value};

use crate::layout::{self, Part};
use crate::{guests_dir, Containerd};

/// A Spin component layer.
pub const WASM_LAYER: &str = "application/vnd.wasm.content.layer.v1+wasm";
/// A component file's layer.
pub const DATA_LAYER: &str = "application/vnd.wasm.content.layer.v1+data";
/// An archive layer: a gzipped tar of component files, found by their digests.
pub const ARCHIVE_LAYER: &str = "application/vnd.wasm.content.bundle.v1.tar+gzip";
/// The locked app's layer.
pub const LOCKED_APP: &str = "application/vnd.fermyon.spin.application.v1+config";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// The JavaScript echo component (`tests/guests/spin`, built with Spin's JS SDK tooling): it
/// answers with its path and the `spin-*` headers, one `name=value` per line.
pub fn echo_wasm() -> Vec<u8> {
    std::fs::read(guests_dir().join("spin/echo.wasm")).expect("tests/guests/spin/echo.wasm")
}

/// kwasi's C wasi:http guest: `hello from kwasi` for a GET.
pub fn hello_wasm() -> Vec<u8> {
    std::fs::read(guests_dir().join("http.wasm")).expect("tests/guests/http.wasm")
}

/// A data layer of file `bytes`.
pub fn data_layer(bytes: &[u8]) -> Part<'static> {
    Part {
        media_type: DATA_LAYER,
        bytes: bytes.to_vec(),
    }
}

/// An archive layer holding `files` (path, content), as `spin registry push` writes one for
/// a directory of files.
pub fn archive_layer(files: &[(&str, &[u8])]) -> Result<Part<'static>> {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, path, *bytes)?;
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &tar.into_inner()?)?;
    Ok(Part {
        media_type: ARCHIVE_LAYER,
        bytes: gz.finish()?,
    })
}

/// kwasi's C wasi:http guest with its `/files/` routes: `GET /files/P` answers the file `/P`
/// of its filesystem, `PUT /files/P` tries to write it (201, or 403).
pub fn files_wasm() -> Vec<u8> {
    std::fs::read(guests_dir().join("files.wasm")).expect("tests/guests/files.wasm")
}

/// A layer of component `bytes`.
pub fn wasm_layer(bytes: Vec<u8>) -> Part<'static> {
    Part {
        media_type: WASM_LAYER,
        bytes,
    }
}

/// The locked app `spin registry push` writes for three components with a wildcard route:
/// `front` (`/...`) and `exact` (`/exact`) share the wasm of digest `echo`, `api`
/// (`/api/...`) has `hello`'s.
pub fn three_components(echo: &str, hello: &str) -> Value {
    let component = |id: &str, digest: &str| json!({"id": id, "source": {"content_type": "application/wasm", "digest": digest}});
    let trigger = |id: &str, route: &str| {
        json!({"id": format!("{id}-http-trigger"), "trigger_type": "http",
               "trigger_config": {"component": id, "route": route}})
    };
    json!({
        "spin_lock_version": 0,
        "metadata": {"name": "three", "version": "0.1.0", "trigger": {"type": "http"},
                     "triggers": {}},
        "triggers": [trigger("front", "/..."), trigger("api", "/api/..."),
                     trigger("exact", "/exact")],
        "components": [component("front", echo), component("api", hello),
                       component("exact", echo)],
    })
}

/// Writes Spin's OCI layout of `locked` with `layers` and imports it into `c` as `name`
/// (without unpacking: it has no filesystem).
pub fn import(c: &Containerd, name: &str, layers: Vec<Part>, locked: &Value) -> Result<()> {
    let locked = Part {
        media_type: LOCKED_APP,
        bytes: serde_json::to_vec(locked)?,
    };
    let config = json!({
        "architecture": "wasm",
        "os": "wasip1",
        "config": {"Labels": {"com.fermyon.spin.lockedAppDigest": locked.digest()}},
        "rootfs": {"type": "layers", "diff_ids": []},
    });
    let config = Part {
        media_type: CONFIG,
        bytes: serde_json::to_vec(&config)?,
    };
    let mut layers = layers;
    layers.push(locked);
    let tar = c
        .dir()
        .join(format!("{}.tar", name.replace(['/', ':'], "_")));
    layout::write(&tar, name, config, layers)?;
    c.import_without_unpacking(&tar)
}

/// Imports the three-component app ([`three_components`]) as `name`.
pub fn import_three_components(c: &Containerd, name: &str) -> Result<()> {
    let (echo, hello) = (wasm_layer(echo_wasm()), wasm_layer(hello_wasm()));
    let locked = three_components(&echo.digest(), &hello.digest());
    import(c, name, vec![echo, hello], &locked)
}

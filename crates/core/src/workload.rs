//! From an OCI runtime spec (`config.json`) to the [`Workload`] an engine runs, and reading the
//! module it names.

use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

use crate::engine::{Preopen, WasmBytes, Workload, DEFAULT_ENTRY};
use crate::image::layers::WasmLayer;

/// The first four bytes of every WebAssembly binary.
const WASM_MAGIC: &[u8; 4] = b"\0asm";

/// The search path of a spec that sets no `PATH` (runc's and Docker's default).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Mount destinations that are kernel interfaces, not data: never offered to the guest.
const SYSTEM_MOUNTS: &[&str] = &["/proc", "/sys", "/dev"];

/// Why a spec or its entrypoint cannot be run as a wasm workload.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// `process.args[0]` names no module, and the image has no wasm layer.
    #[error(
        "the OCI spec's process.args names no module and the image has no wasm layer: give the \
         image an entrypoint or pass a command"
    )]
    NoArgs,
    /// The entrypoint is not in the container's filesystem.
    #[error("entrypoint {0}: no such file in the container")]
    NotFound(PathBuf),
    /// The entrypoint cannot be read.
    #[error("entrypoint {path}: {source}")]
    Unreadable {
        /// The entrypoint.
        path: PathBuf,
        /// Why it cannot be read.
        source: std::io::Error,
    },
    /// The entrypoint exists but is not a wasm binary.
    #[error("entrypoint {path} is not a WebAssembly module ({what})")]
    NotWasm {
        /// The entrypoint.
        path: PathBuf,
        /// What it looks like instead.
        what: &'static str,
    },
}

impl Workload {
    /// Reads the workload out of an OCI runtime spec.
    ///
    /// `process.args[0]` names the module; a `#name` suffix (`/app.wasm#serve`) selects the
    /// exported function `name` instead of `_start`. When the image ships the module as a wasm
    /// layer ([`Workload::use_layer`]), `args[0]` may be only `#name`, or missing. The guest
    /// sees its working directory as `.`, `/` (read-write unless `root.readonly`) and every
    /// bind mount of a directory under its destination, read-only when the mount has the
    /// `ro` option; its environment is exactly `process.env`.
    pub fn from_spec(spec: &Spec) -> Result<Workload, WorkloadError> {
        let process = spec.process().as_ref().ok_or(WorkloadError::NoArgs)?;
        let mut args = process.args().clone().unwrap_or_default();
        if args.is_empty() {
            args.push(String::new());
        }
        let (module, entry) = match args[0].rsplit_once('#') {
            Some((module, func)) if !func.is_empty() => (module.to_string(), func.to_string()),
            _ => (args[0].clone(), DEFAULT_ENTRY.to_string()),
        };
        args[0] = module.clone();
        let cwd = process.cwd().clone();
        let module_path = if module.is_empty() || Path::new(&module).is_absolute() {
            PathBuf::from(&module)
        } else {
            cwd.join(&module)
        };
        let env: Vec<(String, String)> = process
            .env()
            .iter()
            .flatten()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (kv.clone(), String::new()),
            })
            .collect();
        let root_read_only = spec
            .root()
            .as_ref()
            .and_then(|r| r.readonly())
            .unwrap_or(false);
        let mut preopens = vec![Preopen {
            host_path: PathBuf::from("/"),
            guest_path: "/".to_string(),
            read_only: root_read_only,
        }];
        for mount in spec.mounts().iter().flatten() {
            let dest = mount.destination();
            let Some(dest_str) = dest.to_str() else {
                continue;
            };
            let is_system = SYSTEM_MOUNTS
                .iter()
                .any(|s| dest_str == *s || dest_str.starts_with(&format!("{s}/")));
            if is_system || dest_str == "/" {
                continue;
            }
            let options = mount.options().clone().unwrap_or_default();
            preopens.push(Preopen {
                host_path: dest.clone(),
                guest_path: dest_str.to_string(),
                read_only: options.iter().any(|o| o == "ro"),
            });
        }
        // The working directory goes first, as `.`: wasi-libc (C, Rust's std) takes `.` and `/`
        // for the same prefix and lets the later preopen win, so absolute paths keep resolving
        // against `/`; a guest that opens relative paths through `.` finds them in `cwd`.
        let cwd_read_only = preopens
            .iter()
            .filter(|p| cwd.starts_with(&p.host_path))
            .max_by_key(|p| p.host_path.as_os_str().len())
            .is_some_and(|p| p.read_only);
        preopens.insert(
            0,
            Preopen {
                host_path: cwd.clone(),
                guest_path: ".".to_string(),
                read_only: cwd_read_only,
            },
        );
        Ok(Workload {
            module_path,
            entry,
            args,
            env,
            cwd,
            preopens,
        })
    }

    /// Only the preopens whose directory exists (mounts of single files, such as
    /// `/etc/resolv.conf`, are left to the `/` preopen).
    pub fn existing_preopens(&self) -> Vec<Preopen> {
        self.preopens
            .iter()
            .filter(|p| p.host_path.is_dir())
            .cloned()
            .collect()
    }

    /// Runs the module of an image's wasm layer instead of a file: `args[0]`, when the spec
    /// gave none, becomes the layer's title (or `app.wasm`), and the returned bytes are the
    /// layer's.
    pub fn use_layer(&mut self, layer: &WasmLayer) -> WasmBytes {
        self.name_after(layer);
        WasmBytes {
            origin: layer.origin(),
            bytes: layer.bytes.clone(),
            sha256: layer.sha256().map(str::to_string),
        }
    }

    /// `args[0]`, when the spec gave none, becomes the title of the layer the module comes
    /// from (or `app.wasm`).
    pub fn name_after(&mut self, layer: &WasmLayer) {
        if self.args[0].is_empty() {
            self.args[0] = layer
                .title
                .clone()
                .unwrap_or_else(|| "app.wasm".to_string());
        }
    }

    /// Reads the module named by the entrypoint and checks that it is WebAssembly.
    pub fn read_module(&self) -> Result<WasmBytes, WorkloadError> {
        let path = &self.module_path;
        if path.as_os_str().is_empty() {
            return Err(WorkloadError::NoArgs);
        }
        let bytes = std::fs::read(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => WorkloadError::NotFound(path.clone()),
            _ => WorkloadError::Unreadable {
                path: path.clone(),
                source,
            },
        })?;
        check_wasm_magic(path, &bytes)?;
        Ok(WasmBytes {
            origin: path.display().to_string(),
            bytes,
            sha256: None,
        })
    }
}

/// The value of variable `name` in a task's environment (`KEY=VALUE` pairs, split): the last
/// one, as a process's own lookup sees it.
pub fn env_var<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    env.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The program a spec's entrypoint names when it is an ordinary Linux program (an ELF
/// executable or a `#!` script) rather than a wasm binary: such a task runs as an ordinary
/// container (a pod's pause container, a sidecar). Called inside the container, once its
/// rootfs is in place; `None` for wasm, for a missing file and for anything else.
///
/// `process.args[0]` is looked up as `execvp` does: a name with a `/` against the working
/// directory, a bare name in the spec's `PATH`.
pub fn native_program(spec: &Spec) -> Option<PathBuf> {
    let process = spec.process().as_ref()?;
    let name = process.args().as_ref()?.first()?;
    let candidates: Vec<PathBuf> = if name.contains('/') {
        vec![process.cwd().join(name)]
    } else if name.is_empty() {
        Vec::new()
    } else {
        let path = process
            .env()
            .iter()
            .flatten()
            .find_map(|kv| kv.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH);
        path.split(':')
            .filter(|dir| !dir.is_empty())
            .map(|dir| process.cwd().join(dir).join(name))
            .collect()
    };
    candidates.into_iter().find(|path| is_native_program(path))
}

/// Whether `path` is a regular file starting like an ELF executable or a script.
fn is_native_program(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 4];
    let read = std::fs::File::open(path)
        .and_then(|mut f| {
            if f.metadata()?.is_file() {
                f.read(&mut head)
            } else {
                Ok(0)
            }
        })
        .unwrap_or(0);
    head[..read].starts_with(b"\x7fELF") || head[..read].starts_with(b"#!")
}

/// Tells a wasm binary from other files, naming what the file looks like when it is not one.
fn check_wasm_magic(path: &Path, bytes: &[u8]) -> Result<(), WorkloadError> {
    if bytes.starts_with(WASM_MAGIC) {
        return Ok(());
    }
    let what = if bytes.starts_with(b"\x7fELF") {
        "it is an ELF executable"
    } else if bytes.starts_with(b"#!") {
        "it is a script"
    } else if bytes.starts_with(b"(module") || bytes.starts_with(b"(component") {
        "it is WebAssembly text: compile it with wat2wasm"
    } else if bytes.is_empty() {
        "it is empty"
    } else if std::str::from_utf8(bytes).is_ok() {
        "it is a text file"
    } else {
        "no \\0asm header"
    };
    Err(WorkloadError::NotWasm {
        path: path.to_path_buf(),
        what,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{MountBuilder, ProcessBuilder, RootBuilder, SpecBuilder};

    fn spec(args: &[&str], cwd: &str) -> Spec {
        SpecBuilder::default()
            .process(
                ProcessBuilder::default()
                    .args(args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                    .env(vec!["A=1".to_string(), "B=x=y".to_string()])
                    .cwd(cwd)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap()
    }

    #[test]
    fn args0_names_the_module_and_start_is_the_default_entry() {
        let w = Workload::from_spec(&spec(&["/app.wasm", "x"], "/")).unwrap();
        assert_eq!(w.module_path, PathBuf::from("/app.wasm"));
        assert_eq!(w.entry, "_start");
        assert_eq!(w.args, vec!["/app.wasm", "x"]);
    }

    #[test]
    fn hash_suffix_selects_the_entry_function_and_is_stripped_from_args() {
        let w = Workload::from_spec(&spec(&["/app.wasm#greet"], "/")).unwrap();
        assert_eq!(w.entry, "greet");
        assert_eq!(w.args, vec!["/app.wasm"]);
    }

    #[test]
    fn relative_module_resolves_against_cwd() {
        let w = Workload::from_spec(&spec(&["app.wasm"], "/srv")).unwrap();
        assert_eq!(w.module_path, PathBuf::from("/srv/app.wasm"));
    }

    #[test]
    fn env_splits_at_the_first_equals_sign() {
        let w = Workload::from_spec(&spec(&["/a.wasm"], "/")).unwrap();
        assert_eq!(
            w.env[..2],
            [("A".into(), "1".into()), ("B".into(), "x=y".into())]
        );
    }

    #[test]
    fn the_environment_is_exactly_the_specs() {
        let w = Workload::from_spec(&spec(&["/a.wasm"], "/srv")).unwrap();
        let spec_env = spec(&["/a.wasm"], "/srv")
            .process()
            .clone()
            .unwrap()
            .env()
            .clone();
        let env: Vec<String> = w.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(Some(env), spec_env);
    }

    #[test]
    fn cwd_is_the_first_preopen_named_dot() {
        // (The spec's rootfs is read-only: oci-spec's default.)
        let w = Workload::from_spec(&spec(&["/a.wasm"], "/srv")).unwrap();
        assert_eq!(
            w.preopens[..2],
            [
                Preopen {
                    host_path: "/srv".into(),
                    guest_path: ".".into(),
                    read_only: true,
                },
                Preopen {
                    host_path: "/".into(),
                    guest_path: "/".into(),
                    read_only: true,
                },
            ]
        );
    }

    #[test]
    fn without_args_there_is_no_module_file_to_read() {
        let w = Workload::from_spec(&spec(&[], "/")).unwrap();
        assert!(matches!(w.read_module(), Err(WorkloadError::NoArgs)));
    }

    fn layer(title: Option<&str>) -> WasmLayer {
        WasmLayer {
            digest: format!("sha256:{}", "ab".repeat(32)),
            media_type: "application/wasm".into(),
            title: title.map(str::to_string),
            bytes: b"\0asm\x01\0\0\0".to_vec(),
        }
    }

    #[test]
    fn a_hash_alone_selects_the_entry_of_a_wasm_layer_named_by_its_title() {
        let mut w = Workload::from_spec(&spec(&["#serve", "x"], "/")).unwrap();
        let wasm = w.use_layer(&layer(Some("hello.wasm")));
        assert_eq!(w.entry, "serve");
        assert_eq!(w.args, vec!["hello.wasm", "x"]);
        assert_eq!(wasm.sha256_hex(), "ab".repeat(32));
        assert!(wasm.origin.starts_with("wasm layer sha256:abab"));
    }

    #[test]
    fn a_wasm_layer_without_args_runs_start_as_app_wasm() {
        let mut w = Workload::from_spec(&spec(&[], "/")).unwrap();
        w.use_layer(&layer(None));
        assert_eq!(
            (w.entry.as_str(), w.args.clone()),
            ("_start", vec!["app.wasm".to_string()])
        );
    }

    #[test]
    fn ro_mounts_become_read_only_preopens_and_system_mounts_are_hidden() {
        let s = spec_with_mounts("/");
        let w = Workload::from_spec(&s).unwrap();
        let view: Vec<_> = w
            .preopens
            .iter()
            .map(|p| (p.guest_path.as_str(), p.read_only))
            .collect();
        assert_eq!(
            view,
            vec![
                (".", true),
                ("/", true),
                ("/data", true),
                ("/scratch", false)
            ]
        );
    }

    #[test]
    fn the_working_directory_is_as_writable_as_the_mount_it_is_in() {
        let read_only = |cwd| {
            Workload::from_spec(&spec_with_mounts(cwd))
                .unwrap()
                .preopens[0]
                .read_only
        };
        assert!(read_only("/data/sub"));
        assert!(!read_only("/scratch"));
        assert!(read_only("/srv"));
    }

    /// A spec with a read-only rootfs, `/proc`, a read-only mount at `/data` and a read-write
    /// one at `/scratch`.
    fn spec_with_mounts(cwd: &str) -> Spec {
        let mut s = spec(&["/a.wasm"], cwd);
        s.set_root(Some(
            RootBuilder::default()
                .path("rootfs")
                .readonly(true)
                .build()
                .unwrap(),
        ));
        s.set_mounts(Some(vec![
            MountBuilder::default()
                .destination("/proc")
                .typ("proc")
                .build()
                .unwrap(),
            MountBuilder::default()
                .destination("/data")
                .typ("bind")
                .options(vec!["rbind".to_string(), "ro".to_string()])
                .build()
                .unwrap(),
            MountBuilder::default()
                .destination("/scratch")
                .typ("bind")
                .options(vec!["rbind".to_string(), "rw".to_string()])
                .build()
                .unwrap(),
        ]));
        s
    }

    #[test]
    fn a_text_file_is_not_wasm() {
        let err = check_wasm_magic(Path::new("/x"), b"hello\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "entrypoint /x is not a WebAssembly module (it is a text file)"
        );
    }

    fn native_spec(args: &[&str], cwd: &str, path: Option<&str>) -> Spec {
        let mut s = spec(args, cwd);
        if let Some(path) = path {
            let mut process = s.process().clone().unwrap();
            process.set_env(Some(vec![format!("PATH={path}")]));
            s.set_process(Some(process));
        }
        s
    }

    fn files(entries: &[(&str, &[u8])]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in entries {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }
        dir
    }

    #[test]
    fn an_elf_entrypoint_is_a_native_program() {
        let dir = files(&[("bin/app", b"\x7fELF\x02\x01")]);
        let root = dir.path().display().to_string();
        let s = native_spec(&[&format!("{root}/bin/app")], "/", None);
        assert_eq!(native_program(&s), Some(dir.path().join("bin/app")));
    }

    #[test]
    fn a_script_is_found_in_the_specs_path_like_execvp_does() {
        let dir = files(&[("sbin/run.sh", b"#!/bin/sh\necho hi\n")]);
        let path = format!("/nonexistent:{}/sbin", dir.path().display());
        let s = native_spec(&["run.sh", "x"], "/", Some(&path));
        assert_eq!(native_program(&s), Some(dir.path().join("sbin/run.sh")));
    }

    #[test]
    fn a_relative_name_with_a_slash_is_found_from_the_working_directory() {
        let dir = files(&[("srv/tool", b"\x7fELF")]);
        let cwd = dir.path().join("srv").display().to_string();
        let s = native_spec(&["./tool"], &cwd, None);
        assert!(native_program(&s).is_some());
    }

    #[test]
    fn wasm_text_and_missing_entrypoints_are_not_native() {
        let dir = files(&[("app.wasm", b"\0asm\x01\0\0\0"), ("notes", b"hello\n")]);
        let root = dir.path().display().to_string();
        for name in ["app.wasm", "notes", "missing"] {
            let s = native_spec(&[&format!("{root}/{name}")], "/", None);
            assert_eq!(native_program(&s), None, "{name}");
        }
        assert_eq!(native_program(&native_spec(&[], "/", None)), None);
    }

    #[test]
    fn wasm_magic_is_accepted() {
        assert!(check_wasm_magic(Path::new("/x"), b"\0asm\x01\0\0\0").is_ok());
    }
}

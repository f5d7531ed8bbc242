//! `kwasi install` and `kwasi uninstall`: put the shims in a directory of the node and register
//! them as containerd runtimes, or take both out again.
//!
//! Install copies `containerd-shim-<engine>-v1` (`containerd-shim-spin-v2` for Spin) from the directory of the `kwasi` binary, and
//! adds one runtime per engine (named after it: the RuntimeClass handler) with its
//! `runtime_type` and `runtime_path` to containerd's configuration, in the dialect the file
//! uses ([`config`]). Both steps are idempotent; the configuration is backed up before it is
//! changed, and `--dry-run` prints the change as a diff instead. Containerd reads its
//! configuration at start: restart it afterwards.
//!
//! containerd up to 1.6.20 and 1.7.0 (Debian 12 ships 1.6.20) ignores `runtime_path` on the
//! CRI path and looks the shim up by name on its `PATH` (containerd/containerd#8207), so
//! install also links each shim into a directory on that `PATH` (`/usr/local/bin`).

mod config;

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The engines kwasi has shims for.
pub const ENGINES: [&str; 4] = ["wasmtime", "wasmer", "wasmedge", "spin"];
/// Where the shims go by default.
pub const DEFAULT_BIN_DIR: &str = "/opt/kwasi/bin";
/// Where the shims are linked by default: a directory on containerd's `PATH`.
pub const DEFAULT_LINK_DIR: &str = "/usr/local/bin";
/// containerd's configuration.
pub const DEFAULT_CONFIG: &str = "/etc/containerd/config.toml";
/// Where k3s keeps the templates of its containerd configuration.
pub const K3S_DIR: &str = "/var/lib/rancher/k3s/agent/etc/containerd";
/// What a k3s template must start with to keep k3s' own configuration.
const K3S_BASE: &str = "{{ template \"base\" . }}\n";

/// What to install or uninstall, and where.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the shim binaries are taken from (the `kwasi` binary's directory).
    pub source_dir: PathBuf,
    /// Where they go.
    pub bin_dir: PathBuf,
    /// Where each is linked under its own name, for containerd versions that find shims on
    /// their `PATH` only; `None`: no links.
    pub link_dir: Option<PathBuf>,
    /// containerd's configuration file (or k3s' template of it).
    pub config: PathBuf,
    /// The engines to install; empty: every shim found in `source_dir` (for uninstall: all).
    pub engines: Vec<String>,
    /// Print what would change and change nothing.
    pub dry_run: bool,
}

/// The template k3s reads: `config-v3.toml.tmpl` when k3s runs containerd 2.x (it already
/// has that template, or its generated config is version 3), else `config.toml.tmpl`.
pub fn k3s_template(dir: &Path) -> PathBuf {
    let v3 = dir.join("config-v3.toml.tmpl");
    let generated = std::fs::read_to_string(dir.join("config.toml")).unwrap_or_default();
    if v3.exists() || generated.lines().any(|l| l.trim() == "version = 3") {
        v3
    } else {
        dir.join("config.toml.tmpl")
    }
}

/// The version in a shim's name and runtime type: `v2` for the spin shim, which takes the
/// name SpinKube's RuntimeClass expects (`io.containerd.spin.v2`), `v1` for the others.
fn api_version(engine: &str) -> &'static str {
    if engine == "spin" {
        "v2"
    } else {
        "v1"
    }
}

fn shim_name(engine: &str) -> String {
    format!("containerd-shim-{engine}-{}", api_version(engine))
}

/// Copies the shims and registers them; reports each step on `out`.
pub fn install(options: &Options, out: &mut impl Write) -> Result<()> {
    let engines: Vec<String> = if options.engines.is_empty() {
        ENGINES
            .iter()
            .filter(|e| options.source_dir.join(shim_name(e)).is_file())
            .map(|e| e.to_string())
            .collect()
    } else {
        options.engines.clone()
    };
    if engines.is_empty() {
        bail!(
            "no containerd-shim-<engine>-v1 in {}: build the shims (cargo build --release) first",
            options.source_dir.display()
        );
    }
    for engine in &engines {
        let source = options.source_dir.join(shim_name(engine));
        let dest = options.bin_dir.join(shim_name(engine));
        copy_shim(&source, &dest, options.dry_run, out)?;
        if let Some(link_dir) = &options.link_dir {
            link_shim(
                &dest,
                &link_dir.join(shim_name(engine)),
                options.dry_run,
                out,
            )?;
        }
    }
    let runtimes: Vec<config::Runtime> = engines
        .iter()
        .map(|engine| config::Runtime {
            engine: engine.clone(),
            shim_path: options
                .bin_dir
                .join(shim_name(engine))
                .display()
                .to_string(),
        })
        .collect();
    let before = read_config(&options.config)?;
    let base = if before.is_empty() && is_template(&options.config) {
        K3S_BASE
    } else {
        before.as_str()
    };
    let after = config::add_runtimes(base, &options.config, &runtimes)?;
    write_config(options, &before, &after, out)
}

/// Removes what [`install`] added: the runtimes from the configuration, the shims from the
/// directory (and the directory, once empty).
pub fn uninstall(options: &Options, out: &mut impl Write) -> Result<()> {
    let engines: Vec<String> = if options.engines.is_empty() {
        ENGINES.iter().map(|e| e.to_string()).collect()
    } else {
        options.engines.clone()
    };
    if options.config.exists() {
        let before = read_config(&options.config)?;
        let after = config::remove_runtimes(&before, &options.config, &engines)?;
        write_config(options, &before, &after, out)?;
    }
    for engine in &engines {
        let shim = options.bin_dir.join(shim_name(engine));
        if let Some(link_dir) = &options.link_dir {
            unlink_shim(
                &shim,
                &link_dir.join(shim_name(engine)),
                options.dry_run,
                out,
            )?;
        }
        if !shim.exists() {
            continue;
        }
        if options.dry_run {
            writeln!(out, "would remove {}", shim.display())?;
        } else {
            std::fs::remove_file(&shim).with_context(|| format!("removing {}", shim.display()))?;
            writeln!(out, "removed {}", shim.display())?;
        }
    }
    if !options.dry_run {
        // Only succeeds when nothing else is in it.
        let _ = std::fs::remove_dir(&options.bin_dir);
    }
    Ok(())
}

fn is_template(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "tmpl")
}

fn read_config(path: &Path) -> Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
    }
}

/// Installs `source` as `dest` (through a temporary file and a rename, so that a shim that is
/// running keeps its binary), unless `dest` already has the same bytes.
fn copy_shim(source: &Path, dest: &Path, dry_run: bool, out: &mut impl Write) -> Result<()> {
    let bytes = std::fs::read(source).with_context(|| format!("reading {}", source.display()))?;
    if std::fs::read(dest).is_ok_and(|existing| existing == bytes) {
        writeln!(out, "{}: unchanged", dest.display())?;
        return Ok(());
    }
    if dry_run {
        writeln!(out, "would copy {} to {}", source.display(), dest.display())?;
        return Ok(());
    }
    let dir = dest
        .parent()
        .context("the shim's destination has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_replacing(dest, &bytes, 0o755)?;
    writeln!(out, "copied {} to {}", source.display(), dest.display())?;
    Ok(())
}

/// Links `link` to the installed shim `shim`. Anything else already at `link` is left alone
/// (with a note: an older containerd would run it instead of ours).
fn link_shim(shim: &Path, link: &Path, dry_run: bool, out: &mut impl Write) -> Result<()> {
    if link == shim {
        return Ok(());
    }
    match std::fs::read_link(link) {
        Ok(target) if target == shim => {
            writeln!(out, "{}: unchanged", link.display())?;
            return Ok(());
        }
        _ if link.symlink_metadata().is_ok() => {
            writeln!(
                out,
                "left {} alone (not ours): containerd before 1.6.21 / 1.7.1 runs the shim it \
                 finds on its PATH, not {}",
                link.display(),
                shim.display()
            )?;
            return Ok(());
        }
        _ => {}
    }
    if dry_run {
        writeln!(out, "would link {} to {}", link.display(), shim.display())?;
        return Ok(());
    }
    if let Some(dir) = link.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::os::unix::fs::symlink(shim, link)
        .with_context(|| format!("linking {} to {}", link.display(), shim.display()))?;
    writeln!(out, "linked {} to {}", link.display(), shim.display())?;
    Ok(())
}

/// Removes `link` if it is our link to `shim`.
fn unlink_shim(shim: &Path, link: &Path, dry_run: bool, out: &mut impl Write) -> Result<()> {
    if !std::fs::read_link(link).is_ok_and(|target| target == shim) {
        return Ok(());
    }
    if dry_run {
        writeln!(out, "would remove {}", link.display())?;
    } else {
        std::fs::remove_file(link).with_context(|| format!("removing {}", link.display()))?;
        writeln!(out, "removed {}", link.display())?;
    }
    Ok(())
}

/// Writes the configuration if it changed: a diff when dry-running, else a backup of the old
/// one next to it, then the new one.
fn write_config(options: &Options, before: &str, after: &str, out: &mut impl Write) -> Result<()> {
    let path = &options.config;
    if before == after {
        writeln!(out, "{}: unchanged", path.display())?;
        return Ok(());
    }
    if options.dry_run {
        let old = format!("{} (now)", path.display());
        let new = format!("{} (after)", path.display());
        let diff = similar::TextDiff::from_lines(before, after);
        write!(out, "{}", diff.unified_diff().header(&old, &new))?;
        return Ok(());
    }
    let mode = match std::fs::metadata(path) {
        Ok(meta) => {
            let backup = PathBuf::from(format!("{}.kwasi.bak", path.display()));
            std::fs::copy(path, &backup).with_context(|| {
                format!("backing up {} to {}", path.display(), backup.display())
            })?;
            writeln!(out, "backed up {} to {}", path.display(), backup.display())?;
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777
        }
        Err(_) => 0o644,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    write_replacing(path, after.as_bytes(), mode)?;
    writeln!(
        out,
        "updated {}: restart containerd (or k3s) to load it",
        path.display()
    )?;
    Ok(())
}

/// Replaces `path` with `bytes` atomically: a temporary file in the same directory, synced,
/// then renamed over it.
fn write_replacing(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let tmp = PathBuf::from(format!(
        "{}.kwasi-tmp-{}",
        path.display(),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node in a temp dir: a source dir with fake shims, and containerd's config.
    struct Node {
        dir: tempfile::TempDir,
    }

    impl Node {
        fn new(config: &str) -> Node {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("build")).unwrap();
            for engine in ["wasmtime", "wasmer"] {
                let shim = dir.path().join("build").join(shim_name(engine));
                std::fs::write(shim, format!("#!/bin/sh\n# {engine}\n")).unwrap();
            }
            std::fs::write(dir.path().join("config.toml"), config).unwrap();
            Node { dir }
        }

        fn options(&self, dry_run: bool) -> Options {
            Options {
                source_dir: self.dir.path().join("build"),
                bin_dir: self.dir.path().join("opt/kwasi/bin"),
                link_dir: Some(self.dir.path().join("usr/local/bin")),
                config: self.dir.path().join("config.toml"),
                engines: vec![],
                dry_run,
            }
        }

        fn config(&self) -> String {
            std::fs::read_to_string(self.dir.path().join("config.toml")).unwrap()
        }

        fn run(&self, step: fn(&Options, &mut Vec<u8>) -> Result<()>, dry_run: bool) -> String {
            let mut out = Vec::new();
            step(&self.options(dry_run), &mut out).unwrap();
            String::from_utf8(out).unwrap()
        }
    }

    const CONFIG: &str = "version = 2\n\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  \
                          default_runtime_name = \"runc\"\n";

    #[test]
    fn install_copies_the_shims_it_finds_and_registers_them() {
        let node = Node::new(CONFIG);
        node.run(install, false);
        let bin = node.dir.path().join("opt/kwasi/bin");
        for engine in ["wasmtime", "wasmer"] {
            let shim = bin.join(shim_name(engine));
            let mode =
                std::os::unix::fs::PermissionsExt::mode(&shim.metadata().unwrap().permissions());
            assert_eq!(mode & 0o777, 0o755);
            let runtime_path = format!("runtime_path = \"{}\"", shim.display());
            assert!(node.config().contains(&runtime_path), "{}", node.config());
        }
        assert!(!bin.join(shim_name("wasmedge")).exists());
    }

    #[test]
    fn install_keeps_a_backup_of_the_config_it_changes() {
        let node = Node::new(CONFIG);
        let report = node.run(install, false);
        let backup = node.dir.path().join("config.toml.kwasi.bak");
        assert_eq!(std::fs::read_to_string(backup).unwrap(), CONFIG);
        assert!(report.contains("backed up"), "{report}");
    }

    #[test]
    fn a_second_install_changes_nothing() {
        let node = Node::new(CONFIG);
        node.run(install, false);
        let config = node.config();
        let report = node.run(install, false);
        assert_eq!(node.config(), config);
        assert_eq!(report.matches(": unchanged").count(), 5, "{report}");
    }

    #[test]
    fn a_dry_run_prints_the_diff_and_changes_nothing() {
        let node = Node::new(CONFIG);
        let report = node.run(install, true);
        assert!(
            report
                .contains("+[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmtime]"),
            "{report}"
        );
        assert!(report.contains("would copy"), "{report}");
        assert_eq!(node.config(), CONFIG);
        assert!(!node.dir.path().join("opt").exists());
        assert!(!node.dir.path().join("config.toml.kwasi.bak").exists());
    }

    #[test]
    fn uninstall_undoes_install() {
        let node = Node::new(CONFIG);
        node.run(install, false);
        node.run(uninstall, false);
        assert_eq!(node.config(), CONFIG);
        assert!(!node.dir.path().join("opt/kwasi/bin").exists());
        let links = node.dir.path().join("usr/local/bin");
        assert_eq!(std::fs::read_dir(links).unwrap().count(), 0);
    }

    #[test]
    fn install_links_each_shim_where_containerd_looks_it_up_by_name() {
        let node = Node::new(CONFIG);
        node.run(install, false);
        for engine in ["wasmtime", "wasmer"] {
            let link = node
                .dir
                .path()
                .join("usr/local/bin")
                .join(shim_name(engine));
            let target = node
                .dir
                .path()
                .join("opt/kwasi/bin")
                .join(shim_name(engine));
            assert_eq!(std::fs::read_link(link).unwrap(), target);
        }
    }

    #[test]
    fn a_shim_of_someone_else_on_the_path_is_left_alone_and_reported() {
        let node = Node::new(CONFIG);
        let theirs = node
            .dir
            .path()
            .join("usr/local/bin")
            .join(shim_name("wasmtime"));
        std::fs::create_dir_all(theirs.parent().unwrap()).unwrap();
        std::fs::write(&theirs, "#!/bin/sh\n# theirs\n").unwrap();
        let report = node.run(install, false);
        assert!(report.contains("(not ours)"), "{report}");
        node.run(uninstall, false);
        assert_eq!(
            std::fs::read_to_string(&theirs).unwrap(),
            "#!/bin/sh\n# theirs\n"
        );
    }

    #[test]
    fn install_without_shims_says_to_build_them() {
        let node = Node::new(CONFIG);
        let mut options = node.options(false);
        options.source_dir = node.dir.path().join("nothing-here");
        let err = install(&options, &mut Vec::new()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("no containerd-shim-<engine>-v1 in "),
            "{err}"
        );
    }

    #[test]
    fn a_new_k3s_template_starts_with_k3s_base() {
        let node = Node::new(CONFIG);
        let mut options = node.options(false);
        options.config = node.dir.path().join("k3s/config.toml.tmpl");
        install(&options, &mut Vec::new()).unwrap();
        let written = std::fs::read_to_string(&options.config).unwrap();
        assert!(written.starts_with(K3S_BASE), "{written}");
        assert!(written.contains("runtimes.wasmtime]"), "{written}");
    }

    #[test]
    fn k3s_on_containerd_2_uses_the_v3_template() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            k3s_template(dir.path()),
            dir.path().join("config.toml.tmpl")
        );
        std::fs::write(dir.path().join("config.toml"), "version = 3\n").unwrap();
        assert_eq!(
            k3s_template(dir.path()),
            dir.path().join("config-v3.toml.tmpl")
        );
    }
}

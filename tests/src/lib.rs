//! The end-to-end harness: a private containerd (its own root, state and sockets in a temp
//! dir, the freshly built shims first on its PATH), Debian's containerd 1.6 or a containerd
//! 2.x built by `tests/node/build.sh` ([`Release`]), driven with its own `ctr`.
//!
//! Nothing here touches a system-wide containerd. Dropping a [`Containerd`] stops it, ends any
//! shim it left, unmounts whatever is still mounted below its directory and removes it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How long a served component may take to listen: a liveness bound, not a speed figure. It
/// covers a cold compile of the largest guests (a 21 MB Python interpreter, a 12 MB
/// JavaScript engine) on a busy 2-core machine, where it has taken over 30 s.
pub const LISTEN_BOUND: Duration = Duration::from_secs(180);

pub mod api;
pub mod cri;
pub mod critest;
pub mod http;
pub mod kube;
pub mod layout;
pub mod leftovers;
pub mod node;
pub mod redis;
pub mod spin;
pub mod wasi_testsuite;

/// The containerd namespace every test uses.
pub const NAMESPACE: &str = "kwasi-e2e";
/// The prefix of every temp dir the harness makes (the leftover check looks for it).
pub const TMP_PREFIX: &str = "kwasi-e2e-";
/// containerd's runtime name for runc (the baseline).
pub const RUNC: &str = "io.containerd.runc.v2";

/// A containerd release the suites run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Debian 12's containerd 1.6.20 and its `ctr` (package `containerd`, on PATH).
    V1_6,
    /// containerd 2.x with its `ctr`, runc and runc shim, built by `tests/node/build.sh`.
    V2,
}

impl Release {
    /// Both, oldest first.
    pub const ALL: [Release; 2] = [Release::V1_6, Release::V2];

    /// Where this release's binaries are, when not on PATH.
    fn bin_dir(self) -> Result<Option<PathBuf>> {
        match self {
            Release::V1_6 => Ok(None),
            Release::V2 => node::bin_dir().map(Some),
        }
    }

    /// The `containerd` binary.
    pub fn containerd(self) -> Result<PathBuf> {
        self.binary("containerd")
    }

    /// Its `ctr`.
    pub fn ctr(self) -> Result<PathBuf> {
        self.binary("ctr")
    }

    fn binary(self, name: &str) -> Result<PathBuf> {
        Ok(match self.bin_dir()? {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
        })
    }

    /// The configuration format it reads (`version = N`): 2 for containerd 1.x, 4 for 2.3 and
    /// later (what `containerd config default` writes; 2.0 to 2.2 wrote 3, which 2.3+
    /// migrates at every start).
    pub fn config_version(self) -> u32 {
        match self {
            Release::V1_6 => 2,
            Release::V2 => 4,
        }
    }

    /// The plugins that make up its CRI support.
    fn cri_plugins(self) -> &'static [&'static str] {
        match self {
            Release::V1_6 => &["io.containerd.grpc.v1.cri"],
            Release::V2 => &[
                "io.containerd.grpc.v1.cri",
                "io.containerd.cri.v1.runtime",
                "io.containerd.cri.v1.images",
                "io.containerd.podsandbox.controller.v1.podsandbox",
            ],
        }
    }

    /// Plugins a private containerd of this release must not load: they would use paths
    /// shared with the machine's own containerd (2.x's NRI socket in /var/run/nri).
    fn shared_plugins(self) -> &'static [&'static str] {
        match self {
            Release::V1_6 => &[],
            Release::V2 => &["io.containerd.nri.v1.nri"],
        }
    }
}

/// A kwasi shim under test, and the containerd release that drives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shim {
    /// The engine's name (`wasmtime`), as the shim prefixes its messages.
    pub engine: &'static str,
    /// containerd's runtime name (`io.containerd.wasmtime.v1`).
    pub runtime: &'static str,
    /// The containerd release it runs under.
    pub containerd: Release,
}

impl Shim {
    /// `containerd-shim-wasmtime-v1`.
    pub const WASMTIME: Shim = Shim {
        engine: "wasmtime",
        runtime: "io.containerd.wasmtime.v1",
        containerd: Release::V1_6,
    };
    /// `containerd-shim-wasmer-v1`.
    pub const WASMER: Shim = Shim {
        engine: "wasmer",
        runtime: "io.containerd.wasmer.v1",
        containerd: Release::V1_6,
    };
    /// `containerd-shim-wasmedge-v1` (built with `--features wasmedge` only).
    pub const WASMEDGE: Shim = Shim {
        engine: "wasmedge",
        runtime: "io.containerd.wasmedge.v1",
        containerd: Release::V1_6,
    };
    /// `containerd-shim-spin-v2`: Spin applications (`tests/tests/spin.rs`), under containerd
    /// 2.x as SpinKube users run it. It runs plain modules with the wasmtime engine, so the
    /// suites that run every engine leave it out.
    pub const SPIN: Shim = Shim {
        engine: "spin",
        runtime: "io.containerd.spin.v2",
        containerd: Release::V2,
    };
    /// Every shim kwasi has for one engine.
    pub const ALL: [Shim; 3] = [Shim::WASMTIME, Shim::WASMER, Shim::WASMEDGE];

    /// This shim under containerd `release`.
    pub const fn on(self, release: Release) -> Shim {
        Shim {
            containerd: release,
            ..self
        }
    }

    /// A private containerd of this shim's release, the CRI plugin off
    /// ([`Containerd::start`]).
    pub fn containerd(&self) -> Result<Containerd> {
        Containerd::start(self.containerd)
    }

    /// A private containerd of this shim's release, like [`Shim::containerd`], whose shims
    /// keep compiled modules in [`shared_cache_dir`] rather than a cache of its own.
    pub fn containerd_with_shared_cache(&self) -> Result<Containerd> {
        Containerd::start_caching_in(self.containerd, Some(shared_cache_dir()?))
    }

    /// The shim's binary in [`bin_dir`].
    pub fn binary(&self) -> PathBuf {
        let version = self.runtime.rsplit('.').next().unwrap_or("v1");
        bin_dir().join(format!("containerd-shim-{}-{version}", self.engine))
    }

    /// The shims whose binary is built.
    pub fn built_ones() -> Vec<Shim> {
        Shim::ALL
            .into_iter()
            .filter(|s| s.binary().exists())
            .collect()
    }

    /// This shim, once its binary is known to be built (a test of a shim that is not built
    /// fails: it is never skipped).
    pub fn built(&self) -> &Self {
        assert!(
            self.binary().exists(),
            "{} is missing: build it first ({BUILD})",
            self.binary().display()
        );
        self
    }

    /// Why this shim's engine behaves differently in `case`, if it does (see [`DIFFERENCES`]).
    pub fn difference(&self, case: &str) -> Option<&'static str> {
        DIFFERENCES
            .iter()
            .find(|d| d.engine == self.engine && d.case == case)
            .map(|d| d.reason)
    }
}

/// A behaviour an engine truly cannot have, the case of the conformance suite that checks
/// what it does instead, and why. The README's table of per-engine differences lists these.
#[derive(Debug, Clone, Copy)]
pub struct Difference {
    /// The engine (`wasmedge`).
    pub engine: &'static str,
    /// A short name of the behaviour, which the conformance case asks about.
    pub case: &'static str,
    /// What the engine does instead, and why.
    pub reason: &'static str,
}

/// Every expected difference between engines. (WasmEdge, which used to differ in the compile
/// cache, now caches through its AOT compiler; the suite expects a libwasmedge that has it,
/// as WasmEdge's release builds do.)
pub const DIFFERENCES: &[Difference] = &[
    Difference {
        engine: "wasmer",
        case: "components",
        reason: "runs core modules only: a WASI preview 2 component fails create with a reason \
                 (wasmer has no component model)",
    },
    Difference {
        engine: "wasmedge",
        case: "components",
        reason: "runs core modules only: a WASI preview 2 component fails create with a reason \
                 (wasmedge-sdk has no WASI preview 2 host)",
    },
];

/// How the shims and the kwasi tool are built for the tests.
pub const BUILD: &str = "cargo build --profile quick";

/// Where the built binaries are: `$KWASI_BIN_DIR`, or the target directory of the profile
/// this test or benchmark binary was built in (`target/quick/deps/conformance-…` →
/// `target/quick`), so that tests run the shims built with them.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KWASI_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().unwrap_or(Path::new(".")).to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// The compile cache that a suite whose subject is not the cache shares among its
/// containerds, as a node keeps one for all its pods: each module or component is compiled
/// once per run of the suite rather than once per test. It lives beside the binaries
/// (`e2e-compile-cache` in [`bin_dir`]); the first call in a test process empties it, so that
/// every run starts cold whatever an earlier one stored.
pub fn shared_cache_dir() -> Result<PathBuf> {
    static EMPTIED: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let dir = bin_dir().join("e2e-compile-cache");
    let mut emptied = EMPTIED.lock().unwrap_or_else(|e| e.into_inner());
    if !*emptied {
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("emptying {}", dir.display()))
            }
            _ => {}
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        *emptied = true;
    }
    Ok(dir)
}

/// Those of `rows` (the beginnings of table rows, `| a | b |`) that no line of the README
/// starts with: for the tests that check that the README lists what the code lists.
pub fn missing_readme_rows(rows: impl IntoIterator<Item = String>) -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap_or_default();
    rows.into_iter()
        .filter(|row| !readme.lines().any(|line| line.starts_with(row.as_str())))
        .collect()
}

/// The test guests' directory (`tests/guests`).
pub fn guests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("guests")
}

/// A unique container id for a test.
pub fn unique_id(name: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static SEQ: AtomicU32 = AtomicU32::new(0);
    format!(
        "{name}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// What a `ctr` command did.
#[derive(Debug, Clone)]
pub struct CtrOutput {
    /// The exit status (the task's, for `ctr run`); -1 if ctr was killed by a signal.
    pub status: i32,
    /// Everything ctr printed on stdout (the task's stdout, for `ctr run`).
    pub stdout: String,
    /// Everything ctr printed on stderr.
    pub stderr: String,
}

impl From<Output> for CtrOutput {
    fn from(o: Output) -> CtrOutput {
        CtrOutput {
            status: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// A private containerd.
pub struct Containerd {
    dir: tempfile::TempDir,
    child: Option<Child>,
    release: Release,
    namespace: &'static str,
    /// containerd's PATH (where it finds the shims).
    path: String,
    /// The shims' compile cache (`KWASI_CACHE_DIR`).
    cache: PathBuf,
}

/// The settings every private containerd of `release` has: its root, state, sockets and
/// `/opt` in `dir`, and no plugin that would share a path with the machine's own containerd.
fn base_config(release: Release, dir: &Path, disabled: &[&str]) -> String {
    let disabled: Vec<String> = release
        .shared_plugins()
        .iter()
        .chain(disabled)
        .map(|p| format!("{p:?}"))
        .collect();
    let sock = dir.join("containerd.sock").display().to_string();
    // Config version 4 (containerd 2.3+) reads the sockets from the server plugins' sections
    // only: a `[grpc]` table there is ignored, and containerd would serve on
    // /run/containerd/containerd.sock.
    let sockets = match release {
        Release::V1_6 => {
            format!("[grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n")
        }
        Release::V2 => format!(
            "[plugins.\"io.containerd.server.v1.grpc\"]\n  address = \"{sock}\"\n\
             [plugins.\"io.containerd.server.v1.ttrpc\"]\n  address = \"{sock}.ttrpc\"\n"
        ),
    };
    format!(
        r#"version = {version}
root = "{root}"
state = "{state}"
disabled_plugins = [{disabled}]
[debug]
  level = "info"
[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
{sockets}"#,
        version = release.config_version(),
        root = dir.join("root").display(),
        state = dir.join("state").display(),
        opt = dir.join("opt").display(),
        disabled = disabled.join(", "),
    )
}

/// A PATH for a containerd of `release`: `first`, then the release's own binaries (2.x's
/// runc and runc shim), then this process's PATH.
fn path_for(release: Release, first: &Path) -> Result<String> {
    let rest = std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    Ok(match release.bin_dir()? {
        Some(own) => format!("{}:{}:{rest}", first.display(), own.display()),
        None => format!("{}:{rest}", first.display()),
    })
}

impl Containerd {
    /// Starts a containerd of `release` with its root, state and sockets in a new temp dir,
    /// the CRI plugin off, and `bin_dir()` first on its PATH.
    pub fn start(release: Release) -> Result<Containerd> {
        Self::start_caching_in(release, None)
    }

    /// [`Containerd::start`], with the shims' compile cache in `cache` (`None`: one of its
    /// own in the temp dir).
    fn start_caching_in(release: Release, cache: Option<PathBuf>) -> Result<Containerd> {
        let dir = tempfile::Builder::new().prefix(TMP_PREFIX).tempdir()?;
        let config = base_config(release, dir.path(), release.cri_plugins());
        std::fs::write(dir.path().join("config.toml"), config)?;
        let path = path_for(release, &bin_dir().canonicalize()?)?;
        Self::launch(release, dir, NAMESPACE, &path, cache)
    }

    /// Starts a containerd of `release` with its CRI plugin on, configured by `cri_config`
    /// (the plugin's sections, given the temp dir), and kwasi's shims installed by `kwasi
    /// install`: copied to `<dir>/kwasi-bin`, registered in the configuration, and linked into
    /// `<dir>/path`, which stands for `/usr/local/bin` as the first directory on containerd's
    /// PATH (containerd 1.6.20 finds a pod's shim there, not at its `runtime_path`). `ctr`
    /// then works in CRI's namespace, `k8s.io`.
    pub fn start_with_cri(
        release: Release,
        cri_config: impl FnOnce(&Path) -> String,
    ) -> Result<Containerd> {
        let dir = tempfile::Builder::new().prefix(TMP_PREFIX).tempdir()?;
        let config_path = dir.path().join("config.toml");
        let config = base_config(release, dir.path(), &[]) + &cri_config(dir.path());
        std::fs::write(&config_path, config)?;
        let out = Command::new(bin_dir().join("kwasi"))
            .arg("install")
            .arg("--bin-dir")
            .arg(dir.path().join("kwasi-bin"))
            .arg("--link-dir")
            .arg(dir.path().join("path"))
            .arg("--config")
            .arg(&config_path)
            .output()
            .context("running kwasi install")?;
        if !out.status.success() {
            bail!("kwasi install: {}", String::from_utf8_lossy(&out.stderr));
        }
        let path = path_for(release, &dir.path().join("path"))?;
        Self::launch(release, dir, cri::NAMESPACE, &path, None)
    }

    /// Runs containerd on `<dir>/config.toml` with `path` as its PATH and the shims' compile
    /// cache in `cache` (`None`: `<dir>/cache`), and waits until it answers.
    fn launch(
        release: Release,
        dir: tempfile::TempDir,
        namespace: &'static str,
        path: &str,
        cache: Option<PathBuf>,
    ) -> Result<Containerd> {
        let kwasi = bin_dir().join("kwasi");
        if !kwasi.exists() {
            bail!("{} is missing: build first ({BUILD})", kwasi.display());
        }
        let cache = cache.unwrap_or_else(|| dir.path().join("cache"));
        let mut containerd = Containerd {
            dir,
            child: None,
            release,
            namespace,
            path: path.to_string(),
            cache,
        };
        containerd.run_daemon()?;
        Ok(containerd)
    }

    /// Starts the containerd process and waits until it answers.
    fn run_daemon(&mut self) -> Result<()> {
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("containerd.log"))?;
        let child = Command::new(self.release.containerd()?)
            .arg("--config")
            .arg(d.join("config.toml"))
            .env("PATH", &self.path)
            .env("KWASI_CACHE_DIR", &self.cache)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting containerd ({:?})", self.release))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.socket().exists() && self.ctr(&["version"]).status == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("containerd did not come up:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the containerd process (SIGTERM, as a service manager does) and starts it
    /// again; its shims and tasks live on.
    pub fn restart(&mut self) -> Result<()> {
        self.stop_daemon();
        self.run_daemon()
    }

    /// Stops the containerd process: SIGTERM, then SIGKILL after 10 s.
    fn stop_daemon(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The release this containerd is.
    pub fn release(&self) -> Release {
        self.release
    }

    /// containerd's gRPC socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    /// The compile cache the shims of this containerd use (`KWASI_CACHE_DIR`).
    pub fn cache_dir(&self) -> PathBuf {
        self.cache.clone()
    }

    /// Every entry in the compile cache, with its inode number.
    pub fn cache_entries(&self) -> Vec<(PathBuf, u64)> {
        use std::os::unix::fs::MetadataExt;
        let mut out = Vec::new();
        for engine in std::fs::read_dir(self.cache_dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            for fp in std::fs::read_dir(engine.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                for e in std::fs::read_dir(fp.path()).into_iter().flatten().flatten() {
                    if let Ok(md) = e.metadata() {
                        out.push((e.path(), md.ino()));
                    }
                }
            }
        }
        out.sort();
        out
    }

    /// containerd's own log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// The containerd process's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its directory (config, root, state, socket, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A `ctr` command against this containerd, in its namespace.
    pub fn ctr_command(&self, args: &[&str]) -> Command {
        let ctr = self.release.ctr().unwrap_or_else(|_| PathBuf::from("ctr"));
        let mut cmd = Command::new(ctr);
        // containerd 2.x's ctr prints the server's deprecations (cgroup v1) at every command.
        cmd.env("CONTAINERD_SUPPRESS_DEPRECATION_WARNINGS", "1")
            .arg("--address")
            .arg(self.socket())
            .arg("--namespace")
            .arg(self.namespace)
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `ctr ARGS` and collects what it did.
    pub fn ctr(&self, args: &[&str]) -> CtrOutput {
        match self.ctr_command(args).output() {
            Ok(out) => out.into(),
            Err(err) => CtrOutput {
                status: -1,
                stdout: String::new(),
                stderr: format!("running ctr: {err}"),
            },
        }
    }

    /// Packs `module` into an image with `kwasi image build EXTRA... module` and imports it.
    pub fn import_wasm(&self, name: &str, module: &Path, extra: &[&str]) -> Result<String> {
        let (tar, reference) = self.build_image(name, module, extra)?;
        self.import_archive(&tar)?;
        Ok(reference)
    }

    /// Builds an image of `module` with `kwasi image build EXTRA...` (a layer type, or
    /// `--artifact`) and imports it with [`Containerd::import_layered`], for
    /// [`Containerd::run_layered`]. Returns the image's reference.
    pub fn import_wasm_layered(&self, name: &str, module: &Path, extra: &[&str]) -> Result<String> {
        let (tar, reference) = self.build_image(name, module, extra)?;
        self.import_layered(&tar)?;
        Ok(reference)
    }

    /// Imports an image that has wasm layers, or a CNCF wasm artifact: containerd 2.x unpacks
    /// its tar layers and skips the others; Debian's 1.6.20 cannot unpack such an image, so
    /// there it is imported without unpacking, for [`Containerd::run_layered`].
    pub fn import_layered(&self, tar: &Path) -> Result<()> {
        match self.release {
            Release::V1_6 => self.import_without_unpacking(tar),
            Release::V2 => {
                let path = tar.display().to_string();
                let out = self.ctr(&["images", "import", "--all-platforms", &path]);
                if out.status != 0 {
                    bail!("ctr images import --all-platforms {path}: {}", out.stderr);
                }
                Ok(())
            }
        }
    }

    /// Builds an image of `module` with `kwasi image build EXTRA...` and imports it without
    /// unpacking, for [`Containerd::run_via_api`]: CNCF wasm artifacts, which `ctr run` cannot
    /// run on any release. Returns the image's reference.
    pub fn import_wasm_for_api(&self, name: &str, module: &Path, extra: &[&str]) -> Result<String> {
        let (tar, reference) = self.build_image(name, module, extra)?;
        self.import_without_unpacking(&tar)?;
        Ok(reference)
    }

    /// `ctr images import` of an OCI archive.
    pub fn import_archive(&self, tar: &Path) -> Result<()> {
        let tar = tar.display().to_string();
        let out = self.ctr(&["images", "import", &tar]);
        if out.status != 0 {
            bail!("ctr images import {tar}: {}", out.stderr);
        }
        Ok(())
    }

    /// `ctr images import --all-platforms --no-unpack`: for images containerd 1.6 cannot
    /// unpack, such as CNCF wasm artifacts.
    pub fn import_without_unpacking(&self, tar: &Path) -> Result<()> {
        let tar = tar.display().to_string();
        let out = self.ctr(&["images", "import", "--all-platforms", "--no-unpack", &tar]);
        if out.status != 0 {
            bail!("ctr images import --no-unpack {tar}: {}", out.stderr);
        }
        Ok(())
    }

    /// Builds an image archive of `module` with `kwasi image build EXTRA...` as `name`, in
    /// this containerd's directory; returns the archive and the image's reference.
    pub fn build_image(
        &self,
        name: &str,
        module: &Path,
        extra: &[&str],
    ) -> Result<(PathBuf, String)> {
        let tar = self
            .dir
            .path()
            .join(format!("{}.tar", name.replace(['/', ':'], "_")));
        let out = Command::new(bin_dir().join("kwasi"))
            .args(["image", "build", "--tag", name, "--output"])
            .arg(&tar)
            .args(extra)
            .arg(module)
            .output()?;
        if !out.status.success() {
            bail!(
                "kwasi image build: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let reference = String::from_utf8_lossy(&out.stdout)
            .split(" -> ")
            .next()
            .unwrap_or(name)
            .trim()
            .to_string();
        Ok((tar, reference))
    }

    /// Runs an image imported by [`Containerd::import_layered`] with `args` and waits for it to
    /// end: `ctr run --rm` on containerd 2.x; on 1.6.20, whose `ctr run` cannot run an image it
    /// did not unpack, through containerd's API as a CRI client would ([`api::ApiRun`]).
    /// A task that fails to be created gives a non-zero status and containerd's error on
    /// stderr either way.
    pub fn run_layered(&self, runtime: &str, image: &str, id: &str, args: &[&str]) -> CtrOutput {
        match self.release {
            Release::V2 => self.run(runtime, &[], image, id, args),
            Release::V1_6 => self.run_via_api(runtime, image, id, args),
        }
    }

    /// Runs `image` through containerd's API as a CRI client would ([`api::ApiRun`]).
    pub fn run_via_api(&self, runtime: &str, image: &str, id: &str, args: &[&str]) -> CtrOutput {
        let env = [api::ApiRun::DEFAULT_ENV.to_string()];
        self.run_via_api_with_env(runtime, image, id, args, &env)
    }

    /// [`Containerd::run_via_api`], with exactly `env` as the process's environment.
    pub fn run_via_api_with_env(
        &self,
        runtime: &str,
        image: &str,
        id: &str,
        args: &[&str],
        env: &[String],
    ) -> CtrOutput {
        api::ApiRun {
            socket: &self.socket(),
            dir: self.dir.path(),
            runtime,
            image,
            id,
            args,
            env,
        }
        .run()
        .unwrap_or_else(|e| panic!("running {id} through containerd's API: {e:#}"))
    }

    /// Compiles `wat` and imports it as image `name`.
    pub fn import_wat(&self, name: &str, wat: &str) -> Result<String> {
        let wasm = wat::parse_str(wat).context("compiling the WAT guest")?;
        let path = self
            .dir
            .path()
            .join(format!("{}.wasm", name.replace(['/', ':'], "_")));
        std::fs::write(&path, wasm)?;
        self.import_wasm(name, &path, &[])
    }

    /// `ctr run --rm --runtime RUNTIME FLAGS... IMAGE ID ARGS...`, waiting for it to end.
    pub fn run(
        &self,
        runtime: &str,
        flags: &[&str],
        image: &str,
        id: &str,
        args: &[&str],
    ) -> CtrOutput {
        self.ctr(&run_args(runtime, flags, image, id, args))
    }

    /// The same as [`Containerd::run`], in the background: for long-running tasks.
    pub fn spawn_run(
        &self,
        runtime: &str,
        flags: &[&str],
        image: &str,
        id: &str,
        args: &[&str],
    ) -> Result<RunningCtr> {
        let child = self
            .ctr_command(&run_args(runtime, flags, image, id, args))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        Ok(RunningCtr::from(child))
    }

    /// The task service calls `ctr` has no command for (Update, Wait), in this containerd's
    /// namespace.
    pub fn tasks(&self) -> api::Tasks {
        api::Tasks {
            socket: self.socket(),
            namespace: self.namespace,
        }
    }

    /// `ctr task exec --exec-id EXEC_ID FLAGS... ID ARGS...`: the arguments of an exec.
    pub fn exec_args<'a>(
        exec_id: &'a str,
        flags: &[&'a str],
        id: &'a str,
        args: &[&'a str],
    ) -> Vec<&'a str> {
        let mut all = vec!["task", "exec", "--exec-id", exec_id];
        all.extend_from_slice(flags);
        all.push(id);
        all.extend_from_slice(args);
        all
    }

    /// Runs exec process `exec_id` of task `id` (`ctr task exec`) and waits for it to end.
    pub fn exec(&self, id: &str, exec_id: &str, args: &[&str]) -> CtrOutput {
        self.ctr(&Self::exec_args(exec_id, &[], id, args))
    }

    /// Runs `ctr ARGS` with `input` on its standard input, which it then closes.
    pub fn ctr_with_input(&self, args: &[&str], input: &[u8]) -> Result<CtrOutput> {
        use std::io::Write;
        let mut child = self
            .ctr_command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut stdin = child.stdin.take().context("ctr's stdin")?;
        stdin.write_all(input)?;
        drop(stdin);
        RunningCtr::from(child).wait(Duration::from_secs(60))
    }

    /// Runs `ctr ARGS` in the background on a terminal of `cols` x `rows` ([`Terminal`]).
    pub fn ctr_on_terminal(&self, args: &[&str], cols: u16, rows: u16) -> Result<Terminal> {
        Terminal::spawn(self.ctr_command(args), cols, rows)
    }

    /// The pid and status (`RUNNING`, `PAUSED`, `STOPPED`) `ctr task ls` shows for `id`.
    fn task_row(&self, id: &str) -> Option<(Option<i32>, String)> {
        let out = self.ctr(&["task", "ls"]);
        out.stdout.lines().find_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            (cols.first() == Some(&id)).then(|| {
                let pid = cols.get(1).and_then(|p| p.parse().ok());
                (pid, cols.get(2).unwrap_or(&"").to_string())
            })
        })
    }

    /// The status `ctr task ls` shows for `id`, if listed.
    pub fn task_status(&self, id: &str) -> Option<String> {
        self.task_row(id).map(|(_, status)| status)
    }

    /// The task's pid, as `ctr task ls` shows it.
    pub fn task_pid(&self, id: &str) -> Option<i32> {
        self.task_row(id).and_then(|(pid, _)| pid)
    }

    /// Waits until `ctr task ls` shows `id` with `status`.
    pub fn wait_for_status(&self, id: &str, status: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let now = self.task_status(id);
            if now.as_deref() == Some(status) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("task {id} did not become {status} (it is {now:?})");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What a task `id` may have left behind: shim processes, mounts, cgroups, sandbox state,
    /// and containerd containers, tasks and snapshots. Empty when it left nothing.
    pub fn leftovers(&self, id: &str) -> Vec<String> {
        self.leftovers_of(&[id])
    }

    /// What any of the tasks `ids` may have left behind, as [`Containerd::leftovers`] finds
    /// it for one (each of containerd's lists is read once, whatever the number of ids).
    pub fn leftovers_of<S: AsRef<str>>(&self, ids: &[S]) -> Vec<String> {
        let ids: Vec<&str> = ids.iter().map(AsRef::as_ref).collect();
        let mut found = Vec::new();
        let socket = self.socket().display().to_string();
        let id_args: Vec<String> = ids.iter().map(|id| format!("-id {id} ")).collect();
        for (pid, cmdline) in processes() {
            if cmdline.contains(&socket) && id_args.iter().any(|arg| cmdline.contains(arg)) {
                found.push(left_process(pid, &cmdline));
            }
        }
        // `/ID/`, `/ID ` inside a line, or `/ID` ending it.
        let in_paths: Vec<[String; 3]> = ids
            .iter()
            .map(|id| [format!("/{id}/"), format!("/{id} "), format!("/{id}")])
            .collect();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for line in mountinfo.lines() {
            if in_paths.iter().any(|[dir, inner, last]| {
                line.contains(dir.as_str())
                    || line.contains(inner.as_str())
                    || line.ends_with(last.as_str())
            }) {
                found.push(format!("mount: {line}"));
            }
        }
        for id in &ids {
            for cgroup in cgroup_dirs(id) {
                found.push(format!("cgroup {}", cgroup.display()));
            }
            let state = Path::new("/run/kwasi").join(self.namespace).join(id);
            if state.exists() {
                found.push(format!("sandbox state {}", state.display()));
            }
        }
        for (what, args) in [
            ("container", &["containers", "ls", "-q"][..]),
            ("task", &["tasks", "ls", "-q"][..]),
            ("snapshot", &["snapshots", "ls"][..]),
        ] {
            let out = self.ctr(args);
            for line in out.stdout.lines() {
                if line
                    .split_whitespace()
                    .next()
                    .is_some_and(|first| ids.contains(&first))
                {
                    found.push(format!("containerd {what}: {line}"));
                }
            }
        }
        found
    }

    /// Waits (a little: containerd tears a shim down asynchronously) until `id` has left
    /// nothing behind, and returns what is still there otherwise.
    pub fn wait_no_leftovers(&self, id: &str) -> Vec<String> {
        self.wait_no_leftovers_of(&[id])
    }

    /// [`Containerd::wait_no_leftovers`] for all of `ids` at once (10 s, and 10 ms more per
    /// id: a thousand shims take a while to go).
    pub fn wait_no_leftovers_of<S: AsRef<str>>(&self, ids: &[S]) -> Vec<String> {
        let deadline =
            Instant::now() + Duration::from_secs(10) + Duration::from_millis(10) * ids.len() as u32;
        loop {
            let left = self.leftovers_of(ids);
            if left.is_empty() || Instant::now() > deadline {
                return left;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Containerd {
    /// Kills and deletes every task and container still there (a test that failed half-way
    /// leaves some), so that their shims clean up their sandboxes.
    fn remove_everything(&self) {
        for id in self.ctr(&["tasks", "ls", "-q"]).stdout.split_whitespace() {
            self.ctr(&["tasks", "kill", "--all", "--signal", "SIGKILL", id]);
        }
        for id in self.ctr(&["tasks", "ls", "-q"]).stdout.split_whitespace() {
            self.ctr(&["tasks", "delete", "--force", id]);
        }
        for id in self
            .ctr(&["containers", "ls", "-q"])
            .stdout
            .split_whitespace()
        {
            self.ctr(&["containers", "delete", id]);
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.remove_everything();
        self.stop_daemon();
        // Shims outlive containerd by design; end the ones this containerd started.
        let socket = self.socket().display().to_string();
        for (pid, cmdline) in processes() {
            if cmdline.contains(&socket) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        unmount_below(self.dir.path());
    }
}

/// The arguments of `ctr run --rm --runtime RUNTIME FLAGS... IMAGE ID ARGS...`.
fn run_args<'a>(
    runtime: &'a str,
    flags: &[&'a str],
    image: &'a str,
    id: &'a str,
    args: &[&'a str],
) -> Vec<&'a str> {
    let mut all = vec!["run", "--rm", "--runtime", runtime];
    all.extend_from_slice(flags);
    all.push(image);
    all.push(id);
    all.extend_from_slice(args);
    all
}

/// A `ctr run` in the background.
pub struct RunningCtr {
    child: Child,
    /// What [`RunningCtr::wait_for_stderr`] has read of ctr's stderr so far.
    stderr_seen: String,
}

impl From<Child> for RunningCtr {
    /// Any command spawned with its stdout and stderr piped, waited for as a `ctr run`.
    fn from(child: Child) -> RunningCtr {
        RunningCtr {
            child,
            stderr_seen: String::new(),
        }
    }
}

/// A command running on a pseudo-terminal of its own (its controlling terminal), as a user
/// at a terminal runs `ctr run -t`: what it writes is collected, its size can change.
pub struct Terminal {
    master: std::fs::File,
    child: Child,
    output: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Terminal {
    /// Spawns `command` with a new terminal of `cols` x `rows` as its stdio.
    pub fn spawn(mut command: Command, cols: u16, rows: u16) -> Result<Terminal> {
        use std::os::unix::process::CommandExt;
        let size = nix::pty::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&size), None).context("opening a terminal")?;
        let slave = std::fs::File::from(pty.slave);
        command
            .stdin(slave.try_clone()?)
            .stdout(slave.try_clone()?)
            .stderr(slave);
        // SAFETY: between fork and exec: setsid and an ioctl on an inherited descriptor.
        unsafe {
            command.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                if libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().context("running a command on a terminal")?;
        let master = std::fs::File::from(pty.master);
        let output = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut reader = master.try_clone()?;
        let sink = std::sync::Arc::clone(&output);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once the command and everything on the terminal are gone.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(&buf[..n]);
            }
        });
        Ok(Terminal {
            master,
            child,
            output,
        })
    }

    /// Everything written to the terminal so far.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    /// Waits until the terminal shows `text`.
    pub fn wait_for(&self, text: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while !self.output().contains(text) {
            if Instant::now() > deadline {
                bail!("the terminal never showed {text:?}: {:?}", self.output());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Resizes the terminal, as a user resizing their window (the command gets SIGWINCH).
    pub fn resize(&self, cols: u16, rows: u16) -> Result<()> {
        use std::os::fd::AsRawFd;
        let size = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads the winsize, which outlives the call.
        if unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &size) } != 0 {
            return Err(std::io::Error::last_os_error()).context("resizing the terminal");
        }
        Ok(())
    }

    /// Types `text` at the terminal.
    pub fn type_text(&mut self, text: &str) -> Result<()> {
        use std::io::Write;
        self.master.write_all(text.as_bytes())?;
        Ok(())
    }

    /// Waits for the command to end (for at most `timeout`) and returns its status and
    /// what the terminal showed.
    pub fn wait(mut self, timeout: Duration) -> Result<(i32, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                std::thread::sleep(Duration::from_millis(100));
                return Ok((status.code().unwrap_or(-1), self.output()));
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!(
                    "the command did not end within {timeout:?}: {:?}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `ctr events` in the background: what containerd publishes while it runs.
pub struct EventLog {
    child: Child,
}

impl Containerd {
    /// Starts recording containerd's events (`ctr events`), once it has subscribed.
    pub fn events(&self) -> Result<EventLog> {
        let child = self
            .ctr_command(&["events"])
            .stdout(Stdio::piped())
            .spawn()
            .context("running ctr events")?;
        // ctr subscribes once connected: give it that moment.
        std::thread::sleep(Duration::from_millis(300));
        Ok(EventLog { child })
    }
}

impl EventLog {
    /// Stops recording (after a moment for events in flight) and returns what was published.
    pub fn stop(mut self) -> Events {
        std::thread::sleep(Duration::from_millis(500));
        let _ = self.child.kill();
        let mut text = String::new();
        if let Some(mut out) = self.child.stdout.take() {
            let _ = out.read_to_string(&mut text);
        }
        let _ = self.child.wait();
        Events { text }
    }
}

/// Events containerd published, one per line as `ctr events` prints them:
/// `<time> <namespace> <topic> <JSON>`.
#[derive(Debug, Clone)]
pub struct Events {
    /// What ctr printed.
    pub text: String,
}

impl Events {
    /// The `/tasks/...` events of container `id`: topic and JSON payload, in order.
    pub fn of_task(&self, id: &str) -> Vec<(&str, serde_json::Value)> {
        self.text
            .lines()
            .filter_map(|line| {
                let topic = line.split_whitespace().find(|w| w.starts_with("/tasks/"))?;
                let json =
                    serde_json::from_str::<serde_json::Value>(&line[line.find('{')?..]).ok()?;
                (json["container_id"] == id).then_some((topic, json))
            })
            .collect()
    }

    /// The topics of container `id`'s task events, in order.
    pub fn topics(&self, id: &str) -> Vec<&str> {
        self.of_task(id)
            .into_iter()
            .map(|(topic, _)| topic)
            .collect()
    }

    /// The exit status `/tasks/exit` gave for container `id` (protobuf's JSON leaves out a
    /// zero status).
    pub fn exit_status(&self, id: &str) -> Option<u64> {
        self.of_task(id)
            .into_iter()
            .find(|(topic, _)| *topic == "/tasks/exit")
            .map(|(_, json)| json["exit_status"].as_u64().unwrap_or(0))
    }
}

impl RunningCtr {
    /// Whether ctr is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits until ctr's stderr (the task's, for `ctr run`) holds `needle`, for at most
    /// `timeout`, without waiting for ctr to end.
    pub fn wait_for_stderr(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        use std::os::fd::AsRawFd;
        let Some(stderr) = self.child.stderr.as_mut() else {
            bail!("ctr's stderr is not piped");
        };
        let flags = nix::fcntl::fcntl(stderr.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(stderr.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags))?;
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        while !self.stderr_seen.contains(needle) {
            match stderr.read(&mut buf) {
                Ok(0) => bail!(
                    "ctr's stderr ended without {needle:?}: {}",
                    self.stderr_seen
                ),
                Ok(n) => self
                    .stderr_seen
                    .push_str(&String::from_utf8_lossy(&buf[..n])),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        bail!(
                            "no {needle:?} on ctr's stderr in {timeout:?}: {}",
                            self.stderr_seen
                        );
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Waits until the task accepts connections at `addr`, for at most `timeout`; fails at
    /// once, with what the task printed, when ctr ends first.
    pub fn wait_listening(&mut self, addr: std::net::SocketAddr, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while !http::accepts(addr) {
            if let Some(status) = self.child.try_wait()? {
                let mut stderr = std::mem::take(&mut self.stderr_seen);
                if let Some(mut s) = self.child.stderr.take() {
                    read_rest(&mut s, &mut stderr)?;
                }
                bail!("ctr ended ({status}) before anything listened on {addr}: {stderr}");
            }
            if Instant::now() > deadline {
                bail!("nothing listens on {addr} after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Waits for ctr to end, for at most `timeout`; kills it past that.
    pub fn wait(mut self, timeout: Duration) -> Result<CtrOutput> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                let mut stdout = String::new();
                let mut stderr = std::mem::take(&mut self.stderr_seen);
                if let Some(mut s) = self.child.stdout.take() {
                    s.read_to_string(&mut stdout)?;
                }
                if let Some(mut s) = self.child.stderr.take() {
                    read_rest(&mut s, &mut stderr)?;
                }
                return Ok(CtrOutput {
                    status: status.code().unwrap_or(-1),
                    stdout,
                    stderr,
                });
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("ctr run did not end within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Reads what is left of `pipe` (blocking or not: ctr has ended) onto `out`.
fn read_rest(pipe: &mut impl Read, out: &mut String) -> std::io::Result<()> {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    out.push_str(&String::from_utf8_lossy(&bytes));
    Ok(())
}

impl Drop for RunningCtr {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The process name a shim's zygote takes (`/proc/PID/comm`); it keeps the shim's command
/// line.
pub const ZYGOTE_NAME: &str = "kwasi-zygote";

/// Whether process `pid` is a shim's zygote, which container processes are cloned from.
pub fn is_zygote(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == ZYGOTE_NAME)
}

/// Every process's pid and command line (arguments joined by spaces, with a trailing space).
pub fn processes() -> Vec<(i32, String)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(raw) = std::fs::read(entry.path().join("cmdline")) {
            let mut cmdline: String = raw
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ");
            cmdline.push(' ');
            out.push((pid, cmdline));
        }
    }
    out
}

/// A process left behind, for a test's failure: `process PID: CMDLINE [threads: NAME in
/// WCHAN, ...]`, where its threads wait telling what it was doing.
pub fn left_process(pid: i32, cmdline: &str) -> String {
    let threads: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|task| {
            let read = |name: &str| {
                std::fs::read_to_string(task.path().join(name))
                    .map(|s| s.trim().to_string())
                    .unwrap_or_default()
            };
            format!("{} in {}", read("comm"), read("wchan"))
        })
        .collect();
    format!("process {pid}: {cmdline}[threads: {}]", threads.join(", "))
}

/// The last `n` lines of `text`, for a test's failure.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The cgroup directories of container `id` (containerd's path is `/<namespace>/<id>`), in
/// every mounted hierarchy.
pub fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    cgroup_hierarchies()
        .into_iter()
        .map(|hierarchy| hierarchy.join(NAMESPACE).join(id))
        .filter(|dir| dir.exists())
        .collect()
}

/// Every mounted cgroup hierarchy (`/sys/fs/cgroup` itself under cgroup v2).
pub fn cgroup_hierarchies() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    std::iter::once(root.to_path_buf())
        .chain(
            std::fs::read_dir(root)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir()),
        )
        .collect()
}

/// Unmounts (lazily) every mount point below `dir`, deepest first.
pub fn unmount_below(dir: &Path) {
    let prefix = dir.display().to_string();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<String> = mountinfo
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = nix::mount::umount2(p.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// The namespace inode of `kind` (`pid`, `mnt`, ...) that process `pid` is in.
pub fn namespace_of(pid: i32, kind: &str) -> Result<String> {
    let link = std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))?;
    Ok(link.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_lists_every_expected_difference_in_its_table() {
        let rows = DIFFERENCES
            .iter()
            .map(|d| format!("| {} | {} |", d.engine, d.case));
        assert_eq!(missing_readme_rows(rows), Vec::<String>::new());
    }
}

//! `kwasi`: the command-line tool that comes with the shims.
//!
//! `kwasi image build` packs a `.wasm` (and extra files) into an OCI image archive for
//! `ctr images import`: as a file in the image, as a wasm layer, or as a CNCF wasm artifact;
//! `--spin` packs a Spin application as `spin registry push` does.
//! `kwasi install` puts the shims on a node and registers them with containerd;
//! `kwasi uninstall` undoes it.

mod install;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use kwasi_core::image::{ImageRecipe, Packing, WasmLayerType};

#[derive(Parser)]
#[command(name = "kwasi", version, about = "WebAssembly workloads on containerd")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Work with OCI images of wasm modules.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Copy the shims to a directory and add them as runtimes to containerd's configuration
    /// (idempotent; the configuration is backed up first). Restart containerd afterwards.
    Install(InstallArgs),
    /// Remove the runtimes `kwasi install` added and the shims it copied.
    Uninstall(InstallArgs),
}

#[derive(Args)]
struct InstallArgs {
    /// Where the shims go.
    #[arg(long, default_value = install::DEFAULT_BIN_DIR)]
    bin_dir: PathBuf,
    /// Where to link each shim under its own name: a directory on containerd's PATH
    /// (containerd before 1.6.21 / 1.7.1 ignores `runtime_path` for pods and looks there).
    #[arg(long, default_value = install::DEFAULT_LINK_DIR, conflicts_with = "no_link")]
    link_dir: PathBuf,
    /// Make no links (containerd 1.6.21+, 1.7.1+ and 2.x follow `runtime_path`).
    #[arg(long)]
    no_link: bool,
    /// containerd's configuration file [default: /etc/containerd/config.toml].
    #[arg(long, conflicts_with = "k3s")]
    config: Option<PathBuf>,
    /// Edit k3s' template of containerd's configuration instead
    /// (/var/lib/rancher/k3s/agent/etc/containerd/config[-v3].toml.tmpl).
    #[arg(long)]
    k3s: bool,
    /// Only this engine (repeatable) [default: every shim next to this binary; for uninstall,
    /// all].
    #[arg(long = "engine", value_parser = install::ENGINES)]
    engines: Vec<String>,
    /// Print what would change (the configuration as a diff) and change nothing.
    #[arg(long)]
    dry_run: bool,
}

impl InstallArgs {
    fn options(self) -> Result<install::Options> {
        let exe = std::env::current_exe().context("locating the kwasi binary")?;
        let source_dir = exe
            .parent()
            .context("the kwasi binary has no directory")?
            .to_path_buf();
        let config = match (self.config, self.k3s) {
            (Some(path), _) => path,
            (None, true) => install::k3s_template(std::path::Path::new(install::K3S_DIR)),
            (None, false) => PathBuf::from(install::DEFAULT_CONFIG),
        };
        Ok(install::Options {
            source_dir,
            bin_dir: self.bin_dir,
            link_dir: (!self.no_link).then_some(self.link_dir),
            config,
            engines: self.engines,
            dry_run: self.dry_run,
        })
    }
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Pack a .wasm module into an OCI image archive that `ctr images import` accepts.
    Build(BuildArgs),
}

#[derive(Args)]
struct BuildArgs {
    /// The image reference, e.g. example.com/hello:v1 (`:latest` when no tag is given).
    #[arg(long, short = 't')]
    tag: String,
    /// Where to write the archive.
    #[arg(long, short = 'o')]
    output: PathBuf,
    /// Where the module goes in the image; the entrypoint points at it. With --layer-type,
    /// only its name is used (the guest's argv[0] and the layer's title).
    #[arg(long, default_value = "/app.wasm")]
    module_path: String,
    /// Ship the module as a layer of this media type instead of a file in the rootfs (the
    /// extra files still go to the rootfs).
    #[arg(long, value_enum, conflicts_with = "artifact")]
    layer_type: Option<LayerType>,
    /// Build a CNCF wasm OCI artifact (config application/vnd.wasm.config.v0+json, one
    /// application/wasm layer, platform wasm/wasip1) instead of an image. containerd 1.6
    /// imports it with `ctr images import --all-platforms --no-unpack`.
    #[arg(long)]
    artifact: bool,
    /// Package the Spin application whose spin.toml is MODULE, in the layout `spin registry
    /// push` writes (a layer per component, the locked app last); import it with `ctr images
    /// import --all-platforms --no-unpack` and run it with the spin or wasmtime shim.
    #[arg(long, conflicts_with_all = ["artifact", "layer_type", "files", "env", "workdir", "args"])]
    spin: bool,
    /// An extra file, as SRC:DEST with DEST absolute in the image (repeatable).
    #[arg(long = "file", value_name = "SRC:DEST")]
    files: Vec<String>,
    /// An environment variable, KEY=VALUE (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// The working directory of the process.
    #[arg(long)]
    workdir: Option<String>,
    /// The .wasm module (with --spin, the app's spin.toml).
    module: PathBuf,
    /// Arguments passed to the module after its name.
    #[arg(last = true)]
    args: Vec<String>,
}

/// The media type of a wasm layer.
#[derive(Clone, Copy, ValueEnum)]
enum LayerType {
    /// application/wasm
    Wasm,
    /// application/vnd.bytecodealliance.wasm.component.layer.v0+wasm
    Component,
    /// application/vnd.wasm.content.layer.v1+wasm (Spin)
    Spin,
}

fn build(args: BuildArgs) -> Result<()> {
    if args.spin {
        return build_spin(&args);
    }
    let mut recipe = ImageRecipe::new(args.tag, args.module);
    recipe.module_dest = args.module_path;
    recipe.packing = match (args.artifact, args.layer_type) {
        (true, _) => Packing::Artifact,
        (false, Some(LayerType::Wasm)) => Packing::Layer(WasmLayerType::Wasm),
        (false, Some(LayerType::Component)) => Packing::Layer(WasmLayerType::Component),
        (false, Some(LayerType::Spin)) => Packing::Layer(WasmLayerType::Spin),
        (false, None) => Packing::File,
    };
    for spec in args.files {
        let (src, dest) = spec
            .split_once(':')
            .ok_or_else(|| anyhow!("--file {spec}: expected SRC:DEST"))?;
        recipe.files.push((PathBuf::from(src), dest.to_string()));
    }
    for kv in &args.env {
        if !kv.contains('=') {
            return Err(anyhow!("--env {kv}: expected KEY=VALUE"));
        }
    }
    recipe.env = args.env;
    recipe.workdir = args.workdir;
    recipe.args = args.args;
    recipe.write_archive(&args.output)?;
    println!("{} -> {}", recipe.reference(), args.output.display());
    Ok(())
}

#[cfg(feature = "spin")]
fn build_spin(args: &BuildArgs) -> Result<()> {
    let image = kwasi_spin::oci::package(&args.module).map_err(|e| anyhow!("{e}"))?;
    let reference = kwasi_core::image::write_image(
        &args.output,
        &args.tag,
        image.config,
        image.layers,
        image.annotations,
    )?;
    println!("{reference} -> {}", args.output.display());
    Ok(())
}

#[cfg(not(feature = "spin"))]
fn build_spin(_: &BuildArgs) -> Result<()> {
    Err(anyhow!("this kwasi was built without the spin feature"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Image(ImageCommand::Build(args)) => build(args),
        Command::Install(args) => args
            .options()
            .and_then(|options| install::install(&options, &mut std::io::stdout())),
        Command::Uninstall(args) => args
            .options()
            .and_then(|options| install::uninstall(&options, &mut std::io::stdout())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("kwasi: {err:#}");
            ExitCode::FAILURE
        }
    }
}

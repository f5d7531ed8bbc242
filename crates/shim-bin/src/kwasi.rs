//! `kwasi`: the command-line tool that comes with the shims.
//!
//! `kwasi image build` packs a `.wasm` (and extra files) into an OCI image archive for
//! `ctr images import`: as a file in the image, as a wasm layer, or as a CNCF wasm artifact.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Result};
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
    /// An extra file, as SRC:DEST with DEST absolute in the image (repeatable).
    #[arg(long = "file", value_name = "SRC:DEST")]
    files: Vec<String>,
    /// An environment variable, KEY=VALUE (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// The working directory of the process.
    #[arg(long)]
    workdir: Option<String>,
    /// The .wasm module.
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Image(ImageCommand::Build(args)) => build(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("kwasi: {err:#}");
            ExitCode::FAILURE
        }
    }
}

//! `kwasi`: the command-line tool that comes with the shims.
//!
//! `kwasi image build` packs a `.wasm` (and extra files) into an OCI image archive for
//! `ctr images import`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Result};
use clap::{Args, Parser, Subcommand};
use kwasi_core::image::ImageRecipe;

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
    /// Where the module goes in the image; the entrypoint points at it.
    #[arg(long, default_value = "/app.wasm")]
    module_path: String,
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

fn build(args: BuildArgs) -> Result<()> {
    let mut recipe = ImageRecipe::new(args.tag, args.module);
    recipe.module_dest = args.module_path;
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

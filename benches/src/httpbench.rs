//! Requests per second and p99 latency of the hello HTTP component (`tests/guests/http.wasm`)
//! served by kwasi's wasmtime shim, against `wasmtime serve` of the same component, with `wrk`
//! on loopback.
//!
//! The shim serves through a private containerd (`ctr run --net-host`, so both servers are
//! reached the same way, on the host's loopback); `wasmtime serve` runs as a plain process.
//! Both run at once; the rounds alternate between them, each a `wrk` run of SECONDS with
//! CONNECTIONS connections on 2 threads, after one warm-up run each. Prints the medians and
//! the ratios kwasi / wasmtime serve.
//!
//! `httpbench spin` compares instead the same component as a Spin app (a `spin.toml` routing
//! `/...` to it, under `containerd-shim-spin-v2`) with the plain component under the wasmtime
//! shim, both through the same containerd: the cost of Spin's routing and headers.
//!
//! `httpbench spin-start ROUNDS` measures cold start instead: from `ctr run` to the first
//! answer, of a three-component Spin app against runc serving the same response with busybox
//! httpd.
//!
//! Usage: `httpbench [spin|spin-start] [ROUNDS] [SECONDS] [CONNECTIONS]` (defaults 7, 10 and 64), as root, after
//! `cargo build --release`, with `wrk` (Debian's package) on the PATH and the
//! `wasmtime` CLI in `$WASMTIME` or on the PATH (`cargo install --locked wasmtime-cli
//! --version 48.0.0`, the wasmtime the shim is built with).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use kwasi_e2e::*;
use measure::{compare, import_spin_http, median, ms, LoadPlan};

mod measure;

fn main() -> Result<()> {
    let mut argv: Vec<String> = std::env::args().skip(1).collect();
    let mode = match argv.first().map(String::as_str) {
        Some(mode @ ("spin" | "spin-start")) => {
            let mode = mode.to_string();
            argv.remove(0);
            mode
        }
        _ => String::new(),
    };
    let mut argv = argv.into_iter();
    let mut next = |default: u64, what: &str| -> Result<u64> {
        argv.next()
            .map_or(Ok(default), |n| n.parse())
            .with_context(|| what.to_string())
    };
    let load = LoadPlan {
        rounds: next(7, "ROUNDS")? as usize,
        seconds: next(10, "SECONDS")?,
        connections: next(64, "CONNECTIONS")?,
    };
    match mode.as_str() {
        "spin" => spin_against_plain(&load),
        "spin-start" => spin_start_against_busybox_httpd(load.rounds),
        _ => shim_against_wasmtime_serve(&load),
    }
}

/// The component under kwasi's wasmtime shim against `wasmtime serve`.
fn shim_against_wasmtime_serve(load: &LoadPlan) -> Result<()> {
    Shim::WASMTIME.built();
    let wasmtime = std::env::var_os("WASMTIME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("wasmtime"));
    let version = Command::new(&wasmtime)
        .arg("--version")
        .output()
        .with_context(|| format!("running {}: install wasmtime-cli", wasmtime.display()))?;
    let component = guests_dir().join("http.wasm");

    let c = Containerd::start(Release::V2)?;
    let image = c.import_wasm("kwasi.bench/http", &component, &[])?;
    let kwasi = serve_in_containerd(
        &c,
        Shim::WASMTIME,
        &image,
        &[],
        "WASMTIME_HTTP_PROXY_SOCKET_ADDR",
    )?;

    let serve_addr = http::free_addr();
    let serve = ServeProcess(
        Command::new(&wasmtime)
            .arg("serve")
            .arg("--addr")
            .arg(serve_addr.to_string())
            .arg(&component)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting wasmtime serve")?,
    );
    http::wait_listening(serve_addr, Duration::from_secs(30))?;
    println!("{}", String::from_utf8_lossy(&version.stdout).trim());
    compare(load, ("kwasi", kwasi.addr), ("wasmtime serve", serve_addr))?;
    drop(serve);
    stop(&c, &kwasi)
}

/// The same handler as a Spin app (a `spin.toml` routing `/...` to it, under
/// `containerd-shim-spin-v2`) against the plain component (under the wasmtime shim): what
/// Spin's routing and headers cost.
fn spin_against_plain(load: &LoadPlan) -> Result<()> {
    Shim::WASMTIME.built();
    Shim::SPIN.built();
    let component = guests_dir().join("http.wasm");
    let c = Containerd::start(Release::V2)?;
    let plain_image = c.import_wasm("kwasi.bench/http", &component, &[])?;
    let spin_image = import_spin_http(&c, "kwasi.bench/spin-http", &component)?;
    let spin = serve_in_containerd(
        &c,
        Shim::SPIN,
        &spin_image,
        &["/app/spin.toml"],
        "SPIN_HTTP_LISTEN_ADDR",
    )?;
    let plain = serve_in_containerd(
        &c,
        Shim::WASMTIME,
        &plain_image,
        &[],
        "WASMTIME_HTTP_PROXY_SOCKET_ADDR",
    )?;
    compare(
        load,
        ("spin app", spin.addr),
        ("plain component", plain.addr),
    )?;
    stop(&c, &spin)?;
    stop(&c, &plain)
}

/// A task serving HTTP through containerd, and the `ctr run` that runs it.
struct Served {
    id: String,
    addr: SocketAddr,
    _run: RunningCtr,
}

/// Cold start: from `ctr run` to the first answer, of the three-component Spin app (Spin's
/// OCI layout, under `containerd-shim-spin-v2`, the compile cache warm) against runc serving
/// the same response with busybox httpd, alternated for `rounds` rounds; each task is
/// stopped before the next starts.
fn spin_start_against_busybox_httpd(rounds: usize) -> Result<()> {
    Shim::SPIN.built();
    let c = Containerd::start(Release::V2)?;
    let app = "kwasi.bench/spin-three:v1";
    kwasi_e2e::spin::import_three_components(&c, app)?;
    let page = c.dir().join("index.html");
    std::fs::write(&page, "hello from kwasi\n")?;
    let busybox = c.import_wasm(
        "kwasi.bench/busybox-httpd",
        std::path::Path::new("/bin/busybox"),
        &[
            "--module-path",
            "/bin/busybox",
            "--file",
            &format!("{}:/www/index.html", page.display()),
        ],
    )?;
    let spin = |c: &Containerd, id: &str| {
        first_answer(
            c,
            Shim::SPIN.runtime,
            app,
            id,
            &[],
            "SPIN_HTTP_LISTEN_ADDR",
            "/api/",
        )
    };
    let runc = |c: &Containerd, id: &str| {
        first_answer(
            c,
            RUNC,
            &busybox,
            id,
            &["/bin/busybox", "httpd", "-f", "-h", "/www", "-p"],
            "",
            "/",
        )
    };
    let cold = spin(&c, "spin-cold")?;
    println!(
        "spin app, first run (compiles its components): {:.1} ms",
        ms(cold)
    );
    runc(&c, "runc-warm")?;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let a = spin(&c, &format!("spin-{round}"))?;
        let b = runc(&c, &format!("runc-{round}"))?;
        println!(
            "round {round}: spin app {:>7.1} ms | runc busybox httpd {:>7.1} ms",
            ms(a),
            ms(b)
        );
        ours.push(a);
        theirs.push(b);
    }
    let (a, b) = (median(&mut ours), median(&mut theirs));
    println!(
        "median of {rounds}: spin app {:.1} ms | runc busybox httpd {:.1} ms | ratio {:.2} x",
        ms(a),
        ms(b),
        a.as_secs_f64() / b.as_secs_f64()
    );
    Ok(())
}

/// Runs `image` with `args` (the listen address appended to them, or given in `listen_var`
/// when it is not empty) on the host's network, and returns the time from `ctr run` to the
/// first 200 answer to `GET path`; then stops the task and waits for `ctr run` to end.
fn first_answer(
    c: &Containerd,
    runtime: &str,
    image: &str,
    id: &str,
    args: &[&str],
    listen_var: &str,
    path: &str,
) -> Result<Duration> {
    let addr = http::free_addr();
    let listen = format!("{listen_var}={addr}");
    let addr_arg = addr.to_string();
    let mut flags = vec!["--net-host"];
    let mut args = args.to_vec();
    if listen_var.is_empty() {
        args.push(&addr_arg);
    } else {
        flags.extend(["--env", listen.as_str()]);
    }
    let agent = http::client();
    let started = std::time::Instant::now();
    let run = c.spawn_run(runtime, &flags, image, id, &args)?;
    let took = loop {
        if let Ok((200, _)) = http::get(&agent, addr, path) {
            break started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!("{id} did not answer within 120 s");
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let kill = c.ctr(&["task", "kill", "--signal", "SIGKILL", id]);
    if kill.status != 0 {
        bail!("stopping {id}: {kill:?}");
    }
    run.wait(Duration::from_secs(60))?;
    Ok(took)
}

/// Runs `image` with `shim` on the host's network, listening where `listen_var` says, and
/// waits until it listens.
fn serve_in_containerd(
    c: &Containerd,
    shim: Shim,
    image: &str,
    args: &[&str],
    listen_var: &str,
) -> Result<Served> {
    let addr = http::free_addr();
    let listen = format!("{listen_var}={addr}");
    let id = unique_id("httpbench");
    let run = c.spawn_run(
        shim.runtime,
        &["--net-host", "--env", &listen],
        image,
        &id,
        args,
    )?;
    http::wait_listening(addr, Duration::from_secs(120))?;
    Ok(Served {
        id,
        addr,
        _run: run,
    })
}

fn stop(c: &Containerd, served: &Served) -> Result<()> {
    let kill = c.ctr(&["task", "kill", &served.id]);
    if kill.status != 0 {
        bail!("stopping the kwasi task {}: {kill:?}", served.id);
    }
    Ok(())
}

/// `wasmtime serve`, killed when dropped.
struct ServeProcess(Child);

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

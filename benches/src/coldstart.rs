//! Cold start and idle footprint of kwasi's shim against runc, through a private containerd.
//!
//! For each of N rounds (alternating, in one run): `ctr run --rm` of a static busybox `echo`
//! image with runc, and for every built shim (`containerd-shim-<engine>-v1`) `ctr run --rm` of
//! the hello image (examples/hello), once with its compiled form in the compile cache and once
//! with the cache emptied. Prints the medians and their ratios to runc. Then starts 1 and 10
//! idle (sleeping) containers with runc and each shim and reports the processes each keeps
//! alive and the PSS per container, and how long a SIGTERM takes to end a sleeping wasm task.
//!
//! Usage: `coldstart [ROUNDS]` (default 20), after `cargo build --release`, as root.
//! `KWASI_BENCH_MOUNTS=4000` adds the mount table of a node with about 1,000 pods.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use kwasi_e2e::*;
use measure::{check, median, ms, pids_of, pss_bytes, HelloBench, HELLO};

mod measure;

fn main() -> Result<()> {
    let HelloBench {
        rounds,
        shims,
        containerd: c,
        hello: wasm,
        busybox,
        node_mounts: _node_mounts,
    } = HelloBench::start()?;
    let probe = c.import_wasm("kwasi.bench/probe", &guests_dir().join("probe.wasm"), &[])?;

    // One untimed run of each, so that all start from warm page caches.
    let echo = ["/bin/busybox", "echo", "hello"];
    for shim in &shims {
        let id = format!("warm-{}", shim.engine);
        check(&c.run(shim.runtime, &[], &wasm, &id, &[]), HELLO)?;
    }
    check(&c.run(RUNC, &[], &busybox, "warm-runc", &echo), "hello")?;

    let mut runc = Vec::new();
    let mut cached = vec![Vec::new(); shims.len()];
    let mut uncached = vec![Vec::new(); shims.len()];
    for i in 0..rounds {
        let t = Instant::now();
        check(
            &c.run(RUNC, &[], &busybox, &format!("r{i}"), &echo),
            "hello",
        )?;
        runc.push(t.elapsed());
        for (s, shim) in shims.iter().enumerate() {
            let t = Instant::now();
            let id = format!("w{i}-{}", shim.engine);
            check(&c.run(shim.runtime, &[], &wasm, &id, &[]), HELLO)?;
            cached[s].push(t.elapsed());
            // The module's first start on this node: nothing in this engine's compile cache
            // (the other engines' entries stay for their cached starts).
            std::fs::remove_dir_all(c.cache_dir().join(shim.engine)).ok();
            let t = Instant::now();
            let id = format!("u{i}-{}", shim.engine);
            check(&c.run(shim.runtime, &[], &wasm, &id, &[]), HELLO)?;
            uncached[s].push(t.elapsed());
            // Leave the compiled form for the next round's cached start.
            check(
                &c.run(
                    shim.runtime,
                    &[],
                    &wasm,
                    &format!("c{i}-{}", shim.engine),
                    &[],
                ),
                HELLO,
            )?;
        }
    }
    let mr = median(&mut runc);
    let ratio = |d: Duration| d.as_secs_f64() / mr.as_secs_f64();
    println!("cold start, ctr run --rm, median of {rounds} alternated runs:");
    println!(
        "  runc (busybox echo)                          {:>7.1} ms",
        ms(mr)
    );
    for (s, shim) in shims.iter().enumerate() {
        let (mk, mu) = (median(&mut cached[s]), median(&mut uncached[s]));
        let engine = shim.engine;
        println!(
            "  kwasi {engine:<8} module compiled before     {:>7.1} ms  {:.2} x runc",
            ms(mk),
            ratio(mk)
        );
        println!(
            "  kwasi {engine:<8} first start (empty cache)  {:>7.1} ms  {:.2} x runc",
            ms(mu),
            ratio(mu)
        );
    }

    // What every create now adds: asking containerd (gRPC) whether the image has a wasm
    // layer, for an image that has none.
    let lookup_id = "lookup";
    let created = c.ctr(&["containers", "create", &wasm, lookup_id]);
    if created.status != 0 {
        bail!("ctr containers create: {created:?}");
    }
    let address = c.socket().display().to_string();
    let mut lookups = Vec::new();
    for _ in 0..rounds.max(50) {
        let t = Instant::now();
        let layer = kwasi_core::image::layers::ImageReader::connect(&address, NAMESPACE)?
            .content(lookup_id, true)?;
        lookups.push(t.elapsed());
        if layer.is_some() {
            bail!("the hello image has no wasm layer");
        }
    }
    c.ctr(&["containers", "rm", lookup_id]);
    println!(
        "image lookup at create (wasm layer? none), median of {}: {:.2} ms",
        lookups.len(),
        ms(median(&mut lookups))
    );

    // The idle container runs a module that ran before (its compiled form is cached), as a
    // restarted or scaled-out pod does.
    for shim in &shims {
        let id = format!("warm-probe-{}", shim.engine);
        check(
            &c.run(shim.runtime, &[], &probe, &id, &["/app.wasm", "hello"]),
            "hello from wasm",
        )?;
    }
    println!("idle containers (sleeping): processes each keeps alive, PSS per container:");
    let busybox_sleep = ["/bin/busybox", "sleep", "3600"];
    for count in [1, 10] {
        let (m, pss) = idle_footprint(&c, RUNC, &busybox, "idle-runc", &busybox_sleep, count)?;
        let runc = pss as f64 / 1024.0;
        println!("  {count:>2} running: runc           {m} processes, {runc:>6.2} MiB");
        for shim in &shims {
            let id = format!("idle-{}", shim.engine);
            let sleep = ["/app.wasm", "sleep"];
            let (n, pss) = idle_footprint(&c, shim.runtime, &probe, &id, &sleep, count)?;
            let kwasi = pss as f64 / 1024.0;
            let engine = shim.engine;
            println!("  {count:>2} running: kwasi {engine:<8} {n} processes, {kwasi:>6.2} MiB");
        }
    }

    for shim in &shims {
        let mut term = Vec::new();
        for i in 0..rounds.min(10) {
            let id = format!("term{i}-{}", shim.engine);
            term.push(sigterm_latency(&c, shim, &probe, &id)?);
        }
        let n = term.len();
        println!(
            "SIGTERM to a sleeping {} task until ctr run returns, median of {n}: {:.1} ms",
            shim.engine,
            ms(median(&mut term))
        );
    }
    Ok(())
}

/// Starts `count` sleeping containers detached, and returns the processes each keeps alive
/// (shim and container processes) and their total PSS in KiB divided by `count`: with more
/// than one, pages the containers share (the shim binary's code) are divided among them, as
/// on a node running many.
fn idle_footprint(
    c: &Containerd,
    runtime: &str,
    image: &str,
    id: &str,
    args: &[&str],
    count: usize,
) -> Result<(usize, u64)> {
    let ids: Vec<String> = (0..count).map(|i| format!("{id}-{i}")).collect();
    for id in &ids {
        let mut cmd = vec!["run", "-d", "--runtime", runtime, image, id];
        cmd.extend_from_slice(args);
        let out = c.ctr(&cmd);
        if out.status != 0 {
            bail!("ctr run -d: {out:?}");
        }
        c.wait_for_status(id, "RUNNING", Duration::from_secs(20))?;
    }
    std::thread::sleep(Duration::from_millis(500));
    let pids = pids_of(c, &ids);
    let pss = (pids.iter().map(|&pid| pss_bytes(pid)).sum::<f64>() / 1024.0) as u64;
    for id in &ids {
        c.ctr(&["task", "kill", "-s", "SIGKILL", id]);
        c.wait_for_status(id, "STOPPED", Duration::from_secs(10))?;
        c.ctr(&["task", "delete", id]);
        c.ctr(&["container", "delete", id]);
    }
    Ok((pids.len() / count, pss / count as u64))
}

/// How long a sleeping wasm task takes to end after `ctr task kill` (SIGTERM) is sent.
fn sigterm_latency(c: &Containerd, shim: &Shim, image: &str, id: &str) -> Result<Duration> {
    let run = c.spawn_run(shim.runtime, &[], image, id, &["/app.wasm", "sleep"])?;
    c.wait_for_status(id, "RUNNING", Duration::from_secs(20))?;
    let sent = Instant::now();
    let status = c.ctr_command(&["task", "kill", id]).status()?;
    if !status.success() {
        bail!("ctr task kill failed");
    }
    let out = run.wait(Duration::from_secs(30))?;
    if out.status != 143 {
        bail!("expected 143 after SIGTERM: {out:?}");
    }
    Ok(sent.elapsed())
}

//! The conformance suite: every behaviour of a kwasi shim, end to end through a private
//! containerd and `ctr` from Debian's containerd 1.6, run against every built shim with the
//! same inputs and the same expectations.
//!
//! Each case is a function of the [`Shim`] under test; [`conformance!`] makes one `#[test]`
//! per case and shim (`wasmtime::stdout_and_stderr_reach_ctr`, ...). Where an engine truly
//! cannot do something, the case asks [`Shim::difference`] and checks the documented
//! behaviour instead ([`DIFFERENCES`], also a table in the README).

use std::time::{Duration, Instant};

use kwasi_e2e::*;

/// One `#[test]` per case for each shim: `mod <shim> { fn <case>() }`. A shim's attributes
/// (a `cfg`) apply to its whole module.
macro_rules! conformance {
    ([$($(#[$attr:meta])* $shim:ident => $value:expr),* $(,)?], $cases:tt) => {
        $( conformance!(@shim [$(#[$attr])*] $shim, $value, $cases); )*
    };
    (@shim [$(#[$attr:meta])*] $shim:ident, $value:expr, [$($case:ident),* $(,)?]) => {
        $(#[$attr])*
        mod $shim {
            $(
                #[test]
                fn $case() {
                    super::$case($value.built());
                }
            )*
        }
    };
}

conformance!(
    [
        wasmtime => kwasi_e2e::Shim::WASMTIME,
        wasmer => kwasi_e2e::Shim::WASMER,
        // Only with `--features wasmedge`, when libwasmedge is installed (`tests/run-all.sh`).
        #[cfg(feature = "wasmedge")]
        wasmedge => kwasi_e2e::Shim::WASMEDGE,
    ],
    [
        stdout_and_stderr_reach_ctr,
        proc_exit_code_is_the_task_exit_status,
        args_and_env_reach_the_module,
        cwd_reaches_the_module_as_its_working_directory,
        the_module_reads_a_file_shipped_in_the_image,
        the_module_writes_a_new_file_in_its_rootfs,
        a_read_only_mount_cannot_be_written_by_the_module,
        a_read_only_rootfs_can_be_read_but_not_written,
        a_hash_suffix_runs_the_named_export_instead_of_start,
        the_task_has_its_own_namespaces_and_the_cgroup_containerd_asked_for,
        a_module_growing_past_the_memory_limit_ends_non_zero_and_the_shim_stays_healthy,
        task_metrics_report_the_cgroup,
        sigterm_ends_a_sleeping_module_with_status_143,
        sigkill_ends_a_sleeping_module_with_status_137,
        pause_freezes_and_resume_thaws_the_task_and_ps_lists_its_pid,
        a_text_file_entrypoint_fails_create_with_a_reason,
        a_corrupted_module_fails_create_with_a_reason,
        a_missing_entrypoint_fails_create_with_a_reason,
        a_missing_export_fails_create_with_a_reason,
        a_trapping_module_exits_non_zero_with_the_trap_on_stderr,
        the_first_start_stores_the_compiled_module_and_later_starts_reuse_it,
        a_corrupted_cache_entry_is_replaced_and_never_loaded,
        containerd_receives_create_start_exit_delete_events_in_order,
    ]
);

/// A containerd with the probe guest imported as `kwasi.test/probe:latest`, plus `extra`
/// `kwasi image build` flags.
fn with_probe(extra: &[&str]) -> (Containerd, String) {
    let c = Containerd::start().expect("starting containerd");
    let image = c
        .import_wasm("kwasi.test/probe", &guests_dir().join("probe.wasm"), extra)
        .expect("importing the probe image");
    (c, image)
}

/// A file with `content` on this machine, and the `kwasi image build --file` value that ships
/// it at `dest` in the image (keep the directory alive until the image is built).
fn shipped(content: &str, dest: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("shipped");
    std::fs::write(&src, content).unwrap();
    let spec = format!("{}:{dest}", src.display());
    (dir, spec)
}

fn assert_clean(c: &Containerd, id: &str) {
    let left = c.wait_no_leftovers(id);
    assert!(left.is_empty(), "task {id} left behind: {left:#?}");
}

/// The last line of ctr's stderr: the reason it gives.
fn reason(out: &CtrOutput) -> String {
    out.stderr
        .trim()
        .lines()
        .last()
        .unwrap_or_default()
        .to_string()
}

fn stdout_and_stderr_reach_ctr(shim: &Shim) {
    let (c, image) = with_probe(&[]);
    let id = unique_id("hello");
    let out = c.run(shim.runtime, &[], &image, &id, &["/app.wasm", "hello"]);
    assert_eq!(out.status, 0, "{out:?}");
    assert_eq!(out.stdout, "hello from wasm\n");
    assert_eq!(out.stderr, "hello on stderr\n");
    assert_clean(&c, &id);
}

fn proc_exit_code_is_the_task_exit_status(shim: &Shim) {
    let (c, image) = with_probe(&[]);
    let id = unique_id("exit");
    let out = c.run(shim.runtime, &[], &image, &id, &["/app.wasm", "exit", "42"]);
    assert_eq!(out.status, 42, "{out:?}");
    assert_eq!(out.stdout, "exiting with 42\n");
    assert_clean(&c, &id);
}

fn args_and_env_reach_the_module(shim: &Shim) {
    let (c, image) = with_probe(&["--env", "FROM_IMAGE=yes"]);
    let id = unique_id("args");
    let out = c.run(
        shim.runtime,
        &["--env", "GREETING=hi there"],
        &image,
        &id,
        &["/app.wasm", "args", "one", "two words"],
    );
    assert_eq!(out.status, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[..4],
        [
            "arg[0]=/app.wasm",
            "arg[1]=args",
            "arg[2]=one",
            "arg[3]=two words"
        ]
    );
    assert!(lines.contains(&"env GREETING=hi there"), "{lines:?}");
    assert!(lines.contains(&"env FROM_IMAGE=yes"), "{lines:?}");
    assert_clean(&c, &id);
}

fn cwd_reaches_the_module_as_its_working_directory(shim: &Shim) {
    let (_dir, file) = shipped("data in /srv\n", "/srv/data.txt");
    let (c, image) = with_probe(&["--workdir", "/srv", "--file", &file]);
    let id = unique_id("cwd");
    let out = c.run(
        shim.runtime,
        &[],
        &image,
        &id,
        &["/app.wasm", "cwd", "data.txt"],
    );
    assert_eq!(out.status, 0, "{out:?}");
    assert_eq!(out.stdout, "cwd=/srv\ndata in /srv\n");
    assert_clean(&c, &id);
}

fn the_module_reads_a_file_shipped_in_the_image(shim: &Shim) {
    let (_dir, file) = shipped("shipped in the image\n", "/etc/greeting.txt");
    let (c, image) = with_probe(&["--file", &file]);
    let id = unique_id("read");
    let out = c.run(
        shim.runtime,
        &[],
        &image,
        &id,
        &["/app.wasm", "read", "/etc/greeting.txt"],
    );
    assert_eq!(out.status, 0, "{out:?}");
    assert_eq!(out.stdout, "shipped in the image\n");
    assert_clean(&c, &id);
}

fn the_module_writes_a_new_file_in_its_rootfs(shim: &Shim) {
    let (c, image) = with_probe(&[]);
    let id = unique_id("write");
    let out = c.run(
        shim.runtime,
        &[],
        &image,
        &id,
        &["/app.wasm", "write", "/new.txt", "written"],
    );
    assert_eq!(out.status, 0, "{out:?}");
    assert_eq!(out.stdout, "written");
    assert_clean(&c, &id);
}

fn a_read_only_mount_cannot_be_written_by_the_module(shim: &Shim) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.txt"), "mounted\n").unwrap();
    let mount = format!(
        "type=bind,src={},dst=/data,options=rbind:ro",
        dir.path().display()
    );
    let (c, image) = with_probe(&[]);
    let read = unique_id("ro-read");
    let out = c.run(
        shim.runtime,
        &["--mount", &mount],
        &image,
        &read,
        &["/app.wasm", "read", "/data/in.txt"],
    );
    assert_eq!(
        (out.status, out.stdout.as_str()),
        (0, "mounted\n"),
        "{out:?}"
    );
    let write = unique_id("ro-write");
    let out = c.run(
        shim.runtime,
        &["--mount", &mount],
        &image,
        &write,
        &["/app.wasm", "write", "/data/out.txt", "x"],
    );
    assert_eq!(out.status, 1, "{out:?}");
    assert!(out.stdout.starts_with("create /data/out.txt: "), "{out:?}");
    assert!(!dir.path().join("out.txt").exists());
    assert_clean(&c, &read);
    assert_clean(&c, &write);
}

fn a_read_only_rootfs_can_be_read_but_not_written(shim: &Shim) {
    let (_dir, file) = shipped("shipped in the image\n", "/etc/greeting.txt");
    let (c, image) = with_probe(&["--file", &file]);
    let read = unique_id("ro-root-read");
    let out = c.run(
        shim.runtime,
        &["--read-only"],
        &image,
        &read,
        &["/app.wasm", "read", "/etc/greeting.txt"],
    );
    assert_eq!(
        (out.status, out.stdout.as_str()),
        (0, "shipped in the image\n"),
        "{out:?}"
    );
    let write = unique_id("ro-root-write");
    let out = c.run(
        shim.runtime,
        &["--read-only"],
        &image,
        &write,
        &["/app.wasm", "write", "/new.txt", "x"],
    );
    assert_eq!(out.status, 1, "{out:?}");
    assert!(out.stdout.starts_with("create /new.txt: "), "{out:?}");
    assert_clean(&c, &read);
    assert_clean(&c, &write);
}

const TWO_ENTRIES: &str = r#"(module
    (import "wasi_snapshot_preview1" "fd_write"
        (func $fd_write (param i32 i32 i32 i32) (result i32)))
    (memory (export "memory") 1)
    (data (i32.const 16) "from _start\n")
    (data (i32.const 32) "from greet\n")
    (func $say (param $at i32) (param $len i32)
        (i32.store (i32.const 0) (local.get $at))
        (i32.store (i32.const 4) (local.get $len))
        (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
    (func (export "_start") (call $say (i32.const 16) (i32.const 12)))
    (func (export "greet") (call $say (i32.const 32) (i32.const 11))))"#;

fn a_hash_suffix_runs_the_named_export_instead_of_start(shim: &Shim) {
    let c = Containerd::start().unwrap();
    let image = c.import_wat("kwasi.test/two-entries", TWO_ENTRIES).unwrap();
    let id = unique_id("func");
    let out = c.run(shim.runtime, &[], &image, &id, &["/app.wasm#greet"]);
    assert_eq!(
        (out.status, out.stdout.as_str()),
        (0, "from greet\n"),
        "{out:?}"
    );
    let id2 = unique_id("start");
    let out = c.run(shim.runtime, &[], &image, &id2, &[]);
    assert_eq!(
        (out.status, out.stdout.as_str()),
        (0, "from _start\n"),
        "{out:?}"
    );
    assert_clean(&c, &id);
    assert_clean(&c, &id2);
}

/// Starts `probe sleep` in the background and waits until it runs.
fn sleeping(shim: &Shim, c: &Containerd, image: &str, id: &str, flags: &[&str]) -> RunningCtr {
    let run = c
        .spawn_run(shim.runtime, flags, image, id, &["/app.wasm", "sleep"])
        .unwrap();
    c.wait_for_status(id, "RUNNING", Duration::from_secs(20))
        .unwrap();
    run
}

fn the_task_has_its_own_namespaces_and_the_cgroup_containerd_asked_for(shim: &Shim) {
    let (c, image) = with_probe(&[]);
    let id = unique_id("ns");
    let run = sleeping(shim, &c, &image, &id, &[]);
    let pid = c.task_pid(&id).expect("task pid");
    for kind in ["pid", "mnt", "ipc", "uts", "net"] {
        assert_ne!(
            namespace_of(pid, kind).unwrap(),
            namespace_of(std::process::id() as i32, kind).unwrap(),
            "{kind} namespace is shared with the host"
        );
    }
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let expected = format!("/{NAMESPACE}/{id}");
    assert!(cgroup.lines().any(|l| l.ends_with(&expected)), "{cgroup}");
    assert!(!cgroup_dirs(&id).is_empty());
    assert_eq!(c.ctr(&["task", "kill", "-s", "SIGKILL", &id]).status, 0);
    run.wait(Duration::from_secs(20)).unwrap();
    assert_clean(&c, &id);
}

fn a_module_growing_past_the_memory_limit_ends_non_zero_and_the_shim_stays_healthy(shim: &Shim) {
    let (c, image) = with_probe(&[]);
    let id = unique_id("oom");
    let run = c
        .spawn_run(
            shim.runtime,
            &["--memory-limit", "67108864"],
            &image,
            &id,
            &["/app.wasm", "grow"],
        )
        .unwrap();
    let out = run.wait(Duration::from_secs(60)).unwrap();
    assert_ne!(out.status, 0, "{out:?}");
    assert!(
        out.stdout.contains("16 MiB"),
        "the module never grew: {out:?}"
    );
    assert!(
        !out.stdout.contains("1024 MiB"),
        "the limit did not hold: {out:?}"
    );
    assert_clean(&c, &id);
    // The same containerd still runs tasks with our shim.
    let next = unique_id("after-oom");
    let out = c.run(shim.runtime, &[], &image, &next, &["/app.wasm", "hello"]);
    assert_eq!(out.status, 0, "{out:?}");
    assert_clean(&c, &next);
}

fn task_metrics_report_the_cgroup(shim: &Shim) {
    let (c, image) = with_probe(&[]);
    let id = unique_id("metrics");
    let run = sleeping(shim, &c, &image, &id, &["--memory-limit", "134217728"]);
    let out = c.ctr(&["task", "metrics", &id]);
    assert_eq!(out.status, 0, "{out:?}");
    assert!(
        out.stdout.contains("memory.usage_in_bytes") || out.stdout.contains("memory.usage"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("134217728"),
        "the limit is not reported: {}",
        out.stdout
    );
    assert_eq!(c.ctr(&["task", "kill", "-s", "SIGKILL", &id]).status, 0);
    run.wait(Duration::from_secs(20)).unwrap();
    assert_clean(&c, &id);
}

/// Kills a sleeping module with `signal` and returns its exit status and how long it took to
/// end after the kill was sent.
fn kill_sleeping(shim: &Shim, signal: &str) -> (i32, Duration) {
    let (c, image) = with_probe(&[]);
    let id = unique_id("kill");
    let run = sleeping(shim, &c, &image, &id, &[]);
    let sent = Instant::now();
    let kill = c.ctr(&["task", "kill", "-s", signal, &id]);
    assert_eq!(kill.status, 0, "{kill:?}");
    // A liveness bound, not a timing assertion: a module that ignores the signal never ends.
    let out = run.wait(Duration::from_secs(30)).unwrap();
    let took = sent.elapsed();
    assert_clean(&c, &id);
    (out.status, took)
}

fn sigterm_ends_a_sleeping_module_with_status_143(shim: &Shim) {
    let (status, took) = kill_sleeping(shim, "SIGTERM");
    assert_eq!(status, 143);
    eprintln!("SIGTERM to exit: {took:?}");
}

fn sigkill_ends_a_sleeping_module_with_status_137(shim: &Shim) {
    let (status, took) = kill_sleeping(shim, "SIGKILL");
    assert_eq!(status, 137);
    eprintln!("SIGKILL to exit: {took:?}");
}

fn pause_freezes_and_resume_thaws_the_task_and_ps_lists_its_pid(shim: &Shim) {
    let (c, image) = with_probe(&[]);
    let id = unique_id("pause");
    let run = sleeping(shim, &c, &image, &id, &[]);
    let pid = c.task_pid(&id).unwrap();

    let ps = c.ctr(&["task", "ps", &id]);
    assert_eq!(ps.status, 0, "{ps:?}");
    assert!(
        ps.stdout
            .lines()
            .skip(1)
            .any(|l| l.split_whitespace().next() == Some(&pid.to_string())),
        "{}",
        ps.stdout
    );

    assert_eq!(c.ctr(&["task", "pause", &id]).status, 0);
    c.wait_for_status(&id, "PAUSED", Duration::from_secs(5))
        .unwrap();
    let state = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let frozen = state
        .lines()
        .any(|l| l.starts_with("State:") && (l.contains("D") || l.contains("S")));
    assert!(frozen, "{state}");
    assert_eq!(freezer_state(pid).as_deref(), Some("FROZEN"));

    assert_eq!(c.ctr(&["task", "resume", &id]).status, 0);
    c.wait_for_status(&id, "RUNNING", Duration::from_secs(5))
        .unwrap();
    assert_eq!(freezer_state(pid).as_deref(), Some("THAWED"));

    assert_eq!(c.ctr(&["task", "kill", &id]).status, 0);
    assert_eq!(run.wait(Duration::from_secs(20)).unwrap().status, 143);
    assert_clean(&c, &id);
}

/// The freezer state of `pid`'s cgroup: `FROZEN`/`THAWED` (v1), or from `cgroup.freeze` (v2).
fn freezer_state(pid: i32) -> Option<String> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers == "freezer" {
            let f = format!("/sys/fs/cgroup/freezer{path}/freezer.state");
            return std::fs::read_to_string(f)
                .ok()
                .map(|s| s.trim().to_string());
        }
        if controllers.is_empty()
            && std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
        {
            let f = format!("/sys/fs/cgroup{path}/cgroup.freeze");
            let v = std::fs::read_to_string(f).ok()?;
            return Some(if v.trim() == "1" { "FROZEN" } else { "THAWED" }.to_string());
        }
    }
    None
}

/// Runs `image` with `args`, expects `create` or `start` to fail with `expected` in ctr's
/// one-line reason, and checks that nothing was left behind.
fn assert_rejected(shim: &Shim, c: &Containerd, image: &str, args: &[&str], expected: &str) {
    let id = unique_id("bad");
    let out = c.run(shim.runtime, &[], image, &id, args);
    assert_ne!(out.status, 0, "{out:?}");
    let reason = reason(&out);
    let expected = format!("ctr: failed to create shim task: {expected}");
    assert!(
        reason.starts_with(&expected),
        "expected {expected:?} in {reason:?}\n{out:?}"
    );
    assert!(!out.stderr.contains("panicked"), "{out:?}");
    assert!(
        !c.log().contains("panicked"),
        "the shim panicked:\n{}",
        c.log()
    );
    assert_clean(c, &id);
}

fn a_text_file_entrypoint_fails_create_with_a_reason(shim: &Shim) {
    let c = Containerd::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "just some notes\n").unwrap();
    let image = c.import_wasm("kwasi.test/text", &text, &[]).unwrap();
    assert_rejected(
        shim,
        &c,
        &image,
        &[],
        "entrypoint /app.wasm is not a WebAssembly module (it is a text file)",
    );
}

fn a_corrupted_module_fails_create_with_a_reason(shim: &Shim) {
    let c = Containerd::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(guests_dir().join("probe.wasm")).unwrap();
    bytes.truncate(bytes.len() / 2);
    let bad = dir.path().join("truncated.wasm");
    std::fs::write(&bad, bytes).unwrap();
    let image = c.import_wasm("kwasi.test/corrupted", &bad, &[]).unwrap();
    assert_rejected(shim, &c, &image, &[], "/app.wasm: invalid wasm module: ");
}

fn a_missing_entrypoint_fails_create_with_a_reason(shim: &Shim) {
    let (c, image) = with_probe(&[]);
    assert_rejected(
        shim,
        &c,
        &image,
        &["/missing.wasm"],
        "entrypoint /missing.wasm: no such file in the container",
    );
}

fn a_missing_export_fails_create_with_a_reason(shim: &Shim) {
    let (c, image) = with_probe(&[]);
    assert_rejected(
        shim,
        &c,
        &image,
        &["/app.wasm#nope"],
        "/app.wasm: the module has no exported function `nope` of type () -> ()",
    );
}

fn a_trapping_module_exits_non_zero_with_the_trap_on_stderr(shim: &Shim) {
    let (c, image) = with_probe(&[]);
    let id = unique_id("trap");
    let out = c.run(shim.runtime, &[], &image, &id, &["/app.wasm", "trap"]);
    assert_eq!(out.status, 134, "{out:?}");
    assert_eq!(out.stdout, "about to trap\n");
    let stderr: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(stderr.len(), 1, "{out:?}");
    // Each engine words the trap its own way; all name the instruction.
    let prefix = format!("{}: wasm trap: ", shim.engine);
    assert!(
        stderr[0].starts_with(&prefix) && stderr[0].contains("unreachable"),
        "{out:?}"
    );
    assert_clean(&c, &id);
}

fn the_first_start_stores_the_compiled_module_and_later_starts_reuse_it(shim: &Shim) {
    let (c, image) = with_probe(&[]);
    assert!(c.cache_entries().is_empty());
    let first = unique_id("cache-1");
    assert_eq!(
        c.run(shim.runtime, &[], &image, &first, &["/app.wasm", "hello"])
            .status,
        0
    );
    if let Some(reason) = shim.difference("compile cache") {
        eprintln!("{}: expected difference: {reason}", shim.engine);
        assert_eq!(c.cache_entries(), vec![], "nothing is stored");
        assert_clean(&c, &first);
        return;
    }
    let stored = c.cache_entries();
    assert_eq!(stored.len(), 1, "{stored:?}");
    let second = unique_id("cache-2");
    let out = c.run(shim.runtime, &[], &image, &second, &["/app.wasm", "hello"]);
    assert_eq!(
        (out.status, out.stdout.as_str()),
        (0, "hello from wasm\n"),
        "{out:?}"
    );
    // The same file (same inode): the second start loaded it and did not store a new one.
    assert_eq!(c.cache_entries(), stored);
    assert_clean(&c, &first);
    assert_clean(&c, &second);
}

fn a_corrupted_cache_entry_is_replaced_and_never_loaded(shim: &Shim) {
    let (c, image) = with_probe(&[]);
    let first = unique_id("corrupt-1");
    assert_eq!(
        c.run(shim.runtime, &[], &image, &first, &["/app.wasm", "hello"])
            .status,
        0
    );
    if let Some(reason) = shim.difference("compile cache") {
        eprintln!("{}: expected difference: {reason}", shim.engine);
        assert_eq!(c.cache_entries(), vec![], "there is no entry to corrupt");
        assert_clean(&c, &first);
        return;
    }
    let (entry, inode) = c.cache_entries().pop().unwrap();
    let mut bytes = std::fs::read(&entry).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    bytes.truncate(bytes.len() - 100);
    std::fs::write(&entry, bytes).unwrap();
    let second = unique_id("corrupt-2");
    let out = c.run(shim.runtime, &[], &image, &second, &["/app.wasm", "hello"]);
    assert_eq!(
        (out.status, out.stdout.as_str()),
        (0, "hello from wasm\n"),
        "{out:?}"
    );
    let after = c.cache_entries();
    assert_eq!(after.len(), 1);
    assert_ne!(after[0].1, inode, "the damaged entry was not rebuilt");
    assert_clean(&c, &first);
    assert_clean(&c, &second);
}

fn containerd_receives_create_start_exit_delete_events_in_order(shim: &Shim) {
    use std::io::Read;
    let (c, image) = with_probe(&[]);
    let mut events = c
        .ctr_command(&["events"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let id = unique_id("events");
    let out = c.run(shim.runtime, &[], &image, &id, &["/app.wasm", "exit", "3"]);
    assert_eq!(out.status, 3, "{out:?}");
    std::thread::sleep(Duration::from_millis(500));
    events.kill().unwrap();
    let mut text = String::new();
    events
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    events.wait().unwrap();
    let topics: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(&format!("\"{id}\"")) && l.contains("/tasks/"))
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("/tasks/")))
        .collect();
    assert_eq!(
        topics,
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exit",
            "/tasks/delete"
        ],
        "{text}"
    );
    let exit = text.lines().find(|l| l.contains("/tasks/exit")).unwrap();
    assert!(exit.contains("\"exit_status\":3"), "{exit}");
    assert_clean(&c, &id);
}

//! The conformance suite: every behaviour of a kwasi shim, end to end through a private
//! containerd and its `ctr`, run as one matrix of (containerd release, shim): Debian's
//! containerd 1.6 and containerd 2.x, against every built shim, with the same inputs and the
//! same expectations.
//!
//! Each case is a function of the [`Shim`] under test (which carries its containerd
//! release); [`conformance!`] makes one `#[test]` per case, release and shim
//! (`containerd_2::wasmtime::stdout_and_stderr_reach_ctr`, ...). Where an engine truly
//! cannot do something, the case asks [`Shim::difference`] and checks the documented
//! behaviour instead ([`DIFFERENCES`], also a table in the README).

use std::time::{Duration, Instant};

use kwasi_e2e::*;

/// One `#[test]` per case for each containerd release and shim:
/// `mod <release> { mod <shim> { fn <case>() } }`. A shim's attributes (a `cfg`) apply to its
/// whole module.
macro_rules! conformance {
    ([$($release:ident => $value:expr),* $(,)?], $shims:tt, $cases:tt) => {
        $(
            mod $release {
                conformance!(@release $value, $shims, $cases);
            }
        )*
    };
    (@release $release:expr, [$($(#[$attr:meta])* $shim:ident => $value:expr),* $(,)?], $cases:tt) => {
        $( conformance!(@shim $release, [$(#[$attr])*] $shim, $value, $cases); )*
    };
    (@shim $release:expr, [$(#[$attr:meta])*] $shim:ident, $value:expr, [$($case:ident),* $(,)?]) => {
        $(#[$attr])*
        mod $shim {
            $(
                #[test]
                fn $case() {
                    super::super::$case($value.on($release).built());
                }
            )*
        }
    };
}

conformance!(
    [
        containerd_1_6 => kwasi_e2e::Release::V1_6,
        containerd_2 => kwasi_e2e::Release::V2,
    ],
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
        cwd_reaches_the_module_as_the_preopen_named_dot,
        the_environment_is_exactly_the_specs,
        files_are_made_renamed_and_removed_below_the_rootfs_and_a_rw_mount_not_a_ro_one,
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
        a_module_in_an_application_wasm_layer_runs_with_the_files_as_rootfs,
        a_module_in_a_component_layer_runs_with_the_files_as_rootfs,
        a_module_in_a_spin_layer_runs_with_the_files_as_rootfs,
        a_hash_alone_runs_the_named_export_of_a_wasm_layer,
        a_cncf_wasm_artifact_behind_an_index_runs_through_the_containerd_api,
        an_artifact_with_two_wasm_layers_fails_create_with_a_reason,
        an_artifact_layer_that_is_not_wasm_fails_create_with_a_reason,
        an_image_naming_a_missing_blob_fails_create_with_a_reason,
        a_wasm_layer_is_cached_under_its_digest,
        a_cached_wasm_layer_is_not_read_from_containerd_again,
        a_damaged_entry_of_a_wasm_layer_is_rebuilt_from_the_layer,
        an_unusable_cache_directory_is_logged_and_modules_still_run,
        a_trapping_module_exits_non_zero_with_the_trap_on_stderr,
        the_first_start_stores_the_compiled_module_and_later_starts_reuse_it,
        a_corrupted_cache_entry_is_replaced_and_never_loaded,
        containerd_receives_create_start_exit_delete_events_in_order,
        a_cli_component_gets_args_env_and_files_and_fails_with_status_1,
        an_http_component_answers_get_and_echoes_a_post_body_over_keep_alive,
        a_wasi_0_3_http_component_answers_with_the_body_it_writes_after_returning,
        a_hundred_parallel_requests_are_all_answered,
        sigterm_during_a_slow_request_lets_it_finish_and_the_task_exits_0,
        a_trapping_handler_answers_500_and_the_server_keeps_serving,
        requests_beyond_the_concurrency_and_queue_get_503,
        a_request_body_over_the_limit_gets_413,
        a_component_with_a_hash_entry_fails_create_with_a_reason,
        a_bad_http_setting_fails_create_with_a_reason,
        a_component_in_a_component_layer_runs,
        an_elf_entrypoint_runs_as_an_ordinary_container,
        a_script_entrypoint_runs_with_its_interpreter,
        sigterm_reaches_the_handler_of_a_native_program,
        a_native_entrypoint_without_its_execute_bit_fails_create_with_a_reason,
        exec_runs_a_native_program_in_the_containers_namespaces,
        exec_runs_a_wasm_module_of_the_rootfs_with_the_containers_files,
        an_exec_exit_code_is_its_status,
        an_exec_process_is_killed_with_its_task,
        close_io_ends_the_input_of_an_exec_process,
        a_process_on_a_terminal_sees_one,
        a_terminal_is_resized_with_the_users_window,
        an_update_lowering_the_memory_limit_ooms_a_growing_module,
        the_exit_of_a_task_whose_shim_was_killed_reaches_containerd,
        a_task_survives_a_containerd_restart,
        a_checkpoint_is_refused_with_a_reason,
    ]
);

/// A containerd with the probe guest imported as `kwasi.test/probe:latest`, plus `extra`
/// `kwasi image build` flags.
fn with_probe(shim: &Shim, extra: &[&str]) -> (Containerd, String) {
    let c = shim.containerd().expect("starting containerd");
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
    if !left.is_empty() {
        // This test's own containerd: its log carries the shim's, to tell why.
        panic!(
            "task {id} left behind: {left:#?}\ncontainerd's log, last lines:\n{}",
            kwasi_e2e::last_lines(&c.log(), 60)
        );
    }
}

/// Checks that a run ended with `status` after printing exactly `stdout`.
fn assert_output(out: &CtrOutput, status: i32, stdout: &str) {
    assert_eq!(
        (out.status, out.stdout.as_str()),
        (status, stdout),
        "{out:?}"
    );
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
    let (c, image) = with_probe(shim, &[]);
    let id = unique_id("hello");
    let out = c.run(shim.runtime, &[], &image, &id, &["/app.wasm", "hello"]);
    assert_eq!(out.status, 0, "{out:?}");
    assert_eq!(out.stdout, "hello from wasm\n");
    assert_eq!(out.stderr, "hello on stderr\n");
    assert_clean(&c, &id);
}

fn proc_exit_code_is_the_task_exit_status(shim: &Shim) {
    let (c, image) = with_probe(shim, &[]);
    let id = unique_id("exit");
    let out = c.run(shim.runtime, &[], &image, &id, &["/app.wasm", "exit", "42"]);
    assert_eq!(out.status, 42, "{out:?}");
    assert_eq!(out.stdout, "exiting with 42\n");
    assert_clean(&c, &id);
}

fn args_and_env_reach_the_module(shim: &Shim) {
    let (c, image) = with_probe(shim, &["--env", "FROM_IMAGE=yes"]);
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

fn cwd_reaches_the_module_as_the_preopen_named_dot(shim: &Shim) {
    let (_dir, file) = shipped("data in /srv\n", "/srv/data.txt");
    let (c, image) = with_probe(shim, &["--workdir", "/srv", "--file", &file]);
    let id = unique_id("cwd");
    let out = c.run(
        shim.runtime,
        &[],
        &image,
        &id,
        &["/app.wasm", "cwd", "data.txt"],
    );
    // wasi-libc keeps its own working directory, which starts at `/`; `data.txt` opened
    // through the preopen `.` is the one in the WORKDIR.
    assert_output(&out, 0, "getcwd=/\ndata in /srv\n");
    assert_clean(&c, &id);
}

fn the_environment_is_exactly_the_specs(shim: &Shim) {
    let c = shim.containerd().expect("starting containerd");
    let image = c
        .import_wasm_for_api(
            "kwasi.test/probe-env",
            &guests_dir().join("probe.wasm"),
            &[],
        )
        .unwrap();
    let id = unique_id("env");
    let env = ["A=1".to_string(), "B=two words".to_string()];
    let out = c.run_via_api_with_env(shim.runtime, &image, &id, &["/app.wasm", "args"], &env);
    assert_output(
        &out,
        0,
        "arg[0]=/app.wasm\narg[1]=args\nenv A=1\nenv B=two words\n",
    );
    assert_clean(&c, &id);
}

fn files_are_made_renamed_and_removed_below_the_rootfs_and_a_rw_mount_not_a_ro_one(shim: &Shim) {
    let (rw, ro) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let rw_mount = format!(
        "type=bind,src={},dst=/scratch,options=rbind:rw",
        rw.path().display()
    );
    let ro_mount = format!(
        "type=bind,src={},dst=/data,options=rbind:ro",
        ro.path().display()
    );
    let (c, image) = with_probe(shim, &[]);
    let every_step = "mkdir ok\ncreate ok\nrename ok\nunlink ok\nrmdir ok\n";
    for (dir, expected) in [
        ("/", Some(every_step)),
        ("/scratch", Some(every_step)),
        ("/data", None),
    ] {
        let id = unique_id("fs");
        let out = c.run(
            shim.runtime,
            &["--mount", &rw_mount, "--mount", &ro_mount],
            &image,
            &id,
            &["/app.wasm", "fs", dir],
        );
        match expected {
            Some(expected) => assert_output(&out, 0, expected),
            None => {
                assert_eq!(out.status, 1, "{dir}: {out:?}");
                assert!(out.stdout.starts_with("mkdir: "), "{dir}: {out:?}");
            }
        }
        assert_clean(&c, &id);
    }
    assert_eq!(std::fs::read_dir(rw.path()).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(ro.path()).unwrap().count(), 0);
}

fn the_module_reads_a_file_shipped_in_the_image(shim: &Shim) {
    let (_dir, file) = shipped("shipped in the image\n", "/etc/greeting.txt");
    let (c, image) = with_probe(shim, &["--file", &file]);
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
    let (c, image) = with_probe(shim, &[]);
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
    let (c, image) = with_probe(shim, &[]);
    let read = unique_id("ro-read");
    let out = c.run(
        shim.runtime,
        &["--mount", &mount],
        &image,
        &read,
        &["/app.wasm", "read", "/data/in.txt"],
    );
    assert_output(&out, 0, "mounted\n");
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
    let (c, image) = with_probe(shim, &["--file", &file]);
    let read = unique_id("ro-root-read");
    let out = c.run(
        shim.runtime,
        &["--read-only"],
        &image,
        &read,
        &["/app.wasm", "read", "/etc/greeting.txt"],
    );
    assert_output(&out, 0, "shipped in the image\n");
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
    let c = shim.containerd().unwrap();
    let image = c.import_wat("kwasi.test/two-entries", TWO_ENTRIES).unwrap();
    let id = unique_id("func");
    let out = c.run(shim.runtime, &[], &image, &id, &["/app.wasm#greet"]);
    assert_output(&out, 0, "from greet\n");
    let id2 = unique_id("start");
    let out = c.run(shim.runtime, &[], &image, &id2, &[]);
    assert_output(&out, 0, "from _start\n");
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
    let (c, image) = with_probe(shim, &[]);
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
    let (c, image) = with_probe(shim, &[]);
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
    let (c, image) = with_probe(shim, &[]);
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
    let (c, image) = with_probe(shim, &[]);
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
    let (c, image) = with_probe(shim, &[]);
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
    assert_rejected_with(shim, c, &[], image, args, expected);
}

/// [`assert_rejected`] with `ctr run` flags.
fn assert_rejected_with(
    shim: &Shim,
    c: &Containerd,
    flags: &[&str],
    image: &str,
    args: &[&str],
    expected: &str,
) {
    let id = unique_id("bad");
    let out = c.run(shim.runtime, flags, image, &id, args);
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
    let c = shim.containerd().unwrap();
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
    let c = shim.containerd().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(guests_dir().join("probe.wasm")).unwrap();
    bytes.truncate(bytes.len() / 2);
    let bad = dir.path().join("truncated.wasm");
    std::fs::write(&bad, bytes).unwrap();
    let image = c.import_wasm("kwasi.test/corrupted", &bad, &[]).unwrap();
    assert_rejected(shim, &c, &image, &[], "/app.wasm: invalid wasm module: ");
}

fn a_missing_entrypoint_fails_create_with_a_reason(shim: &Shim) {
    let (c, image) = with_probe(shim, &[]);
    assert_rejected(
        shim,
        &c,
        &image,
        &["/missing.wasm"],
        "entrypoint /missing.wasm: no such file in the container",
    );
}

fn a_missing_export_fails_create_with_a_reason(shim: &Shim) {
    let (c, image) = with_probe(shim, &[]);
    assert_rejected(
        shim,
        &c,
        &image,
        &["/app.wasm#nope"],
        "/app.wasm: the module has no exported function `nope` of type () -> ()",
    );
}

fn a_trapping_module_exits_non_zero_with_the_trap_on_stderr(shim: &Shim) {
    let (c, image) = with_probe(shim, &[]);
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
    let (c, image) = with_probe(shim, &[]);
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
    assert_output(&out, 0, "hello from wasm\n");
    // The same file (same inode): the second start loaded it and did not store a new one.
    assert_eq!(c.cache_entries(), stored);
    assert_clean(&c, &first);
    assert_clean(&c, &second);
}

fn a_corrupted_cache_entry_is_replaced_and_never_loaded(shim: &Shim) {
    let (c, image) = with_probe(shim, &[]);
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
    let damaged = damage_the_cache_entry(&c, 100);
    let second = unique_id("corrupt-2");
    let out = c.run(shim.runtime, &[], &image, &second, &["/app.wasm", "hello"]);
    assert_output(&out, 0, "hello from wasm\n");
    let after = c.cache_entries();
    assert_eq!(after.len(), 1);
    // Compared by content: the rebuilt entry may well get the damaged one's inode number
    // back, since the damaged one is removed first.
    let rebuilt = std::fs::read(&after[0].0).unwrap();
    assert!(rebuilt != damaged, "the damaged entry was not rebuilt");
    assert_clean(&c, &first);
    assert_clean(&c, &second);
}

/// Flips a byte in the middle of the (only) compile cache entry and cuts `cut` bytes off its
/// end; returns what the entry then holds.
fn damage_the_cache_entry(c: &Containerd, cut: usize) -> Vec<u8> {
    let (entry, _) = c.cache_entries().pop().unwrap();
    let mut damaged = std::fs::read(&entry).unwrap();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x5a;
    damaged.truncate(damaged.len() - cut);
    std::fs::write(&entry, &damaged).unwrap();
    damaged
}

fn containerd_receives_create_start_exit_delete_events_in_order(shim: &Shim) {
    let (c, image) = with_probe(shim, &[]);
    let events = c.events().unwrap();
    let id = unique_id("events");
    let out = c.run(shim.runtime, &[], &image, &id, &["/app.wasm", "exit", "3"]);
    assert_eq!(out.status, 3, "{out:?}");
    let events = events.stop();
    assert_eq!(
        events.topics(&id),
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exit",
            "/tasks/delete"
        ],
        "{}",
        events.text
    );
    assert_eq!(events.exit_status(&id), Some(3), "{}", events.text);
    assert_clean(&c, &id);
}

/// A containerd with the probe guest built with `extra` `kwasi image build` flags (a layer
/// type or `--artifact`) imported as `kwasi.test/probe:latest`, for
/// [`Containerd::run_layered`].
fn with_probe_layered(shim: &Shim, extra: &[&str]) -> (Containerd, String) {
    let c = shim.containerd().expect("starting containerd");
    let image = c
        .import_wasm_layered("kwasi.test/probe", &guests_dir().join("probe.wasm"), extra)
        .expect("importing the probe image");
    (c, image)
}

/// `kwasi image build --layer-type LAYER_TYPE` of the probe with a file: the module comes from
/// its layer, the file from the rootfs unpacked from the image's tar layer.
fn a_layer_image_runs(shim: &Shim, layer_type: &str) {
    let (_dir, file) = shipped("beside a wasm layer\n", "/etc/greeting.txt");
    let (c, image) = with_probe_layered(shim, &["--layer-type", layer_type, "--file", &file]);
    let id = unique_id("layer");
    let out = c.run_layered(
        shim.runtime,
        &image,
        &id,
        &["/app.wasm", "read", "/etc/greeting.txt"],
    );
    assert_output(&out, 0, "beside a wasm layer\n");
    assert_clean(&c, &id);
    // The module is not a file in the rootfs.
    let id2 = unique_id("layer-ls");
    let out = c.run_layered(
        shim.runtime,
        &image,
        &id2,
        &["/app.wasm", "read", "/app.wasm"],
    );
    assert_ne!(out.status, 0, "{out:?}");
    assert_clean(&c, &id2);
}

fn a_module_in_an_application_wasm_layer_runs_with_the_files_as_rootfs(shim: &Shim) {
    a_layer_image_runs(shim, "wasm");
}

fn a_module_in_a_component_layer_runs_with_the_files_as_rootfs(shim: &Shim) {
    a_layer_image_runs(shim, "component");
}

fn a_module_in_a_spin_layer_runs_with_the_files_as_rootfs(shim: &Shim) {
    a_layer_image_runs(shim, "spin");
}

fn a_hash_alone_runs_the_named_export_of_a_wasm_layer(shim: &Shim) {
    let c = shim.containerd().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("two.wasm");
    std::fs::write(&module, wat::parse_str(TWO_ENTRIES).unwrap()).unwrap();
    let image = c
        .import_wasm_layered("kwasi.test/two-layer", &module, &["--layer-type", "wasm"])
        .unwrap();
    let id = unique_id("layer-func");
    let out = c.run_layered(shim.runtime, &image, &id, &["#greet"]);
    assert_output(&out, 0, "from greet\n");
    assert_clean(&c, &id);
}

fn a_cncf_wasm_artifact_behind_an_index_runs_through_the_containerd_api(shim: &Shim) {
    // `ctr run` cannot run an artifact (its config is not an image config): CRI clients
    // create it through the API, as this does, on every release.
    let c = shim.containerd().unwrap();
    let image = c
        .import_wasm_for_api(
            "kwasi.test/probe",
            &guests_dir().join("probe.wasm"),
            &["--artifact"],
        )
        .unwrap();
    let id = unique_id("artifact");
    let out = c.run_via_api(shim.runtime, &image, &id, &["probe", "args", "x"]);
    assert_eq!(out.status, 0, "{out:?}");
    assert!(
        out.stdout
            .starts_with("arg[0]=probe\narg[1]=args\narg[2]=x\n"),
        "{out:?}"
    );
    assert_clean(&c, &id);
}

/// Imports a hand-made artifact of `layers`, runs it through the API and checks that the
/// task was refused with `expected` and left nothing behind.
fn assert_artifact_rejected(shim: &Shim, layers: Vec<layout::Part>, expected: &str) {
    let c = shim.containerd().unwrap();
    let tar = c.dir().join("bad-artifact.tar");
    let config = layout::Part {
        media_type: "application/vnd.wasm.config.v0+json",
        bytes: br#"{"architecture":"wasm","os":"wasip1"}"#.to_vec(),
    };
    layout::write(&tar, "kwasi.test/bad-artifact:v1", config, layers).unwrap();
    c.import_without_unpacking(&tar).unwrap();
    let id = unique_id("bad-artifact");
    let out = c.run_via_api(
        shim.runtime,
        "kwasi.test/bad-artifact:v1",
        &id,
        &["#_start"],
    );
    assert_ne!(out.status, 0, "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("image kwasi.test/bad-artifact:v1: {expected}")),
        "expected {expected:?} in {out:?}"
    );
    assert!(!c.log().contains("panicked"), "{}", c.log());
    assert_clean(&c, &id);
}

fn probe_part(media_type: &str) -> layout::Part<'_> {
    layout::Part {
        media_type,
        bytes: std::fs::read(guests_dir().join("probe.wasm")).unwrap(),
    }
}

fn an_artifact_with_two_wasm_layers_fails_create_with_a_reason(shim: &Shim) {
    let second = layout::Part {
        media_type: "application/wasm",
        bytes: wat::parse_str(TWO_ENTRIES).unwrap(),
    };
    assert_artifact_rejected(
        shim,
        vec![probe_part("application/wasm"), second],
        "a wasm artifact must have exactly one application/wasm layer; this one has 2",
    );
}

fn an_artifact_layer_that_is_not_wasm_fails_create_with_a_reason(shim: &Shim) {
    let layer = probe_part("application/vnd.oci.image.layer.v1.tar");
    let expected = format!(
        "layer {} of the wasm artifact is application/vnd.oci.image.layer.v1.tar, not \
         application/wasm",
        layer.digest()
    );
    assert_artifact_rejected(shim, vec![layer], &expected);
}

fn an_image_naming_a_missing_blob_fails_create_with_a_reason(shim: &Shim) {
    let (c, image) = with_probe_layered(shim, &["--layer-type", "wasm"]);
    let digest = probe_part("application/wasm").digest();
    let removed = c.ctr(&["content", "rm", &digest]);
    assert_eq!(removed.status, 0, "{removed:?}");
    let id = unique_id("missing-blob");
    let out = c.run_layered(shim.runtime, &image, &id, &["/app.wasm"]);
    assert_ne!(out.status, 0, "{out:?}");
    let expected = format!(
        "image {image}: blob {digest} is not in containerd's content store (import or pull the \
         whole image)"
    );
    assert!(
        out.stderr.contains(&expected),
        "expected {expected:?} in {out:?}"
    );
    assert!(!c.log().contains("panicked"), "{}", c.log());
    assert_clean(&c, &id);
}

fn a_wasm_layer_is_cached_under_its_digest(shim: &Shim) {
    let (c, image) = with_probe_layered(shim, &["--layer-type", "component"]);
    let id = unique_id("layer-cache");
    let out = c.run_layered(shim.runtime, &image, &id, &["/app.wasm", "hello"]);
    assert_eq!(out.status, 0, "{out:?}");
    let entries = c.cache_entries();
    if let Some(reason) = shim.difference("compile cache") {
        eprintln!("{}: expected difference: {reason}", shim.engine);
        assert_eq!(entries, vec![]);
    } else {
        let digest = probe_part("application/wasm").digest();
        let names: Vec<String> = entries
            .iter()
            .map(|(path, _)| path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![digest.replace("sha256:", "")]);
    }
    assert_clean(&c, &id);
}

/// The shim log's line for a wasm layer that container `id` read whole from containerd.
fn layer_read_by(id: &str) -> String {
    format!(
        "{id}: wasm layer {} not in the compile cache; read from containerd",
        probe_part("application/wasm").digest()
    )
}

fn a_cached_wasm_layer_is_not_read_from_containerd_again(shim: &Shim) {
    let (c, image) = with_probe_layered(shim, &["--layer-type", "wasm"]);
    let (first, second) = (unique_id("layer-read-1"), unique_id("layer-read-2"));
    for id in [&first, &second] {
        let out = c.run_layered(shim.runtime, &image, id, &["/app.wasm", "hello"]);
        assert_output(&out, 0, "hello from wasm\n");
    }
    let log = c.log();
    assert!(log.contains(&layer_read_by(&first)), "{log}");
    if let Some(reason) = shim.difference("compile cache") {
        eprintln!("{}: expected difference: {reason}", shim.engine);
        assert!(log.contains(&layer_read_by(&second)), "{log}");
    } else {
        assert!(!log.contains(&layer_read_by(&second)), "{log}");
    }
    assert_clean(&c, &first);
    assert_clean(&c, &second);
}

fn a_damaged_entry_of_a_wasm_layer_is_rebuilt_from_the_layer(shim: &Shim) {
    let (c, image) = with_probe_layered(shim, &["--layer-type", "wasm"]);
    let first = unique_id("layer-damaged-1");
    let out = c.run_layered(shim.runtime, &image, &first, &["/app.wasm", "hello"]);
    assert_output(&out, 0, "hello from wasm\n");
    if let Some(reason) = shim.difference("compile cache") {
        eprintln!("{}: expected difference: {reason}", shim.engine);
        assert_clean(&c, &first);
        return;
    }
    let damaged = damage_the_cache_entry(&c, 0);
    let second = unique_id("layer-damaged-2");
    let out = c.run_layered(shim.runtime, &image, &second, &["/app.wasm", "hello"]);
    assert_output(&out, 0, "hello from wasm\n");
    assert!(c.log().contains(&layer_read_by(&second)), "{}", c.log());
    let rebuilt = std::fs::read(&c.cache_entries()[0].0).unwrap();
    assert!(rebuilt != damaged, "the damaged entry was not rebuilt");
    assert_clean(&c, &first);
    assert_clean(&c, &second);
}

fn an_unusable_cache_directory_is_logged_and_modules_still_run(shim: &Shim) {
    let (c, image) = with_probe(shim, &[]);
    // A file where the cache directory should be.
    std::fs::write(c.cache_dir(), "not a directory").unwrap();
    let id = unique_id("no-cache");
    let out = c.run(shim.runtime, &[], &image, &id, &["/app.wasm", "hello"]);
    assert_output(&out, 0, "hello from wasm\n");
    let expected = format!(
        "compile cache {} unusable, compiling at every start",
        c.cache_dir().display()
    );
    assert!(
        c.log().contains(&expected),
        "no {expected:?} in\n{}",
        c.log()
    );
    assert_clean(&c, &id);
}

/// A containerd with test guest `guest` (a component) imported as `kwasi.test/NAME`, built
/// with `extra` `kwasi image build` flags.
fn with_component(shim: &Shim, guest: &str, extra: &[&str]) -> (Containerd, String) {
    let c = shim.containerd().expect("starting containerd");
    let name = format!("kwasi.test/{}", guest.trim_end_matches(".wasm"));
    let image = c
        .import_wasm(&name, &guests_dir().join(guest), extra)
        .expect("importing the component image");
    (c, image)
}

/// For an engine without components, checks that `image` (a component) fails create with the
/// documented reason, and returns true: the case has nothing more to check.
fn refuses_components(shim: &Shim, c: &Containerd, image: &str) -> bool {
    if shim.difference("components").is_none() {
        return false;
    }
    assert_rejected(
        shim,
        c,
        image,
        &[],
        &format!(
            "/app.wasm: is a WebAssembly component; the {} shim runs core modules only",
            shim.engine
        ),
    );
    true
}

fn a_cli_component_gets_args_env_and_files_and_fails_with_status_1(shim: &Shim) {
    let (_dir, file) = shipped("read by a component\n", "/etc/greeting.txt");
    let (c, image) = with_component(shim, "probe.component.wasm", &["--file", &file]);
    if refuses_components(shim, &c, &image) {
        return;
    }
    let id = unique_id("cli-component");
    let out = c.run(
        shim.runtime,
        &["--env", "GREETING=hi"],
        &image,
        &id,
        &["/app.wasm", "args", "x"],
    );
    assert_eq!(out.status, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("arg[0]=/app.wasm\narg[1]=args\narg[2]=x\n"),
        "{out:?}"
    );
    assert!(out.stdout.contains("env GREETING=hi\n"), "{out:?}");
    assert_clean(&c, &id);

    let id = unique_id("cli-component-read");
    let out = c.run(
        shim.runtime,
        &[],
        &image,
        &id,
        &["/app.wasm", "read", "/etc/greeting.txt"],
    );
    assert_output(&out, 0, "read by a component\n");
    assert_clean(&c, &id);

    // WASI 0.2's exit carries ok or err, not a code: the preview 1 adapter turns
    // proc_exit(3) into err, which is status 1.
    let id = unique_id("cli-component-exit");
    let out = c.run(shim.runtime, &[], &image, &id, &["/app.wasm", "exit", "3"]);
    assert_output(&out, 1, "exiting with 3\n");
    assert_clean(&c, &id);
}

/// The HTTP component serving on a free loopback port of the host's network (`--net-host`).
struct Served {
    c: Containerd,
    id: String,
    addr: std::net::SocketAddr,
    run: Option<RunningCtr>,
}

impl Served {
    /// Starts the HTTP guest with `env` (`KEY=VALUE`) and waits until it listens; `None`
    /// when the shim refuses components (after checking that it does so properly).
    fn start(shim: &Shim, env: &[&str]) -> Option<Served> {
        Served::start_guest(shim, "http.wasm", env)
    }

    /// [`Served::start`] with the HTTP component `guest` (a path under tests/guests).
    fn start_guest(shim: &Shim, guest: &str, env: &[&str]) -> Option<Served> {
        let (c, image) = with_component(shim, guest, &[]);
        if refuses_components(shim, &c, &image) {
            return None;
        }
        let addr = http::free_addr();
        let listen = format!("WASMTIME_HTTP_PROXY_SOCKET_ADDR={addr}");
        let mut flags = vec!["--net-host", "--env", listen.as_str()];
        for var in env {
            flags.extend(["--env", var]);
        }
        let id = unique_id("http");
        let mut run = c.spawn_run(shim.runtime, &flags, &image, &id, &[]).unwrap();
        run.wait_listening(addr, LISTEN_BOUND).unwrap();
        Some(Served {
            c,
            id,
            addr,
            run: Some(run),
        })
    }

    /// Sends SIGTERM and returns what `ctr run` printed and its status, once nothing is left.
    fn stop(mut self) -> CtrOutput {
        let kill = self.c.ctr(&["task", "kill", &self.id]);
        assert_eq!(kill.status, 0, "{kill:?}");
        let out = self.finish();
        assert_clean(&self.c, &self.id);
        out
    }

    /// Waits for `ctr run` to end (it has been told to).
    fn finish(&mut self) -> CtrOutput {
        let run = self.run.take().expect("finished once");
        // A liveness bound: a server that ignores SIGTERM never ends.
        run.wait(Duration::from_secs(60)).unwrap()
    }
}

fn an_http_component_answers_get_and_echoes_a_post_body_over_keep_alive(shim: &Shim) {
    let Some(served) = Served::start(shim, &[]) else {
        return;
    };
    let agent = http::client();
    let (status, body) = http::get(&agent, served.addr, "/").unwrap();
    assert_eq!((status, body.as_str()), (200, "hello from kwasi\n"));
    // 200 KiB: larger than one read of the guest and one write of its output stream.
    let payload: Vec<u8> = (0..200 * 1024).map(|i| (i % 251) as u8).collect();
    let (status, echoed) = http::post(&agent, served.addr, "/echo", &payload).unwrap();
    assert_eq!(status, 200);
    assert!(
        echoed == payload,
        "echoed {} bytes of {}",
        echoed.len(),
        payload.len()
    );
    assert_eq!(
        http::get_on_one_connection(served.addr, "/", 3).unwrap(),
        vec![200, 200, 200]
    );
    let out = served.stop();
    assert_eq!(out.status, 0, "{out:?}");
    assert!(
        out.stderr.contains(&"serving HTTP on http://".to_string()),
        "{out:?}"
    );
}

/// The guest (tests/guests/p3http, Python through componentize-py) exports
/// `wasi:http/handler@0.3.0` and writes its body from a task of its own, after `handle` has
/// returned the response.
fn a_wasi_0_3_http_component_answers_with_the_body_it_writes_after_returning(shim: &Shim) {
    let Some(served) = Served::start_guest(shim, "p3http/app.wasm", &[]) else {
        return;
    };
    let agent = http::client();
    for path in ["/", "/a/b?c=1"] {
        let (status, body) = http::get(&agent, served.addr, path).unwrap();
        assert_eq!(
            (status, body.as_str()),
            (200, format!("hello from WASI 0.3 at {path}\n").as_str())
        );
    }
    let out = served.stop();
    assert_eq!(out.status, 0, "{out:?}");
}

fn a_hundred_parallel_requests_are_all_answered(shim: &Shim) {
    let Some(served) = Served::start(shim, &[]) else {
        return;
    };
    let addr = served.addr;
    let answers: Vec<(u16, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..100)
            .map(|_| scope.spawn(move || http::get(&http::client(), addr, "/").unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(answers.len(), 100);
    for answer in &answers {
        assert_eq!((answer.0, answer.1.as_str()), (200, "hello from kwasi\n"));
    }
    assert_eq!(served.stop().status, 0);
}

fn sigterm_during_a_slow_request_lets_it_finish_and_the_task_exits_0(shim: &Shim) {
    let Some(served) = Served::start(shim, &[]) else {
        return;
    };
    let addr = served.addr;
    let slow = std::thread::spawn(move || http::get(&http::client(), addr, "/slow?ms=3000"));
    // Let the request reach the guest (it sleeps 3 s there) before the signal.
    std::thread::sleep(Duration::from_millis(1000));
    let out = served.stop();
    let (status, body) = slow.join().unwrap().unwrap();
    assert_eq!((status, body.as_str()), (200, "slept\n"));
    assert_eq!(out.status, 0, "{out:?}");
}

fn a_trapping_handler_answers_500_and_the_server_keeps_serving(shim: &Shim) {
    let Some(served) = Served::start(shim, &[]) else {
        return;
    };
    let agent = http::client();
    let (status, _) = http::get(&agent, served.addr, "/trap").unwrap();
    assert_eq!(status, 500);
    let (status, body) = http::get(&agent, served.addr, "/").unwrap();
    assert_eq!((status, body.as_str()), (200, "hello from kwasi\n"));
    let out = served.stop();
    assert_eq!(out.status, 0, "{out:?}");
    assert!(
        out.stderr.contains("GET /trap: wasm trap: ") && out.stderr.contains("unreachable"),
        "{out:?}"
    );
}

fn requests_beyond_the_concurrency_and_queue_get_503(shim: &Shim) {
    let env = ["KWASI_HTTP_MAX_CONCURRENCY=1", "KWASI_HTTP_MAX_QUEUE=0"];
    let Some(served) = Served::start(shim, &env) else {
        return;
    };
    let addr = served.addr;
    let slow = std::thread::spawn(move || http::get(&http::client(), addr, "/slow?ms=3000"));
    std::thread::sleep(Duration::from_millis(1000));
    let (status, _) = http::get(&http::client(), addr, "/").unwrap();
    assert_eq!(status, 503);
    assert_eq!(slow.join().unwrap().unwrap().0, 200);
    // The slot is free again.
    assert_eq!(http::get(&http::client(), addr, "/").unwrap().0, 200);
    assert_eq!(served.stop().status, 0);
}

fn a_request_body_over_the_limit_gets_413(shim: &Shim) {
    let Some(served) = Served::start(shim, &["KWASI_HTTP_MAX_BODY_BYTES=1000"]) else {
        return;
    };
    let agent = http::client();
    let (status, _) = http::post(&agent, served.addr, "/echo", &[b'x'; 1001]).unwrap();
    assert_eq!(status, 413);
    let (status, body) = http::post(&agent, served.addr, "/echo", &[b'x'; 1000]).unwrap();
    assert_eq!((status, body.len()), (200, 1000));
    assert_eq!(served.stop().status, 0);
}

fn a_component_with_a_hash_entry_fails_create_with_a_reason(shim: &Shim) {
    let (c, image) = with_component(shim, "http.wasm", &[]);
    if refuses_components(shim, &c, &image) {
        return;
    }
    assert_rejected(
        shim,
        &c,
        &image,
        &["/app.wasm#handle"],
        "/app.wasm: a component runs through its wasi:cli/run or wasi:http/incoming-handler \
         export: drop the #handle suffix",
    );
}

fn a_bad_http_setting_fails_create_with_a_reason(shim: &Shim) {
    let (c, image) = with_component(shim, "http.wasm", &[]);
    if refuses_components(shim, &c, &image) {
        return;
    }
    assert_rejected_with(
        shim,
        &c,
        &["--env", "WASMTIME_HTTP_PROXY_SOCKET_ADDR=localhost"],
        &image,
        &[],
        "/app.wasm: WASMTIME_HTTP_PROXY_SOCKET_ADDR=localhost: ",
    );
}

fn a_component_in_a_component_layer_runs(shim: &Shim) {
    let c = shim.containerd().unwrap();
    let image = c
        .import_wasm_layered(
            "kwasi.test/component-layer",
            &guests_dir().join("probe.component.wasm"),
            &["--layer-type", "component"],
        )
        .unwrap();
    let id = unique_id("component-layer");
    let out = c.run_layered(shim.runtime, &image, &id, &["probe", "args", "x"]);
    if shim.difference("components").is_some() {
        assert_ne!(out.status, 0, "{out:?}");
        let expected = format!("is a WebAssembly component; the {} shim runs", shim.engine);
        assert!(out.stderr.contains(&expected), "{out:?}");
    } else {
        assert_eq!(out.status, 0, "{out:?}");
        assert!(
            out.stdout
                .starts_with("arg[0]=probe\narg[1]=args\narg[2]=x\n"),
            "{out:?}"
        );
    }
    assert!(!c.log().contains("panicked"), "{}", c.log());
    assert_clean(&c, &id);
}

/// A containerd with a busybox image (plus `extra` entries) imported as
/// `kwasi.test/busybox:latest`: an image with no wasm in it.
fn with_busybox(shim: &Shim, extra: &[layout::Entry]) -> (Containerd, String) {
    let c = shim.containerd().expect("starting containerd");
    let tar = c.dir().join("busybox.tar");
    let image = "kwasi.test/busybox:latest";
    layout::write_busybox_image(&tar, image, extra).unwrap();
    c.import_archive(&tar).unwrap();
    (c, image.to_string())
}

fn an_elf_entrypoint_runs_as_an_ordinary_container(shim: &Shim) {
    let (c, image) = with_busybox(shim, &[]);
    let id = unique_id("native");
    let script =
        "echo native as pid $$ in $(cat /proc/self/cgroup | grep -c kwasi-e2e) cgroups; exit 7";
    let out = c.run(shim.runtime, &[], &image, &id, &["sh", "-c", script]);
    assert_eq!(out.status, 7, "{out:?}");
    assert!(out.stdout.starts_with("native as pid 1 in "), "{out:?}");
    assert!(!out.stdout.contains(" in 0 cgroups"), "{out:?}");
    assert_clean(&c, &id);
}

fn a_script_entrypoint_runs_with_its_interpreter(shim: &Shim) {
    let (_dir, script) = shipped("#!/bin/sh\necho \"script got $*\"\n", "/run.sh");
    let src = script.split_once(':').unwrap().0.to_string();
    let (c, image) = with_busybox(
        shim,
        &[layout::Entry::File(
            std::path::Path::new(&src),
            "/run.sh",
            0o755,
        )],
    );
    let id = unique_id("script");
    let out = c.run(shim.runtime, &[], &image, &id, &["/run.sh", "a", "b"]);
    assert_output(&out, 0, "script got a b\n");
    assert_clean(&c, &id);
}

fn sigterm_reaches_the_handler_of_a_native_program(shim: &Shim) {
    // The shim blocks SIGTERM in its threads; a program it starts must not inherit that.
    let (c, image) = with_busybox(shim, &[]);
    let id = unique_id("trap");
    let script = "trap 'echo got TERM; exit 3' TERM; echo ready; while :; do sleep 1; done";
    let mut run = c
        .spawn_run(shim.runtime, &[], &image, &id, &["sh", "-c", script])
        .unwrap();
    c.wait_for_status(&id, "RUNNING", Duration::from_secs(20))
        .unwrap();
    // Until sh has set its trap, SIGTERM is dropped (it is PID 1): send it until sh ends.
    let deadline = Instant::now() + Duration::from_secs(30);
    while run.is_running() && Instant::now() < deadline {
        c.ctr(&["task", "kill", "-s", "SIGTERM", &id]);
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = run.wait(Duration::from_secs(30)).unwrap();
    assert_output(&out, 3, "ready\ngot TERM\n");
    assert_clean(&c, &id);
}

fn a_native_entrypoint_without_its_execute_bit_fails_create_with_a_reason(shim: &Shim) {
    let (c, image) = with_busybox(
        shim,
        &[layout::Entry::File(
            std::path::Path::new(layout::BUSYBOX),
            "/bin/tool",
            0o644,
        )],
    );
    assert_rejected(
        shim,
        &c,
        &image,
        &["/bin/tool"],
        "entrypoint /bin/tool is not executable: set its execute bit (chmod +x) in the image",
    );
}

/// Starts `args` of `image` detached (`ctr run -d`) and waits until it runs.
fn detached(shim: &Shim, c: &Containerd, image: &str, id: &str, args: &[&str]) {
    let out = c.ctr(
        &["run", "-d", "--runtime", shim.runtime, image, id]
            .into_iter()
            .chain(args.iter().copied())
            .collect::<Vec<_>>(),
    );
    assert_eq!(out.status, 0, "{out:?}");
    c.wait_for_status(id, "RUNNING", Duration::from_secs(20))
        .unwrap();
}

/// Kills task `id` and removes it and its container, as `ctr run --rm` does.
fn remove(c: &Containerd, id: &str) {
    c.ctr(&["task", "kill", "-s", "SIGKILL", id]);
    c.wait_for_status(id, "STOPPED", Duration::from_secs(20))
        .unwrap();
    assert_eq!(c.ctr(&["task", "rm", id]).status, 0);
    assert_eq!(c.ctr(&["container", "rm", id]).status, 0);
    assert_clean(c, id);
}

fn exec_runs_a_native_program_in_the_containers_namespaces(shim: &Shim) {
    let (c, image) = with_busybox(shim, &[]);
    let id = unique_id("exec-native");
    detached(shim, &c, &image, &id, &["sleep", "600"]);
    let init = c.task_pid(&id).unwrap();
    let out = c.exec(
        &id,
        "e1",
        &["sh", "-c", "echo pid $$; readlink /proc/self/ns/pid"],
    );
    assert_eq!(out.status, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].starts_with("pid ") && lines[0] != "pid 1",
        "{out:?}"
    );
    assert_eq!(lines[1], namespace_of(init, "pid").unwrap(), "{out:?}");
    remove(&c, &id);
}

fn exec_runs_a_wasm_module_of_the_rootfs_with_the_containers_files(shim: &Shim) {
    let (_dir, file) = shipped("read by an exec\n", "/etc/greeting.txt");
    let (c, image) = with_probe(shim, &["--file", &file]);
    let id = unique_id("exec-wasm");
    detached(shim, &c, &image, &id, &["/app.wasm", "sleep"]);
    let out = c.exec(&id, "e1", &["/app.wasm", "read", "/etc/greeting.txt"]);
    assert_output(&out, 0, "read by an exec\n");
    remove(&c, &id);
}

fn an_exec_exit_code_is_its_status(shim: &Shim) {
    let (c, image) = with_probe(shim, &[]);
    let id = unique_id("exec-exit");
    detached(shim, &c, &image, &id, &["/app.wasm", "sleep"]);
    let out = c.exec(&id, "e1", &["/app.wasm", "exit", "7"]);
    assert_output(&out, 7, "exiting with 7\n");
    let missing = c.exec(&id, "e2", &["/nope.wasm"]);
    assert_ne!(missing.status, 0, "{missing:?}");
    assert!(
        missing
            .stderr
            .contains("entrypoint /nope.wasm: no such file in the container"),
        "{missing:?}"
    );
    remove(&c, &id);
}

fn an_exec_process_is_killed_with_its_task(shim: &Shim) {
    let (c, image) = with_probe(shim, &[]);
    let id = unique_id("exec-killed");
    detached(shim, &c, &image, &id, &["/app.wasm", "sleep"]);
    let exec = c
        .ctr_command(&Containerd::exec_args(
            "e1",
            &[],
            &id,
            &["/app.wasm", "sleep"],
        ))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let exec = RunningCtr::from(exec);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(c.ctr(&["task", "kill", "-s", "SIGKILL", &id]).status, 0);
    let out = exec.wait(Duration::from_secs(30)).unwrap();
    assert_eq!(out.status, 137, "{out:?}");
    c.wait_for_status(&id, "STOPPED", Duration::from_secs(20))
        .unwrap();
    remove(&c, &id);
}

fn close_io_ends_the_input_of_an_exec_process(shim: &Shim) {
    let (c, image) = with_probe(shim, &[]);
    let id = unique_id("close-io");
    detached(shim, &c, &image, &id, &["/app.wasm", "sleep"]);
    let args = Containerd::exec_args("e1", &[], &id, &["/app.wasm", "cat"]);
    let out = c.ctr_with_input(&args, b"typed by a user\n").unwrap();
    assert_output(&out, 0, "typed by a user\n[end of input]\n");
    remove(&c, &id);
}

/// `ctr run -t --rm` arguments: container `id` of `image` running `args` on a terminal.
fn on_terminal<'a>(shim: &'a Shim, image: &'a str, id: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut run = vec!["run", "-t", "--rm", "--runtime", shim.runtime, image, id];
    run.extend_from_slice(args);
    run
}

fn a_process_on_a_terminal_sees_one(shim: &Shim) {
    let (c, image) = with_probe(shim, &[]);
    let id = unique_id("tty");
    let run = on_terminal(shim, &image, &id, &["/app.wasm", "tty"]);
    let (status, shown) = c
        .ctr_on_terminal(&run, 80, 24)
        .unwrap()
        .wait(Duration::from_secs(60))
        .unwrap();
    assert_eq!(status, 0, "{shown:?}");
    if let Some(reason) = shim.difference("terminal") {
        eprintln!("{}: expected difference: {reason}", shim.engine);
        assert!(shown.contains("stdin is not a terminal"), "{shown:?}");
    } else {
        assert!(shown.contains("stdin is a terminal"), "{shown:?}");
    }
    assert_clean(&c, &id);
}

fn a_terminal_is_resized_with_the_users_window(shim: &Shim) {
    let (c, image) = with_busybox(shim, &[]);
    let id = unique_id("resize");
    let script = "test -t 0 && echo on a terminal; while :; do stty size; sleep 0.1; done";
    let run = on_terminal(shim, &image, &id, &["sh", "-c", script]);
    let terminal = c.ctr_on_terminal(&run, 80, 24).unwrap();
    terminal
        .wait_for("on a terminal", Duration::from_secs(30))
        .unwrap();
    terminal.wait_for("24 80", Duration::from_secs(30)).unwrap();
    terminal.resize(132, 43).unwrap();
    terminal
        .wait_for("43 132", Duration::from_secs(30))
        .unwrap();
    assert_eq!(c.ctr(&["task", "kill", "-s", "SIGKILL", &id]).status, 0);
    let (status, _) = terminal.wait(Duration::from_secs(30)).unwrap();
    assert_eq!(status, 137);
    assert_clean(&c, &id);
}

fn an_update_lowering_the_memory_limit_ooms_a_growing_module(shim: &Shim) {
    let (c, image) = with_probe(shim, &[]);
    let id = unique_id("update");
    let events = c.events().unwrap();
    let run = c
        .spawn_run(
            shim.runtime,
            &["--memory-limit", "1073741824"],
            &image,
            &id,
            &["/app.wasm", "grow-slowly", "20"],
        )
        .unwrap();
    c.wait_for_status(&id, "RUNNING", Duration::from_secs(20))
        .unwrap();
    // ctr has no update command: as CRI's UpdateContainerResources, through the API.
    c.tasks().set_memory_limit(&id, 96 << 20).unwrap();
    let out = run.wait(Duration::from_secs(120)).unwrap();
    assert_eq!(out.status, 137, "{out:?}");
    assert!(out.stdout.contains("64 MiB\n"), "it never grew: {out:?}");
    assert!(
        !out.stdout.contains("\n200 MiB\n"),
        "the new limit did not hold: {out:?}"
    );
    let events = events.stop();
    let topics = events.topics(&id);
    let oom = topics.iter().position(|t| *t == "/tasks/oom");
    let exit = topics.iter().position(|t| *t == "/tasks/exit");
    assert!(
        matches!((oom, exit), (Some(o), Some(e)) if o < e),
        "no /tasks/oom before /tasks/exit: {topics:?}"
    );
    assert_clean(&c, &id);
}

fn the_exit_of_a_task_whose_shim_was_killed_reaches_containerd(shim: &Shim) {
    let (c, image) = with_probe(shim, &[]);
    let id = unique_id("shim-killed");
    let run = sleeping(shim, &c, &image, &id, &[]);
    let guest = c.task_pid(&id).unwrap();
    let shim_pid = processes()
        .into_iter()
        .find(|(pid, cmdline)| {
            *pid != guest
                && !is_zygote(*pid)
                && cmdline.contains(&format!("containerd-shim-{}-v1", shim.engine))
                && cmdline.contains(&c.socket().display().to_string())
                && namespace_of(*pid, "pid").ok()
                    == namespace_of(std::process::id() as i32, "pid").ok()
        })
        .map(|(pid, _)| pid)
        .expect("the shim's process");
    // The server's socket, as `start` wrote it into the bundle.
    let bundle = c
        .dir()
        .join("state/io.containerd.runtime.v2.task")
        .join(NAMESPACE)
        .join(&id);
    let address = std::fs::read_to_string(bundle.join("address")).unwrap();
    let socket = address.trim().trim_start_matches("unix://").to_string();
    assert!(std::path::Path::new(&socket).exists(), "{socket}");
    let events = c.events().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // containerd sees the shim's connection close, runs the shim's `delete` for the task and
    // publishes its exit; `ctr run` waited on the dead shim and fails (as with runc).
    let out = run.wait(Duration::from_secs(30)).unwrap();
    assert_ne!(out.status, 0, "{out:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::path::Path::new(&format!("/proc/{guest}")).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !std::path::Path::new(&format!("/proc/{guest}")).exists(),
        "the guest {guest} still runs"
    );
    let events = events.stop();
    assert_eq!(events.exit_status(&id), Some(137), "{}", events.text);
    assert_clean(&c, &id);
    assert!(
        !std::path::Path::new(&socket).exists(),
        "the dead shim's socket {socket} is left"
    );
}

fn a_task_survives_a_containerd_restart(shim: &Shim) {
    let (mut c, image) = with_probe(shim, &[]);
    let id = unique_id("restart");
    detached(shim, &c, &image, &id, &["/app.wasm", "sleep"]);
    c.restart().unwrap();
    c.wait_for_status(&id, "RUNNING", Duration::from_secs(20))
        .unwrap();
    let waiting = {
        let tasks = c.tasks();
        let id = id.clone();
        std::thread::spawn(move || tasks.wait(&id))
    };
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(c.ctr(&["task", "kill", &id]).status, 0);
    assert_eq!(waiting.join().unwrap().unwrap(), 143);
    assert_eq!(c.ctr(&["task", "rm", &id]).status, 0);
    assert_eq!(c.ctr(&["container", "rm", &id]).status, 0);
    assert_clean(&c, &id);
}

fn a_checkpoint_is_refused_with_a_reason(shim: &Shim) {
    let (c, image) = with_probe(shim, &[]);
    let id = unique_id("checkpoint");
    detached(shim, &c, &image, &id, &["/app.wasm", "sleep"]);
    let out = c.ctr(&["task", "checkpoint", &id]);
    assert_ne!(out.status, 0, "{out:?}");
    assert!(
        out.stderr.contains("kwasi cannot checkpoint a task"),
        "{out:?}"
    );
    assert_eq!(c.task_status(&id).as_deref(), Some("RUNNING"));
    remove(&c, &id);
}

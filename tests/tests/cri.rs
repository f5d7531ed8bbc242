//! The CRI suite: pods through containerd's CRI plugin with a kwasi runtime handler, driven as
//! kubelet drives them (RunPodSandbox, CreateContainer, StartContainer, ContainerStatus,
//! StopContainer, StopPodSandbox, RemovePodSandbox) — the stand-in for Kubernetes on a node.
//!
//! Each case is a function of the containerd release (Debian's 1.6, and 2.x with its config
//! version 3) and the handler (`wasmtime`, `wasmer`: the runtimes `kwasi install` registers);
//! [`cri!`] makes one `#[test]` per release, case and handler. The pod's sandbox (pause)
//! container and its busybox containers run on the same handler as its wasm containers: the
//! shims run native programs as ordinary containers.

use std::time::Duration;

use k8s_cri::v1::ContainerState;
use kwasi_e2e::cri::{ContainerSpec, Node, Pod, BUSYBOX_IMAGE};
use kwasi_e2e::*;

/// One `#[test]` per containerd release, case and handler:
/// `mod <release> { mod <handler> { fn <case>() } }`, and in each release the HTTP pod on the
/// wasmtime handler (the shim that runs components).
macro_rules! cri {
    ([$($release:ident => $value:expr),* $(,)?], $handlers:tt, $cases:tt) => {
        $(
            mod $release {
                cri!(@release $value, $handlers, $cases);

                #[test]
                fn an_http_wasm_pod_answers_on_its_pod_ip() {
                    super::an_http_wasm_pod_answers_on_its_pod_ip($value);
                }
            }
        )*
    };
    (@release $release:expr, [$($handler:ident),* $(,)?], $cases:tt) => {
        $( cri!(@handler $release, $handler, $cases); )*
    };
    (@handler $release:expr, $handler:ident, [$($case:ident),* $(,)?]) => {
        mod $handler {
            $(
                #[test]
                fn $case() {
                    super::super::$case($release, stringify!($handler));
                }
            )*
        }
    };
}

cri!(
    [
        containerd_1_6 => kwasi_e2e::Release::V1_6,
        containerd_2 => kwasi_e2e::Release::V2,
    ],
    [wasmtime, wasmer],
    [
        a_wasm_pod_writes_its_output_to_the_cri_log,
        a_pod_runs_a_wasm_container_beside_a_busybox_container,
        a_wasm_container_stopped_with_a_grace_period_ends_on_sigterm,
        a_container_ignoring_sigterm_is_killed_when_the_grace_period_ends,
        exit_codes_reach_container_status,
        a_removed_pod_leaves_no_shim_mount_cgroup_or_network_namespace,
        a_pod_with_three_containers_has_one_shim_process,
        containers_of_a_pod_started_at_once_all_run,
        a_container_with_a_missing_module_fails_to_start_with_its_reason,
        exec_sync_runs_a_module_in_a_wasm_container_with_its_output_and_exit_code,
        an_exec_probe_fails_on_timeout_and_its_process_is_gone,
        a_module_growing_past_its_memory_limit_is_oom_killed,
        a_lowered_memory_limit_reaches_a_running_module,
    ]
);

/// Generous bounds for a container to reach a state: liveness, not timing.
const SOON: Duration = Duration::from_secs(60);

fn node(release: Release) -> Node {
    Node::start(release).expect("starting containerd with CRI")
}

fn probe(node: &mut Node) -> String {
    node.wasm_image("probe.wasm").expect("importing the probe")
}

/// The container's state, exit code and reason once it has exited.
fn exited(node: &mut Node, id: &str) -> (i32, String) {
    let (status, _) = node
        .wait_for_state(id, ContainerState::ContainerExited, SOON)
        .unwrap();
    (status.exit_code, status.reason)
}

/// Waits until the container runs and returns its pid.
fn running(node: &mut Node, id: &str) -> i32 {
    node.wait_for_state(id, ContainerState::ContainerRunning, SOON)
        .unwrap()
        .1
}

/// Waits until the container's CRI log holds `text`.
fn wait_for_log(node: &Node, pod: &Pod, name: &str, text: &str) -> String {
    let deadline = std::time::Instant::now() + SOON;
    loop {
        let log = node.log(pod, name).unwrap_or_default();
        if log.contains(text) || std::time::Instant::now() > deadline {
            return log;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Creates and starts each `(name, image, args)` in `pod`, and returns their ids and pids once
/// they run.
fn start_all(
    node: &mut Node,
    pod: &Pod,
    containers: &[(&str, &str, &[&str])],
) -> Vec<(String, i32)> {
    containers
        .iter()
        .map(|&(name, image, args)| {
            let spec = ContainerSpec {
                name,
                image,
                args,
                ..Default::default()
            };
            let id = node.run_container(pod, &spec).unwrap();
            let pid = running(node, &id);
            (id, pid)
        })
        .collect()
}

fn remove(node: &mut Node, pod: &Pod) {
    node.stop_pod(pod).unwrap();
    node.remove_pod(pod).unwrap();
}

fn a_wasm_pod_writes_its_output_to_the_cri_log(release: Release, handler: &str) {
    let mut node = node(release);
    let image = probe(&mut node);
    let pod = node.run_pod("hello", handler).unwrap();
    let spec = ContainerSpec {
        name: "hello",
        image: &image,
        args: &["hello"],
        ..Default::default()
    };
    let id = node.run_container(&pod, &spec).unwrap();
    assert_eq!(exited(&mut node, &id), (0, "Completed".to_string()));
    let log = node.log(&pod, "hello").unwrap();
    assert!(log.contains("hello from wasm\n"), "{log:?}");
    assert!(log.contains("hello on stderr\n"), "{log:?}");
    remove(&mut node, &pod);
}

fn a_pod_runs_a_wasm_container_beside_a_busybox_container(release: Release, handler: &str) {
    let mut node = node(release);
    let image = probe(&mut node);
    let pod = node.run_pod("mixed", handler).unwrap();
    let wasm = node.run_container(&pod, &sleeping("wasm", &image)).unwrap();
    let busybox = node
        .run_container(
            &pod,
            &ContainerSpec {
                name: "busybox",
                image: BUSYBOX_IMAGE,
                args: &[
                    "-c",
                    "echo from busybox in $(cat /etc/hostname); exec sleep 3600",
                ],
                ..Default::default()
            },
        )
        .unwrap();
    let wasm_pid = running(&mut node, &wasm);
    let busybox_pid = running(&mut node, &busybox);
    let sandbox = node.pod_status(&pod).unwrap();
    assert!(!sandbox.ip.is_empty(), "the pod has no IP: {sandbox:?}");
    for kind in ["net", "ipc", "uts"] {
        let pause = namespace_of(sandbox.pid, kind).unwrap();
        assert_eq!(namespace_of(wasm_pid, kind).unwrap(), pause, "{kind}");
        assert_eq!(namespace_of(busybox_pid, kind).unwrap(), pause, "{kind}");
    }
    let log = wait_for_log(&node, &pod, "busybox", "from busybox");
    assert_eq!(log, "from busybox in mixed\n");
    assert_eq!(wait_for_log(&node, &pod, "wasm", "sleeping"), "sleeping\n");
    remove(&mut node, &pod);
}

/// Runs `command` + `args` of the probe image (`wasm`) or of busybox in a new pod, stops it
/// with a grace period of `grace` seconds once it runs, and returns its exit code and reason.
fn stopped_with_grace(
    release: Release,
    handler: &str,
    wasm: bool,
    command: &[&str],
    args: &[&str],
    grace: i64,
) -> (i32, String) {
    let mut node = node(release);
    let image = if wasm {
        probe(&mut node)
    } else {
        BUSYBOX_IMAGE.to_string()
    };
    let pod = node.run_pod("graceful", handler).unwrap();
    let spec = ContainerSpec {
        name: "stopped",
        image: &image,
        command,
        args,
        ..Default::default()
    };
    let id = node.run_container(&pod, &spec).unwrap();
    running(&mut node, &id);
    node.stop_container(&id, grace).unwrap();
    let ended = exited(&mut node, &id);
    remove(&mut node, &pod);
    ended
}

fn a_wasm_container_stopped_with_a_grace_period_ends_on_sigterm(release: Release, handler: &str) {
    // SIGTERM, then SIGKILL after 30 s: 143 says SIGTERM ended it, 137 would say SIGKILL did.
    let ended = stopped_with_grace(release, handler, true, &[], &["sleep"], 30);
    assert_eq!(ended, (143, "Error".to_string()));
}

fn a_container_ignoring_sigterm_is_killed_when_the_grace_period_ends(
    release: Release,
    handler: &str,
) {
    // PID 1 of its PID namespace without a handler: the kernel drops SIGTERM.
    let ended = stopped_with_grace(release, handler, false, &["/bin/sleep"], &["3600"], 2);
    assert_eq!(ended, (137, "Error".to_string()));
}

fn exit_codes_reach_container_status(release: Release, handler: &str) {
    let mut node = node(release);
    let image = probe(&mut node);
    let pod = node.run_pod("codes", handler).unwrap();
    /// A container's name, image and args, and the exit code and reason expected.
    type Case<'a> = (&'a str, &'a str, &'a [&'a str], (i32, &'a str));
    let cases: [Case; 4] = [
        ("zero", &image, &["exit", "0"], (0, "Completed")),
        ("three", &image, &["exit", "3"], (3, "Error")),
        ("trap", &image, &["trap"], (134, "Error")),
        ("native", BUSYBOX_IMAGE, &["-c", "exit 5"], (5, "Error")),
    ];
    for (name, image, args, (code, reason)) in cases {
        let spec = ContainerSpec {
            name,
            image,
            args,
            ..Default::default()
        };
        let id = node.run_container(&pod, &spec).unwrap();
        assert_eq!(exited(&mut node, &id), (code, reason.to_string()), "{name}");
    }
    remove(&mut node, &pod);
}

fn a_removed_pod_leaves_no_shim_mount_cgroup_or_network_namespace(release: Release, handler: &str) {
    let mut node = node(release);
    let image = probe(&mut node);
    let pod = node.run_pod("tidy", handler).unwrap();
    let mut ids = vec![pod.id.clone()];
    let started = start_all(
        &mut node,
        &pod,
        &[
            ("wasm", &image, &["sleep"]),
            ("busybox", BUSYBOX_IMAGE, &["-c", "exec sleep 3600"]),
        ],
    );
    ids.extend(started.into_iter().map(|(id, _)| id));
    let netns = node.pod_status(&pod).unwrap().netns;
    assert!(
        std::path::Path::new(&netns).exists(),
        "the pod has no network namespace: {netns:?}"
    );
    assert!(!pod.cgroup_dirs().is_empty(), "the pod has no cgroup");
    assert!(!node.shims().is_empty());

    // As kubelet: the containers with their grace period, then the pod.
    for id in &ids[1..] {
        node.stop_container(id, 5).unwrap();
    }
    node.stop_pod(&pod).unwrap();
    node.remove_pod(&pod).unwrap(); // fails while a container's cgroup is left in the pod's

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let left = loop {
        let mut left: Vec<String> = node
            .shims()
            .into_iter()
            .map(|(pid, cmd)| format!("shim {pid}: {cmd}"))
            .collect();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        for id in &ids {
            left.extend(
                mountinfo
                    .lines()
                    .filter(|l| l.contains(id.as_str()))
                    .map(|l| format!("mount: {l}")),
            );
            // Its sandbox state, and its containerd container, task and snapshot.
            left.extend(node.containerd.leftovers(id));
        }
        if std::path::Path::new(&netns).exists() {
            left.push(format!("network namespace {netns}"));
        }
        left.extend(
            pod.cgroup_dirs()
                .into_iter()
                .map(|d| format!("cgroup {}", d.display())),
        );
        if left.is_empty() || std::time::Instant::now() > deadline {
            break left;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(left.is_empty(), "the pod left behind: {left:#?}");
}

fn a_pod_with_three_containers_has_one_shim_process(release: Release, handler: &str) {
    let mut node = node(release);
    let image = probe(&mut node);
    let pod = node.run_pod("three", handler).unwrap();
    let mut pids = vec![node.pod_status(&pod).unwrap().pid];
    let started = start_all(
        &mut node,
        &pod,
        &[
            ("first", &image, &["sleep"]),
            ("second", &image, &["sleep"]),
            ("sidecar", BUSYBOX_IMAGE, &["-c", "exec sleep 3600"]),
        ],
    );
    pids.extend(started.into_iter().map(|(_, pid)| pid));
    let shims = node.shims();
    assert_eq!(shims.len(), 1, "{shims:#?}");
    let shim = shims[0].0;
    for pid in pids {
        assert_eq!(
            parent_of(pid),
            shim,
            "process {pid} is not a child of the pod's shim"
        );
    }
    // A second pod gets a shim of its own.
    let other = node.run_pod("other", handler).unwrap();
    assert_eq!(node.shims().len(), 2);
    remove(&mut node, &other);
    remove(&mut node, &pod);
}

/// One shim serves the whole pod, so CRI calls for its containers can reach it at the same
/// time (kubelet makes them one by one, other CRI clients need not): each start starts its own
/// container, and starts after the removal of those containers still work.
fn containers_of_a_pod_started_at_once_all_run(release: Release, handler: &str) {
    const ROUNDS: usize = 3;
    const AT_ONCE: usize = 8;
    let mut node = node(release);
    let image = probe(&mut node);
    let pod = node.run_pod("at-once", handler).unwrap();
    for round in 0..ROUNDS {
        let names: Vec<String> = (0..AT_ONCE).map(|i| format!("r{round}c{i}")).collect();
        let ids: Vec<String> = names
            .iter()
            .map(|name| {
                node.create_container(&pod, &sleeping(name, &image))
                    .unwrap()
            })
            .collect();
        node.start_containers_at_once(&ids).unwrap();
        for id in &ids {
            running(&mut node, id);
        }
        for id in &ids {
            node.stop_container(id, 0).unwrap();
            node.remove_container(id).unwrap();
        }
    }
    let id = node
        .run_container(&pod, &sleeping("later", &image))
        .unwrap();
    running(&mut node, &id);
    assert_eq!(node.shims().len(), 1, "{:#?}", node.shims());
    remove(&mut node, &pod);
}

/// A container of `image` that sleeps until it is stopped.
fn sleeping<'a>(name: &'a str, image: &'a str) -> ContainerSpec<'a> {
    ContainerSpec {
        name,
        image,
        args: &["sleep"],
        ..Default::default()
    }
}

/// The parent pid of `pid`.
fn parent_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // `pid (comm) state ppid ...`: comm may hold spaces, so split after its closing bracket.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.split(' ').nth(1).unwrap().parse().unwrap()
}

fn an_http_wasm_pod_answers_on_its_pod_ip(release: Release) {
    let mut node = node(release);
    let image = node.wasm_image("http.wasm").unwrap();
    let pod = node.run_pod("web", "wasmtime").unwrap();
    let spec = ContainerSpec {
        name: "web",
        image: &image,
        ..Default::default()
    };
    let id = node.run_container(&pod, &spec).unwrap();
    running(&mut node, &id);
    let ip = node.pod_status(&pod).unwrap().ip;
    let addr: std::net::SocketAddr = format!("{ip}:8080").parse().unwrap();
    http::wait_listening(addr, SOON).unwrap();
    let (status, body) = http::get(&http::client(), addr, "/").unwrap();
    assert_eq!((status, body.as_str()), (200, "hello from kwasi\n"));
    // The server drains and exits 0 on SIGTERM, well inside its grace period.
    node.stop_container(&id, 30).unwrap();
    assert_eq!(exited(&mut node, &id), (0, "Completed".to_string()));
    remove(&mut node, &pod);
}

fn a_container_with_a_missing_module_fails_to_start_with_its_reason(
    release: Release,
    handler: &str,
) {
    let mut node = node(release);
    let image = probe(&mut node);
    let pod = node.run_pod("bad", handler).unwrap();
    let spec = ContainerSpec {
        name: "bad",
        image: &image,
        command: &["/nope.wasm"],
        ..Default::default()
    };
    let id = node.create_container(&pod, &spec).unwrap();
    let err = node.start_container(&id).unwrap_err().to_string();
    let reason = err.lines().next().unwrap_or_default();
    assert!(
        reason.contains("entrypoint /nope.wasm: no such file in the container"),
        "{err}"
    );
    let (status, _) = node.container_status(&id).unwrap();
    assert!(
        status.message.contains("/nope.wasm"),
        "ContainerStatus does not say why: {status:?}"
    );
    // The pod is unharmed: its next container runs.
    let spec = ContainerSpec {
        name: "good",
        image: &image,
        args: &["exit", "0"],
        ..Default::default()
    };
    let good = node.run_container(&pod, &spec).unwrap();
    assert_eq!(exited(&mut node, &good), (0, "Completed".to_string()));
    remove(&mut node, &pod);
    assert!(node.shims().is_empty(), "{:#?}", node.shims());
}

/// Runs one container of `image` with `args` (and a memory limit, 0 for none) in a new pod;
/// returns the pod and the container's id once it runs.
fn one_running(
    node: &mut Node,
    handler: &str,
    image: &str,
    args: &[&str],
    memory_limit: i64,
) -> (Pod, String) {
    let pod = node.run_pod("one", handler).unwrap();
    let spec = ContainerSpec {
        name: "one",
        image,
        args,
        memory_limit,
        ..Default::default()
    };
    let id = node.run_container(&pod, &spec).unwrap();
    running(node, &id);
    (pod, id)
}

fn exec_sync_runs_a_module_in_a_wasm_container_with_its_output_and_exit_code(
    release: Release,
    handler: &str,
) {
    let mut node = node(release);
    let image = probe(&mut node);
    let (pod, id) = one_running(&mut node, handler, &image, &["sleep"], 0);
    let hello = node.exec_sync(&id, &["/app.wasm", "hello"], 0).unwrap();
    assert_eq!(hello.exit_code, 0, "{hello:?}");
    assert_eq!(hello.stdout, "hello from wasm\n", "{hello:?}");
    assert_eq!(hello.stderr, "hello on stderr\n", "{hello:?}");
    let failed = node
        .exec_sync(&id, &["/app.wasm", "exit", "3"], 10)
        .unwrap();
    assert_eq!(failed.exit_code, 3, "{failed:?}");
    remove(&mut node, &pod);
}

fn an_exec_probe_fails_on_timeout_and_its_process_is_gone(release: Release, handler: &str) {
    let mut node = node(release);
    let image = probe(&mut node);
    let (pod, id) = one_running(&mut node, handler, &image, &["sleep"], 0);
    let err = node
        .exec_sync(&id, &["/app.wasm", "sleep"], 1)
        .expect_err("an exec past its timeout fails");
    assert!(format!("{err:#}").contains("timeout"), "{err:#}");
    // containerd kills the exec process; the container goes on alone.
    let ps = node.containerd.ctr(&["task", "ps", &id]);
    assert_eq!(
        ps.stdout.lines().count(),
        2,
        "only the header and the init process: {ps:?}"
    );
    assert_eq!(
        node.container_status(&id).unwrap().0.state,
        ContainerState::ContainerRunning as i32
    );
    remove(&mut node, &pod);
}

fn a_module_growing_past_its_memory_limit_is_oom_killed(release: Release, handler: &str) {
    let mut node = node(release);
    let image = probe(&mut node);
    let pod = node.run_pod("oom", handler).unwrap();
    let spec = ContainerSpec {
        name: "grow",
        image: &image,
        args: &["grow"],
        memory_limit: 64 << 20,
        ..Default::default()
    };
    let id = node.run_container(&pod, &spec).unwrap();
    assert_eq!(exited(&mut node, &id), (137, "OOMKilled".to_string()));
    remove(&mut node, &pod);
}

fn a_lowered_memory_limit_reaches_a_running_module(release: Release, handler: &str) {
    let mut node = node(release);
    let image = probe(&mut node);
    // 1 MiB more every 50 ms, under a limit it would reach in 200 s: well past the time
    // `exited` waits, so only the new limit can end it in that time.
    let args = ["grow-slowly", "50"];
    let (pod, id) = one_running(&mut node, handler, &image, &args, 4 << 30);
    node.set_memory_limit(&id, 48 << 20).unwrap();
    assert_eq!(exited(&mut node, &id), (137, "OOMKilled".to_string()));
    remove(&mut node, &pod);
}

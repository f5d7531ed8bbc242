//! The Kubernetes suite: a real single-node cluster ([`Cluster`]: kine, kube-apiserver,
//! kube-controller-manager, kube-scheduler, a kubelet on containerd 2.x with kwasi's shims),
//! driven as a user drives it: manifests applied with `kubectl`, state read back with it.
//!
//! The cluster takes a minute to start, so one serves every case, run one after the other by
//! this file's own `main` (`harness = false`); each case deletes what it made. Arguments
//! filter the cases by name, as with the standard test harness. The last case checks that
//! nothing of ours is left once everything is deleted.

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use kwasi_e2e::kube::Cluster;
use kwasi_e2e::*;

/// A case: its name and the function that runs it.
type Case = (&'static str, fn(&mut Cluster));

/// Each function with its name.
macro_rules! cases {
    ($($case:ident),* $(,)?) => {
        &[$((stringify!($case), $case as fn(&mut Cluster))),*]
    };
}

/// Every case, in the order they run.
const CASES: &[Case] = cases![
    a_wasm_pod_runs_to_completion_and_kubectl_logs_shows_its_output,
    an_http_deployment_becomes_ready_and_answers_on_its_pod_ip,
    a_component_failing_its_liveness_probe_is_restarted,
    a_mixed_pod_runs_a_wasm_container_and_a_busybox_sidecar_on_one_shim,
    restart_policy_on_failure_restarts_a_wasm_container_that_exits_1,
    a_module_growing_past_its_memory_limit_is_oom_killed,
    kubectl_delete_stops_a_module_with_143_and_drains_a_component_with_0,
    a_deployment_of_50_replicas_becomes_ready,
    kubectl_exec_runs_a_module_in_a_wasm_pod_with_its_exit_code_and_input,
    an_exec_liveness_probe_keeps_a_passing_container_and_restarts_a_failing_one,
    a_spinapp_applied_through_spin_operator_serves_its_routes,
    nothing_is_left_once_every_workload_is_deleted,
];

fn main() {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let selected: Vec<_> = CASES
        .iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f)))
        .collect();
    println!("running {} Kubernetes cases", selected.len());
    if selected.is_empty() {
        return;
    }
    let started = Instant::now();
    let mut cluster = match Cluster::start() {
        Ok(cluster) => cluster,
        Err(err) => {
            eprintln!("starting the cluster: {err:#}");
            std::process::exit(1);
        }
    };
    println!("cluster up in {:.1} s", started.elapsed().as_secs_f64());
    let mut failed = Vec::new();
    for (name, case) in selected {
        let t = Instant::now();
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| case(&mut cluster)));
        // Whatever the case left (it failed half-way, say) must not reach the next one.
        let cleaned = cluster.delete_workloads();
        let took = t.elapsed().as_secs_f64();
        match (outcome, cleaned) {
            (Ok(()), Ok(())) => println!("test {name} ... ok ({took:.1} s)"),
            (Ok(()), Err(err)) => {
                println!("test {name} ... FAILED: cleaning up: {err:#}");
                failed.push(*name);
            }
            (Err(_), _) => {
                println!("test {name} ... FAILED ({took:.1} s)");
                failed.push(*name);
            }
        }
    }
    drop(cluster);
    if failed.is_empty() {
        println!("test result: ok");
    } else {
        println!("test result: FAILED: {failed:?}");
        std::process::exit(1);
    }
}

/// Generous bounds for the cluster to get somewhere: liveness, not timing.
const SOON: Duration = Duration::from_secs(120);

/// The image of test guest `file`, imported into the node's containerd.
fn image(cluster: &mut Cluster, file: &str) -> String {
    cluster.node.wasm_image(file).expect("importing a guest")
}

/// A pod's field by JSONPath.
fn pod_field(cluster: &Cluster, pod: &str, path: &str) -> String {
    cluster
        .kubectl(&["get", "pod", pod, "-o", &format!("jsonpath={path}")])
        .stdout
}

/// Waits until `kubectl get pod POD` shows `path` equal to `want`.
fn wait_pod_field(cluster: &Cluster, pod: &str, path: &str, want: &str) {
    let what = format!("pod {pod}: {path} is {want}");
    cluster
        .wait_until(&what, SOON, |c| pod_field(c, pod, path) == want)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", describe(cluster, pod)));
}

/// `kubectl describe pod`, for failure messages.
fn describe(cluster: &Cluster, pod: &str) -> String {
    let out = cluster.kubectl(&["describe", "pod", pod]);
    format!("{}{}", out.stdout, out.stderr)
}

/// A pod running `command` of the probe guest on `handler`.
fn probe_pod(name: &str, image: &str, handler: &str, restart: &str, args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  runtimeClassName: {handler}
  restartPolicy: {restart}
  containers:
  - name: probe
    image: {image}
    imagePullPolicy: Never
    args: [{args}]
"#,
        args = args.join(", ")
    )
}

fn a_wasm_pod_runs_to_completion_and_kubectl_logs_shows_its_output(cluster: &mut Cluster) {
    let image = image(cluster, "probe.wasm");
    for handler in built_handlers() {
        let pod = format!("hello-{handler}");
        cluster
            .apply(&probe_pod(&pod, &image, handler, "Never", &["hello"]))
            .unwrap();
        wait_pod_field(cluster, &pod, "{.status.phase}", "Succeeded");
        let logs = cluster.kubectl(&["logs", &pod]);
        assert_eq!(logs.status, 0, "{logs:?}");
        assert!(logs.stdout.contains("hello from wasm\n"), "{logs:?}");
        assert!(logs.stdout.contains("hello on stderr\n"), "{logs:?}");
        let exit = pod_field(
            cluster,
            &pod,
            "{.status.containerStatuses[0].state.terminated.exitCode}",
        );
        assert_eq!(exit, "0");
    }
}

/// The kwasi handlers whose shims are built (the RuntimeClasses the suite uses).
fn built_handlers() -> Vec<&'static str> {
    Shim::built_ones()
        .into_iter()
        .map(|s| s.engine)
        .filter(|e| *e != "wasmedge" || cfg!(feature = "wasmedge"))
        .collect()
}

/// A Deployment of the HTTP guest on wasmtime with an httpGet readiness probe on `/` and a
/// liveness probe on `liveness`.
fn http_deployment(name: &str, image: &str, replicas: u32, liveness: &str) -> String {
    let pod_spec = format!(
        r#"      runtimeClassName: wasmtime
      containers:
      - name: web
        image: {image}
        imagePullPolicy: Never
        ports:
        - containerPort: 8080
        readinessProbe:
          httpGet: {{path: /, port: 8080}}
          periodSeconds: 1
        livenessProbe:
          httpGet: {{path: {liveness}, port: 8080}}
          periodSeconds: 1
          failureThreshold: 2
"#
    );
    kwasi_e2e::kube::deployment(name, replicas, &pod_spec)
}

/// The names of the pods labelled `app=APP`.
fn pods_of(cluster: &Cluster, app: &str) -> Vec<String> {
    cluster
        .kubectl(&["get", "pods", "-l", &format!("app={app}"), "-o", "name"])
        .stdout
        .lines()
        .map(|l| l.trim_start_matches("pod/").to_string())
        .collect()
}

/// Waits until the Deployment `name` has `replicas` ready replicas.
fn wait_ready(cluster: &Cluster, name: &str, replicas: u32, timeout: Duration) {
    cluster
        .wait_ready(name, replicas, timeout)
        .unwrap_or_else(|e| {
            let pods = cluster.kubectl(&["get", "pods", "-o", "wide"]).stdout;
            panic!("{e:#}\n{pods}")
        });
}

fn an_http_deployment_becomes_ready_and_answers_on_its_pod_ip(cluster: &mut Cluster) {
    let image = image(cluster, "http.wasm");
    cluster
        .apply(&http_deployment("web", &image, 1, "/"))
        .unwrap();
    wait_ready(cluster, "web", 1, SOON);
    let pod = pods_of(cluster, "web").pop().expect("a pod");
    let ip = pod_field(cluster, &pod, "{.status.podIP}");
    let addr: std::net::SocketAddr = format!("{ip}:8080").parse().unwrap();
    let (status, body) = http::get(&http::client(), addr, "/").unwrap();
    assert_eq!((status, body.as_str()), (200, "hello from kwasi\n"));
    assert_eq!(
        pod_field(cluster, &pod, "{.status.containerStatuses[0].restartCount}"),
        "0"
    );
}

fn a_component_failing_its_liveness_probe_is_restarted(cluster: &mut Cluster) {
    // GET /trap traps in the guest: the server answers 500, the kubelet restarts it.
    let image = image(cluster, "http.wasm");
    cluster
        .apply(&http_deployment("trapping", &image, 1, "/trap"))
        .unwrap();
    let pod = {
        let mut pods = Vec::new();
        cluster
            .wait_until("the pod exists", SOON, |c| {
                pods = pods_of(c, "trapping");
                !pods.is_empty()
            })
            .unwrap();
        pods.remove(0)
    };
    let count = |c: &Cluster| {
        pod_field(c, &pod, "{.status.containerStatuses[0].restartCount}")
            .parse::<u32>()
            .unwrap_or(0)
    };
    cluster
        .wait_until("the container is restarted twice", SOON, |c| count(c) >= 2)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", describe(cluster, &pod)));
    let events = cluster
        .kubectl(&[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={pod}"),
        ])
        .stdout;
    assert!(
        events.contains("Liveness probe failed") && events.contains("500"),
        "{events}"
    );
}

fn a_mixed_pod_runs_a_wasm_container_and_a_busybox_sidecar_on_one_shim(cluster: &mut Cluster) {
    let image = image(cluster, "probe.wasm");
    for handler in built_handlers() {
        let pod = format!("mixed-{handler}");
        cluster
            .apply(&format!(
                r#"apiVersion: v1
kind: Pod
metadata:
  name: {pod}
spec:
  runtimeClassName: {handler}
  containers:
  - name: wasm
    image: {image}
    imagePullPolicy: Never
    args: ["sleep"]
  - name: sidecar
    image: {busybox}
    imagePullPolicy: Never
    command: ["/bin/sh", "-c", "trap 'exit 0' TERM; echo sidecar up; while :; do sleep 1; done"]
"#,
                busybox = cri::BUSYBOX_IMAGE,
            ))
            .unwrap();
        wait_pod_field(cluster, &pod, "{.status.phase}", "Running");
        cluster
            .wait_until("both containers log", SOON, |c| {
                c.kubectl(&["logs", &pod, "-c", "wasm"]).stdout == "sleeping\n"
                    && c.kubectl(&["logs", &pod, "-c", "sidecar"]).stdout == "sidecar up\n"
            })
            .unwrap();
        let shims = cluster.node.shims();
        let engine = format!("containerd-shim-{handler}-v1");
        let ours: Vec<_> = shims.iter().filter(|(_, c)| c.contains(&engine)).collect();
        assert_eq!(ours.len(), 1, "one shim for the pod: {shims:#?}");
        cluster.delete_workloads().unwrap();
    }
}

fn restart_policy_on_failure_restarts_a_wasm_container_that_exits_1(cluster: &mut Cluster) {
    let image = image(cluster, "probe.wasm");
    cluster
        .apply(&probe_pod(
            "failing",
            &image,
            "wasmtime",
            "OnFailure",
            &["exit", "1"],
        ))
        .unwrap();
    cluster
        .wait_until("the container is restarted", SOON, |c| {
            pod_field(c, "failing", "{.status.containerStatuses[0].restartCount}")
                .parse::<u32>()
                .unwrap_or(0)
                >= 1
        })
        .unwrap_or_else(|e| panic!("{e:#}\n{}", describe(cluster, "failing")));
    let last = pod_field(
        cluster,
        "failing",
        "{.status.containerStatuses[0].lastState.terminated.exitCode}",
    );
    assert_eq!(last, "1");
}

fn a_module_growing_past_its_memory_limit_is_oom_killed(cluster: &mut Cluster) {
    let image = image(cluster, "probe.wasm");
    for handler in built_handlers().into_iter().chain(["runc"]) {
        let pod = format!("grow-{handler}");
        let (image, args) = if handler == "runc" {
            // The baseline: a busybox shell growing a string past the limit.
            (
                cri::BUSYBOX_IMAGE.to_string(),
                r#"command: ["/bin/sh", "-c", "x=x; while :; do x=$x$x; done"]"#.to_string(),
            )
        } else {
            (image.clone(), r#"args: ["grow"]"#.to_string())
        };
        let class = if handler == "runc" {
            String::new()
        } else {
            format!("runtimeClassName: {handler}")
        };
        cluster
            .apply(&format!(
                r#"apiVersion: v1
kind: Pod
metadata:
  name: {pod}
spec:
  {class}
  restartPolicy: Never
  containers:
  - name: grow
    image: {image}
    imagePullPolicy: Never
    {args}
    resources:
      limits: {{memory: 64Mi}}
"#
            ))
            .unwrap();
        wait_pod_field(cluster, &pod, "{.status.phase}", "Failed");
        let terminated = "{.status.containerStatuses[0].state.terminated}";
        let reason = pod_field(cluster, &pod, &terminated.replace('}', ".reason}"));
        let code = pod_field(cluster, &pod, &terminated.replace('}', ".exitCode}"));
        assert_eq!(
            (reason.as_str(), code.as_str()),
            ("OOMKilled", "137"),
            "{handler}: {}",
            describe(cluster, &pod)
        );
    }
}

fn kubectl_delete_stops_a_module_with_143_and_drains_a_component_with_0(cluster: &mut Cluster) {
    let probe = image(cluster, "probe.wasm");
    let http = image(cluster, "http.wasm");
    cluster
        .apply(&probe_pod(
            "sleeper",
            &probe,
            "wasmtime",
            "Never",
            &["sleep"],
        ))
        .unwrap();
    cluster
        .apply(&format!(
            r#"apiVersion: v1
kind: Pod
metadata:
  name: server
spec:
  runtimeClassName: wasmtime
  terminationGracePeriodSeconds: 30
  containers:
  - name: web
    image: {http}
    imagePullPolicy: Never
"#
        ))
        .unwrap();
    for pod in ["sleeper", "server"] {
        wait_pod_field(cluster, pod, "{.status.phase}", "Running");
    }
    let container = |pod: &str| {
        pod_field(cluster, pod, "{.status.containerStatuses[0].containerID}")
            .trim_start_matches("containerd://")
            .to_string()
    };
    let (sleeper, server) = (container("sleeper"), container("server"));
    let events = cluster.node.containerd.events().unwrap();
    let deleted = cluster.kubectl(&["delete", "pod", "sleeper", "server", "--wait=true"]);
    assert_eq!(deleted.status, 0, "{deleted:?}");
    let exits = events.stop();
    assert_eq!(exits.exit_status(&sleeper), Some(143), "{exits:?}");
    assert_eq!(exits.exit_status(&server), Some(0), "{exits:?}");
}

fn a_deployment_of_50_replicas_becomes_ready(cluster: &mut Cluster) {
    let image = image(cluster, "http.wasm");
    let started = Instant::now();
    cluster
        .apply(&http_deployment("fifty", &image, 50, "/"))
        .unwrap();
    wait_ready(cluster, "fifty", 50, Duration::from_secs(600));
    eprintln!(
        "50 replicas ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(pods_of(cluster, "fifty").len(), 50);
}

/// `kubectl exec [-i] POD -- ARGS` with `input` on its stdin; waits for it to end.
fn kubectl_exec(cluster: &Cluster, pod: &str, input: Option<&[u8]>, args: &[&str]) -> CtrOutput {
    use std::io::Write;
    use std::process::Stdio;
    let mut all = vec!["exec"];
    if input.is_some() {
        all.push("-i");
    }
    all.extend([pod, "--"]);
    all.extend_from_slice(args);
    let mut child = cluster
        .kubectl_command(&all)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(input).unwrap();
    }
    RunningCtr::from(child)
        .wait(SOON)
        .expect("kubectl exec hangs")
}

fn kubectl_exec_runs_a_module_in_a_wasm_pod_with_its_exit_code_and_input(cluster: &mut Cluster) {
    let image = image(cluster, "probe.wasm");
    for handler in built_handlers() {
        let pod = format!("execd-{handler}");
        cluster
            .apply(&probe_pod(&pod, &image, handler, "Never", &["sleep"]))
            .unwrap();
        wait_pod_field(cluster, &pod, "{.status.phase}", "Running");
        let hello = kubectl_exec(cluster, &pod, None, &["/app.wasm", "hello"]);
        assert_eq!(hello.status, 0, "{handler}: {hello:?}");
        assert!(
            hello.stdout.contains("hello from wasm\n"),
            "{handler}: {hello:?}"
        );
        let failing = kubectl_exec(cluster, &pod, None, &["/app.wasm", "exit", "3"]);
        assert_eq!(failing.status, 3, "{handler}: {failing:?}");
        let typed = kubectl_exec(cluster, &pod, Some(b"typed\n"), &["/app.wasm", "cat"]);
        assert_eq!(typed.status, 0, "{handler}: {typed:?}");
        assert_eq!(
            typed.stdout, "typed\n[end of input]\n",
            "{handler}: {typed:?}"
        );
    }
}

fn an_exec_liveness_probe_keeps_a_passing_container_and_restarts_a_failing_one(
    cluster: &mut Cluster,
) {
    let image = image(cluster, "probe.wasm");
    let container = |name: &str, code: u32| {
        format!(
            r#"  - name: {name}
    image: {image}
    imagePullPolicy: Never
    args: ["sleep"]
    livenessProbe:
      exec:
        command: ["/app.wasm", "exit", "{code}"]
      periodSeconds: 1
      timeoutSeconds: 30
      failureThreshold: 1
"#
        )
    };
    cluster
        .apply(&format!(
            r#"apiVersion: v1
kind: Pod
metadata:
  name: probed
spec:
  runtimeClassName: wasmtime
  containers:
{}{}"#,
            container("passing", 0),
            container("failing", 1)
        ))
        .unwrap();
    let restarts = |c: &Cluster, name: &str| {
        pod_field(
            c,
            "probed",
            &format!("{{.status.containerStatuses[?(@.name==\"{name}\")].restartCount}}"),
        )
        .parse::<u32>()
        .unwrap_or(0)
    };
    cluster
        .wait_until("the failing container is restarted", SOON, |c| {
            restarts(c, "failing") >= 1
        })
        .unwrap_or_else(|e| panic!("{e:#}\n{}", describe(cluster, "probed")));
    assert_eq!(
        restarts(cluster, "passing"),
        0,
        "{}",
        describe(cluster, "probed")
    );
    let events = cluster
        .kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=probed",
        ])
        .stdout;
    assert!(events.contains("Liveness probe failed"), "{events}");
}

/// SpinKube's path as its users take it: spin-operator runs (its CRDs, then the operator);
/// the RuntimeClass (`wasmtime-spin-v2`, handler `spin`) and the SpinAppExecutor of SpinKube's
/// samples are applied as they ship; a SpinApp names an image laid out as `spin registry
/// push` lays it out. The operator makes the Deployment (`command: ["/"]`, port 80, the CA
/// bundle mounted by sub-path, `SPIN_HTTP_LISTEN_ADDR`, the app's variables as
/// `SPIN_VARIABLE_*`) and the Service; the pod serves the app's routes, the Service's
/// endpoints reach it, and the SpinApp's status counts it ready.
fn a_spinapp_applied_through_spin_operator_serves_its_routes(cluster: &mut Cluster) {
    let image = "kwasi.test/spin-three:v1";
    kwasi_e2e::spin::import_three_components(&cluster.node.containerd, image).unwrap();
    cluster.start_spin_operator().unwrap();
    for sample in [
        "spin-operator-runtime-class.yaml",
        "spin-operator-shim-executor.yaml",
    ] {
        let manifest = std::fs::read_to_string(node::binary(sample).unwrap()).unwrap();
        cluster.apply(&manifest).unwrap();
    }
    cluster
        .apply(&format!(
            r#"apiVersion: core.spinkube.dev/v1alpha1
kind: SpinApp
metadata:
  name: spin-app
spec:
  image: "{image}"
  replicas: 1
  executor: containerd-shim-spin
  variables:
  - {{name: greeting, value: hello}}
"#
        ))
        .unwrap();
    let spinapp_ready = |c: &Cluster| {
        c.kubectl(&[
            "get",
            "spinapp",
            "spin-app",
            "-o",
            "jsonpath={.status.readyReplicas}",
        ])
        .stdout
            == "1"
    };
    let waited = cluster.wait_until("the SpinApp has 1 ready replica", SOON, spinapp_ready);
    let pods = cluster
        .kubectl(&[
            "get",
            "pods",
            "-l",
            "core.spinkube.dev/app-name=spin-app",
            "-o",
            "name",
        ])
        .stdout;
    let pod = pods.trim().trim_start_matches("pod/").to_string();
    waited.unwrap_or_else(|e| {
        panic!(
            "{e:#}\n{}\n{}",
            describe(cluster, &pod),
            cluster.log("spin-operator")
        )
    });

    let deployment = cluster.get("deployment", "spin-app").unwrap();
    let spec = &deployment["spec"]["template"]["spec"];
    assert_eq!(spec["runtimeClassName"], "wasmtime-spin-v2", "{spec}");
    let env = spec["containers"][0]["env"].to_string();
    assert!(env.contains("SPIN_VARIABLE_GREETING"), "{env}");

    let ip = pod_field(cluster, &pod, "{.status.podIP}");
    let addr: std::net::SocketAddr = format!("{ip}:80").parse().unwrap();
    let agent = http::client();
    let (status, body) = http::get(&agent, addr, "/api/x").unwrap();
    assert_eq!((status, body.as_str()), (200, "hello from kwasi\n"));
    let (status, body) = http::get(&agent, addr, "/front/page").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("spin-path-info=/front/page\n"), "{body}");
    assert!(body.contains("spin-matched-route=/...\n"), "{body}");

    let endpoints = cluster
        .kubectl(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=spin-app",
            "-o",
            "jsonpath={.items[*].endpoints[*].addresses[*]}",
        ])
        .stdout;
    assert_eq!(endpoints.trim(), ip, "the Service spin-app reaches the pod");

    cluster.delete_workloads().unwrap();
    let out = cluster.kubectl(&["delete", "runtimeclass/wasmtime-spin-v2", "secret/spin-ca"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
}

fn nothing_is_left_once_every_workload_is_deleted(cluster: &mut Cluster) {
    let image = image(cluster, "probe.wasm");
    cluster
        .apply(&probe_pod("last", &image, "wasmtime", "Never", &["sleep"]))
        .unwrap();
    wait_pod_field(cluster, "last", "{.status.phase}", "Running");
    cluster.delete_workloads().unwrap();
    let left = cluster
        .wait_until("the node is clean", SOON, |c| c.leftovers().is_empty())
        .map_err(|_| cluster.leftovers());
    assert!(left.is_ok(), "left behind: {left:#?}");
}

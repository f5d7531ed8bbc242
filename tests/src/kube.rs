//! A real single-node Kubernetes, started from the binaries `tests/node/build.sh` builds:
//! kine (the etcd API over sqlite), kube-apiserver, kube-controller-manager, kube-scheduler,
//! and a kubelet on containerd 2.x with kwasi's shims installed by `kwasi install` (the CRI
//! [`Node`]: its CNI bridge, its pause and busybox images). The RuntimeClasses of
//! `deploy/runtimeclasses.yaml` are applied. Everything lives in the node's temp dir, listens
//! on loopback or the node's own address, and goes when the [`Cluster`] is dropped.
//!
//! Access: static tokens (admin, the kubelet as `system:node:<name>`, the controller manager,
//! the scheduler) over TLS with a CA made for the cluster (openssl); the API server reaches
//! the kubelet with a client certificate of that CA, which the kubelet checks.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::cri::Node;
use crate::{cgroup_hierarchies, http, node, CtrOutput, Release};

/// The node's name in the cluster.
pub const NODE_NAME: &str = "kwasi-node";
/// Where the kubelet puts the pods' cgroups (`<root>/kubepods/...`), in every hierarchy.
pub const CGROUP_ROOT: &str = "kwasi-e2e-kube";
/// The pods the node of [`Cluster::start`] takes at once (the kubelet's `maxPods`).
pub const MAX_PODS: u32 = 200;
/// The RuntimeClasses a user applies (one per kwasi handler).
const RUNTIME_CLASSES: &str = "deploy/runtimeclasses.yaml";

/// A long-running component of the cluster, stopped (SIGTERM, then SIGKILL) when dropped.
struct Daemon {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn spawn(name: &'static str, dir: &Path, mut command: Command) -> Result<Daemon> {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Daemon { name, child, log })
    }

    /// Whether it still runs: not gone, not a zombie (it is not reaped until stopped).
    fn is_running(&self) -> bool {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|s| s.split_whitespace().next());
        !matches!(state, None | Some("Z") | Some("X"))
    }

    /// The last lines of its log, for errors.
    fn tail(&self) -> String {
        crate::last_lines(&std::fs::read_to_string(&self.log).unwrap_or_default(), 30)
    }

    fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A single-node cluster. Fields drop in order: the daemons after [`Cluster::drop`] has
/// deleted the workloads, then the node (containerd, its pods, the CNI bridge).
pub struct Cluster {
    daemons: Vec<Daemon>,
    /// The node: containerd 2.x with CRI and kwasi's shims (`ctr` works in `k8s.io`).
    pub node: Node,
    dir: PathBuf,
    kubeconfig: PathBuf,
    /// The network namespaces (`/run/netns`) there were before the cluster started.
    netns_before: Vec<String>,
    /// Whether SpinKube's operator runs ([`Cluster::start_spin_operator`]).
    spin_operator: bool,
    /// The kubelet's `maxPods`.
    max_pods: u32,
}

impl Cluster {
    /// Starts every component, waits until the node is Ready and the `default` service
    /// account exists, and applies the RuntimeClasses.
    pub fn start() -> Result<Cluster> {
        Cluster::start_for_pods(MAX_PODS)
    }

    /// [`Cluster::start`] with a node that takes `pods` pods at once (its `maxPods`, and a
    /// network with an address for each: see [`Node::start_for_pods`]).
    pub fn start_for_pods(pods: u32) -> Result<Cluster> {
        let node = Node::start_for_pods(Release::V2, pods)?;
        let dir = node.containerd.dir().join("kube");
        std::fs::create_dir_all(&dir)?;
        let mut cluster = Cluster {
            daemons: Vec::new(),
            netns_before: network_namespaces(),
            spin_operator: false,
            max_pods: pods.max(MAX_PODS),
            kubeconfig: dir.join("admin.kubeconfig"),
            dir,
            node,
        };
        cluster.boot().map_err(|e| {
            let logs: Vec<String> = cluster
                .daemons
                .iter()
                .map(|d| format!("--- {} ---\n{}", d.name, d.tail()))
                .collect();
            anyhow!("{e:#}\n{}", logs.join("\n"))
        })?;
        Ok(cluster)
    }

    fn boot(&mut self) -> Result<()> {
        let dir = self.dir.clone();
        let node_ip = node_ip();
        let pki = Pki::create(&dir.join("pki"), &node_ip)?;
        let etcd = http::free_addr();
        let api = http::free_addr();
        let kubelet_port = http::free_addr().port();

        let mut kine = Command::new(node::binary("kine")?);
        let db = dir.join("kine.db");
        kine.arg("--endpoint")
            .arg(format!(
                "sqlite://{}?_journal=WAL&cache=shared",
                db.display()
            ))
            .arg("--listen-address")
            .arg(etcd.to_string())
            .arg("--metrics-bind-address")
            .arg("0");
        self.daemons.push(Daemon::spawn("kine", &dir, kine)?);
        http::wait_listening(etcd, Duration::from_secs(60))?;

        let mut apiserver = Command::new(node::binary("kube-apiserver")?);
        apiserver
            .arg(format!("--etcd-servers=http://{etcd}"))
            .arg(format!("--bind-address={}", api.ip()))
            .arg(format!("--secure-port={}", api.port()))
            .arg(format!("--advertise-address={node_ip}"))
            .arg(format!("--cert-dir={}", dir.join("apiserver").display()))
            .arg(format!("--tls-cert-file={}", pki.path("apiserver.crt")))
            .arg(format!(
                "--tls-private-key-file={}",
                pki.path("apiserver.key")
            ))
            .arg(format!("--client-ca-file={}", pki.path("ca.crt")))
            .arg(format!("--token-auth-file={}", pki.path("tokens.csv")))
            .arg(format!(
                "--kubelet-client-certificate={}",
                pki.path("kubelet-client.crt")
            ))
            .arg(format!(
                "--kubelet-client-key={}",
                pki.path("kubelet-client.key")
            ))
            .arg("--kubelet-preferred-address-types=InternalIP,Hostname")
            .arg("--authorization-mode=Node,RBAC")
            .arg("--service-account-issuer=https://kubernetes.default.svc")
            .arg(format!("--service-account-key-file={}", pki.path("sa.pub")))
            .arg(format!(
                "--service-account-signing-key-file={}",
                pki.path("sa.key")
            ))
            .arg("--service-cluster-ip-range=10.96.0.0/16")
            .arg("--allow-privileged=true")
            .arg("--enable-priority-and-fairness=false")
            .arg("--endpoint-reconciler-type=none");
        self.daemons
            .push(Daemon::spawn("kube-apiserver", &dir, apiserver)?);
        write_kubeconfig(&self.kubeconfig, api, &pki, &pki.tokens.admin)?;
        self.wait_until("the API server is ready", Duration::from_secs(120), |c| {
            c.kubectl(&["get", "--raw", "/readyz"]).stdout.trim() == "ok"
        })?;

        let kcm_config = dir.join("controller-manager.kubeconfig");
        write_kubeconfig(&kcm_config, api, &pki, &pki.tokens.controller_manager)?;
        let mut kcm = Command::new(node::binary("kube-controller-manager")?);
        kcm.arg(format!("--kubeconfig={}", kcm_config.display()))
            .arg(format!(
                "--authentication-kubeconfig={}",
                kcm_config.display()
            ))
            .arg(format!(
                "--authorization-kubeconfig={}",
                kcm_config.display()
            ))
            .arg(format!(
                "--service-account-private-key-file={}",
                pki.path("sa.key")
            ))
            .arg(format!("--root-ca-file={}", pki.path("ca.crt")))
            .arg("--leader-elect=false")
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--secure-port={}", http::free_addr().port()))
            .arg("--use-service-account-credentials=true");
        self.daemons
            .push(Daemon::spawn("kube-controller-manager", &dir, kcm)?);

        let scheduler_config = dir.join("scheduler.kubeconfig");
        write_kubeconfig(&scheduler_config, api, &pki, &pki.tokens.scheduler)?;
        let mut scheduler = Command::new(node::binary("kube-scheduler")?);
        scheduler
            .arg(format!("--kubeconfig={}", scheduler_config.display()))
            .arg(format!(
                "--authentication-kubeconfig={}",
                scheduler_config.display()
            ))
            .arg(format!(
                "--authorization-kubeconfig={}",
                scheduler_config.display()
            ))
            .arg("--leader-elect=false")
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--secure-port={}", http::free_addr().port()));
        self.daemons
            .push(Daemon::spawn("kube-scheduler", &dir, scheduler)?);

        self.start_kubelet(api, &pki, &node_ip, kubelet_port)?;
        self.wait_until("the node is Ready", Duration::from_secs(180), |c| {
            c.kubectl(&[
                "get",
                "node",
                NODE_NAME,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ])
            .stdout
                == "True"
        })?;
        let classes = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(RUNTIME_CLASSES);
        self.kubectl_ok(&["apply", "-f", &classes.display().to_string()])?;
        self.wait_until(
            "the default service account exists",
            Duration::from_secs(120),
            |c| c.kubectl(&["get", "serviceaccount", "default"]).status == 0,
        )?;
        Ok(())
    }

    fn start_kubelet(
        &mut self,
        api: SocketAddr,
        pki: &Pki,
        node_ip: &str,
        port: u16,
    ) -> Result<()> {
        let dir = self.dir.clone();
        let root = dir.join("kubelet");
        std::fs::create_dir_all(&root)?;
        // The kubelet wants its cgroup root to exist in every hierarchy.
        for hierarchy in cgroup_hierarchies() {
            if hierarchy.join("cgroup.procs").exists() {
                std::fs::create_dir_all(hierarchy.join(CGROUP_ROOT))?;
            }
        }
        let kubeconfig = dir.join("kubelet.kubeconfig");
        write_kubeconfig(&kubeconfig, api, pki, &pki.tokens.kubelet)?;
        let config = dir.join("kubelet.yaml");
        std::fs::write(
            &config,
            format!(
                r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {node_ip}
port: {port}
readOnlyPort: 0
healthzPort: 0
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: {ca}
authorization:
  mode: Webhook
containerRuntimeEndpoint: unix://{socket}
cgroupDriver: cgroupfs
cgroupRoot: /{CGROUP_ROOT}
failCgroupV1: false
failSwapOn: false
podLogsDir: {logs}
resolvConf: /etc/resolv.conf
maxPods: {max_pods}
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
makeIPTablesUtilChains: false
protectKernelDefaults: false
"#,
                ca = pki.path("ca.crt"),
                socket = self.node.containerd.socket().display(),
                logs = dir.join("pod-logs").display(),
                max_pods = self.max_pods,
            ),
        )?;
        let mut kubelet = Command::new(node::binary("kubelet")?);
        kubelet
            .arg(format!("--config={}", config.display()))
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--root-dir={}", root.display()))
            .arg(format!("--cert-dir={}", root.join("pki").display()))
            .arg(format!("--hostname-override={NODE_NAME}"))
            .arg(format!("--node-ip={node_ip}"));
        self.daemons.push(Daemon::spawn("kubelet", &dir, kubelet)?);
        Ok(())
    }

    /// Installs SpinKube's operator as its users do (its CRDs, then the operator) and runs it
    /// as the cluster's admin, outside the cluster, as its `make run` does: it has no webhooks
    /// (they are off by default and need cert-manager), and its metrics and health endpoints
    /// are off. From then on [`Cluster::delete_workloads`] deletes SpinApps and
    /// SpinAppExecutors first, or the operator would make their Deployments again. It stops
    /// with the cluster.
    pub fn start_spin_operator(&mut self) -> Result<()> {
        if self.spin_operator {
            return Ok(());
        }
        let crds = node::binary("spin-operator-crds.yaml")?;
        self.kubectl_ok(&["apply", "-f", &crds.display().to_string()])?;
        self.kubectl_ok(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/spinapps.core.spinkube.dev",
            "crd/spinappexecutors.core.spinkube.dev",
        ])?;
        let mut operator = Command::new(node::binary("spin-operator")?);
        operator
            .env("KUBECONFIG", &self.kubeconfig)
            .arg("--metrics-bind-address=0")
            .arg("--health-probe-bind-address=0");
        self.daemons
            .push(Daemon::spawn("spin-operator", &self.dir, operator)?);
        self.spin_operator = true;
        Ok(())
    }

    /// Polls `ready` until it holds, for at most `timeout`; fails naming `what` otherwise.
    pub fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut ready: impl FnMut(&Cluster) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if ready(self) {
                return Ok(());
            }
            if let Some(daemon) = self.daemons.iter().find(|d| !d.is_running()) {
                bail!("waiting until {what}: {} exited", daemon.name);
            }
            if Instant::now() > deadline {
                bail!("{what}: not within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The admin kubeconfig (`KUBECONFIG` for a user's own kubectl).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// A `kubectl` command as the cluster's admin.
    pub fn kubectl_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(node::binary("kubectl").unwrap_or_else(|_| "kubectl".into()));
        cmd.arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `kubectl ARGS` and collects what it did.
    pub fn kubectl(&self, args: &[&str]) -> CtrOutput {
        match self.kubectl_command(args).output() {
            Ok(out) => out.into(),
            Err(err) => CtrOutput {
                status: -1,
                stdout: String::new(),
                stderr: format!("running kubectl: {err}"),
            },
        }
    }

    /// Runs `kubectl ARGS`; fails with its stderr unless it exits 0.
    pub fn kubectl_ok(&self, args: &[&str]) -> Result<CtrOutput> {
        let out = self.kubectl(args);
        if out.status != 0 {
            bail!("kubectl {}: {}", args.join(" "), out.stderr.trim());
        }
        Ok(out)
    }

    /// Waits until Deployment `name` has `replicas` ready replicas, for at most `timeout`.
    pub fn wait_ready(&self, name: &str, replicas: u32, timeout: Duration) -> Result<()> {
        let what = format!("deployment {name} has {replicas} ready replicas");
        let jsonpath = "jsonpath={.status.readyReplicas}";
        self.wait_until(&what, timeout, |c| {
            c.kubectl(&["get", "deployment", name, "-o", jsonpath])
                .stdout
                == replicas.to_string()
        })
    }

    /// `kubectl apply -f -` of `manifest`.
    pub fn apply(&self, manifest: &str) -> Result<()> {
        let mut child = self
            .kubectl_command(&["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running kubectl apply")?;
        child
            .stdin
            .take()
            .context("kubectl's stdin")?
            .write_all(manifest.as_bytes())?;
        let out: CtrOutput = child.wait_with_output()?.into();
        if out.status != 0 {
            bail!("kubectl apply: {}\n{manifest}", out.stderr);
        }
        Ok(())
    }

    /// `kubectl get KIND NAME -o json`, parsed.
    pub fn get(&self, kind: &str, name: &str) -> Result<serde_json::Value> {
        let out = self.kubectl(&["get", kind, name, "-o", "json"]);
        if out.status != 0 {
            bail!("kubectl get {kind} {name}: {}", out.stderr);
        }
        serde_json::from_str(&out.stdout).with_context(|| format!("parsing {kind} {name}"))
    }

    /// Deletes every workload of the `default` namespace (SpinKube's too, once its operator
    /// runs) and waits until their pods are gone: two minutes for every hundred pods the node
    /// takes.
    pub fn delete_workloads(&self) -> Result<()> {
        let timeout = Duration::from_secs(120 * u64::from(self.max_pods.div_ceil(100)));
        let timeout_flag = format!("--timeout={}s", timeout.as_secs());
        if self.spin_operator {
            self.kubectl_ok(&[
                "delete",
                "spinapps.core.spinkube.dev,spinappexecutors.core.spinkube.dev",
                "--all",
                "--wait=true",
                &timeout_flag,
            ])?;
        }
        self.kubectl_ok(&[
            "delete",
            "deployments,replicasets,jobs,pods,services",
            "--all",
            "--wait=true",
            &timeout_flag,
        ])?;
        self.wait_until("every pod is gone", timeout, |c| {
            c.kubectl(&["get", "pods", "-o", "name"])
                .stdout
                .trim()
                .is_empty()
        })
    }

    /// What the cluster's workloads may have left on the node: shim processes, mounts below
    /// the node's directory, network namespaces made since the cluster started, CNI
    /// addresses still handed out, and pod cgroups. Empty when every workload is gone.
    pub fn leftovers(&self) -> Vec<String> {
        let mut found: Vec<String> = self
            .node
            .shims()
            .into_iter()
            .map(|(pid, cmdline)| crate::left_process(pid, &cmdline))
            .collect();
        let below = self.node.containerd.dir().display().to_string();
        // The kubelet bind-mounts its root directory on itself (for mount propagation).
        let kubelet_root = self.dir.join("kubelet").display().to_string();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        found.extend(
            mountinfo
                .lines()
                .filter_map(|l| l.split_whitespace().nth(4))
                .filter(|point| point.starts_with(&below) && *point != kubelet_root)
                .map(|point| format!("mount {point}")),
        );
        found.extend(
            network_namespaces()
                .into_iter()
                .filter(|ns| !self.netns_before.contains(ns))
                .map(|ns| format!("network namespace {ns}")),
        );
        found.extend(
            self.node
                .cni_allocations()
                .into_iter()
                .map(|ip| format!("CNI address {ip}")),
        );
        for hierarchy in cgroup_hierarchies() {
            found.extend(
                pod_cgroups(&hierarchy.join(CGROUP_ROOT))
                    .into_iter()
                    .map(|dir| format!("cgroup {}", dir.display())),
            );
        }
        found
    }

    /// The cluster's own directory (logs, certificates, the kubelet's root).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The log of component `name` (`kubelet`, `kube-apiserver`...).
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // As a user would: delete the workloads, so that the kubelet stops their containers
        // and removes their pods; then stop the control plane, newest first.
        if let Err(err) = self.delete_workloads() {
            eprintln!("tearing the cluster down: {err:#}");
        }
        while let Some(mut daemon) = self.daemons.pop() {
            daemon.stop();
        }
        remove_cgroup_tree(CGROUP_ROOT);
        // `node` drops next: it removes any pod left, stops containerd and the CNI bridge.
    }
}

/// A Deployment: `replicas` pods labelled `app: NAME`, each with `pod_spec`, the YAML of the
/// pod template's `spec` (every line indented by 6 spaces).
pub fn deployment(name: &str, replicas: u32, pod_spec: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
{pod_spec}"#
    )
}

/// Removes `<hierarchy>/<parent>` and every cgroup below it, deepest first, in every
/// hierarchy (the kubelet leaves its `kubepods` tree when it stops).
pub fn remove_cgroup_tree(parent: &str) {
    for hierarchy in cgroup_hierarchies() {
        let top = hierarchy.join(parent);
        if !top.is_dir() {
            continue;
        }
        let mut dirs = vec![top.clone()];
        let mut i = 0;
        while i < dirs.len() {
            let children: Vec<PathBuf> = std::fs::read_dir(&dirs[i])
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect();
            dirs.extend(children);
            i += 1;
        }
        for dir in dirs.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// The named network namespaces (`/run/netns`), where CRI keeps its pods'.
fn network_namespaces() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// The pod cgroups (`pod<uid>`) anywhere below `dir`.
fn pod_cgroups(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        if entry.file_name().to_string_lossy().starts_with("pod") {
            found.push(path);
        } else {
            found.extend(pod_cgroups(&path));
        }
    }
    found
}

/// The address the node is known by: the source address of its default route, else the
/// loopback (the kubelet refuses a loopback node IP, so a machine without a route has no
/// cluster).
fn node_ip() -> String {
    let out = Command::new("ip")
        .args(["-4", "-o", "route", "get", "192.0.2.123"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.split_whitespace()
        .skip_while(|w| *w != "src")
        .nth(1)
        .unwrap_or("127.0.0.1")
        .to_string()
}

/// The bearer tokens of the cluster's users.
struct Tokens {
    admin: String,
    kubelet: String,
    controller_manager: String,
    scheduler: String,
}

/// The cluster's keys and certificates, made with openssl.
struct Pki {
    dir: PathBuf,
    tokens: Tokens,
}

impl Pki {
    fn create(dir: &Path, node_ip: &str) -> Result<Pki> {
        std::fs::create_dir_all(dir)?;
        let run = |args: &[&str]| -> Result<()> {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .context("running openssl (apt-get install openssl)")?;
            if !out.status.success() {
                bail!(
                    "openssl {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Ok(())
        };
        run(&["genrsa", "-out", "ca.key", "2048"])?;
        run(&[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-days",
            "2",
            "-subj",
            "/CN=kwasi-e2e-ca",
            "-out",
            "ca.crt",
        ])?;
        let sign = |name: &str, subject: &str, extensions: &str| -> Result<()> {
            let key = format!("{name}.key");
            let csr = format!("{name}.csr");
            let crt = format!("{name}.crt");
            let ext = format!("{name}.ext");
            std::fs::write(dir.join(&ext), extensions)?;
            run(&["genrsa", "-out", &key, "2048"])?;
            run(&["req", "-new", "-key", &key, "-subj", subject, "-out", &csr])?;
            run(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &crt,
            ])
        };
        sign(
            "apiserver",
            "/CN=kube-apiserver",
            &format!(
                "subjectAltName=IP:127.0.0.1,IP:{node_ip},IP:10.96.0.1,DNS:localhost,\
                 DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\n\
                 extendedKeyUsage=serverAuth\n"
            ),
        )?;
        sign(
            "kubelet-client",
            "/O=system:masters/CN=kube-apiserver-kubelet-client",
            "extendedKeyUsage=clientAuth\n",
        )?;
        run(&["genrsa", "-out", "sa.key", "2048"])?;
        run(&["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"])?;
        let token = |who: &str| format!("{who}-{}", crate::unique_id("token"));
        let tokens = Tokens {
            admin: token("admin"),
            kubelet: token("kubelet"),
            controller_manager: token("kcm"),
            scheduler: token("scheduler"),
        };
        std::fs::write(
            dir.join("tokens.csv"),
            format!(
                "{},admin,admin,\"system:masters\"\n\
                 {},system:node:{NODE_NAME},kubelet,\"system:nodes\"\n\
                 {},system:kube-controller-manager,kcm\n\
                 {},system:kube-scheduler,scheduler\n",
                tokens.admin, tokens.kubelet, tokens.controller_manager, tokens.scheduler
            ),
        )?;
        Ok(Pki {
            dir: dir.to_path_buf(),
            tokens,
        })
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }
}

/// A kubeconfig for the API server at `api`, authenticating with `token`.
fn write_kubeconfig(path: &Path, api: SocketAddr, pki: &Pki, token: &str) -> Result<()> {
    std::fs::write(
        path,
        format!(
            r#"apiVersion: v1
kind: Config
clusters:
- name: kwasi
  cluster:
    server: https://{api}
    certificate-authority: {ca}
users:
- name: user
  user:
    token: {token}
contexts:
- name: kwasi
  context:
    cluster: kwasi
    user: user
current-context: kwasi
"#,
            ca = pki.path("ca.crt"),
        ),
    )?;
    Ok(())
}

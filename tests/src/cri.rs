//! Kubernetes' path, without a kubelet: a private containerd with its CRI plugin on, kwasi's
//! shims registered by `kwasi install`, a CNI network of its own, and a CRI client (the
//! `k8s-cri` bindings over containerd's socket) that makes the calls kubelet makes.
//!
//! A [`Node`] owns all of it. Dropping it stops and removes every pod still there (as kubelet
//! would), stops containerd, and removes the network's bridge and address book.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use containerd_client::tonic::transport::Channel;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerStatsRequest, ContainerStatus,
    ContainerStatusRequest, CreateContainerRequest, ExecSyncRequest, ImageSpec,
    LinuxContainerConfig, LinuxContainerResources, LinuxContainerSecurityContext,
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, ListPodSandboxRequest, NamespaceMode,
    NamespaceOption, PodSandboxConfig, PodSandboxMetadata, PodSandboxStatusRequest,
    RemoveContainerRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopContainerRequest, StopPodSandboxRequest, UpdateContainerResourcesRequest,
};

/// The CRI states of a container, as [`Node::container_status`] reports them.
pub use k8s_cri::v1::ContainerState;

use crate::layout::{write_busybox_image, Entry, LinuxImage};
use crate::{cgroup_hierarchies, guests_dir, Containerd, Release, TMP_PREFIX};

/// The containerd namespace of CRI's containers and images.
pub const NAMESPACE: &str = "k8s.io";
/// The sandbox image: Kubernetes' pause, rebuilt from `tests/guests/pause.c`.
pub const PAUSE_IMAGE: &str = "kwasi.test/pause:1";
/// A busybox image (Debian's static busybox), for the native containers of a pod.
pub const BUSYBOX_IMAGE: &str = "kwasi.test/busybox:1";
/// Where the cgroups of the test pods go (as kubelet's `kubepods`), in every hierarchy.
pub const CGROUP_ROOT: &str = "kwasi-e2e-pods";

/// The prefix of the CNI bridges of the nodes (`kwasi<N>`).
pub const BRIDGE_PREFIX: &str = "kwasi";

/// Where Debian's containernetworking-plugins put the CNI plugins.
const CNI_BIN_DIR: &str = "/usr/lib/cni";
/// Where the host-local IPAM plugin keeps its address book, one directory per network.
pub(crate) const CNI_IPAM_DIR: &str = "/var/lib/cni/networks";

/// A pod as the test made it: its sandbox id and the config every later call repeats.
#[derive(Debug, Clone)]
pub struct Pod {
    /// The sandbox id CRI gave it.
    pub id: String,
    /// The config it was run with.
    pub config: PodSandboxConfig,
    /// Its uid, which names its cgroup (`<CGROUP_ROOT>/pod<uid>`).
    pub uid: String,
}

impl Pod {
    /// The pod's log directory on the node.
    pub fn log_dir(&self) -> PathBuf {
        PathBuf::from(&self.config.log_directory)
    }

    /// The pod's cgroup parent, as kubelet would name it (cgroupfs driver).
    pub fn cgroup_parent(&self) -> String {
        format!("/{CGROUP_ROOT}/pod{}", self.uid)
    }

    /// The pod's cgroup directories, in every mounted hierarchy that has one.
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        pod_cgroup_dirs(&self.uid)
    }
}

/// The cgroup directories of the pod with `uid`, in every mounted hierarchy that has one.
fn pod_cgroup_dirs(uid: &str) -> Vec<PathBuf> {
    cgroup_hierarchies()
        .into_iter()
        .map(|h| h.join(CGROUP_ROOT).join(format!("pod{uid}")))
        .filter(|d| d.exists())
        .collect()
}

/// A container to create in a pod.
#[derive(Debug, Clone, Default)]
pub struct ContainerSpec<'a> {
    /// Its name in the pod (also its log file's name).
    pub name: &'a str,
    /// The image reference.
    pub image: &'a str,
    /// Replaces the image's entrypoint when not empty.
    pub command: &'a [&'a str],
    /// Replaces the image's command.
    pub args: &'a [&'a str],
    /// `resources.limits.memory` in bytes; 0 for none.
    pub memory_limit: i64,
}

/// What an ExecSync returned.
#[derive(Debug, Clone)]
pub struct ExecOutput {
    /// The process's exit code.
    pub exit_code: i32,
    /// What it wrote on stdout.
    pub stdout: String,
    /// What it wrote on stderr.
    pub stderr: String,
}

/// Container resources with a memory limit of `bytes` and nothing else set.
fn memory_limit(bytes: i64) -> LinuxContainerResources {
    LinuxContainerResources {
        memory_limit_in_bytes: bytes,
        ..Default::default()
    }
}

/// Makes CRI call `method` with `request` and returns its response; on failure, the error
/// says `what` failed and carries the errors containerd and the shims logged.
macro_rules! call {
    ($node:expr, $method:ident, $request:expr, $what:expr) => {{
        let mut client = $node.client.clone();
        $node
            .runtime
            .block_on(client.$method($request))
            .map(|response| response.into_inner())
            .map_err(|status| $node.failed($what, status))
    }};
}

/// A node: containerd with CRI, kwasi installed, a CNI network, and a CRI client.
pub struct Node {
    /// The containerd (`ctr` works in [`NAMESPACE`]).
    pub containerd: Containerd,
    /// Its `Drop` removes the bridge once containerd is stopped.
    network: Network,
    runtime: tokio::runtime::Runtime,
    client: RuntimeServiceClient<Channel>,
    /// The wasm images imported so far, by guest file.
    images: HashMap<String, String>,
}

impl Node {
    /// Starts a containerd of `release` with CRI, a CNI network of its own and the pause image
    /// as the sandbox image, and imports the busybox image.
    pub fn start(release: Release) -> Result<Node> {
        Node::start_on(release, Network::new(false, 0))
    }

    /// [`Node::start`] with room for `pods` pods at once: a network larger than its own /24
    /// (253 addresses) when they need one. Such a large network is the same for every node,
    /// so only one of them may run at a time (benchmarks, never the test suites).
    pub fn start_for_pods(release: Release, pods: u32) -> Result<Node> {
        Node::start_on(release, Network::new(false, pods))
    }

    /// [`Node::start`], with the pods' host ports mapped (CNI's portmap plugin: iptables rules
    /// that only one such node at a time may own, as critest's runs do).
    pub fn start_mapping_ports(release: Release) -> Result<Node> {
        Node::start_on(release, Network::new(true, 0))
    }

    fn start_on(release: Release, network: Network) -> Result<Node> {
        let containerd =
            Containerd::start_with_cri(release, |dir| cri_config(release, dir, &network))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let channel = runtime
            .block_on(containerd_client::connect(containerd.socket()))
            .context("connecting to containerd's CRI")?;
        let mut node = Node {
            containerd,
            network,
            runtime,
            client: RuntimeServiceClient::new(channel),
            images: HashMap::new(),
        };
        node.import_native_images()?;
        Ok(node)
    }

    fn import_native_images(&mut self) -> Result<()> {
        let dir = self.containerd.dir().to_path_buf();
        let pause = dir.join("pause");
        let out = std::process::Command::new("gcc")
            .args(["-static", "-Os", "-o"])
            .arg(&pause)
            .arg(guests_dir().join("pause.c"))
            .output()
            .context("building pause (apt-get install gcc libc6-dev)")?;
        if !out.status.success() {
            bail!("gcc pause.c: {}", String::from_utf8_lossy(&out.stderr));
        }
        let pause_tar = dir.join("pause.tar");
        LinuxImage {
            name: PAUSE_IMAGE,
            entries: vec![Entry::File(&pause, "/pause", 0o755)],
            entrypoint: &["/pause"],
            ..Default::default()
        }
        .write(&pause_tar)?;
        self.containerd.import_archive(&pause_tar)?;
        let busybox_tar = dir.join("busybox.tar");
        write_busybox_image(&busybox_tar, BUSYBOX_IMAGE, &[])?;
        self.containerd.import_archive(&busybox_tar)
    }

    /// The image of guest `file` of `tests/guests` (`probe.wasm`, `http.wasm`), imported
    /// once.
    pub fn wasm_image(&mut self, file: &str) -> Result<String> {
        if let Some(image) = self.images.get(file) {
            return Ok(image.clone());
        }
        let name = format!("kwasi.test/{}", file.trim_end_matches(".wasm"));
        let image = self
            .containerd
            .import_wasm(&name, &guests_dir().join(file), &[])?;
        self.images.insert(file.to_string(), image.clone());
        Ok(image)
    }

    /// RunPodSandbox with `handler` as its runtime handler, in a network namespace of its own
    /// on the node's CNI bridge.
    pub fn run_pod(&mut self, name: &str, handler: &str) -> Result<Pod> {
        let uid = crate::unique_id(name);
        let log_directory = self.containerd.dir().join("pods").join(&uid);
        std::fs::create_dir_all(&log_directory)?;
        let mut pod = Pod {
            id: String::new(),
            uid: uid.clone(),
            config: PodSandboxConfig {
                metadata: Some(PodSandboxMetadata {
                    name: name.to_string(),
                    uid: uid.clone(),
                    namespace: "default".to_string(),
                    attempt: 0,
                }),
                hostname: name.to_string(),
                log_directory: log_directory.display().to_string(),
                ..Default::default()
            },
        };
        pod.config.linux = Some(LinuxPodSandboxConfig {
            cgroup_parent: pod.cgroup_parent(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Pod as i32,
                    pid: NamespaceMode::Container as i32,
                    ipc: NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        let request = RunPodSandboxRequest {
            config: Some(pod.config.clone()),
            runtime_handler: handler.to_string(),
        };
        let response = call!(
            self,
            run_pod_sandbox,
            request,
            format!("RunPodSandbox {name} ({handler})")
        )?;
        pod.id = response.pod_sandbox_id;
        Ok(pod)
    }

    /// CreateContainer in `pod`; returns the container id.
    pub fn create_container(&mut self, pod: &Pod, spec: &ContainerSpec) -> Result<String> {
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: spec.name.to_string(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: spec.image.to_string(),
                ..Default::default()
            }),
            command: spec.command.iter().map(|s| s.to_string()).collect(),
            args: spec.args.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{}.log", spec.name),
            // As kubelet: the pod's namespace choices, repeated for each container.
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: pod
                        .config
                        .linux
                        .as_ref()
                        .and_then(|l| l.security_context.as_ref())
                        .and_then(|c| c.namespace_options.clone()),
                    ..Default::default()
                }),
                resources: (spec.memory_limit > 0).then(|| memory_limit(spec.memory_limit)),
            }),
            ..Default::default()
        };
        let request = CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(config),
            sandbox_config: Some(pod.config.clone()),
        };
        let response = call!(
            self,
            create_container,
            request,
            format!("CreateContainer {}", spec.name)
        )?;
        Ok(response.container_id)
    }

    /// StartContainer.
    pub fn start_container(&mut self, id: &str) -> Result<()> {
        call!(
            self,
            start_container,
            StartContainerRequest {
                container_id: id.to_string(),
            },
            format!("StartContainer {id}")
        )?;
        Ok(())
    }

    /// StartContainer of every one of `ids` at once (CRI allows it; kubelet starts a pod's
    /// containers one by one): the first error, once every call has returned.
    pub fn start_containers_at_once(&mut self, ids: &[String]) -> Result<()> {
        let calls: Vec<_> = ids
            .iter()
            .map(|id| {
                let mut client = self.client.clone();
                let request = StartContainerRequest {
                    container_id: id.clone(),
                };
                let id = id.clone();
                self.runtime
                    .spawn(async move { (id, client.start_container(request).await.map(|_| ())) })
            })
            .collect();
        let mut first_error = Ok(());
        for call in calls {
            let (id, result) = self.runtime.block_on(call)?;
            if let (Err(status), Ok(())) = (result, &first_error) {
                first_error = Err(self.failed(format!("StartContainer {id}"), status));
            }
        }
        first_error
    }

    /// CreateContainer and StartContainer; returns the container id.
    pub fn run_container(&mut self, pod: &Pod, spec: &ContainerSpec) -> Result<String> {
        let id = self.create_container(pod, spec)?;
        self.start_container(&id)?;
        Ok(id)
    }

    /// ContainerStatus (verbose), with the task's pid from its verbose info (0 once exited).
    pub fn container_status(&mut self, id: &str) -> Result<(ContainerStatus, i32)> {
        let response = call!(
            self,
            container_status,
            ContainerStatusRequest {
                container_id: id.to_string(),
                verbose: true,
            },
            format!("ContainerStatus {id}")
        )?;
        let pid = response
            .info
            .get("info")
            .and_then(|info| serde_json::from_str::<serde_json::Value>(info).ok())
            .and_then(|info| info["pid"].as_i64())
            .unwrap_or(0) as i32;
        let status = response
            .status
            .ok_or_else(|| anyhow!("ContainerStatus {id}: no status"))?;
        Ok((status, pid))
    }

    /// Waits until the container is in `state`, and returns its status and pid.
    pub fn wait_for_state(
        &mut self,
        id: &str,
        state: ContainerState,
        timeout: Duration,
    ) -> Result<(ContainerStatus, i32)> {
        let deadline = Instant::now() + timeout;
        loop {
            let (status, pid) = self.container_status(id)?;
            if status.state == state as i32 {
                return Ok((status, pid));
            }
            if Instant::now() > deadline {
                bail!("container {id} did not become {state:?}: {status:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// ExecSync, as kubelet runs exec probes: `cmd` in the container, for at most `timeout`
    /// seconds (0: no limit); its exit code, stdout and stderr.
    pub fn exec_sync(&mut self, id: &str, cmd: &[&str], timeout: i64) -> Result<ExecOutput> {
        let response = call!(
            self,
            exec_sync,
            ExecSyncRequest {
                container_id: id.to_string(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout,
            },
            format!("ExecSync {id} {cmd:?}")
        )?;
        Ok(ExecOutput {
            exit_code: response.exit_code,
            stdout: String::from_utf8_lossy(&response.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&response.stderr).into_owned(),
        })
    }

    /// UpdateContainerResources with a new memory limit, as an in-place pod resize does.
    pub fn set_memory_limit(&mut self, id: &str, bytes: i64) -> Result<()> {
        call!(
            self,
            update_container_resources,
            UpdateContainerResourcesRequest {
                container_id: id.to_string(),
                linux: Some(memory_limit(bytes)),
                ..Default::default()
            },
            format!("UpdateContainerResources {id}")
        )?;
        Ok(())
    }

    /// The latencies of ContainerStats calls on container `id`, made one after the other for
    /// `window`, while the containers `stopped` are stopped at once (SIGKILL) at its start,
    /// so that their exits and deletes in the shim overlap the calls.
    pub fn stats_latencies_while_stopping(
        &mut self,
        id: &str,
        stopped: &[String],
        window: Duration,
    ) -> Result<Vec<Duration>> {
        // Spawned: they run alongside the calls, while `block_on` drives the runtime.
        let stops: Vec<_> = stopped
            .iter()
            .map(|other| {
                let mut client = self.client.clone();
                let request = StopContainerRequest {
                    container_id: other.clone(),
                    timeout: 0,
                };
                self.runtime
                    .spawn(async move { client.stop_container(request).await })
            })
            .collect();
        let mut client = self.client.clone();
        let calls = async move {
            let mut latencies = Vec::new();
            let end = Instant::now() + window;
            while Instant::now() < end {
                let request = ContainerStatsRequest {
                    container_id: id.to_string(),
                };
                let t = Instant::now();
                client.container_stats(request).await?;
                latencies.push(t.elapsed());
            }
            Ok::<_, containerd_client::tonic::Status>(latencies)
        };
        let latencies = self.runtime.block_on(calls);
        for stop in stops {
            self.runtime
                .block_on(stop)
                .context("StopContainer")?
                .map_err(|status| self.failed("StopContainer".into(), status))?;
        }
        latencies.map_err(|status| self.failed(format!("ContainerStats {id}"), status))
    }

    /// StopContainer with a grace period of `timeout` seconds.
    pub fn stop_container(&mut self, id: &str, timeout: i64) -> Result<()> {
        call!(
            self,
            stop_container,
            StopContainerRequest {
                container_id: id.to_string(),
                timeout,
            },
            format!("StopContainer {id}")
        )?;
        Ok(())
    }

    /// RemoveContainer (of a stopped container).
    pub fn remove_container(&mut self, id: &str) -> Result<()> {
        call!(
            self,
            remove_container,
            RemoveContainerRequest {
                container_id: id.to_string(),
            },
            format!("RemoveContainer {id}")
        )?;
        Ok(())
    }

    /// PodSandboxStatus (verbose): the pod's IP, its sandbox pid and its network namespace
    /// path.
    pub fn pod_status(&mut self, pod: &Pod) -> Result<PodInfo> {
        let response = call!(
            self,
            pod_sandbox_status,
            PodSandboxStatusRequest {
                pod_sandbox_id: pod.id.clone(),
                verbose: true,
            },
            format!("PodSandboxStatus {}", pod.id)
        )?;
        let ip = response
            .status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .unwrap_or_default();
        let info: serde_json::Value = response
            .info
            .get("info")
            .and_then(|i| serde_json::from_str(i).ok())
            .unwrap_or_default();
        let netns = info["runtimeSpec"]["linux"]["namespaces"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|ns| ns["type"] == "network")
            .and_then(|ns| ns["path"].as_str())
            .unwrap_or_default()
            .to_string();
        Ok(PodInfo {
            ip,
            pid: info["pid"].as_i64().unwrap_or(0) as i32,
            netns,
        })
    }

    /// StopPodSandbox.
    pub fn stop_pod(&mut self, pod: &Pod) -> Result<()> {
        self.stop_pod_id(&pod.id)
    }

    fn stop_pod_id(&mut self, id: &str) -> Result<()> {
        call!(
            self,
            stop_pod_sandbox,
            StopPodSandboxRequest {
                pod_sandbox_id: id.to_string(),
            },
            format!("StopPodSandbox {id}")
        )?;
        Ok(())
    }

    /// RemovePodSandbox (which removes its containers too), then the pod's cgroup, as kubelet
    /// does once the pod is gone: it fails if a container's cgroup is still in it.
    pub fn remove_pod(&mut self, pod: &Pod) -> Result<()> {
        self.remove_pod_id(&pod.id)?;
        for dir in pod.cgroup_dirs() {
            std::fs::remove_dir(&dir)
                .with_context(|| format!("removing the pod's cgroup {}", dir.display()))?;
        }
        Ok(())
    }

    fn remove_pod_id(&mut self, id: &str) -> Result<()> {
        call!(
            self,
            remove_pod_sandbox,
            RemovePodSandboxRequest {
                pod_sandbox_id: id.to_string(),
            },
            format!("RemovePodSandbox {id}")
        )?;
        Ok(())
    }

    /// What container `name` of `pod` wrote, read from its CRI log file (each line is
    /// `<time> <stream> <P|F> <text>`; P marks a partial line).
    pub fn log(&self, pod: &Pod, name: &str) -> Result<String> {
        let path = pod.log_dir().join(format!("{name}.log"));
        let raw = std::fs::read_to_string(&path)
            .with_context(|| format!("reading the CRI log {}", path.display()))?;
        let mut text = String::new();
        for line in raw.lines() {
            let mut parts = line.splitn(4, ' ');
            let (_time, _stream, tag) = (parts.next(), parts.next(), parts.next());
            text.push_str(parts.next().unwrap_or_default());
            if tag != Some("P") {
                text.push('\n');
            }
        }
        Ok(text)
    }

    /// The shim servers of this node's containerd, not their zygotes: pid and command line.
    /// A wasm container's process is a copy of its shim's zygote with the same command line,
    /// but in a PID namespace of its pod's: only processes in the node's PID namespace count.
    pub fn shims(&self) -> Vec<(i32, String)> {
        let socket = self.containerd.socket().display().to_string();
        let node_pid_ns = crate::namespace_of(std::process::id() as i32, "pid").ok();
        crate::processes()
            .into_iter()
            .filter(|(_, cmdline)| cmdline.contains("containerd-shim") && cmdline.contains(&socket))
            .filter(|(pid, _)| crate::namespace_of(*pid, "pid").ok() == node_pid_ns)
            .filter(|(pid, _)| !crate::is_zygote(*pid))
            .collect()
    }

    /// The addresses the node's CNI network has handed out and not taken back (host-local
    /// keeps one file per address).
    pub fn cni_allocations(&self) -> Vec<String> {
        std::fs::read_dir(Path::new(CNI_IPAM_DIR).join(&self.network.name))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.parse::<std::net::IpAddr>().is_ok())
            .collect()
    }

    /// The error of CRI call `call`, with the errors containerd and the shims logged.
    fn failed(&self, call: String, status: containerd_client::tonic::Status) -> anyhow::Error {
        let log = self.containerd.log();
        let errors: Vec<&str> = log.lines().filter(|l| l.contains("level=error")).collect();
        anyhow!(
            "{call}: {}\nerrors in containerd's log:\n{}",
            status.message(),
            errors[errors.len().saturating_sub(20)..].join("\n")
        )
    }

    /// Stops and removes every pod CRI still lists.
    fn remove_all_pods(&mut self) {
        let listed = call!(
            self,
            list_pod_sandbox,
            ListPodSandboxRequest { filter: None },
            "ListPodSandbox".to_string()
        );
        let pods = listed.map(|r| r.items).unwrap_or_default();
        for pod in pods {
            let _ = self.stop_pod_id(&pod.id);
            let _ = self.remove_pod_id(&pod.id);
            if let Some(uid) = pod.metadata.map(|m| m.uid) {
                for dir in pod_cgroup_dirs(&uid) {
                    let _ = std::fs::remove_dir(dir);
                }
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.remove_all_pods();
        // `containerd` is dropped after this: the bridge goes once containerd is stopped.
    }
}

/// What PodSandboxStatus tells of a running pod.
#[derive(Debug, Clone)]
pub struct PodInfo {
    /// Its IP on the CNI network.
    pub ip: String,
    /// The sandbox (pause) process.
    pub pid: i32,
    /// Its network namespace.
    pub netns: String,
}

/// The CRI sections of the node's containerd configuration, in `release`'s format; writes
/// the CNI configuration they name.
fn cri_config(release: Release, dir: &Path, network: &Network) -> String {
    let conf_dir = dir.join("cni");
    let written = std::fs::create_dir_all(&conf_dir)
        .and_then(|()| std::fs::write(conf_dir.join("10-kwasi.conflist"), network.conflist()));
    if let Err(err) = written {
        // containerd then says that CNI is not initialized, when the first pod needs it.
        eprintln!(
            "writing the CNI configuration in {}: {err}",
            conf_dir.display()
        );
    }
    let conf_dir = conf_dir.display();
    let restrict_oom = restrict_oom_score_adj();
    match release {
        Release::V1_6 => format!(
            r#"[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  {restrict_oom}
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{conf_dir}"
    max_conf_num = 1
"#
        ),
        Release::V2 => format!(
            r#"[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{PAUSE_IMAGE}"
[plugins."io.containerd.cri.v1.runtime"]
  {restrict_oom}
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{CNI_BIN_DIR}"]
    conf_dir = "{conf_dir}"
    max_conf_num = 1
"#
        ),
    }
}

/// `restrict_oom_score_adj = true` where this process may not lower its OOM score (no
/// CAP_SYS_RESOURCE, as on machines that are themselves containers): CRI then keeps every
/// container's score at or above containerd's, instead of asking for -998 for the sandbox,
/// which no runtime could set there.
fn restrict_oom_score_adj() -> &'static str {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    const CAP_SYS_RESOURCE: u32 = 24;
    if effective & (1 << CAP_SYS_RESOURCE) == 0 {
        "restrict_oom_score_adj = true"
    } else {
        ""
    }
}

/// The node's CNI network: a bridge and a /24 of its own, so that nodes of tests running at
/// once do not share addresses, and removing one's bridge does not cut another's pods off
/// (a node for more pods than a /24 holds takes the one large network).
struct Network {
    name: String,
    bridge: String,
    subnet: String,
    /// Whether pods' host ports are mapped (CNI's portmap plugin, with iptables).
    port_mapping: bool,
}

/// The iptables chains of CNI's portmap plugin in the `nat` table, which it leaves behind.
const PORTMAP_CHAINS: &[&str] = &[
    "CNI-HOSTPORT-DNAT",
    "CNI-HOSTPORT-SETMARK",
    "CNI-HOSTPORT-MASQ",
];

/// The pods a node's own /24 holds (its network, broadcast and gateway addresses aside).
const PODS_PER_SMALL_NETWORK: u32 = 253;

impl Network {
    /// A network for `pods` pods at once: a /24 of its own up to
    /// [`PODS_PER_SMALL_NETWORK`], else the one large network (a /16).
    fn new(port_mapping: bool, pods: u32) -> Network {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = (std::process::id() + NEXT.fetch_add(1, Ordering::Relaxed)) % 200 + 20;
        let subnet = if pods <= PODS_PER_SMALL_NETWORK {
            format!("10.251.{n}.0/24")
        } else {
            "10.252.0.0/16".to_string()
        };
        Network {
            name: format!("{TMP_PREFIX}net{n}"),
            bridge: format!("{BRIDGE_PREFIX}{n}"),
            subnet,
            port_mapping,
        }
    }

    fn conflist(&self) -> String {
        let mut plugins = vec![serde_json::json!({
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": true,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": self.subnet}]],
                "routes": [{"dst": "0.0.0.0/0"}],
            },
        })];
        if self.port_mapping {
            plugins.push(serde_json::json!({
                "type": "portmap",
                "capabilities": {"portMappings": true},
            }));
        }
        serde_json::json!({"cniVersion": "0.4.0", "name": self.name, "plugins": plugins})
            .to_string()
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "delete", &self.bridge])
            .stderr(std::process::Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(Path::new(CNI_IPAM_DIR).join(&self.name));
        if self.port_mapping {
            remove_portmap_chains();
        }
    }
}

/// Removes what the portmap plugin leaves in the `nat` table once every pod is gone: its
/// chains and the rules that jump to them (only one node at a time maps ports).
pub(crate) fn remove_portmap_chains() {
    let iptables = |args: &[&str]| {
        std::process::Command::new("iptables")
            .args(["-w", "-t", "nat"])
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    for parent in ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"] {
        // `num target prot ...`: delete the jumps by number, last first.
        let listing = iptables(&["-L", parent, "-n", "--line-numbers"]);
        let mut jumps: Vec<u32> = listing
            .lines()
            .filter_map(|line| {
                let mut cols = line.split_whitespace();
                let num = cols.next()?.parse().ok()?;
                PORTMAP_CHAINS.contains(&cols.next()?).then_some(num)
            })
            .collect();
        jumps.sort_unstable_by(|a, b| b.cmp(a));
        for num in jumps {
            iptables(&["-D", parent, &num.to_string()]);
        }
    }
    for chain in PORTMAP_CHAINS {
        iptables(&["-F", chain]);
        iptables(&["-X", chain]);
    }
}

//! Running a container through containerd's gRPC API the way a CRI client does: unpack the
//! image's filesystem layers into snapshots, prepare the container's snapshot on top, create a
//! container record naming the image, runtime and OCI spec, then a task.
//!
//! Debian's containerd 1.6.20 refuses to unpack an image that carries wasm layers besides its
//! tar layers (`ctr: mismatched image rootfs and manifest layers`: it counts every layer against
//! `rootfs.diff_ids`), and `ctr run` cannot run an image it did not unpack. containerd 1.7.7+
//! and 1.6.25+ unpack only the tar layers; [`ApiRun`] does the same, so such images (and CNCF
//! wasm artifacts, which have no filesystem at all) run on 1.6.20 too.

use std::path::Path;

use anyhow::{bail, Context, Result};
use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::diff_client::DiffClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    ApplyRequest, Container, CreateContainerRequest, CreateRequest, CreateTaskRequest,
    DeleteContainerRequest, DeleteRequest, DeleteTaskRequest, GetImageRequest, ReadContentRequest,
    StartRequest, WaitRequest,
};
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::Request;
use containerd_client::types::{Descriptor, Mount};
use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
use sha2::{Digest, Sha256};

use crate::{CtrOutput, NAMESPACE};

/// The snapshotter the private containerd uses.
const SNAPSHOTTER: &str = "overlayfs";

/// What to run: an image (by reference), with a runtime and `process.args`.
pub struct ApiRun<'a> {
    /// containerd's gRPC socket.
    pub socket: &'a Path,
    /// Where to keep the task's stdout and stderr files.
    pub dir: &'a Path,
    /// The runtime (`io.containerd.wasmtime.v1`).
    pub runtime: &'a str,
    /// The image reference.
    pub image: &'a str,
    /// The container id.
    pub id: &'a str,
    /// `process.args`.
    pub args: &'a [&'a str],
    /// `process.env`, exactly ([`ApiRun::DEFAULT_ENV`] for what a CRI client would give).
    pub env: &'a [String],
}

impl ApiRun<'_> {
    /// The environment a container gets when nothing else is asked for: a `PATH`.
    pub const DEFAULT_ENV: &'static str = "PATH=/usr/bin:/bin";

    /// Unpacks the image, creates the container and its task, starts it and waits for it to
    /// end; then deletes the task, the container, its snapshot and the lease that kept the
    /// unpacked layers, whether or not it ran. The output is the task's stdout and stderr, and
    /// its exit status; when creating the task fails, status -1 and containerd's error as
    /// stderr.
    pub fn run(&self) -> Result<CtrOutput> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(self.run_async())
    }

    async fn run_async(&self) -> Result<CtrOutput> {
        let channel = containerd_client::connect(&self.socket)
            .await
            .context("connecting to containerd")?;
        let lease = LeasesClient::new(channel.clone())
            .create(Session::bare(CreateRequest {
                id: format!("{}-run", self.id),
                ..Default::default()
            }))
            .await
            .context("creating a lease")?
            .into_inner()
            .lease
            .context("containerd returned no lease")?
            .id;
        let session = Session { channel, lease };
        let stdout = self.dir.join(format!("{}.stdout", self.id));
        let stderr = self.dir.join(format!("{}.stderr", self.id));
        std::fs::write(&stdout, "")?;
        std::fs::write(&stderr, "")?;

        let outcome = self.unpack_and_run(&session, &stdout, &stderr).await;
        // Clean up what this client made, as a CRI client does when a container is removed.
        let channel = &session.channel;
        let _ = TasksClient::new(channel.clone())
            .delete(session.request(DeleteTaskRequest {
                container_id: self.id.into(),
            }))
            .await;
        let _ = ContainersClient::new(channel.clone())
            .delete(session.request(DeleteContainerRequest { id: self.id.into() }))
            .await;
        let _ = SnapshotsClient::new(channel.clone())
            .remove(session.request(RemoveSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: self.id.into(),
            }))
            .await;
        let _ = LeasesClient::new(channel.clone())
            .delete(Session::bare(DeleteRequest {
                id: session.lease.clone(),
                sync: true,
            }))
            .await;
        let status = match outcome? {
            Ok(status) => status,
            Err(message) => {
                return Ok(CtrOutput {
                    status: -1,
                    stdout: String::new(),
                    stderr: message,
                })
            }
        };
        Ok(CtrOutput {
            status,
            stdout: std::fs::read_to_string(&stdout)?,
            stderr: std::fs::read_to_string(&stderr)?,
        })
    }

    /// The exit status, or (as `Err` inside) why containerd refused to create the task.
    async fn unpack_and_run(
        &self,
        session: &Session,
        stdout: &Path,
        stderr: &Path,
    ) -> Result<std::result::Result<i32, String>> {
        let parent = unpack(session, self.image)
            .await
            .with_context(|| format!("unpacking {}", self.image))?;
        let rootfs = SnapshotsClient::new(session.channel.clone())
            .prepare(session.request(PrepareSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: self.id.into(),
                parent,
                ..Default::default()
            }))
            .await
            .context("preparing the container's snapshot")?
            .into_inner()
            .mounts;
        self.create_and_run(session, rootfs, stdout, stderr).await
    }

    async fn create_and_run(
        &self,
        session: &Session,
        rootfs: Vec<Mount>,
        stdout: &Path,
        stderr: &Path,
    ) -> Result<std::result::Result<i32, String>> {
        let spec = spec_json(self.id, self.args, self.env)?;
        ContainersClient::new(session.channel.clone())
            .create(session.request(CreateContainerRequest {
                container: Some(Container {
                    id: self.id.into(),
                    image: self.image.into(),
                    runtime: Some(Runtime {
                        name: self.runtime.into(),
                        options: None,
                    }),
                    spec: Some(prost_types::Any {
                        type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
                        value: spec,
                    }),
                    snapshotter: SNAPSHOTTER.into(),
                    snapshot_key: self.id.into(),
                    ..Default::default()
                }),
            }))
            .await
            .context("creating the container")?;
        let mut tasks = TasksClient::new(session.channel.clone());
        let created = tasks
            .create(session.request(CreateTaskRequest {
                container_id: self.id.into(),
                rootfs,
                stdout: stdout.display().to_string(),
                stderr: stderr.display().to_string(),
                ..Default::default()
            }))
            .await;
        if let Err(status) = created {
            return Ok(Err(status.message().to_string()));
        }
        tasks
            .start(session.request(StartRequest {
                container_id: self.id.into(),
                ..Default::default()
            }))
            .await
            .context("starting the task")?;
        let exit = tasks
            .wait(session.request(WaitRequest {
                container_id: self.id.into(),
                ..Default::default()
            }))
            .await
            .context("waiting for the task")?
            .into_inner();
        Ok(Ok(exit.exit_status as i32))
    }
}

/// A connection, and the lease that keeps what this client makes from containerd's garbage
/// collector until the container holds it.
struct Session {
    channel: Channel,
    lease: String,
}

impl Session {
    /// A request in the test namespace, without a lease.
    fn bare<T>(message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.metadata_mut().insert(
            "containerd-namespace",
            NAMESPACE.parse().expect("a valid namespace"),
        );
        request
    }

    /// A request in the test namespace, under the lease.
    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Session::bare(message);
        if let Ok(lease) = self.lease.parse() {
            request.metadata_mut().insert("containerd-lease", lease);
        }
        request
    }

    /// The whole blob `descriptor` names, from the content store.
    async fn read(&self, descriptor: &Descriptor) -> Result<Vec<u8>> {
        let mut stream = ContentClient::new(self.channel.clone())
            .read(self.request(ReadContentRequest {
                digest: descriptor.digest.clone(),
                ..Default::default()
            }))
            .await
            .with_context(|| format!("reading {}", descriptor.digest))?
            .into_inner();
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.message().await? {
            bytes.extend_from_slice(&chunk.data);
        }
        Ok(bytes)
    }
}

/// Whether a layer is a filesystem tar (which containerd unpacks) rather than, say, wasm.
fn is_tar_layer(media_type: &str) -> bool {
    media_type.starts_with("application/vnd.oci.image.layer.")
        || media_type.starts_with("application/vnd.docker.image.rootfs.diff.tar")
}

/// Applies the image's tar layers, in order, as a chain of committed snapshots named by
/// their chain ids (reusing those that exist); returns the top one's name, "" when the image
/// has no filesystem (no tar layer, or a config that is not an image config, as in a CNCF
/// wasm artifact). An index stands for its first manifest.
async fn unpack(session: &Session, image: &str) -> Result<String> {
    let mut target = ImagesClient::new(session.channel.clone())
        .get(session.request(GetImageRequest { name: image.into() }))
        .await
        .context("looking up the image")?
        .into_inner()
        .image
        .and_then(|image| image.target)
        .context("the image has no target")?;
    while target.media_type.contains("index") || target.media_type.contains("manifest.list") {
        let index: ImageIndex = serde_json::from_slice(&session.read(&target).await?)?;
        let first = index.manifests().first().context("an empty index")?;
        target = Descriptor {
            media_type: first.media_type().to_string(),
            digest: first.digest().to_string(),
            size: first.size() as i64,
            ..Default::default()
        };
    }
    let manifest: ImageManifest = serde_json::from_slice(&session.read(&target).await?)?;
    let layers: Vec<_> = manifest
        .layers()
        .iter()
        .filter(|layer| is_tar_layer(layer.media_type().as_ref()))
        .collect();
    let config = manifest.config();
    let is_image_config = matches!(
        config.media_type().to_string().as_str(),
        "application/vnd.oci.image.config.v1+json"
            | "application/vnd.docker.container.image.v1+json"
    );
    if layers.is_empty() || !is_image_config {
        return Ok(String::new());
    }
    let config: ImageConfiguration = serde_json::from_slice(
        &session
            .read(&Descriptor {
                media_type: config.media_type().to_string(),
                digest: config.digest().to_string(),
                size: config.size() as i64,
                ..Default::default()
            })
            .await?,
    )?;
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != layers.len() {
        bail!(
            "{} diff_ids for {} filesystem layers",
            diff_ids.len(),
            layers.len()
        );
    }
    let mut snapshots = SnapshotsClient::new(session.channel.clone());
    let mut parent = String::new();
    for (layer, diff_id) in layers.into_iter().zip(diff_ids) {
        let chain = if parent.is_empty() {
            diff_id.clone()
        } else {
            format!("sha256:{:x}", Sha256::digest(format!("{parent} {diff_id}")))
        };
        let exists = snapshots
            .stat(session.request(StatSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: chain.clone(),
            }))
            .await
            .is_ok();
        if !exists {
            let key = format!("extract-{}-{chain}", session.lease);
            let mounts = snapshots
                .prepare(session.request(PrepareSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: key.clone(),
                    parent: parent.clone(),
                    ..Default::default()
                }))
                .await
                .context("preparing a layer's snapshot")?
                .into_inner()
                .mounts;
            DiffClient::new(session.channel.clone())
                .apply(session.request(ApplyRequest {
                    diff: Some(Descriptor {
                        media_type: layer.media_type().to_string(),
                        digest: layer.digest().to_string(),
                        size: layer.size() as i64,
                        ..Default::default()
                    }),
                    mounts,
                    ..Default::default()
                }))
                .await
                .with_context(|| format!("applying layer {}", layer.digest()))?;
            snapshots
                .commit(session.request(CommitSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    name: chain.clone(),
                    key,
                    ..Default::default()
                }))
                .await
                .context("committing a layer's snapshot")?;
        }
        parent = chain;
    }
    Ok(parent)
}

/// The OCI runtime spec a CRI client would give: the runtime-spec defaults (namespaces,
/// mounts, capabilities), `args`, `env`, and a cgroup under the test namespace.
fn spec_json(id: &str, args: &[&str], env: &[String]) -> Result<Vec<u8>> {
    use oci_spec::runtime::{ProcessBuilder, RootBuilder, Spec};
    let mut spec = Spec::default();
    spec.set_process(Some(
        ProcessBuilder::default()
            .args(args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
            .env(env.to_vec())
            .cwd("/")
            .build()?,
    ));
    spec.set_root(Some(
        RootBuilder::default()
            .path("rootfs")
            .readonly(false)
            .build()?,
    ));
    if let Some(linux) = spec.linux_mut() {
        linux.set_cgroups_path(Some(format!("/{NAMESPACE}/{id}").into()));
    }
    Ok(serde_json::to_vec(&spec)?)
}

/// Calls of containerd's task service that `ctr` has no command for: Update and Wait.
pub struct Tasks {
    /// containerd's gRPC socket.
    pub socket: std::path::PathBuf,
    /// The namespace.
    pub namespace: &'static str,
}

impl Tasks {
    fn block_on<T>(&self, call: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(call)
    }

    fn request<T>(&self, message: T) -> Result<Request<T>> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert("containerd-namespace", self.namespace.parse()?);
        Ok(request)
    }

    /// Sets the memory limit of task `id` to `bytes` (as CRI's UpdateContainerResources
    /// does): the resources go as OCI JSON, as containerd's clients send them.
    pub fn set_memory_limit(&self, id: &str, bytes: i64) -> Result<()> {
        let resources = serde_json::json!({"memory": {"limit": bytes}});
        self.block_on(async {
            let channel = containerd_client::connect(&self.socket).await?;
            TasksClient::new(channel)
                .update(
                    self.request(containerd_client::services::v1::UpdateTaskRequest {
                        container_id: id.to_string(),
                        resources: Some(prost_types::Any {
                            type_url:
                                "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"
                                    .to_string(),
                            value: serde_json::to_vec(&resources)?,
                        }),
                        ..Default::default()
                    })?,
                )
                .await
                .map_err(|s| anyhow::anyhow!("updating {id}: {}", s.message()))?;
            Ok(())
        })
    }

    /// Waits for task `id` to exit and returns its exit status.
    pub fn wait(&self, id: &str) -> Result<u32> {
        self.block_on(async {
            let channel = containerd_client::connect(&self.socket).await?;
            let response = TasksClient::new(channel)
                .wait(self.request(WaitRequest {
                    container_id: id.to_string(),
                    ..Default::default()
                })?)
                .await
                .map_err(|s| anyhow::anyhow!("waiting for {id}: {}", s.message()))?;
            Ok(response.into_inner().exit_status)
        })
    }
}

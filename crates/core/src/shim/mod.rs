//! The shim binary's entry point: containerd runs `containerd-shim-<engine>-v1` with `start`
//! (spawn the long-lived server and print its address), with `delete` (clean up after a dead
//! server), or as the server itself (`serve`). containerd-shim parses the flags and the
//! start protocol; this module says what kwasi does at each step.

mod info;
mod libcontainer_log;
mod serve;

use std::io::Write;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use containerd_shim::api::DeleteResponse;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::util::{timestamp, write_address};
use containerd_shim::{Config, ExitSignal, Flags, Shim, StartOpts};
use oci_spec::runtime::Spec;

use crate::engine::Engine;
use crate::sandbox::{remove_container_state, unmount_rootfs, Zygote};
use crate::task::TaskService;

/// The annotation that names a container's pod under Kubernetes' CRI.
const SANDBOX_ID_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";

/// Where sandbox state (libcontainer's) lives, one directory per containerd namespace.
const STATE_ROOT: &str = "/run/kwasi";

/// Runs a shim for engine `E`. Call it from `main` with the runtime's name, e.g.
/// `kwasi_core::shim::run::<WasmtimeEngine>("io.containerd.wasmtime.v1")`.
///
/// `E::default()` is called in the server process; keep it cheap (the engine's heavy state
/// belongs in [`Engine::compile`], which runs in the container process).
pub fn run<E: Engine + Default>(runtime_id: &str) {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    match containerd_shim::parse(&args) {
        Ok(flags) if flags.action.is_empty() && !flags.info && !flags.version => {
            if let Err(err) = serve::serve(KwasiShim::<E>::for_flags(&flags), &flags) {
                log::error!("{runtime_id}: {err:#}");
                eprintln!("{runtime_id}: {err:#}");
                std::process::exit(1);
            }
        }
        _ => containerd_shim::run::<KwasiShim<E>>(runtime_id, None),
    }
}

/// A kwasi shim: containerd-shim drives it for `start` and `delete`, [`serve`] for the
/// server.
struct KwasiShim<E> {
    id: String,
    namespace: String,
    /// containerd's gRPC address, where the images and their content are.
    containerd_address: String,
    exit: Arc<ExitSignal>,
    engine: PhantomData<fn() -> E>,
}

impl<E> KwasiShim<E> {
    fn for_flags(flags: &Flags) -> Self {
        KwasiShim {
            id: flags.id.clone(),
            namespace: flags.namespace.clone(),
            containerd_address: flags.address.clone(),
            exit: Arc::new(ExitSignal::default()),
            engine: PhantomData,
        }
    }
}

fn state_root(namespace: &str) -> PathBuf {
    Path::new(STATE_ROOT).join(namespace)
}

impl<E: Engine + Default> Shim for KwasiShim<E> {
    type T = TaskService;

    fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        KwasiShim::for_flags(args)
    }

    /// Starts the server, one per pod under Kubernetes (grouped by sandbox id), one per
    /// container otherwise, and returns its address. containerd runs this in the bundle
    /// directory.
    ///
    /// A later container of a pod whose server answers gets that server's address: nothing
    /// is started. Otherwise the server is this process forked, not the binary executed
    /// again: containerd reads our stdout until every holder closes it, and the server
    /// closes its copy once it listens. The reply is containerd 2.3's bootstrap result when
    /// containerd sent its bootstrap parameters, a bare address for earlier versions (1.6
    /// cannot parse the JSON reply containerd-shim would print for them).
    fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        // The container's cgroup join waits for an RCU grace period unless one is under way
        // (`sandbox::cgroup_join`): the earliest it can start is here.
        // SAFETY: `start` has a single thread (containerd-shim starts none before this).
        unsafe { crate::sandbox::prepare_cgroup_join_detached() };
        let grouping = Spec::load("config.json")
            .ok()
            .and_then(|spec| spec.annotations().clone())
            .and_then(|a| a.get(SANDBOX_ID_ANNOTATION).cloned())
            .unwrap_or_else(|| opts.id.clone());
        let address = opts.socket_address(&grouping);
        write_address(&address)?;
        if !serve::already_served(&address) {
            serve::fork_server::<E>(&opts, &address).map_err(|e| {
                containerd_shim::Error::Other(format!("starting the shim server: {e:#}"))
            })?;
        }
        if !opts.containerd_version.is_empty() {
            // containerd-shim prints the bootstrap result.
            return Ok(address);
        }
        let mut stdout = std::io::stdout().lock();
        let written = stdout
            .write_all(address.as_bytes())
            .and_then(|()| stdout.flush());
        match written {
            // containerd-shim would print its JSON reply after we return.
            Ok(()) => std::process::exit(0),
            Err(err) => Err(containerd_shim::Error::Other(format!(
                "writing the shim address: {err}"
            ))),
        }
    }

    /// Cleans up after a server that died: kills what is left of the container, removes its
    /// cgroup and state, unmounts its rootfs, and removes the server's socket unless a server
    /// still answers on it (another container of the pod). containerd runs this in the bundle
    /// directory, after every server's end, and leaves a dead server's socket file behind.
    fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        remove_container_state(&state_root(&self.namespace), &self.id);
        if let Ok(bundle) = std::env::current_dir() {
            unmount_rootfs(&bundle.join("rootfs"));
        }
        // `start` wrote the server's address into the bundle.
        if let Ok(address) = std::fs::read_to_string("address") {
            serve::remove_dead_socket(address.trim());
        }
        Ok(DeleteResponse {
            exit_status: 128 + libc::SIGKILL as u32,
            exited_at: Some(timestamp()?).into(),
            ..Default::default()
        })
    }

    fn wait(&mut self) {
        self.exit.wait();
    }

    /// containerd 2.x's `-info`: the sandbox's OCI features.
    fn runtime_info(
        runtime_id: &str,
        _options: Option<&containerd_shim::protos::protobuf::well_known_types::any::Any>,
    ) -> containerd_shim::Result<containerd_shim::protos::types::introspection::RuntimeInfo> {
        Ok(info::runtime_info(runtime_id))
    }

    /// containerd-shim's server loop calls this; kwasi's ([`serve`]) forks the zygote earlier,
    /// before any thread starts, and calls [`KwasiShim::task_service`]. Should this be called
    /// on a process that has threads, the zygote cannot start and the shim exits with why.
    /// Events go to containerd's `TTRPC_ADDRESS` through kwasi's own publisher, which
    /// connects only while it has events to send, rather than through `publisher`.
    fn create_task_service(&self, _publisher: RemotePublisher) -> Self::T {
        let started = Zygote::start(E::default())
            .context("starting the zygote")
            .and_then(|zygote| {
                let address = std::env::var("TTRPC_ADDRESS")
                    .context("TTRPC_ADDRESS is not set by containerd")?;
                Ok((zygote, address))
            });
        match started {
            Ok((zygote, address)) => self.task_service(zygote, &address),
            Err(err) => {
                log::error!("{err:#}");
                std::process::exit(1);
            }
        }
    }
}

impl<E> KwasiShim<E> {
    /// The task service, building its processes through `zygote`.
    fn task_service(&self, zygote: Zygote, events_address: &str) -> TaskService {
        TaskService::new(
            zygote,
            &self.namespace,
            &self.containerd_address,
            state_root(&self.namespace),
            events_address,
            Arc::clone(&self.exit),
        )
    }
}

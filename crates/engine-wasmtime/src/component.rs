//! WASI preview 2 components: `wasi:cli/run` commands and `wasi:http/incoming-handler`
//! services.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kwasi_core::engine::{EngineError, Workload};
use kwasi_core::http::{Admission, HttpConfig, RequestBody, Resources};
use wasmtime::component::{Component, InstancePre, Linker, ResourceTable};
use wasmtime::{Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::p2::bindings::Command;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::{one_line, outcome, wasi_builder};

/// What a component is for, told by its exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum World {
    /// It exports `wasi:cli/run`: it runs once, like a module's `_start`.
    Command,
    /// It exports `wasi:http/incoming-handler`: it answers HTTP requests.
    Service,
}

impl World {
    /// The world of `component`: a service when it exports an HTTP handler (even if it also
    /// exports `wasi:cli/run`), a command when it exports `wasi:cli/run`.
    pub(crate) fn of(engine: &wasmtime::Engine, component: &Component) -> Option<World> {
        let exports: Vec<String> = component
            .component_type()
            .exports(engine)
            .map(|(name, _)| name.to_string())
            .collect();
        let exports_interface = |interface: &str| {
            exports
                .iter()
                .any(|name| name.split('@').next() == Some(interface))
        };
        if exports_interface("wasi:http/incoming-handler") {
            Some(World::Service)
        } else if exports_interface("wasi:cli/run") {
            Some(World::Command)
        } else {
            None
        }
    }
}

/// The store's data for a component: WASI state, HTTP state, and the state of the host
/// interfaces an [`Extension`] adds.
pub struct Host<S = ()> {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    limits: StoreLimits,
    state: S,
    hooks: HooksOf<S>,
}

/// Where an instance's state keeps the hooks of its outgoing HTTP requests, if it has its own.
type HooksOf<S> = fn(&mut S) -> Option<&mut dyn WasiHttpHooks>;

impl<S> Host<S> {
    fn new(wasi: WasiCtx, state: S, hooks: HooksOf<S>) -> Host<S> {
        Host {
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limits: StoreLimits::default(),
            state,
            hooks,
        }
    }

    /// The state of the extension's host interfaces for this instance.
    pub fn state(&mut self) -> &mut S {
        &mut self.state
    }
}

impl<S: Send + 'static> WasiView for Host<S> {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl<S: Send + 'static> WasiHttpView for Host<S> {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: (self.hooks)(&mut self.state).unwrap_or_default(),
        }
    }
}

/// Host interfaces an embedder gives HTTP components besides WASI and `wasi:http` (Spin's
/// variables, say): what it adds to their linker, and each instance's state.
pub trait Extension: Clone + Send + Sync + 'static {
    /// An instance's state, in its store's [`Host`].
    type State: Send + 'static;

    /// Adds the interfaces to `linker`.
    fn add_to_linker(linker: &mut Linker<Host<Self::State>>) -> wasmtime::Result<()>;

    /// The state of a new instance.
    fn new_state(&self) -> Self::State;

    /// The hooks an instance's outgoing HTTP requests go through (to allow some hosts and
    /// refuse others, say), kept in its state; `None`, the default, sends every request as
    /// `wasi:http` does.
    fn http_hooks(state: &mut Self::State) -> Option<&mut dyn WasiHttpHooks> {
        let _ = state;
        None
    }
}

/// No host interfaces beyond WASI and `wasi:http`.
impl Extension for () {
    type State = ();

    fn add_to_linker(_: &mut Linker<Host>) -> wasmtime::Result<()> {
        Ok(())
    }

    fn new_state(&self) {}
}

fn linker<S: Send + 'static>(
    engine: &wasmtime::Engine,
    with_http: bool,
) -> Result<Linker<Host<S>>, EngineError> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .map_err(|e| EngineError::Other(format!("linking WASI: {e:#}")))?;
    if with_http {
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(|e| EngineError::Other(format!("linking wasi:http: {e:#}")))?;
    }
    Ok(linker)
}

/// Runs a `wasi:cli/run` component to completion and returns its exit code.
pub(crate) fn run_command(
    engine: &wasmtime::Engine,
    component: &Component,
    workload: &Workload,
) -> Result<i32, EngineError> {
    let wasi = wasi_builder(workload)?.build();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| EngineError::Other(format!("starting the async runtime: {e}")))?;
    runtime.block_on(async {
        let mut store = Store::new(engine, Host::new(wasi, (), |_| None));
        let command = Command::instantiate_async(&mut store, component, &linker(engine, true)?)
            .await
            .map_err(|e| EngineError::Other(format!("instantiating: {}", one_line(&e))))?;
        match command.wasi_cli_run().call_run(&mut store).await {
            Ok(Ok(())) => Ok(0),
            // `run` returned `err`: the command failed without an exit code of its own.
            Ok(Err(())) => Ok(1),
            Err(err) => outcome(err),
        }
    })
}

/// Serves a `wasi:http/incoming-handler` component until SIGTERM, one fresh instance per
/// request, and returns the task's exit code.
pub(crate) fn serve(
    engine: &wasmtime::Engine,
    component: &Component,
    workload: &Workload,
) -> Result<i32, EngineError> {
    let config = HttpConfig::from_env(&workload.env, Resources::of_this_process())
        .map_err(|e| EngineError::Other(e.to_string()))?;
    let linked = LinkedComponent::link(engine, component, workload.env.clone(), ())?;
    let handler = HttpService::new(linked)?;
    kwasi_core::http::serve(&config, handler)
        .map(|shutdown| shutdown.exit_code())
        .map_err(|e| EngineError::Other(e.to_string()))
}

/// A component linked with WASI, `wasi:http` and an [`Extension`]'s interfaces, ready to be
/// instantiated afresh for each call (an HTTP request, a message), each instance in a store of
/// its own with the component's environment, stdio, limits and files.
pub struct LinkedComponent<X: Extension = ()> {
    pre: InstancePre<Host<X::State>>,
    env: Vec<(String, String)>,
    extension: X,
    max_memory: Option<usize>,
    files: Option<Arc<Path>>,
}

impl<X: Extension> Clone for LinkedComponent<X> {
    fn clone(&self) -> Self {
        LinkedComponent {
            pre: self.pre.clone(),
            env: self.env.clone(),
            extension: self.extension.clone(),
            max_memory: self.max_memory,
            files: self.files.clone(),
        }
    }
}

impl<X: Extension> LinkedComponent<X> {
    /// Links `component` with WASI, `wasi:http` and `extension`'s interfaces; its instances
    /// get `env`. The error names an import that is not provided.
    pub fn new(
        engine: &crate::WasmtimeEngine,
        component: &crate::Compiled,
        env: Vec<(String, String)>,
        extension: X,
    ) -> Result<LinkedComponent<X>, EngineError> {
        let crate::Compiled::Component(component) = component else {
            return Err(EngineError::Other(
                "is a core module, not a component".to_string(),
            ));
        };
        LinkedComponent::link(engine.engine_for_components()?, component, env, extension)
    }

    fn link(
        engine: &wasmtime::Engine,
        component: &Component,
        env: Vec<(String, String)>,
        extension: X,
    ) -> Result<LinkedComponent<X>, EngineError> {
        let mut linker = linker(engine, true)?;
        X::add_to_linker(&mut linker)
            .map_err(|e| EngineError::Other(format!("linking host interfaces: {e:#}")))?;
        let pre = linker.instantiate_pre(component).map_err(|e| {
            EngineError::Other(format!("preparing the component: {}", one_line(&e)))
        })?;
        Ok(LinkedComponent {
            pre,
            env,
            extension,
            max_memory: None,
            files: None,
        })
    }

    /// Limits each linear memory of each instance to `bytes`: an instance that would grow
    /// past it sees `memory.grow` fail (most guests then trap, and the call fails), and the
    /// task goes on.
    pub fn with_max_instance_memory(mut self, bytes: usize) -> LinkedComponent<X> {
        self.max_memory = Some(bytes);
        self
    }

    /// Gives each instance directory `dir` as its `/`, read-only (Spin's component files).
    pub fn with_files(mut self, dir: PathBuf) -> LinkedComponent<X> {
        self.files = Some(dir.into());
        self
    }

    /// The component, linked: what export bindings are made from.
    pub fn instance_pre(&self) -> &InstancePre<Host<X::State>> {
        &self.pre
    }

    /// A fresh store for one instance. Instances get the environment and stdio, not the
    /// task's filesystem: opening the preopens for every call would cost more than the call.
    /// Files given with [`LinkedComponent::with_files`] are one directory.
    pub fn new_store(&self) -> Result<Store<Host<X::State>>, String> {
        let mut wasi = WasiCtx::builder();
        wasi.inherit_stdout().inherit_stderr().envs(&self.env);
        if let Some(dir) = &self.files {
            wasi.preopened_dir(dir, "/", FsPerms::ReadOnly)
                .map_err(|e| format!("opening the component's files {}: {e}", dir.display()))?;
        }
        let mut store = Store::new(
            self.pre.engine(),
            Host::new(wasi.build(), self.extension.new_state(), X::http_hooks),
        );
        if let Some(bytes) = self.max_memory {
            store.data_mut().limits = StoreLimitsBuilder::new().memory_size(bytes).build();
            store.limiter(|host| &mut host.limits);
        }
        Ok(store)
    }
}

/// A `wasi:http/incoming-handler` component, linked and ready to answer requests, each in a
/// fresh instance. It is the [`kwasi_core::http::Handler`] of a plain HTTP component, and the
/// building block of applications that route requests to several components.
pub struct HttpService<X: Extension = ()> {
    linked: LinkedComponent<X>,
    proxy: ProxyPre<Host<X::State>>,
}

impl<X: Extension> Clone for HttpService<X> {
    fn clone(&self) -> Self {
        HttpService {
            linked: self.linked.clone(),
            proxy: self.proxy.clone(),
        }
    }
}

/// The body of a response from an [`HttpService`].
pub type ResponseBody = HyperOutgoingBody;

/// The error of a [`ResponseBody`].
pub type ResponseBodyError = wasmtime_wasi_http::Error;

impl<X: Extension> HttpService<X> {
    /// The service of `linked`, which must export `wasi:http/incoming-handler`.
    pub fn new(linked: LinkedComponent<X>) -> Result<HttpService<X>, EngineError> {
        let proxy = ProxyPre::new(linked.pre.clone()).map_err(|e| {
            EngineError::Other(format!("preparing the component: {}", one_line(&e)))
        })?;
        Ok(HttpService { linked, proxy })
    }
}

/// A response with a fixed body, of the type the component's responses have.
pub fn fixed_response(
    status: u16,
    body: impl Into<hyper::body::Bytes>,
) -> hyper::Response<ResponseBody> {
    use http_body_util::BodyExt;
    let body = http_body_util::Full::new(body.into())
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut response = hyper::Response::new(body);
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    response
}

impl<X: Extension> kwasi_core::http::Handler for HttpService<X> {
    type Body = HyperOutgoingBody;
    type BodyError = wasmtime_wasi_http::Error;

    async fn handle(
        &self,
        request: hyper::Request<RequestBody>,
        admission: Admission,
    ) -> Result<hyper::Response<HyperOutgoingBody>, String> {
        let mut store = self.linked.new_store()?;
        let request = request.map(|body| {
            http_body_util::BodyExt::map_err(body, |err| match err {
                kwasi_core::http::BodyError::TooLarge { limit } => {
                    wasmtime_wasi_http::Error::HttpRequestBodySize(Some(limit))
                }
                kwasi_core::http::BodyError::Hyper(err) => wasmtime_wasi_http::Error::Hyper(err),
            })
        });
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let (request, response_out) = {
            let mut http = store.data_mut().http();
            let request = http.new_incoming_request(Scheme::Http, request);
            let response_out = http.new_response_outparam(sender);
            (request, response_out)
        };
        let request = request.map_err(|e| format!("bad request: {}", one_line(&e)))?;
        let response_out = response_out.map_err(|e| one_line(&e))?;
        let pre = self.proxy.clone();
        // The instance runs in a task of its own: it may go on writing the body after the
        // response's head has gone out. It keeps the admission until its store is dropped.
        let guest = tokio::spawn(async move {
            let _admission = admission;
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, request, response_out)
                .await
        });
        match receiver.await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(code)) => Err(format!("the component answered with error {code:?}")),
            Err(_) => Err(match guest.await {
                Ok(Ok(())) => "the component returned without setting a response".to_string(),
                Ok(Err(err)) => match outcome(err) {
                    Err(EngineError::Trap(trap)) => format!("wasm trap: {trap}"),
                    Err(other) => other.to_string(),
                    Ok(code) => format!("the component exited with {code}"),
                },
                Err(join) => format!("the request's task failed: {join}"),
            }),
        }
    }
}

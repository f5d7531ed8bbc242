//! Components: `wasi:cli/run` commands and HTTP services, of WASI 0.2
//! (`wasi:http/incoming-handler`) or WASI 0.3 (`wasi:http/handler`, whose functions are
//! `async` and run on wasmtime's component-model concurrency).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kwasi_core::engine::{release_freed_memory, EngineError, Workload};
use kwasi_core::http::{Admission, HttpConfig, RequestBody, Resources};
use wasmtime::component::{Component, InstancePre, Linker, ResourceTable};
use wasmtime::{Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::p3::bindings::ServicePre;
use wasmtime_wasi_http::{WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::{one_line, outcome, wasi_builder};

/// What a component is for, told by its exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum World {
    /// It exports `wasi:cli/run`: it runs once, like a module's `_start`.
    Command,
    /// It exports `wasi:http/incoming-handler` (WASI 0.2) or `wasi:http/handler` (WASI 0.3):
    /// it answers HTTP requests.
    Service,
}

impl World {
    /// The world of `component`: a service when it exports an HTTP handler (even if it also
    /// exports `wasi:cli/run`), a command when it exports `wasi:cli/run`.
    pub(crate) fn of(component: &Component) -> Option<World> {
        let exports: Vec<String> = component
            .component_type()
            .exports(component.engine())
            .map(|(name, _)| name.to_string())
            .collect();
        let exports_interface = |interface: &str| {
            exports
                .iter()
                .any(|name| name.split('@').next() == Some(interface))
        };
        if exports_interface("wasi:http/incoming-handler") || exports_interface("wasi:http/handler")
        {
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

    /// Adds the interfaces whose functions are WASI 0.3 `async` ones, which only the linker of
    /// a WASI 0.3 component can hold; the default adds none.
    fn add_async_to_linker(linker: &mut Linker<Host<Self::State>>) -> wasmtime::Result<()> {
        let _ = linker;
        Ok(())
    }

    /// The state of a new instance.
    fn new_state(&self) -> Self::State;

    /// The hooks an instance's outgoing HTTP requests go through (to allow some hosts and
    /// refuse others, say), kept in its state; `None`, the default, sends every request as
    /// `wasi:http` does.
    fn http_hooks(state: &mut Self::State) -> Option<&mut dyn WasiHttpHooks> {
        let _ = state;
        None
    }

    /// Whether a component may import `interface` (its full name, `spin:mqtt/mqtt@3.0.0`)
    /// although [`Extension::add_to_linker`] does not provide it: its functions are then
    /// linked to ones that fail the call, naming the function. The default accepts none, so
    /// that an import nothing provides fails linking, naming the interface.
    fn accepts_missing_import(interface: &str) -> bool {
        let _ = interface;
        false
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

/// A linker of WASI and `wasi:http` for components of `engine`: WASI 0.2, and WASI 0.3 too
/// when the engine is `concurrent` (the engine of WASI 0.3 components).
fn linker<S: Send + 'static>(
    engine: &wasmtime::Engine,
    concurrent: bool,
) -> Result<Linker<Host<S>>, EngineError> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .and_then(|()| match concurrent {
            true => wasmtime_wasi::p3::add_to_linker(&mut linker),
            false => Ok(()),
        })
        .map_err(|e| EngineError::Other(format!("linking WASI: {e:#}")))?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
        .and_then(|()| match concurrent {
            true => wasmtime_wasi_http::p3::add_to_linker(&mut linker),
            false => Ok(()),
        })
        .map_err(|e| EngineError::Other(format!("linking wasi:http: {e:#}")))?;
    Ok(linker)
}

/// Links each instance `component` imports that `accepted` names, to functions that fail
/// the call naming themselves, and to resource types of the host's that nothing creates.
fn link_accepted_imports<S: Send + 'static>(
    linker: &mut Linker<Host<S>>,
    component: &Component,
    accepted: fn(&str) -> bool,
) -> wasmtime::Result<()> {
    use wasmtime::component::types::ComponentItem;
    use wasmtime::component::ResourceType;

    /// The resources of interfaces kwasi does not provide: none is ever made.
    struct NotProvided;

    let engine = linker.engine().clone();
    for (interface, import) in component.component_type().imports(&engine) {
        let ComponentItem::ComponentInstance(instance) = import.ty else {
            continue;
        };
        if !accepted(interface) {
            continue;
        }
        let mut linked = linker.instance(interface)?;
        for (name, export) in instance.exports(&engine) {
            let called = format!("{interface}#{name}");
            match export.ty {
                ComponentItem::ComponentFunc(func) if func.async_() => {
                    linked.func_new_concurrent(name, move |_, _, _, _| {
                        let called = called.clone();
                        Box::pin(async move { Err(not_provided(&called)) })
                    })?
                }
                ComponentItem::ComponentFunc(_) => {
                    linked.func_new(name, move |_, _, _, _| Err(not_provided(&called)))?
                }
                ComponentItem::Resource(_) => {
                    linked.resource(name, ResourceType::host::<NotProvided>(), |_, _| Ok(()))?
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// The error of a call to a function kwasi does not provide.
fn not_provided(called: &str) -> wasmtime::Error {
    wasmtime::format_err!("{called} is not provided by kwasi")
}

/// Runs a `wasi:cli/run` component (WASI 0.2 or 0.3) to completion and returns its exit code.
pub(crate) fn run_command(
    component: &Component,
    concurrent: bool,
    workload: &Workload,
) -> Result<i32, EngineError> {
    let engine = component.engine();
    let wasi = wasi_builder(workload)?.build();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| EngineError::Other(format!("starting the async runtime: {e}")))?;
    let pre = linker(engine, concurrent)?
        .instantiate_pre(component)
        .map_err(|e| EngineError::Other(format!("instantiating: {}", one_line(&e))))?;
    let instantiating =
        |e: wasmtime::Error| EngineError::Other(format!("instantiating: {}", one_line(&e)));
    runtime.block_on(async {
        let mut store = Store::new(engine, Host::new(wasi, (), |_| None));
        let ran = match wasmtime_wasi::p2::bindings::CommandPre::new(pre.clone()) {
            Ok(command) => {
                let command = command
                    .instantiate_async(&mut store)
                    .await
                    .map_err(instantiating)?;
                release_freed_memory();
                command.wasi_cli_run().call_run(&mut store).await
            }
            Err(_) => {
                let command = wasmtime_wasi::p3::bindings::CommandPre::new(pre)
                    .map_err(instantiating)?
                    .instantiate_async(&mut store)
                    .await
                    .map_err(instantiating)?;
                release_freed_memory();
                store
                    .run_concurrent(async move |store| command.wasi_cli_run().call_run(store).await)
                    .await
                    .and_then(|ran| ran)
            }
        };
        match ran {
            Ok(Ok(())) => Ok(0),
            // `run` returned `err`: the command failed without an exit code of its own.
            Ok(Err(())) => Ok(1),
            Err(err) => outcome(err),
        }
    })
}

/// Serves an HTTP component until SIGTERM, one fresh instance per
/// request, and returns the task's exit code.
pub(crate) fn serve(
    component: &Component,
    concurrent: bool,
    workload: &Workload,
) -> Result<i32, EngineError> {
    let config = HttpConfig::from_env(&workload.env, Resources::of_this_process())
        .map_err(|e| EngineError::Other(e.to_string()))?;
    let linked = LinkedComponent::link(component, concurrent, workload.env.clone(), ())?;
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
        let concurrent = engine.is_async(component.engine());
        LinkedComponent::link(component, concurrent, env, extension)
    }

    fn link(
        component: &Component,
        concurrent: bool,
        env: Vec<(String, String)>,
        extension: X,
    ) -> Result<LinkedComponent<X>, EngineError> {
        let mut linker = linker(component.engine(), concurrent)?;
        X::add_to_linker(&mut linker)
            .and_then(|()| match concurrent {
                true => X::add_async_to_linker(&mut linker),
                false => Ok(()),
            })
            .and_then(|()| link_accepted_imports(&mut linker, component, X::accepts_missing_import))
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

/// An HTTP component, linked and ready to answer requests, each in a fresh instance: a
/// WASI 0.2 `wasi:http/incoming-handler` or a WASI 0.3 `wasi:http/handler`. It is the
/// [`kwasi_core::http::Handler`] of a plain HTTP component, and the building block of
/// applications that route requests to several components.
pub struct HttpService<X: Extension = ()> {
    linked: LinkedComponent<X>,
    handler: HandlerPre<X::State>,
}

/// The HTTP handler a component exports, by WASI version.
enum HandlerPre<S: 'static> {
    /// `wasi:http/incoming-handler@0.2`: the response goes out through a `response-outparam`.
    P2(ProxyPre<Host<S>>),
    /// `wasi:http/handler@0.3`: an `async` function that returns the response.
    P3(ServicePre<Host<S>>),
}

impl<S> Clone for HandlerPre<S> {
    fn clone(&self) -> Self {
        match self {
            HandlerPre::P2(pre) => HandlerPre::P2(pre.clone()),
            HandlerPre::P3(pre) => HandlerPre::P3(pre.clone()),
        }
    }
}

impl<X: Extension> Clone for HttpService<X> {
    fn clone(&self) -> Self {
        HttpService {
            linked: self.linked.clone(),
            handler: self.handler.clone(),
        }
    }
}

/// The body of a response from an [`HttpService`].
pub type ResponseBody = HyperOutgoingBody;

/// The error of a [`ResponseBody`].
pub type ResponseBodyError = wasmtime_wasi_http::Error;

impl<X: Extension> HttpService<X> {
    /// The service of `linked`, which must export `wasi:http/incoming-handler@0.2` or
    /// `wasi:http/handler@0.3`.
    pub fn new(linked: LinkedComponent<X>) -> Result<HttpService<X>, EngineError> {
        let handler = match ProxyPre::new(linked.pre.clone()) {
            Ok(pre) => HandlerPre::P2(pre),
            Err(p2) => match ServicePre::new(linked.pre.clone()) {
                Ok(pre) => HandlerPre::P3(pre),
                Err(_) => {
                    return Err(EngineError::Other(format!(
                        "preparing the component: {}",
                        one_line(&p2)
                    )))
                }
            },
        };
        Ok(HttpService { linked, handler })
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

impl<X: Extension> HttpService<X> {
    /// Answers `request` in a fresh instance. The instance keeps `admission`, if the request
    /// has one, until its store is dropped: it may go on writing the body after the
    /// response's head has gone out. A request from another component of the same app (Spin's
    /// service chaining) has none: its caller's instance holds a slot already.
    pub async fn serve(
        &self,
        request: hyper::Request<WasiBody>,
        admission: Option<Admission>,
    ) -> Result<hyper::Response<ResponseBody>, String> {
        let store = self.linked.new_store()?;
        match &self.handler {
            HandlerPre::P2(pre) => handle_p2(pre.clone(), store, request, admission).await,
            HandlerPre::P3(pre) => handle_p3(pre.clone(), store, request, admission).await,
        }
    }
}

/// `request` with the body a component reads: a body past the server's limit ends with
/// `wasi:http`'s `HTTP-request-body-size` error.
pub fn wasi_request(request: hyper::Request<RequestBody>) -> hyper::Request<WasiBody> {
    request.map(|body| {
        let body = http_body_util::BodyExt::map_err(body, |err| match err {
            kwasi_core::http::BodyError::TooLarge { limit } => {
                wasmtime_wasi_http::Error::HttpRequestBodySize(Some(limit))
            }
            kwasi_core::http::BodyError::Hyper(err) => wasmtime_wasi_http::Error::Hyper(err),
        });
        http_body_util::BodyExt::boxed_unsync(body)
    })
}

impl<X: Extension> kwasi_core::http::Handler for HttpService<X> {
    type Body = HyperOutgoingBody;
    type BodyError = wasmtime_wasi_http::Error;

    async fn handle(
        &self,
        request: hyper::Request<RequestBody>,
        admission: Admission,
    ) -> Result<hyper::Response<HyperOutgoingBody>, String> {
        self.serve(wasi_request(request), Some(admission)).await
    }
}

/// A response from a guest, or why there is none.
type GuestResponse = Result<hyper::Response<HyperOutgoingBody>, String>;

/// Calls `wasi:http/incoming-handler@0.2#handle` in a fresh instance: the guest sends the
/// response through its `response-outparam`.
async fn handle_p2<S: Send + 'static>(
    pre: ProxyPre<Host<S>>,
    mut store: Store<Host<S>>,
    request: hyper::Request<WasiBody>,
    admission: Option<Admission>,
) -> GuestResponse {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let (request, response_out) = {
        let mut http = store.data_mut().http();
        let request = http.new_incoming_request(Scheme::Http, request);
        let response_out = http.new_response_outparam(sender);
        (request, response_out)
    };
    let request = request.map_err(|e| format!("bad request: {}", one_line(&e)))?;
    let response_out = response_out.map_err(|e| one_line(&e))?;
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
        Err(_) => Err(no_response(guest.await)),
    }
}

/// Calls `wasi:http/handler@0.3#handle` in a fresh instance, on the store's event loop, which
/// goes on running while the response's body is read: the guest may write it after `handle`
/// has returned.
async fn handle_p3<S: Send + 'static>(
    pre: ServicePre<Host<S>>,
    mut store: Store<Host<S>>,
    request: hyper::Request<WasiBody>,
    admission: Option<Admission>,
) -> GuestResponse {
    let (sender, receiver) = tokio::sync::oneshot::channel::<GuestResponse>();
    let guest = tokio::spawn(async move {
        let _admission = admission;
        let service = pre.instantiate_async(&mut store).await?;
        let (request, request_io) =
            wasmtime_wasi_http::p3::Request::from_http(store.data_mut().http().hooks, request);
        store
            .run_concurrent(async move |accessor| {
                let response = match service.handle(accessor, request).await? {
                    Ok(response) => response,
                    Err(code) => {
                        let _ =
                            sender.send(Err(format!("the component answered with error {code:?}")));
                        return Ok(());
                    }
                };
                let response =
                    accessor.with(|mut store| response.into_http(&mut store, request_io))?;
                // `read` is dropped with the body, once it has been read or given up.
                let (read, body_done) = tokio::sync::oneshot::channel::<()>();
                let response = response.map(|body| {
                    let body = http_body_util::BodyExt::map_frame(body, move |frame| {
                        let _ = &read;
                        frame
                    });
                    http_body_util::BodyExt::boxed_unsync(body)
                });
                if sender.send(Ok(response)).is_ok() {
                    let _ = body_done.await;
                }
                wasmtime::Result::<()>::Ok(())
            })
            .await?
    });
    match receiver.await {
        Ok(response) => response,
        Err(_) => Err(no_response(guest.await)),
    }
}

/// Why a guest's task ended without a response.
fn no_response(ended: Result<wasmtime::Result<()>, tokio::task::JoinError>) -> String {
    match ended {
        Ok(Ok(())) => "the component returned without setting a response".to_string(),
        Ok(Err(err)) => match outcome(err) {
            Err(EngineError::Trap(trap)) => format!("wasm trap: {trap}"),
            Err(other) => other.to_string(),
            Ok(code) => format!("the component exited with {code}"),
        },
        Err(join) => format!("the request's task failed: {join}"),
    }
}

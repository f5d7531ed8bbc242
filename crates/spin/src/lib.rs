//! # kwasi-spin
//!
//! Spin applications on kwasi, as SpinKube users push them: several components behind HTTP
//! and Redis triggers, from Spin's OCI layout (a locked app and a layer per component) or from a
//! `spin.toml` in the container's filesystem. [`SpinEngine`] wraps the wasmtime engine: a
//! plain module or component runs as under the wasmtime shim, an application is routed.
//!
//! The lifecycle of an application, at `create` ([`Engine::load_app`]):
//! 1. the locked app is read ([`app::locked_app_of`], or [`manifest::load`] for `spin.toml`);
//! 2. its components' wasm is found and what kwasi cannot run is refused ([`app::resolve`]);
//! 3. its routes are checked ([`routes::Router`]) and each routed component is compiled
//!    (through the compile cache) and linked, so that a missing import fails `create`, and
//!    its files are laid out ([`files::lay_out`]);
//!
//! and at `start` ([`Engine::run`]), the HTTP trigger serves ([`trigger::HttpTrigger`]) and the
//! Redis trigger subscribes ([`redis::RedisTrigger`]).

pub mod app;
pub mod chaining;
pub mod files;
pub mod host;
pub mod inbound_http;
pub mod key_value;
pub mod locked;
pub mod manifest;
pub mod oci;
pub mod outbound;
pub mod redis;
pub mod routes;
pub mod runtime_config;
pub mod sqlite;
pub mod trigger;
pub mod variables;

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::path::Path;
use std::sync::Arc;

use kwasi_core::engine::{AppSource, Engine, EngineError, Scratch, WasmBytes, Workload};
use kwasi_engine_wasmtime::{Compiled, LinkedComponent, WasmtimeEngine};

use app::{locked_app_of, resolve};
use chaining::Chain;
use host::SpinHost;
use key_value::KeyValue;
use outbound::{AllowedHosts, Outbound};
use redis::{RedisHandler, RedisTrigger};
use routes::Router;
use sqlite::Databases;
use variables::Variables;

/// The file name of a Spin manifest.
pub const MANIFEST_NAME: &str = "spin.toml";

/// The name a shim gives [`SpinEngine`] in its logs and errors.
pub trait ShimName: Send + Sync + 'static {
    /// `spin`, `wasmtime`.
    const NAME: &'static str;
}

/// `containerd-shim-spin-v2`.
pub struct SpinShim;

impl ShimName for SpinShim {
    const NAME: &'static str = "spin";
}

/// `containerd-shim-wasmtime-v1`, which runs Spin applications too.
pub struct WasmtimeShim;

impl ShimName for WasmtimeShim {
    const NAME: &'static str = "wasmtime";
}

/// Runs Spin applications, and plain modules and components as the wasmtime engine does;
/// named after the shim `N` it serves.
pub struct SpinEngine<N: ShimName = SpinShim> {
    wasmtime: WasmtimeEngine,
    shim: PhantomData<N>,
}

impl<N: ShimName> Clone for SpinEngine<N> {
    fn clone(&self) -> Self {
        SpinEngine {
            wasmtime: self.wasmtime.clone(),
            shim: PhantomData,
        }
    }
}

impl<N: ShimName> Default for SpinEngine<N> {
    fn default() -> Self {
        SpinEngine {
            wasmtime: WasmtimeEngine::default(),
            shim: PhantomData,
        }
    }
}

/// What [`SpinEngine`] runs: a module or component, or an application.
pub enum SpinModule {
    /// A module or component, run as the wasmtime engine runs it.
    Plain(Compiled),
    /// A Spin application.
    App(LoadedApp),
}

/// An application ready to run: its routes, each to a linked component, and its Redis
/// subscriptions.
pub struct LoadedApp {
    name: String,
    router: Option<Router<trigger::ComponentService>>,
    /// Its HTTP components by id, which service chaining reaches: the [`Chain`] of each
    /// component's outbound hooks holds them weakly, so they live as long as this.
    chained: Arc<BTreeMap<String, trigger::ComponentService>>,
    config: kwasi_core::http::HttpConfig,
    redis: RedisTrigger,
}

impl<N: ShimName> Engine for SpinEngine<N> {
    type Module = SpinModule;

    fn name(&self) -> &'static str {
        N::NAME
    }

    fn runs_components(&self) -> bool {
        true
    }

    fn compile(&self, wasm: &WasmBytes) -> Result<SpinModule, EngineError> {
        self.wasmtime.compile(wasm).map(SpinModule::Plain)
    }

    fn exports_entry(&self, module: &SpinModule, name: &str) -> bool {
        match module {
            SpinModule::Plain(compiled) => self.wasmtime.exports_entry(compiled, name),
            SpinModule::App(_) => false,
        }
    }

    fn run(&self, module: SpinModule, workload: &Workload) -> Result<i32, EngineError> {
        match module {
            SpinModule::Plain(compiled) => self.wasmtime.run(compiled, workload),
            SpinModule::App(app) => {
                eprintln!("spin app {}: serving", app.name);
                let redis = match app.redis.is_empty() {
                    true => None,
                    false => Some(app.redis.start().map_err(EngineError::Other)?),
                };
                let code = match app.router {
                    Some(router) => {
                        let mut trigger = trigger::HttpTrigger::new(router);
                        if let Some(redis) = &redis {
                            // Both triggers drain at once: the Redis one stops taking
                            // messages as the server stops taking connections.
                            let (stop, drain) = (redis.stopper(), app.config.drain);
                            trigger = trigger.on_drain(move || stop.stop(drain));
                        }
                        kwasi_core::http::serve(&app.config, trigger)
                            .map(|shutdown| shutdown.exit_code())
                            .map_err(|e| EngineError::Other(e.to_string()))?
                    }
                    None => {
                        kwasi_core::wait_for_termination()
                            .map_err(|e| EngineError::Other(format!("waiting for SIGTERM: {e}")))?;
                        0
                    }
                };
                // Chained requests reached the components until now.
                drop(app.chained);
                // Then the Redis trigger's drain ends (it started with the server's); a Redis
                // connection that had ended stops the app with an error, as in Spin.
                match redis {
                    Some(redis) => {
                        let shutdown = redis.stop(app.config.drain).map_err(EngineError::Other)?;
                        Ok(code.max(shutdown.exit_code()))
                    }
                    None => Ok(code),
                }
            }
        }
    }

    fn fingerprint(&self) -> Option<String> {
        self.wasmtime.fingerprint()
    }

    fn precompile(&self, wasm: &WasmBytes, scratch: &Scratch) -> Result<Vec<u8>, EngineError> {
        self.wasmtime.precompile(wasm, scratch)
    }

    fn load_precompiled(&self, compiled: &[u8]) -> Result<SpinModule, EngineError> {
        self.wasmtime
            .load_precompiled(compiled)
            .map(SpinModule::Plain)
    }

    fn load_precompiled_file(
        &self,
        path: &Path,
        compiled: &[u8],
    ) -> Result<SpinModule, EngineError> {
        self.wasmtime
            .load_precompiled_file(path, compiled)
            .map(SpinModule::Plain)
    }

    fn app_manifest_name(&self) -> Option<&'static str> {
        Some(MANIFEST_NAME)
    }

    fn load_app(
        &self,
        source: AppSource<'_>,
        workload: &Workload,
        compile: &dyn Fn(&WasmBytes) -> Result<SpinModule, EngineError>,
    ) -> Result<SpinModule, EngineError> {
        let other = |e: String| EngineError::Other(e);
        let (mut locked, layers) = match source {
            AppSource::Layers(layers) => (
                locked_app_of(layers).map_err(|e| other(e.to_string()))?,
                layers,
            ),
            AppSource::Manifest(path) => (
                manifest::load(path).map_err(|e| other(e.to_string()))?,
                &[][..],
            ),
        };
        if let Some(ids) = kwasi_core::workload::env_var(&workload.env, app::COMPONENTS_TO_RETAIN) {
            app::retain_components(&mut locked, ids).map_err(|e| other(e.to_string()))?;
        }
        let resolved = resolve(&locked, layers).map_err(|e| other(e.to_string()))?;
        let config = trigger::http_config(&workload.env).map_err(other)?;
        let max_memory = trigger::max_instance_memory(&workload.env).map_err(other)?;
        let runtime_config =
            runtime_config::load(Path::new(runtime_config::RUNTIME_CONFIG_PATH)).map_err(other)?;
        // Routes first: a clash is reported before anything is compiled.
        let routes = Router::build(
            resolved
                .http
                .iter()
                .filter_map(|t| Some((t.id.clone(), t.route.clone()?, t.component.clone()))),
        )
        .map_err(|e| other(e.to_string()))?;
        let sources = variables::Sources {
            providers: &runtime_config.variables,
            env: &workload.env,
        };
        let mut services = BTreeMap::new();
        let mut redis = RedisTrigger::default();
        let chain = Chain::default();
        for component in &resolved.components {
            let serves_http = resolved.http.iter().any(|t| t.component == component.id);
            let subscriptions: Vec<&app::RedisTrigger> = resolved
                .redis
                .iter()
                .filter(|t| t.component == component.id)
                .collect();
            if !serves_http && subscriptions.is_empty() {
                continue;
            }
            let in_component = |e: String| other(format!("component {}: {e}", component.id));
            let host = host_of(
                component,
                &resolved,
                sources,
                &runtime_config,
                config.addr,
                &chain,
            )
            .map_err(in_component)?;
            let linked = match compile(&component.wasm) {
                Ok(SpinModule::Plain(compiled)) => {
                    LinkedComponent::new(&self.wasmtime, &compiled, component.env.clone(), host)
                }
                Ok(SpinModule::App(_)) => Err(other("is an application".into())),
                Err(err) => Err(err),
            }
            .map_err(|e| in_component(e.to_string()))?;
            let linked = match max_memory {
                Some(bytes) => linked.with_max_instance_memory(bytes),
                None => linked,
            };
            let linked = if component.files.is_empty() {
                linked
            } else {
                let root = Path::new(files::FILES_ROOT);
                files::lay_out(root, &component.id, &component.files)
                    .map(|dir| linked.with_files(dir))
                    .map_err(in_component)?
            };
            if !subscriptions.is_empty() {
                let handler =
                    RedisHandler::new(&component.id, linked.clone()).map_err(in_component)?;
                for t in subscriptions {
                    let expand = |what: &str, template: &str| {
                        variables::expand_app(&resolved.variables, template, sources)
                            .map_err(|e| other(format!("trigger {}: {what} {e}", t.id)))
                    };
                    let address = expand("address", &t.address)?;
                    let channel = expand("channel", &t.channel)?;
                    redis.subscribe(address, channel, handler.clone());
                }
            }
            if serves_http {
                let service = trigger::ComponentService::new(linked).map_err(in_component)?;
                services.insert(component.id.clone(), service);
            }
        }
        let services = Arc::new(services);
        chain.complete(&services);
        let router = if resolved.http.is_empty() {
            None
        } else {
            Some(routes.try_map(|component| {
                services
                    .get(component)
                    .cloned()
                    .ok_or_else(|| other(format!("component {component} was not loaded")))
            })?)
        };
        Ok(SpinModule::App(LoadedApp {
            name: resolved.name,
            router,
            chained: services,
            config,
            redis,
        }))
    }
}

/// The host interfaces of `component`: its variables, key-value stores, databases and allowed
/// outbound hosts, resolved against the app's variables, valued from `sources`.
fn host_of(
    component: &app::ComponentSource,
    app: &app::ResolvedApp,
    sources: variables::Sources<'_>,
    runtime_config: &runtime_config::RuntimeConfig,
    listen: std::net::SocketAddr,
    chain: &Chain,
) -> Result<SpinHost, String> {
    let variables = Variables::resolve(&app.variables, &component.config, sources)?;
    let key_value = KeyValue::for_component(
        &component.key_value_stores,
        &runtime_config.key_value_stores,
    )?;
    let databases = Databases::for_component(
        &component.sqlite_databases,
        &runtime_config.sqlite_databases,
    )?;
    let hosts = component
        .allowed_outbound_hosts
        .iter()
        .map(|host| variables::expand_app(&app.variables, host, sources))
        .collect::<Result<Vec<_>, _>>()?;
    let allowed = AllowedHosts::parse(&hosts)?;
    let outbound = Outbound::new(component.id.as_str().into(), allowed.into(), listen)
        .with_chain(chain.clone());
    Ok(SpinHost::new(variables, key_value, databases, outbound))
}

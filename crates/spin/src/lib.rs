//! # kwasi-spin
//!
//! Spin applications on kwasi, as SpinKube users push them: several components behind an
//! HTTP trigger, from Spin's OCI layout (a locked app and a layer per component) or from a
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
//! and at `start` ([`Engine::run`]), the HTTP trigger serves ([`trigger::HttpTrigger`]).

pub mod app;
pub mod files;
pub mod host;
pub mod key_value;
pub mod locked;
pub mod manifest;
pub mod oci;
pub mod outbound;
pub mod routes;
pub mod runtime_config;
pub mod trigger;
pub mod variables;

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::path::Path;

use kwasi_core::engine::{AppSource, Engine, EngineError, Scratch, WasmBytes, Workload};
use kwasi_engine_wasmtime::{Compiled, HttpService, WasmtimeEngine};

use app::{locked_app_of, resolve};
use host::SpinHost;
use key_value::KeyValue;
use outbound::{AllowedHosts, Outbound};
use routes::Router;
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

/// An application ready to serve: its routes, each to a linked component.
pub struct LoadedApp {
    name: String,
    router: Router<HttpService<SpinHost>>,
    config: kwasi_core::http::HttpConfig,
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
                let trigger = trigger::HttpTrigger::new(app.router);
                kwasi_core::http::serve(&app.config, trigger)
                    .map(|shutdown| shutdown.exit_code())
                    .map_err(|e| EngineError::Other(e.to_string()))
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
        let stores =
            runtime_config::key_value_stores(Path::new(runtime_config::RUNTIME_CONFIG_PATH))
                .map_err(other)?;
        // Routes first: a clash is reported before anything is compiled.
        let routes = Router::build(
            resolved
                .http
                .iter()
                .map(|t| (t.id.clone(), t.route.clone(), t.component.clone())),
        )
        .map_err(|e| other(e.to_string()))?;
        let mut services = BTreeMap::new();
        for component in &resolved.components {
            if !resolved.http.iter().any(|t| t.component == component.id) {
                continue;
            }
            let variables =
                Variables::resolve(&resolved.variables, &component.config, &workload.env)
                    .map_err(|e| other(format!("component {}: {e}", component.id)))?;
            let key_value = KeyValue::for_component(&component.key_value_stores, &stores)
                .map_err(|e| other(format!("component {}: {e}", component.id)))?;
            let outbound = component
                .allowed_outbound_hosts
                .iter()
                .map(|host| variables::expand_app(&resolved.variables, host, &workload.env))
                .collect::<Result<Vec<_>, _>>()
                .and_then(|hosts| AllowedHosts::parse(&hosts))
                .map(|hosts| Outbound::new(component.id.as_str().into(), hosts.into(), config.addr))
                .map_err(|e| other(format!("component {}: {e}", component.id)))?;
            let service = match compile(&component.wasm) {
                Ok(SpinModule::Plain(compiled)) => HttpService::new(
                    &self.wasmtime,
                    &compiled,
                    component.env.clone(),
                    SpinHost::new(variables, key_value, outbound),
                ),
                Ok(SpinModule::App(_)) => Err(other("is an application".into())),
                Err(err) => Err(err),
            }
            .map_err(|e| other(format!("component {}: {e}", component.id)))?;
            let service = match max_memory {
                Some(bytes) => service.with_max_instance_memory(bytes),
                None => service,
            };
            let service = if component.files.is_empty() {
                service
            } else {
                let dir = files::lay_out(
                    Path::new(files::FILES_ROOT),
                    &component.id,
                    &component.files,
                )
                .map_err(|e| other(format!("component {}: {e}", component.id)))?;
                service.with_files(dir)
            };
            services.insert(component.id.clone(), service);
        }
        let router = routes.try_map(|component| {
            services
                .get(component)
                .cloned()
                .ok_or_else(|| other(format!("component {component} was not loaded")))
        })?;
        Ok(SpinModule::App(LoadedApp {
            name: resolved.name,
            router,
            config,
        }))
    }
}

//! The Spin host interfaces components get, on top of WASI and `wasi:http`: the bindings of
//! `variables` and `key-value` (`fermyon:spin@2.0.0` and `spin:*@3.0.0`), of `spin:sqlite@3.1.0`
//! and `spin:redis@3.0.0`, and of `wasi:config` and `wasi:keyvalue`,
//! and the [`Extension`] that links them with Redis and SQLite, filters outgoing HTTP requests,
//! and accepts the imports of Spin's platform that kwasi does not provide.

use std::sync::Arc;

use kwasi_engine_wasmtime::{Extension, Host};
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi_http::WasiHttpHooks;

use crate::key_value::{KeyValue, OpenStore};
use crate::outbound::Outbound;
use crate::sqlite::Databases;
use crate::variables::Variables;

pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "spin-wit",
        world: "kwasi:spin-wit/host",
        imports: {
            // Its stream and future are made in the store, which can fail.
            "spin:key-value/key-value.[method]store.get-keys": trappable,
            "spin:sqlite/sqlite.[method]connection.execute-async": trappable,
        },
        with: {
            "fermyon:spin/key-value.store": crate::key_value::OpenStore,
            "spin:key-value/key-value.store": crate::key_value::OpenStore,
            "spin:sqlite/sqlite.connection": crate::sqlite::Database,
            "wasi:keyvalue/store.bucket": crate::key_value::OpenStore,
            "wasi:keyvalue/atomics.cas": crate::key_value::Cas,
            "spin:redis/redis.connection": crate::redis::Connection,
        },
    });
}

/// An instance's Spin state: its component's variables and key-value stores, the stores it
/// has open, and the hooks that allow or refuse its outgoing requests.
pub struct SpinState {
    pub(crate) variables: Arc<Variables>,
    pub(crate) key_value: Arc<KeyValue>,
    pub(crate) databases: Arc<Databases>,
    pub(crate) table: ResourceTable,
    pub(crate) outbound: Outbound,
    /// Its open Redis connections.
    pub(crate) connections: usize,
}

impl SpinState {
    /// An open store of this instance.
    pub(crate) fn store(
        &self,
        store: &wasmtime::component::Resource<OpenStore>,
    ) -> Result<&OpenStore, bindings::fermyon::spin2_0_0::key_value::Error> {
        self.table.get(store).map_err(|e| {
            bindings::fermyon::spin2_0_0::key_value::Error::Other(format!("no such store: {e}"))
        })
    }
}

/// The Spin host interfaces of one component.
#[derive(Clone)]
pub struct SpinHost {
    variables: Arc<Variables>,
    key_value: Arc<KeyValue>,
    databases: Arc<Databases>,
    outbound: Outbound,
}

impl SpinHost {
    /// The host interfaces of a component with these variables, key-value stores and
    /// databases, whose outgoing requests go through `outbound`.
    pub fn new(
        variables: Variables,
        key_value: KeyValue,
        databases: Databases,
        outbound: Outbound,
    ) -> SpinHost {
        SpinHost {
            variables: Arc::new(variables),
            key_value: Arc::new(key_value),
            databases: Arc::new(databases),
            outbound,
        }
    }
}

impl Extension for SpinHost {
    type State = SpinState;

    fn add_to_linker(linker: &mut Linker<Host<SpinState>>) -> wasmtime::Result<()> {
        bindings::fermyon::spin2_0_0::variables::add_to_linker::<_, HasSelf<SpinState>>(
            linker,
            |host| host.state(),
        )?;
        bindings::fermyon::spin2_0_0::key_value::add_to_linker::<_, HasSelf<SpinState>>(
            linker,
            |host| host.state(),
        )?;
        bindings::wasi::config::store::add_to_linker::<_, HasSelf<SpinState>>(linker, |host| {
            host.state()
        })?;
        bindings::wasi::keyvalue::store::add_to_linker::<_, HasSelf<SpinState>>(linker, |host| {
            host.state()
        })?;
        bindings::wasi::keyvalue::atomics::add_to_linker::<_, HasSelf<SpinState>>(
            linker,
            |host| host.state(),
        )?;
        bindings::wasi::keyvalue::batch::add_to_linker::<_, HasSelf<SpinState>>(linker, |host| {
            host.state()
        })?;
        crate::redis::bindings::outbound::fermyon::spin2_0_0::redis::add_to_linker::<
            _,
            HasSelf<SpinState>,
        >(linker, |host| host.state())?;
        crate::sqlite::bindings::fermyon::spin2_0_0::sqlite::add_to_linker::<_, HasSelf<SpinState>>(
            linker,
            |host| host.state(),
        )?;
        // The types of the Redis trigger's export and of the legacy HTTP interface, which
        // their components import.
        linker.instance("fermyon:spin/redis-types")?;
        linker.instance("fermyon:spin/http-types")?;
        Ok(())
    }

    fn add_async_to_linker(linker: &mut Linker<Host<SpinState>>) -> wasmtime::Result<()> {
        bindings::spin::variables::variables::add_to_linker::<_, HasSelf<SpinState>>(
            linker,
            |host| host.state(),
        )?;
        bindings::spin::key_value::key_value::add_to_linker::<_, HasSelf<SpinState>>(
            linker,
            |host| host.state(),
        )?;
        bindings::spin::sqlite::sqlite::add_to_linker::<_, HasSelf<SpinState>>(linker, |host| {
            host.state()
        })?;
        bindings::spin::redis::redis::add_to_linker::<_, HasSelf<SpinState>>(linker, |host| {
            host.state()
        })
    }

    fn new_state(&self) -> SpinState {
        SpinState {
            variables: Arc::clone(&self.variables),
            key_value: Arc::clone(&self.key_value),
            databases: Arc::clone(&self.databases),
            table: ResourceTable::new(),
            outbound: self.outbound.clone(),
            connections: 0,
        }
    }

    fn http_hooks(state: &mut SpinState) -> Option<&mut dyn WasiHttpHooks> {
        Some(&mut state.outbound)
    }

    fn accepts_missing_import(interface: &str) -> bool {
        // WASI 0.3's last release candidate, which spin-sdk 5 imports beside 0.3.0 itself.
        interface.contains("@0.3.0-rc-")
            || NOT_PROVIDED
                .iter()
                .any(|prefix| interface.starts_with(prefix))
    }
}

/// Interfaces of Spin's platform world that kwasi does not provide. A component built with
/// a current SDK imports all of them (spin-sdk 5 for Python does, whether the app uses them or
/// not), so they do not fail `create`: a call to one traps, naming it. Any other import kwasi
/// does not provide still fails `create`.
const NOT_PROVIDED: &[&str] = &[
    "fermyon:spin/llm@",
    "fermyon:spin/mqtt@",
    "fermyon:spin/mysql@",
    "fermyon:spin/postgres@",
    "fermyon:spin/rdbms-types@",
    "spin:mqtt/",
    "spin:mysql/",
    "spin:postgres/",
];

//! The Spin host interfaces components get, on top of WASI and `wasi:http`: the bindings of
//! `fermyon:spin@2.0.0`'s `variables` and `key-value`, and the [`Extension`] that links them
//! and filters outgoing HTTP requests.

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
        inline: r#"
            package fermyon:spin@2.0.0;

            interface variables {
                variant error {
                    invalid-name(string),
                    undefined(string),
                    provider(string),
                    other(string),
                }

                get: func(name: string) -> result<string, error>;
            }

            interface key-value {
                resource store {
                    open: static func(label: string) -> result<store, error>;
                    get: func(key: string) -> result<option<list<u8>>, error>;
                    set: func(key: string, value: list<u8>) -> result<_, error>;
                    delete: func(key: string) -> result<_, error>;
                    exists: func(key: string) -> result<bool, error>;
                    get-keys: func() -> result<list<string>, error>;
                }

                variant error {
                    store-table-full,
                    no-such-store,
                    access-denied,
                    other(string),
                }
            }

            world host {
                import variables;
                import key-value;
            }
        "#,
        with: {
            "fermyon:spin/key-value.store": crate::key_value::OpenStore,
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
    ) -> Result<&OpenStore, bindings::fermyon::spin::key_value::Error> {
        self.table.get(store).map_err(|e| {
            bindings::fermyon::spin::key_value::Error::Other(format!("no such store: {e}"))
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
        bindings::fermyon::spin::variables::add_to_linker::<_, HasSelf<SpinState>>(
            linker,
            |host| host.state(),
        )?;
        bindings::fermyon::spin::key_value::add_to_linker::<_, HasSelf<SpinState>>(
            linker,
            |host| host.state(),
        )?;
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
}

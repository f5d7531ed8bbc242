//! Key-value stores, as Spin gives them to components through
//! `fermyon:spin/key-value@2.0.0` and `spin:key-value/key-value@3.0.0`: the `default` store, and any a runtime config defines
//! (`[key_value_store.<label>] type = "spin"`), each kept in an SQLite file, as Spin keeps
//! its own. A component opens only the stores its manifest lists (`key_value_stores`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension};
use wasmtime::component::{Accessor, FutureReader, HasSelf, Resource, StreamReader};

use crate::host::bindings::fermyon::spin2_0_0::key_value::{Error, Host, HostStore};
use crate::host::bindings::spin::key_value::key_value as v3;
use crate::host::SpinState;

/// Where the `default` store is kept when no runtime config says otherwise: in the container's
/// filesystem, where Spin keeps it next to an app.
pub const DEFAULT_STORE_PATH: &str = "/.spin/sqlite_key_value.db";

/// The stores a component may open: label, and the file that keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyValue {
    stores: BTreeMap<String, PathBuf>,
}

impl KeyValue {
    /// The stores of a component that lists `labels`, among those `defined` (label to
    /// file). A label that is not defined is an error.
    pub fn for_component(
        labels: &[String],
        defined: &BTreeMap<String, PathBuf>,
    ) -> Result<KeyValue, String> {
        let stores = crate::runtime_config::files_of("key-value store", labels, defined)?;
        Ok(KeyValue { stores })
    }
}

/// The stores every app has: `default`, in [`DEFAULT_STORE_PATH`].
pub fn default_stores() -> BTreeMap<String, PathBuf> {
    [("default".to_string(), PathBuf::from(DEFAULT_STORE_PATH))].into()
}

/// A store an instance has open.
pub struct OpenStore {
    label: String,
    connection: Connection,
}

fn other(err: impl std::fmt::Display) -> Error {
    Error::Other(err.to_string())
}

/// Opens the SQLite file at `path` (and its directory), with the table of Spin's stores.
fn connect(path: &Path) -> Result<Connection, Error> {
    let connection = crate::sqlite::open_file(path).map_err(Error::Other)?;
    connection
        .execute(
            "CREATE TABLE IF NOT EXISTS spin_key_value (store TEXT NOT NULL, key TEXT NOT NULL, \
             value BLOB NOT NULL, PRIMARY KEY (store, key))",
            [],
        )
        .map_err(other)?;
    Ok(connection)
}

impl Host for SpinState {}

impl HostStore for SpinState {
    fn open(&mut self, label: String) -> Result<Resource<OpenStore>, Error> {
        let Some(path) = self.key_value.stores.get(&label) else {
            return Err(if label == "default" {
                Error::AccessDenied
            } else {
                Error::NoSuchStore
            });
        };
        let connection = connect(path)?;
        self.table
            .push(OpenStore { label, connection })
            .map_err(|_| Error::StoreTableFull)
    }

    fn get(&mut self, store: Resource<OpenStore>, key: String) -> Result<Option<Vec<u8>>, Error> {
        let store = self.store(&store)?;
        store
            .connection
            .query_row(
                "SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2",
                (&store.label, &key),
                |row| row.get(0),
            )
            .optional()
            .map_err(other)
    }

    fn set(
        &mut self,
        store: Resource<OpenStore>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), Error> {
        let store = self.store(&store)?;
        store
            .connection
            .execute(
                "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (store, key) DO UPDATE SET value = excluded.value",
                (&store.label, &key, &value),
            )
            .map(|_| ())
            .map_err(other)
    }

    fn delete(&mut self, store: Resource<OpenStore>, key: String) -> Result<(), Error> {
        let store = self.store(&store)?;
        store
            .connection
            .execute(
                "DELETE FROM spin_key_value WHERE store = ?1 AND key = ?2",
                (&store.label, &key),
            )
            .map(|_| ())
            .map_err(other)
    }

    fn exists(&mut self, store: Resource<OpenStore>, key: String) -> Result<bool, Error> {
        self.get(store, key).map(|v| v.is_some())
    }

    fn get_keys(&mut self, store: Resource<OpenStore>) -> Result<Vec<String>, Error> {
        let store = self.store(&store)?;
        let mut query = store
            .connection
            .prepare("SELECT key FROM spin_key_value WHERE store = ?1 ORDER BY key")
            .map_err(other)?;
        let keys = query
            .query_map([&store.label], |row| row.get(0))
            .map_err(other)?
            .collect::<Result<Vec<String>, _>>()
            .map_err(other);
        keys
    }

    fn drop(&mut self, store: Resource<OpenStore>) -> wasmtime::Result<()> {
        self.table.delete(store)?;
        Ok(())
    }
}

/// `spin:key-value@3.0.0`: the same stores, through `async` functions. Each runs the
/// `fermyon:spin@2.0.0` operation of the same name.
impl v3::Host for SpinState {}

impl v3::HostStore for SpinState {
    fn drop(&mut self, store: Resource<OpenStore>) -> wasmtime::Result<()> {
        HostStore::drop(self, store)
    }
}

fn v3_error(err: Error) -> v3::Error {
    match err {
        Error::StoreTableFull => v3::Error::StoreTableFull,
        Error::NoSuchStore => v3::Error::NoSuchStore,
        Error::AccessDenied => v3::Error::AccessDenied,
        Error::Other(text) => v3::Error::Other(text),
    }
}

impl<U> v3::HostStoreWithStore<U> for HasSelf<SpinState> {
    async fn open(
        accessor: &Accessor<U, Self>,
        label: String,
    ) -> Result<Resource<OpenStore>, v3::Error> {
        accessor
            .with(|mut access| HostStore::open(access.get(), label))
            .map_err(v3_error)
    }

    async fn get(
        accessor: &Accessor<U, Self>,
        store: Resource<OpenStore>,
        key: String,
    ) -> Result<Option<Vec<u8>>, v3::Error> {
        accessor
            .with(|mut access| HostStore::get(access.get(), store, key))
            .map_err(v3_error)
    }

    async fn set(
        accessor: &Accessor<U, Self>,
        store: Resource<OpenStore>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), v3::Error> {
        accessor
            .with(|mut access| HostStore::set(access.get(), store, key, value))
            .map_err(v3_error)
    }

    async fn delete(
        accessor: &Accessor<U, Self>,
        store: Resource<OpenStore>,
        key: String,
    ) -> Result<(), v3::Error> {
        accessor
            .with(|mut access| HostStore::delete(access.get(), store, key))
            .map_err(v3_error)
    }

    async fn exists(
        accessor: &Accessor<U, Self>,
        store: Resource<OpenStore>,
        key: String,
    ) -> Result<bool, v3::Error> {
        accessor
            .with(|mut access| HostStore::exists(access.get(), store, key))
            .map_err(v3_error)
    }

    /// The keys go out as a stream, then whether listing them succeeded.
    async fn get_keys(
        accessor: &Accessor<U, Self>,
        store: Resource<OpenStore>,
    ) -> wasmtime::Result<(StreamReader<String>, FutureReader<Result<(), v3::Error>>)> {
        accessor.with(|mut access| {
            let (keys, listed) = match HostStore::get_keys(access.get(), store) {
                Ok(keys) => (keys, Ok(())),
                Err(err) => (Vec::new(), Err(v3_error(err))),
            };
            let keys = StreamReader::new(&mut access, keys)?;
            let listed =
                FutureReader::new(
                    &mut access,
                    async move { wasmtime::Result::<_>::Ok(listed) },
                )?;
            Ok((keys, listed))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(dir: &Path, labels: &[&str]) -> SpinState {
        let defined: BTreeMap<String, PathBuf> = [
            ("default".to_string(), dir.join("kv.db")),
            ("other".to_string(), dir.join("other.db")),
        ]
        .into();
        let labels: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
        let key_value = KeyValue::for_component(&labels, &defined).unwrap();
        let outbound = crate::outbound::Outbound::new(
            "kv".into(),
            Default::default(),
            "127.0.0.1:80".parse().unwrap(),
        );
        let host = crate::host::SpinHost::new(
            crate::variables::Variables::default(),
            key_value,
            Default::default(),
            outbound,
        );
        kwasi_engine_wasmtime::Extension::new_state(&host)
    }

    #[test]
    fn a_value_set_in_one_instance_is_read_in_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = state(dir.path(), &["default"]);
        let store = first.open("default".into()).unwrap();
        let rep = Resource::<OpenStore>::new_own(store.rep());
        first.set(rep, "count".into(), b"1".to_vec()).unwrap();
        let mut second = state(dir.path(), &["default"]);
        let store = second.open("default".into()).unwrap();
        let rep = store.rep();
        assert_eq!(
            second.get(Resource::new_own(rep), "count".into()).unwrap(),
            Some(b"1".to_vec())
        );
        assert_eq!(second.get_keys(Resource::new_own(rep)).unwrap(), ["count"]);
        second
            .delete(Resource::new_own(rep), "count".into())
            .unwrap();
        assert!(!second
            .exists(Resource::new_own(rep), "count".into())
            .unwrap());
    }

    #[test]
    fn a_store_the_component_does_not_list_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = state(dir.path(), &["other"]);
        assert!(matches!(s.open("default".into()), Err(Error::AccessDenied)));
        assert!(matches!(s.open("missing".into()), Err(Error::NoSuchStore)));
        assert!(s.open("other".into()).is_ok());
    }

    #[test]
    fn a_label_no_runtime_config_defines_is_an_error() {
        let err = KeyValue::for_component(&["cache".into()], &default_stores()).unwrap_err();
        assert!(err.contains("\"cache\""), "{err}");
    }
}

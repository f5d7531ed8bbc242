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
    path: PathBuf,
    connection: Connection,
}

fn other(err: impl std::fmt::Display) -> Error {
    Error::Other(err.to_string())
}

impl OpenStore {
    /// Opens store `label`, kept in the SQLite file at `path` (made, with its directory and
    /// the table of Spin's stores, if need be).
    fn open(label: String, path: &Path) -> Result<OpenStore, Error> {
        let connection = crate::sqlite::open_file(path).map_err(Error::Other)?;
        connection
            .execute(
                "CREATE TABLE IF NOT EXISTS spin_key_value (store TEXT NOT NULL, key TEXT NOT NULL, \
                 value BLOB NOT NULL, PRIMARY KEY (store, key))",
                [],
            )
            .map_err(other)?;
        Ok(OpenStore {
            label,
            path: path.to_path_buf(),
            connection,
        })
    }

    /// The value of `key`, if it has one.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.connection
            .query_row(
                "SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2",
                (&self.label, key),
                |row| row.get(0),
            )
            .optional()
            .map_err(other)
    }

    /// Gives `key` `value`.
    fn set(&self, key: &str, value: &[u8]) -> Result<(), Error> {
        self.connection
            .execute(
                "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (store, key) DO UPDATE SET value = excluded.value",
                (&self.label, key, value),
            )
            .map(|_| ())
            .map_err(other)
    }

    /// Removes `key`.
    fn delete(&self, key: &str) -> Result<(), Error> {
        self.connection
            .execute(
                "DELETE FROM spin_key_value WHERE store = ?1 AND key = ?2",
                (&self.label, key),
            )
            .map(|_| ())
            .map_err(other)
    }

    /// Every key, in order.
    fn keys(&self) -> Result<Vec<String>, Error> {
        let mut query = self
            .connection
            .prepare("SELECT key FROM spin_key_value WHERE store = ?1 ORDER BY key")
            .map_err(other)?;
        let keys = query
            .query_map([&self.label], |row| row.get(0))
            .map_err(other)?
            .collect::<Result<Vec<String>, _>>()
            .map_err(other);
        keys
    }

    /// Runs `f` in a transaction that no other writer interleaves with (SQLite's `BEGIN
    /// IMMEDIATE`), and commits what it did if it succeeds.
    fn atomically<T, E: From<Error>>(
        &self,
        f: impl FnOnce(&OpenStore) -> Result<T, E>,
    ) -> Result<T, E> {
        self.connection
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(other)?;
        let done = f(self);
        let end = if done.is_ok() { "COMMIT" } else { "ROLLBACK" };
        self.connection.execute_batch(end).map_err(other)?;
        done
    }
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
        let store = OpenStore::open(label, path)?;
        self.table.push(store).map_err(|_| Error::StoreTableFull)
    }

    fn get(&mut self, store: Resource<OpenStore>, key: String) -> Result<Option<Vec<u8>>, Error> {
        self.store(&store)?.get(&key)
    }

    fn set(
        &mut self,
        store: Resource<OpenStore>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), Error> {
        self.store(&store)?.set(&key, &value)
    }

    fn delete(&mut self, store: Resource<OpenStore>, key: String) -> Result<(), Error> {
        self.store(&store)?.delete(&key)
    }

    fn exists(&mut self, store: Resource<OpenStore>, key: String) -> Result<bool, Error> {
        self.get(store, key).map(|v| v.is_some())
    }

    fn get_keys(&mut self, store: Resource<OpenStore>) -> Result<Vec<String>, Error> {
        self.store(&store)?.keys()
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

/// `wasi:keyvalue@0.2.0-draft2`, which the current SDKs import: the same stores as buckets, with
/// Spin's atomics (a counter is kept as 8 little-endian bytes, as Spin keeps it) and batches.
mod wasi {
    use super::*;
    use crate::host::bindings::wasi::keyvalue::{atomics, batch, store};

    /// A key's value as `atomics.cas` read it, on a connection of its own.
    pub struct Cas {
        store: OpenStore,
        key: String,
        read: Option<Vec<u8>>,
    }

    impl SpinState {
        fn bucket(&self, bucket: &Resource<OpenStore>) -> Result<&OpenStore, store::Error> {
            self.store(bucket).map_err(store::Error::from)
        }

        /// Reads `key` of `store` into a new `cas`.
        fn new_cas(
            &mut self,
            store: OpenStore,
            key: String,
        ) -> Result<Resource<Cas>, store::Error> {
            let read = store.get(&key).map_err(store::Error::from)?;
            self.table
                .push(Cas { store, key, read })
                .map_err(|e| store::Error::Other(e.to_string()))
        }
    }

    impl store::Host for SpinState {
        fn open(&mut self, identifier: String) -> Result<Resource<OpenStore>, store::Error> {
            HostStore::open(self, identifier).map_err(store::Error::from)
        }
    }

    impl store::HostBucket for SpinState {
        fn get(
            &mut self,
            bucket: Resource<OpenStore>,
            key: String,
        ) -> Result<Option<Vec<u8>>, store::Error> {
            self.bucket(&bucket)?.get(&key).map_err(store::Error::from)
        }

        fn set(
            &mut self,
            bucket: Resource<OpenStore>,
            key: String,
            value: Vec<u8>,
        ) -> Result<(), store::Error> {
            self.bucket(&bucket)?
                .set(&key, &value)
                .map_err(store::Error::from)
        }

        fn delete(&mut self, bucket: Resource<OpenStore>, key: String) -> Result<(), store::Error> {
            self.bucket(&bucket)?
                .delete(&key)
                .map_err(store::Error::from)
        }

        fn exists(
            &mut self,
            bucket: Resource<OpenStore>,
            key: String,
        ) -> Result<bool, store::Error> {
            Ok(self
                .bucket(&bucket)?
                .get(&key)
                .map_err(store::Error::from)?
                .is_some())
        }

        /// Every key in one page: the stores are small enough, as in Spin.
        fn list_keys(
            &mut self,
            bucket: Resource<OpenStore>,
            _cursor: Option<String>,
        ) -> Result<store::KeyResponse, store::Error> {
            let keys = self.bucket(&bucket)?.keys().map_err(store::Error::from)?;
            Ok(store::KeyResponse { keys, cursor: None })
        }

        fn drop(&mut self, bucket: Resource<OpenStore>) -> wasmtime::Result<()> {
            HostStore::drop(self, bucket)
        }
    }

    /// The number a counter's value holds: 8 little-endian bytes, or none for no value.
    fn counter(key: &str, value: Option<Vec<u8>>) -> Result<i64, store::Error> {
        match value {
            None => Ok(0),
            Some(bytes) => <[u8; 8]>::try_from(bytes.as_slice())
                .map(i64::from_le_bytes)
                .map_err(|_| {
                    store::Error::Other(format!(
                        "the value of {key:?} is not a counter (8 little-endian bytes)"
                    ))
                }),
        }
    }

    impl From<Error> for store::Error {
        fn from(err: Error) -> store::Error {
            match err {
                Error::NoSuchStore => store::Error::NoSuchStore,
                Error::AccessDenied => store::Error::AccessDenied,
                Error::StoreTableFull => store::Error::Other("too many stores open".into()),
                Error::Other(reason) => store::Error::Other(reason),
            }
        }
    }

    impl atomics::Host for SpinState {
        fn increment(
            &mut self,
            bucket: Resource<OpenStore>,
            key: String,
            delta: i64,
        ) -> Result<i64, store::Error> {
            self.bucket(&bucket)?.atomically(|store| {
                let value = counter(&key, store.get(&key)?)?
                    .checked_add(delta)
                    .ok_or_else(|| store::Error::Other(format!("{key:?} would overflow")))?;
                store.set(&key, &value.to_le_bytes())?;
                Ok(value)
            })
        }

        fn swap(&mut self, cas: Resource<Cas>, value: Vec<u8>) -> Result<(), atomics::CasError> {
            let failed = |e: store::Error| atomics::CasError::StoreError(e);
            let cas = self
                .table
                .delete(cas)
                .map_err(|e| failed(store::Error::Other(e.to_string())))?;
            let swapped = cas.store.atomically(|store| {
                let now = store.get(&cas.key)?;
                if now != cas.read {
                    return Ok(false);
                }
                store.set(&cas.key, &value)?;
                Ok::<_, store::Error>(true)
            });
            match swapped {
                Ok(true) => Ok(()),
                Ok(false) => {
                    let again = self.new_cas(cas.store, cas.key).map_err(failed)?;
                    Err(atomics::CasError::CasFailed(again))
                }
                Err(e) => Err(failed(e)),
            }
        }
    }

    impl atomics::HostCas for SpinState {
        fn new(
            &mut self,
            bucket: Resource<OpenStore>,
            key: String,
        ) -> Result<Resource<Cas>, store::Error> {
            let open = self.bucket(&bucket)?;
            let store =
                OpenStore::open(open.label.clone(), &open.path).map_err(store::Error::from)?;
            self.new_cas(store, key)
        }

        fn current(&mut self, cas: Resource<Cas>) -> Result<Option<Vec<u8>>, store::Error> {
            self.table
                .get(&cas)
                .map(|cas| cas.read.clone())
                .map_err(|e| store::Error::Other(e.to_string()))
        }

        fn drop(&mut self, cas: Resource<Cas>) -> wasmtime::Result<()> {
            self.table.delete(cas)?;
            Ok(())
        }
    }

    impl batch::Host for SpinState {
        fn get_many(
            &mut self,
            bucket: Resource<OpenStore>,
            keys: Vec<String>,
        ) -> Result<Vec<(String, Option<Vec<u8>>)>, store::Error> {
            let store = self.bucket(&bucket)?;
            keys.into_iter()
                .map(|key| Ok((key.clone(), store.get(&key)?)))
                .collect()
        }

        fn set_many(
            &mut self,
            bucket: Resource<OpenStore>,
            key_values: Vec<(String, Vec<u8>)>,
        ) -> Result<(), store::Error> {
            self.bucket(&bucket)?.atomically(|store| {
                key_values
                    .iter()
                    .try_for_each(|(key, value)| store.set(key, value))
                    .map_err(store::Error::from)
            })
        }

        fn delete_many(
            &mut self,
            bucket: Resource<OpenStore>,
            keys: Vec<String>,
        ) -> Result<(), store::Error> {
            self.bucket(&bucket)?.atomically(|store| {
                keys.iter()
                    .try_for_each(|key| store.delete(key))
                    .map_err(store::Error::from)
            })
        }
    }
}

pub use wasi::Cas;

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

    mod wasi_keyvalue {
        use super::*;
        use crate::host::bindings::wasi::keyvalue::{atomics, batch, store};

        fn bucket(s: &mut SpinState) -> u32 {
            store::Host::open(s, "default".into()).unwrap().rep()
        }

        #[test]
        fn increment_counts_from_zero_in_eight_little_endian_bytes() {
            let dir = tempfile::tempdir().unwrap();
            let mut s = state(dir.path(), &["default"]);
            let b = bucket(&mut s);
            for n in 1..=3 {
                let got = atomics::Host::increment(&mut s, Resource::new_borrow(b), "c".into(), 1);
                assert_eq!(got.unwrap(), n);
            }
            let stored = store::HostBucket::get(&mut s, Resource::new_borrow(b), "c".into());
            assert_eq!(stored.unwrap(), Some(3i64.to_le_bytes().to_vec()));
        }

        #[test]
        fn increment_refuses_a_value_that_is_not_a_counter() {
            let dir = tempfile::tempdir().unwrap();
            let mut s = state(dir.path(), &["default"]);
            let b = bucket(&mut s);
            store::HostBucket::set(&mut s, Resource::new_borrow(b), "c".into(), b"x".to_vec())
                .unwrap();
            let err = atomics::Host::increment(&mut s, Resource::new_borrow(b), "c".into(), 1);
            assert!(matches!(err, Err(store::Error::Other(r)) if r.contains("not a counter")));
        }

        #[test]
        fn a_swap_succeeds_only_if_the_value_is_still_the_one_read() {
            let dir = tempfile::tempdir().unwrap();
            let mut s = state(dir.path(), &["default"]);
            let b = bucket(&mut s);
            let cas = atomics::HostCas::new(&mut s, Resource::new_borrow(b), "k".into()).unwrap();
            store::HostBucket::set(
                &mut s,
                Resource::new_borrow(b),
                "k".into(),
                b"other".to_vec(),
            )
            .unwrap();
            let again = match atomics::Host::swap(&mut s, cas, b"mine".to_vec()) {
                Err(atomics::CasError::CasFailed(again)) => again,
                other => panic!("{other:?}"),
            };
            let read = atomics::HostCas::current(&mut s, Resource::new_borrow(again.rep()));
            assert_eq!(read.unwrap(), Some(b"other".to_vec()));
            atomics::Host::swap(&mut s, again, b"mine".to_vec()).unwrap();
            let now = store::HostBucket::get(&mut s, Resource::new_borrow(b), "k".into());
            assert_eq!(now.unwrap(), Some(b"mine".to_vec()));
        }

        #[test]
        fn a_batch_sets_gets_and_deletes_several_keys() {
            let dir = tempfile::tempdir().unwrap();
            let mut s = state(dir.path(), &["default"]);
            let b = bucket(&mut s);
            let pairs = vec![("a".into(), b"1".to_vec()), ("b".into(), b"2".to_vec())];
            batch::Host::set_many(&mut s, Resource::new_borrow(b), pairs).unwrap();
            batch::Host::delete_many(&mut s, Resource::new_borrow(b), vec!["a".into()]).unwrap();
            let got = batch::Host::get_many(
                &mut s,
                Resource::new_borrow(b),
                vec!["a".into(), "b".into()],
            );
            assert_eq!(
                got.unwrap(),
                [
                    ("a".to_string(), None),
                    ("b".to_string(), Some(b"2".to_vec()))
                ]
            );
        }
    }

    #[test]
    fn a_label_no_runtime_config_defines_is_an_error() {
        let err = KeyValue::for_component(&["cache".into()], &default_stores()).unwrap_err();
        assert!(err.contains("\"cache\""), "{err}");
    }
}

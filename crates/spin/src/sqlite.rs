//! SQLite databases, as Spin gives them to components through `fermyon:spin/sqlite@2.0.0` and
//! `spin:sqlite/sqlite@3.1.0` (the same operations, and `async` forms of them): the `default`
//! database, and any a runtime config defines
//! (`[sqlite_database.<label>] type = "spin"`), each an SQLite file. A component opens only the
//! databases its manifest lists (`sqlite_databases`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::types::{Value as SqlValue, ValueRef};
use wasmtime::component::{Accessor, FutureReader, HasSelf, Resource, StreamReader};

use crate::host::bindings::spin::sqlite::sqlite as v3;
use crate::host::SpinState;

/// The bindings of `fermyon:spin/sqlite@2.0.0` (`crates/spin/spin-wit`).
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "spin-wit",
        world: "kwasi:spin-wit/sqlite",
        with: {
            "fermyon:spin/sqlite.connection": crate::sqlite::Database,
        },
    });
}

use bindings::fermyon::spin2_0_0::sqlite::{
    Error, Host, HostConnection, QueryResult, RowResult, Value,
};

/// Where the `default` database is kept when no runtime config says otherwise: in the
/// container's filesystem, named as Spin names it.
pub const DEFAULT_DATABASE_PATH: &str = "/.spin/sqlite_db.db";

/// How long a write waits for another instance's to finish.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The databases a component may open: label, and its file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Databases {
    files: BTreeMap<String, PathBuf>,
}

impl Databases {
    /// The databases of a component that lists `labels`, among those `defined` (label to
    /// file). A label that is not defined is an error.
    pub fn for_component(
        labels: &[String],
        defined: &BTreeMap<String, PathBuf>,
    ) -> Result<Databases, String> {
        let files = crate::runtime_config::files_of("SQLite database", labels, defined)?;
        Ok(Databases { files })
    }
}

/// The databases every app has: `default`, in [`DEFAULT_DATABASE_PATH`].
pub fn default_databases() -> BTreeMap<String, PathBuf> {
    [("default".to_string(), PathBuf::from(DEFAULT_DATABASE_PATH))].into()
}

/// A database an instance has open.
pub struct Database {
    connection: rusqlite::Connection,
}

fn io(err: impl std::fmt::Display) -> Error {
    Error::Io(err.to_string())
}

/// Opens the SQLite file at `path`, making its directory, with writes waiting for another
/// instance's to finish (Spin's key-value stores are SQLite files too).
pub(crate) fn open_file(path: &Path) -> Result<rusqlite::Connection, String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let connection =
        rusqlite::Connection::open(path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    connection
        .busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| format!("opening {}: {e}", path.display()))?;
    Ok(connection)
}

impl Host for SpinState {}

impl HostConnection for SpinState {
    fn open(&mut self, database: String) -> Result<Resource<Database>, Error> {
        let Some(path) = self.databases.files.get(&database) else {
            return Err(if database == "default" {
                Error::AccessDenied
            } else {
                Error::NoSuchDatabase
            });
        };
        let connection = open_file(path).map_err(Error::Io)?;
        self.table
            .push(Database { connection })
            .map_err(|e| io(format!("too many open databases: {e}")))
    }

    fn execute(
        &mut self,
        database: Resource<Database>,
        statement: String,
        parameters: Vec<Value>,
    ) -> Result<QueryResult, Error> {
        execute(self.database(&database)?, &statement, parameters)
    }

    fn drop(&mut self, database: Resource<Database>) -> wasmtime::Result<()> {
        self.table.delete(database)?;
        Ok(())
    }
}

impl SpinState {
    /// The connection of an open database of this instance.
    fn database(&self, database: &Resource<Database>) -> Result<&rusqlite::Connection, Error> {
        self.table
            .get(database)
            .map(|d| &d.connection)
            .map_err(|_| Error::InvalidConnection)
    }

    /// `spin:sqlite@3.1.0`'s `execute`: [`execute`] with its values converted.
    fn execute_v3(
        &self,
        database: &Resource<Database>,
        statement: &str,
        parameters: Vec<v3::Value>,
    ) -> Result<v3::QueryResult, v3::Error> {
        let connection = self.database(database).map_err(v3_error)?;
        let parameters = parameters.into_iter().map(from_v3).collect();
        let result = execute(connection, statement, parameters).map_err(v3_error)?;
        let rows = result
            .rows
            .into_iter()
            .map(|row| v3::RowResult {
                values: row.values.into_iter().map(to_v3).collect(),
            })
            .collect();
        Ok(v3::QueryResult {
            columns: result.columns,
            rows,
        })
    }

    /// The rowid of the last INSERT on `database`, and the rows its last change changed.
    fn last_change(&self, database: &Resource<Database>) -> (i64, u64) {
        self.database(database)
            .map(|c| (c.last_insert_rowid(), c.changes()))
            .unwrap_or((0, 0))
    }
}

/// `spin:sqlite@3.1.0`: the databases of `fermyon:spin/sqlite@2.0.0`, with each operation also
/// as an `async` function that runs the same one.
impl v3::Host for SpinState {}

impl v3::HostConnection for SpinState {
    fn open(&mut self, database: String) -> Result<Resource<Database>, v3::Error> {
        HostConnection::open(self, database).map_err(v3_error)
    }

    fn execute(
        &mut self,
        database: Resource<Database>,
        statement: String,
        parameters: Vec<v3::Value>,
    ) -> Result<v3::QueryResult, v3::Error> {
        self.execute_v3(&database, &statement, parameters)
    }

    fn last_insert_rowid(&mut self, database: Resource<Database>) -> i64 {
        self.last_change(&database).0
    }

    fn changes(&mut self, database: Resource<Database>) -> u64 {
        self.last_change(&database).1
    }

    fn drop(&mut self, database: Resource<Database>) -> wasmtime::Result<()> {
        HostConnection::drop(self, database)
    }
}

impl<U> v3::HostConnectionWithStore<U> for HasSelf<SpinState> {
    async fn open_async(
        accessor: &Accessor<U, Self>,
        database: String,
    ) -> Result<Resource<Database>, v3::Error> {
        accessor.with(|mut access| v3::HostConnection::open(access.get(), database))
    }

    /// The rows go out as a stream, then whether the statement ran to its end (it has, by
    /// then: the statement runs whole first).
    async fn execute_async(
        accessor: &Accessor<U, Self>,
        database: Resource<Database>,
        statement: String,
        parameters: Vec<v3::Value>,
    ) -> wasmtime::Result<Result<ExecuteAsync, v3::Error>> {
        accessor.with(|mut access| {
            let v3::QueryResult { columns, rows } =
                match access.get().execute_v3(&database, &statement, parameters) {
                    Ok(result) => result,
                    Err(err) => return Ok(Err(err)),
                };
            let rows = StreamReader::new(&mut access, rows)?;
            let done = FutureReader::new(&mut access, async { wasmtime::Result::<_>::Ok(Ok(())) })?;
            Ok(Ok((columns, rows, done)))
        })
    }

    async fn last_insert_rowid_async(
        accessor: &Accessor<U, Self>,
        database: Resource<Database>,
    ) -> i64 {
        accessor.with(|mut access| access.get().last_change(&database).0)
    }

    async fn changes_async(accessor: &Accessor<U, Self>, database: Resource<Database>) -> u64 {
        accessor.with(|mut access| access.get().last_change(&database).1)
    }
}

/// What `execute-async` answers: the columns, the rows, and whether they all came.
type ExecuteAsync = (
    Vec<String>,
    StreamReader<v3::RowResult>,
    FutureReader<Result<(), v3::Error>>,
);

fn v3_error(err: Error) -> v3::Error {
    match err {
        Error::NoSuchDatabase => v3::Error::NoSuchDatabase,
        Error::AccessDenied => v3::Error::AccessDenied,
        Error::InvalidConnection => v3::Error::InvalidConnection,
        Error::DatabaseFull => v3::Error::DatabaseFull,
        Error::Io(reason) => v3::Error::Io(reason),
    }
}

fn from_v3(value: v3::Value) -> Value {
    match value {
        v3::Value::Integer(n) => Value::Integer(n),
        v3::Value::Real(r) => Value::Real(r),
        v3::Value::Text(t) => Value::Text(t),
        v3::Value::Blob(b) => Value::Blob(b),
        v3::Value::Null => Value::Null,
    }
}

fn to_v3(value: Value) -> v3::Value {
    match value {
        Value::Integer(n) => v3::Value::Integer(n),
        Value::Real(r) => v3::Value::Real(r),
        Value::Text(t) => v3::Value::Text(t),
        Value::Blob(b) => v3::Value::Blob(b),
        Value::Null => v3::Value::Null,
    }
}

/// Runs `statement` with `parameters` on `connection`: its columns and rows.
fn execute(
    connection: &rusqlite::Connection,
    statement: &str,
    parameters: Vec<Value>,
) -> Result<QueryResult, Error> {
    let mut prepared = connection.prepare(statement).map_err(io)?;
    let columns: Vec<String> = prepared
        .column_names()
        .into_iter()
        .map(str::to_string)
        .collect();
    let parameters: Vec<SqlValue> = parameters.into_iter().map(to_sql).collect();
    let mut rows = prepared
        .query(rusqlite::params_from_iter(parameters))
        .map_err(io)?;
    let mut results = Vec::new();
    while let Some(row) = rows.next().map_err(io)? {
        let values = (0..columns.len())
            .map(|i| row.get_ref(i).map(from_sql).map_err(io))
            .collect::<Result<Vec<_>, _>>()?;
        results.push(RowResult { values });
    }
    Ok(QueryResult {
        columns,
        rows: results,
    })
}

fn to_sql(value: Value) -> SqlValue {
    match value {
        Value::Integer(n) => SqlValue::Integer(n),
        Value::Real(r) => SqlValue::Real(r),
        Value::Text(t) => SqlValue::Text(t),
        Value::Blob(b) => SqlValue::Blob(b),
        Value::Null => SqlValue::Null,
    }
}

fn from_sql(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(n) => Value::Integer(n),
        ValueRef::Real(r) => Value::Real(r),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statement_gives_its_columns_and_rows_with_their_types() {
        let connection = rusqlite::Connection::open_in_memory().unwrap();
        execute(
            &connection,
            "CREATE TABLE t (n INTEGER, r REAL, s TEXT, b BLOB)",
            vec![],
        )
        .unwrap();
        execute(
            &connection,
            "INSERT INTO t VALUES (?, ?, ?, ?), (NULL, NULL, NULL, NULL)",
            vec![
                Value::Integer(7),
                Value::Real(0.5),
                Value::Text("x".into()),
                Value::Blob(vec![1, 2]),
            ],
        )
        .unwrap();
        let result = execute(&connection, "SELECT * FROM t ORDER BY n DESC", vec![]).unwrap();
        assert_eq!(result.columns, ["n", "r", "s", "b"]);
        assert_eq!(
            format!("{:?}", result.rows[0].values),
            format!(
                "{:?}",
                [
                    Value::Integer(7),
                    Value::Real(0.5),
                    Value::Text("x".into()),
                    Value::Blob(vec![1, 2])
                ]
            )
        );
        assert!(matches!(result.rows[1].values[0], Value::Null));
    }

    #[test]
    fn a_bad_statement_is_an_io_error_with_sqlites_reason() {
        let connection = rusqlite::Connection::open_in_memory().unwrap();
        let err = execute(&connection, "SELEKT 1", vec![]).unwrap_err();
        assert!(
            matches!(&err, Error::Io(reason) if reason.contains("syntax error")),
            "{err:?}"
        );
    }

    #[test]
    fn a_component_may_open_only_the_databases_it_lists() {
        let defined = default_databases();
        let none = Databases::for_component(&[], &defined).unwrap();
        assert!(none.files.is_empty());
        let err = Databases::for_component(&["other".into()], &defined).unwrap_err();
        assert!(err.contains("\"other\""), "{err}");
    }
}

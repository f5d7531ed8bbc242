//! SQLite databases, as Spin gives them to components through `fermyon:spin/sqlite@2.0.0`:
//! the `default` database, and any a runtime config defines
//! (`[sqlite_database.<label>] type = "spin"`), each an SQLite file. A component opens only the
//! databases its manifest lists (`sqlite_databases`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::types::{Value as SqlValue, ValueRef};
use wasmtime::component::Resource;

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
        let database = self
            .table
            .get(&database)
            .map_err(|_| Error::InvalidConnection)?;
        execute(&database.connection, &statement, parameters)
    }

    fn drop(&mut self, database: Resource<Database>) -> wasmtime::Result<()> {
        self.table.delete(database)?;
        Ok(())
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

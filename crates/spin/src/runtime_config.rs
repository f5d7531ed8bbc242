//! `/runtime-config.toml` in the container, as Spin's shim reads it: where key-value stores
//! are kept. kwasi supports `[key_value_store.<label>]` of `type = "spin"` (an SQLite file at
//! `path`, a volume's, say); anything else in the file fails `create` with its name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::key_value::default_stores;

/// Where the runtime config is looked for in the container.
pub const RUNTIME_CONFIG_PATH: &str = "/runtime-config.toml";

#[derive(Deserialize)]
struct StoreConfig {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    path: Option<PathBuf>,
}

/// The key-value stores an app may use: `default`, and those the runtime config at `path`
/// defines, if there is one.
pub fn key_value_stores(path: &Path) -> Result<BTreeMap<String, PathBuf>, String> {
    let mut stores = default_stores();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(stores),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let invalid = |reason: String| format!("{}: {reason}", path.display());
    let table: toml::Table = toml::from_str(&text).map_err(|e| invalid(e.message().to_string()))?;
    for (key, value) in table {
        if key != "key_value_store" {
            return Err(invalid(format!(
                "[{key}] is not supported by kwasi (it supports [key_value_store.<label>] of \
                 type \"spin\")"
            )));
        }
        let labels: BTreeMap<String, StoreConfig> = value
            .try_into()
            .map_err(|e: toml::de::Error| invalid(format!("[key_value_store]: {}", e.message())))?;
        for (label, config) in labels {
            if config.kind != "spin" {
                return Err(invalid(format!(
                    "key-value store {label:?} has type {:?}; kwasi supports type \"spin\" (an \
                     SQLite file)",
                    config.kind
                )));
            }
            let file = match config.path {
                Some(file) if file.is_absolute() => file,
                Some(file) => {
                    return Err(invalid(format!(
                        "key-value store {label:?}: give an absolute path, not {}",
                        file.display()
                    )))
                }
                None => PathBuf::from(format!("/.spin/{label}.db")),
            };
            stores.insert(label, file);
        }
    }
    Ok(stores)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stores(text: &str) -> Result<BTreeMap<String, PathBuf>, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runtime-config.toml");
        std::fs::write(&path, text).unwrap();
        key_value_stores(&path)
    }

    #[test]
    fn without_a_runtime_config_there_is_the_default_store() {
        let stores = key_value_stores(Path::new("/nonexistent/runtime-config.toml")).unwrap();
        assert_eq!(stores, default_stores());
    }

    #[test]
    fn a_spin_store_is_kept_where_its_path_says() {
        let s =
            stores("[key_value_store.default]\ntype = \"spin\"\npath = \"/data/kv.db\"\n").unwrap();
        assert_eq!(s["default"], PathBuf::from("/data/kv.db"));
    }

    #[test]
    fn an_unsupported_store_type_or_section_is_refused_by_name() {
        let err =
            stores("[key_value_store.cache]\ntype = \"redis\"\nurl = \"redis://x\"\n").unwrap_err();
        assert!(err.contains("\"redis\""), "{err}");
        let err = stores("[sqlite_database.default]\ntype = \"spin\"\n").unwrap_err();
        assert!(err.contains("[sqlite_database]"), "{err}");
    }
}

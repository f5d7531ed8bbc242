//! `/runtime-config.toml` in the container, as Spin's shim reads it: where key-value stores
//! and SQLite databases are kept, and where variables get their values. kwasi supports
//! `[key_value_store.<label>]` and `[sqlite_database.<label>]` of `type = "spin"` (an SQLite
//! file at `path`, a volume's, say), and `[[variables_provider]]` (or its older name
//! `[[config_provider]]`, which SpinKube's operator writes) of `type = "env"` or `"static"`;
//! anything else in the file fails `create` with its name.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::key_value::default_stores;
use crate::sqlite::default_databases;
use crate::variables::{Provider, Providers, ENV_PREFIX};

/// Where the runtime config is looked for in the container.
pub const RUNTIME_CONFIG_PATH: &str = "/runtime-config.toml";

#[derive(Deserialize)]
struct StoreConfig {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    path: Option<PathBuf>,
}

/// The files of the stores (or databases) a component lists as `labels`, among those
/// `defined` (label to file); a label that is not defined is an error naming `what` it is.
pub fn files_of(
    what: &str,
    labels: &[String],
    defined: &BTreeMap<String, PathBuf>,
) -> Result<BTreeMap<String, PathBuf>, String> {
    labels
        .iter()
        .map(|label| match defined.get(label) {
            Some(path) => Ok((label.clone(), path.clone())),
            None => Err(format!(
                "uses {what} {label:?}, which no runtime config defines (only \"default\" needs \
                 none)"
            )),
        })
        .collect()
}

/// What a runtime config defines: where each key-value store and SQLite database is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Key-value stores: label, and its SQLite file.
    pub key_value_stores: BTreeMap<String, PathBuf>,
    /// SQLite databases: label, and its file.
    pub sqlite_databases: BTreeMap<String, PathBuf>,
    /// Where variables get their values.
    pub variables: Providers,
}

/// One `[[variables_provider]]` entry, as Spin reads it.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ProviderConfig {
    Env {
        #[serde(default)]
        prefix: Option<String>,
        #[serde(default)]
        dotenv_path: Option<PathBuf>,
    },
    Static {
        values: BTreeMap<String, String>,
    },
    Vault {},
    AzureKeyVault {},
}

/// The providers listed as `value` (an array of tables).
fn providers(value: toml::Value) -> Result<Providers, String> {
    let listed: Vec<toml::Value> = value
        .try_into()
        .map_err(|e: toml::de::Error| e.message().to_string())?;
    let mut providers = Vec::new();
    for entry in listed {
        let kind = entry.get("type").and_then(|t| t.as_str()).unwrap_or("");
        let unsupported = |kind: &str| {
            format!(
                "variables provider type {kind:?} is not supported by kwasi (it supports \"env\" \
                 and \"static\")"
            )
        };
        let config: ProviderConfig =
            entry
                .clone()
                .try_into()
                .map_err(|e: toml::de::Error| match kind {
                    "env" | "static" => format!("variables provider {kind:?}: {}", e.message()),
                    kind => unsupported(kind),
                })?;
        providers.push(match config {
            ProviderConfig::Env {
                prefix,
                dotenv_path,
            } => Provider::Env {
                prefix: prefix.map_or(Cow::Borrowed(ENV_PREFIX), Cow::Owned),
                dotenv: match dotenv_path {
                    Some(path) => read_dotenv(&path)?,
                    None => BTreeMap::new(),
                },
            },
            ProviderConfig::Static { values } => Provider::Static(values),
            ProviderConfig::Vault {} | ProviderConfig::AzureKeyVault {} => {
                return Err(unsupported(kind))
            }
        });
    }
    Ok(Providers::new(providers))
}

/// The pairs of the dotenv file at `path`.
fn read_dotenv(path: &Path) -> Result<BTreeMap<String, String>, String> {
    let failed = |e: dotenvy::Error| format!("dotenv_path {}: {e}", path.display());
    dotenvy::from_path_iter(path)
        .map_err(failed)?
        .map(|pair| pair.map_err(failed))
        .collect()
}

/// The stores and databases an app may use: `default` of each, and those the runtime config
/// at `path` defines, if there is one.
pub fn load(path: &Path) -> Result<RuntimeConfig, String> {
    let mut config = RuntimeConfig {
        key_value_stores: default_stores(),
        sqlite_databases: default_databases(),
        variables: Providers::default(),
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(config),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let invalid = |reason: String| format!("{}: {reason}", path.display());
    let table: toml::Table = toml::from_str(&text).map_err(|e| invalid(e.message().to_string()))?;
    let mut listed_providers = false;
    for (key, value) in table {
        let (what, defined, default_name) = match key.as_str() {
            "variables_provider" | "config_provider" if listed_providers => {
                return Err(invalid(
                    "give [[variables_provider]] or [[config_provider]], not both".into(),
                ))
            }
            "variables_provider" | "config_provider" => {
                config.variables = providers(value).map_err(invalid)?;
                listed_providers = true;
                continue;
            }
            "key_value_store" => ("key-value store", &mut config.key_value_stores, ""),
            "sqlite_database" => ("SQLite database", &mut config.sqlite_databases, "sqlite_"),
            _ => {
                return Err(invalid(format!(
                    "[{key}] is not supported by kwasi (it supports [key_value_store.<label>] \
                     and [sqlite_database.<label>] of type \"spin\", and \
                     [[variables_provider]])"
                )))
            }
        };
        let labels: BTreeMap<String, StoreConfig> = value
            .try_into()
            .map_err(|e: toml::de::Error| invalid(format!("[{key}]: {}", e.message())))?;
        for (label, store) in labels {
            if store.kind != "spin" {
                return Err(invalid(format!(
                    "{what} {label:?} has type {:?}; kwasi supports type \"spin\" (an SQLite \
                     file)",
                    store.kind
                )));
            }
            let file = match store.path {
                Some(file) if file.is_absolute() => file,
                Some(file) => {
                    return Err(invalid(format!(
                        "{what} {label:?}: give an absolute path, not {}",
                        file.display()
                    )))
                }
                None => PathBuf::from(format!("/.spin/{default_name}{label}.db")),
            };
            defined.insert(label, file);
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Result<RuntimeConfig, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runtime-config.toml");
        std::fs::write(&path, text).unwrap();
        load(&path)
    }

    fn stores(text: &str) -> Result<BTreeMap<String, PathBuf>, String> {
        config(text).map(|c| c.key_value_stores)
    }

    #[test]
    fn without_a_runtime_config_there_are_the_default_store_and_database() {
        let config = load(Path::new("/nonexistent/runtime-config.toml")).unwrap();
        assert_eq!(config.key_value_stores, default_stores());
        assert_eq!(config.sqlite_databases, default_databases());
    }

    #[test]
    fn a_spin_database_is_kept_where_its_path_says_or_under_spin() {
        let c = config(
            "[sqlite_database.default]\ntype = \"spin\"\npath = \"/data/db.sqlite\"\n\
             [sqlite_database.audit]\ntype = \"spin\"\n",
        )
        .unwrap();
        assert_eq!(
            c.sqlite_databases["default"],
            PathBuf::from("/data/db.sqlite")
        );
        assert_eq!(
            c.sqlite_databases["audit"],
            PathBuf::from("/.spin/sqlite_audit.db")
        );
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
        let err = stores("[llm_compute]\ntype = \"remote_http\"\n").unwrap_err();
        assert!(err.contains("[llm_compute]"), "{err}");
    }

    fn variables(text: &str) -> Result<Providers, String> {
        config(text).map(|c| c.variables)
    }

    #[test]
    fn spin_operators_config_provider_is_an_env_provider() {
        let p = variables("[[config_provider]]\ntype = \"env\"\nprefix = \"SPIN_VARIABLE_\"\n")
            .unwrap();
        let want = Provider::Env {
            prefix: "SPIN_VARIABLE_".into(),
            dotenv: BTreeMap::new(),
        };
        assert_eq!(p, Providers::new(vec![want]));
    }

    #[test]
    fn an_env_provider_reads_its_dotenv_file_and_a_static_one_its_values() {
        let dir = tempfile::tempdir().unwrap();
        let dotenv = dir.path().join("app.env");
        std::fs::write(&dotenv, "APP_TOKEN=\"a b\"\n# comment\nexport APP_MODE=x\n").unwrap();
        let p = variables(&format!(
            "[[variables_provider]]\ntype = \"env\"\nprefix = \"APP\"\ndotenv_path = {:?}\n\
             [[variables_provider]]\ntype = \"static\"\nvalues = {{ token = \"t\" }}\n",
            dotenv.display().to_string()
        ))
        .unwrap();
        let dotenv: BTreeMap<String, String> = [("APP_TOKEN", "a b"), ("APP_MODE", "x")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into();
        let values = [("token".to_string(), "t".to_string())].into();
        let want = vec![
            Provider::Env {
                prefix: "APP".into(),
                dotenv,
            },
            Provider::Static(values),
        ];
        assert_eq!(p, Providers::new(want));
    }

    #[test]
    fn a_missing_dotenv_file_or_a_vault_provider_is_refused_by_name() {
        let err = variables(
            "[[variables_provider]]\ntype = \"env\"\ndotenv_path = \"/nonexistent/.env\"\n",
        )
        .unwrap_err();
        assert!(err.contains("dotenv_path /nonexistent/.env"), "{err}");
        let err = variables(
            "[[variables_provider]]\ntype = \"vault\"\nurl = \"http://v\"\ntoken = \"t\"\n\
             mount = \"m\"\n",
        )
        .unwrap_err();
        assert!(err.contains("type \"vault\" is not supported"), "{err}");
    }
}

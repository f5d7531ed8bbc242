//! `spin.toml`, manifest version 2, turned into the locked app Spin would make of it. The
//! components' sources are files next to the manifest, given as `file://` URIs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::locked::{
    ContentRef, LockedApp, LockedComponent, LockedSource, LockedTrigger, Variable,
};

/// Why a `spin.toml` cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not TOML, or not a version 2 manifest.
    #[error("{path}: {reason}")]
    Invalid {
        /// The manifest.
        path: PathBuf,
        /// What is wrong, in one line.
        reason: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    spin_manifest_version: u32,
    application: Application,
    #[serde(default)]
    variables: BTreeMap<String, ManifestVariable>,
    #[serde(default)]
    trigger: BTreeMap<String, Vec<toml::Table>>,
    #[serde(default)]
    component: BTreeMap<String, Component>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Application {
    name: String,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    authors: Vec<String>,
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    trigger: BTreeMap<String, toml::Table>,
    #[serde(default)]
    tool: BTreeMap<String, toml::Table>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestVariable {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    default: Option<String>,
    #[serde(default)]
    secret: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Component {
    source: toml::Value,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
    #[serde(default)]
    environment: BTreeMap<String, String>,
    #[serde(default)]
    files: Vec<toml::Value>,
    #[serde(default)]
    exclude_files: Vec<String>,
    #[serde(default)]
    allowed_http_hosts: Vec<String>,
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    key_value_stores: Vec<String>,
    #[serde(default)]
    sqlite_databases: Vec<String>,
    #[serde(default)]
    ai_models: Vec<String>,
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    build: Option<toml::Table>,
    #[serde(default)]
    tool: BTreeMap<String, toml::Table>,
    #[serde(default)]
    dependencies_inherit_configuration: bool,
    #[serde(default)]
    dependencies: toml::Table,
}

/// Reads the `spin.toml` at `path` into a locked app.
pub fn load(path: &Path) -> Result<LockedApp, ManifestError> {
    let invalid = |reason: String| ManifestError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| invalid(e.to_string()))?;
    let dir = path.parent().unwrap_or(Path::new("/"));
    from_str(&text, dir).map_err(invalid)
}

/// The locked app of manifest `text`, whose relative paths are relative to `dir`.
pub fn from_str(text: &str, dir: &Path) -> Result<LockedApp, String> {
    let version: toml::Table = toml::from_str(text).map_err(|e| one_line(&e))?;
    match version.get("spin_manifest_version") {
        Some(toml::Value::Integer(2)) => {}
        Some(other) => {
            return Err(format!(
                "spin_manifest_version is {other}; kwasi reads version 2 (Spin 2 and later)"
            ))
        }
        None => {
            return Err(
                "no spin_manifest_version: kwasi reads version 2 manifests (Spin 2 and later)"
                    .into(),
            )
        }
    }
    let manifest: Manifest = toml::from_str(text).map_err(|e| one_line(&e))?;
    debug_assert_eq!(manifest.spin_manifest_version, 2);
    let _ = (&manifest.application.targets, &manifest.application.tool);
    let mut variables = BTreeMap::new();
    for (name, v) in manifest.variables {
        if v.required == v.default.is_some() {
            return Err(format!(
                "variable {name}: give it either `required = true` or a `default`"
            ));
        }
        variables.insert(
            name,
            Variable {
                description: v.description,
                default: v.default,
                secret: v.secret,
            },
        );
    }
    let mut triggers = Vec::new();
    for (trigger_type, tables) in &manifest.trigger {
        for (index, table) in tables.iter().enumerate() {
            triggers.push(trigger(trigger_type, index, table, &manifest.component)?);
        }
    }
    let mut components = Vec::new();
    for (id, component) in manifest.component {
        components.push(locked_component(id, component, dir)?);
    }
    let mut metadata = Map::new();
    metadata.insert("name".into(), manifest.application.name.into());
    if let Some(version) = manifest.application.version {
        metadata.insert("version".into(), version.into());
    }
    if let Some(description) = manifest.application.description {
        metadata.insert("description".into(), description.into());
    }
    if !manifest.application.authors.is_empty() {
        metadata.insert("authors".into(), manifest.application.authors.into());
    }
    let globals = serde_json::to_value(&manifest.application.trigger).map_err(|e| e.to_string())?;
    metadata.insert("triggers".into(), globals);
    Ok(LockedApp {
        spin_lock_version: 0,
        must_understand: vec![],
        metadata,
        host_requirements: Map::new(),
        variables,
        triggers,
        components,
    })
}

fn trigger(
    trigger_type: &str,
    index: usize,
    table: &toml::Table,
    components: &BTreeMap<String, Component>,
) -> Result<LockedTrigger, String> {
    let component = match table.get("component") {
        Some(toml::Value::String(id)) => id.clone(),
        Some(_) => {
            return Err(format!(
                "[[trigger.{trigger_type}]] number {}: give `component` the id of a \
                 [component.<id>] table (inline components are not supported)",
                index + 1
            ))
        }
        None => {
            return Err(format!(
                "[[trigger.{trigger_type}]] number {} names no component",
                index + 1
            ))
        }
    };
    if !components.contains_key(&component) {
        return Err(format!(
            "[[trigger.{trigger_type}]] names component {component:?}, which has no \
             [component.{component}] table"
        ));
    }
    let id = match table.get("id") {
        Some(toml::Value::String(id)) => id.clone(),
        _ => format!("{component}-{trigger_type}-trigger"),
    };
    let mut config = table.clone();
    config.remove("id");
    let config = serde_json::to_value(&config).map_err(|e| e.to_string())?;
    Ok(LockedTrigger {
        id,
        trigger_type: trigger_type.to_string(),
        trigger_config: config,
    })
}

fn locked_component(id: String, c: Component, dir: &Path) -> Result<LockedComponent, String> {
    let source = match &c.source {
        toml::Value::String(file) => dir.join(file),
        _ => {
            return Err(format!(
                "component {id}: its source must be a wasm file next to spin.toml; a source \
                 from a URL or a registry is fetched by `spin build`/`spin registry push`, \
                 not by a container runtime"
            ))
        }
    };
    if !c.dependencies.is_empty() {
        return Err(format!(
            "component {id} has dependencies; compose them into one component first (`spin \
             registry push` does this by default)"
        ));
    }
    if !c.files.is_empty() {
        return Err(format!(
            "component {id} has files; kwasi does not give components files yet"
        ));
    }
    let _ = (&c.exclude_files, &c.targets, &c.tool, &c.build);
    let _ = (c.dependencies_inherit_configuration, &c.ai_models);
    let mut metadata = Map::new();
    if let Some(description) = c.description {
        metadata.insert("description".into(), description.into());
    }
    let mut hosts = c.allowed_outbound_hosts;
    hosts.extend(c.allowed_http_hosts);
    for (key, list) in [
        ("allowed_outbound_hosts", hosts),
        ("key_value_stores", c.key_value_stores),
        ("databases", c.sqlite_databases),
    ] {
        if !list.is_empty() {
            metadata.insert(key.into(), Value::from(list));
        }
    }
    Ok(LockedComponent {
        id,
        metadata,
        source: LockedSource {
            content_type: "application/wasm".into(),
            content: ContentRef {
                source: Some(format!("file://{}", source.display())),
                ..ContentRef::default()
            },
        },
        env: c.environment,
        files: vec![],
        config: c.variables,
        dependencies: Map::new(),
    })
}

/// A TOML error on one line: the message without the excerpt of the file.
fn one_line(err: &toml::de::Error) -> String {
    let message = err.message().trim();
    match err.span() {
        Some(span) => format!("invalid manifest at byte {}: {message}", span.start),
        None => format!("invalid manifest: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &str = r#"
spin_manifest_version = 2

[application]
name = "hello"
version = "0.1.0"

[variables]
greeting = { default = "hi" }

[[trigger.http]]
route = "/..."
component = "front"

[[trigger.http]]
id = "api"
route = "/api/..."
component = "api"

[component.front]
source = "front.wasm"
environment = { A = "1" }
allowed_outbound_hosts = ["http://localhost:8080"]

[component.api]
source = "target/api.wasm"
variables = { greeting = "{{ greeting }}" }
"#;

    #[test]
    fn a_manifest_becomes_the_locked_app_spin_makes_of_it() {
        let app = from_str(HELLO, Path::new("/app")).unwrap();
        assert_eq!(app.name(), Some("hello"));
        assert_eq!(app.variables["greeting"].default.as_deref(), Some("hi"));
        let ids: Vec<&str> = app.triggers.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["front-http-trigger", "api"]);
        assert_eq!(app.triggers[1].trigger_config["component"], "api");
        assert_eq!(app.triggers[1].trigger_config["route"], "/api/...");
        let api = app.components.iter().find(|c| c.id == "api").unwrap();
        assert_eq!(
            api.source.content.source.as_deref(),
            Some("file:///app/target/api.wasm")
        );
        assert_eq!(api.config["greeting"], "{{ greeting }}");
        let front = app.components.iter().find(|c| c.id == "front").unwrap();
        assert_eq!(front.env["A"], "1");
        assert_eq!(
            front.metadata["allowed_outbound_hosts"],
            serde_json::json!(["http://localhost:8080"])
        );
    }

    #[test]
    fn a_version_1_manifest_is_refused_with_the_version_kwasi_reads() {
        let err = from_str(
            "spin_manifest_version = \"1\"\nname = \"x\"\n",
            Path::new("/"),
        )
        .unwrap_err();
        assert!(err.contains("kwasi reads version 2"), "{err}");
    }

    #[test]
    fn malformed_toml_is_refused_on_one_line() {
        let err =
            from_str("spin_manifest_version = 2\n[application\n", Path::new("/")).unwrap_err();
        assert!(err.starts_with("invalid manifest"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn an_unknown_field_is_refused() {
        let text = HELLO.replace("version = \"0.1.0\"", "versoin = \"0.1.0\"");
        let err = from_str(&text, Path::new("/")).unwrap_err();
        assert!(err.contains("versoin"), "{err}");
    }

    #[test]
    fn a_trigger_naming_a_missing_component_is_refused() {
        let text = HELLO.replace("component = \"api\"", "component = \"apj\"");
        let err = from_str(&text, Path::new("/")).unwrap_err();
        assert!(err.contains("\"apj\""), "{err}");
    }

    #[test]
    fn a_variable_needs_a_default_or_to_be_required() {
        let text = HELLO.replace("greeting = { default = \"hi\" }", "greeting = {}");
        let err = from_str(&text, Path::new("/")).unwrap_err();
        assert!(err.contains("variable greeting"), "{err}");
    }
}

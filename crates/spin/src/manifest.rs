//! `spin.toml`, manifest version 2, turned into the locked app Spin would make of it. The
//! components' sources are files next to the manifest, given as `file://` URIs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::locked::{
    ContentPath, ContentRef, LockedApp, LockedComponent, LockedSource, LockedTrigger, Variable,
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
    let files = component_files(&c.files, &c.exclude_files, dir)
        .map_err(|e| format!("component {id}: files: {e}"))?;
    let _ = (&c.targets, &c.tool, &c.build);
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
        files,
        config: c.variables,
        dependencies: Map::new(),
    })
}

/// The files a component's `files` and `exclude_files` give it, relative to the app's
/// directory `dir`, one entry per file as `spin registry push` lists them:
/// - `"path/file.txt"` or `"dir"`: that file, or every file under that directory, at the same
///   path in the component's filesystem;
/// - `"glob/**/*.html"`: every file the pattern matches, at its path relative to `dir`;
/// - `{ source = "dir-or-file", destination = "/where" }`: that file at `destination`, or
///   the files under that directory below it.
///
/// `exclude_files` patterns, relative to `dir`, leave files out.
fn component_files(
    files: &[toml::Value],
    exclude: &[String],
    dir: &Path,
) -> Result<Vec<ContentPath>, String> {
    let exclude = exclude
        .iter()
        .map(|p| glob::Pattern::new(p).map_err(|e| format!("exclude_files {p:?}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut found: Vec<(PathBuf, PathBuf)> = Vec::new();
    for entry in files {
        match entry {
            toml::Value::String(pattern) => {
                if pattern.is_empty()
                    || [".", ".."].contains(&pattern.rsplit('/').next().unwrap_or(""))
                {
                    return Err(format!(
                        "{pattern:?} names a directory by . or ..: name the directory, or use \
                         {{ source = ..., destination = ... }}"
                    ));
                }
                let path = dir.join(pattern);
                if path.is_dir() {
                    under(&path, Path::new(pattern), &mut found)?;
                } else if path.is_file() {
                    found.push((path, pattern.into()));
                } else if pattern.contains(['*', '?', '[']) {
                    for source in matching(&path)? {
                        let relative = source.strip_prefix(dir).map_err(|_| {
                            format!(
                                "{pattern:?} matches {}, outside the app's directory",
                                source.display()
                            )
                        })?;
                        found.push((source.clone(), relative.into()));
                    }
                } else {
                    return Err(format!(
                        "{pattern:?} does not exist and is not a glob pattern"
                    ));
                }
            }
            toml::Value::Table(placement) => {
                let field = |name: &str| {
                    placement
                        .get(name)
                        .and_then(toml::Value::as_str)
                        .ok_or_else(|| format!("an entry {{ source, destination }} has no {name}"))
                };
                let (source, destination) = (field("source")?, field("destination")?);
                let path = dir.join(source);
                let destination = Path::new(destination.trim_start_matches('/'));
                if path.is_dir() {
                    under(&path, destination, &mut found)?;
                } else if path.is_file() {
                    found.push((path, destination.into()));
                } else {
                    return Err(format!("source {source:?} does not exist"));
                }
            }
            other => {
                return Err(format!(
                    "{other} is neither a path nor {{ source, destination }}"
                ))
            }
        }
    }
    let excluded = |source: &Path| {
        source
            .strip_prefix(dir)
            .is_ok_and(|relative| exclude.iter().any(|p| p.matches_path(relative)))
    };
    Ok(found
        .into_iter()
        .filter(|(source, _)| !excluded(source))
        .map(|(source, path)| ContentPath {
            content: ContentRef {
                source: Some(format!("file://{}", source.display())),
                ..ContentRef::default()
            },
            path: path.to_string_lossy().into_owned(),
        })
        .collect())
}

/// Every file under directory `source`, each at its place below `destination`.
fn under(
    source: &Path,
    destination: &Path,
    found: &mut Vec<(PathBuf, PathBuf)>,
) -> Result<(), String> {
    for file in matching(&source.join("**/*"))? {
        if let Ok(relative) = file.strip_prefix(source) {
            found.push((file.clone(), destination.join(relative)));
        }
    }
    Ok(())
}

/// The files glob `pattern` matches.
fn matching(pattern: &Path) -> Result<Vec<PathBuf>, String> {
    let text = pattern.to_string_lossy();
    let paths = glob::glob(&text).map_err(|e| format!("pattern {text:?}: {e}"))?;
    let mut files = Vec::new();
    for path in paths {
        let path = path.map_err(|e| e.to_string())?;
        if path.is_file() {
            files.push(path);
        }
    }
    Ok(files)
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

    /// The component files of a manifest whose component `c` has `files` (TOML) and
    /// `exclude`, in an app directory holding `static/{a.html,b.css,sub/c.html}` and
    /// `notes.txt`: each file's path in the component and its source, relative to the app.
    fn files_of(files: &str, exclude: &str) -> Vec<(String, String)> {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in [
            ("static/a.html", "a"),
            ("static/b.css", "b"),
            ("static/sub/c.html", "c"),
            ("notes.txt", "n"),
        ] {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let toml = format!(
            "spin_manifest_version = 2\n[application]\nname = \"f\"\n[[trigger.http]]\n\
             route = \"/...\"\ncomponent = \"c\"\n[component.c]\nsource = \"c.wasm\"\n\
             files = {files}\nexclude_files = {exclude}\n"
        );
        let app = from_str(&toml, dir.path()).unwrap();
        let prefix = format!("file://{}/", dir.path().display());
        let mut found: Vec<(String, String)> = app.components[0]
            .files
            .iter()
            .map(|f| {
                let source = f.content.source.as_deref().unwrap();
                (
                    f.path.clone(),
                    source.strip_prefix(&prefix).unwrap().to_string(),
                )
            })
            .collect();
        found.sort();
        found
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn a_file_or_directory_keeps_its_path_and_a_glob_takes_what_it_matches() {
        assert_eq!(
            files_of(r#"["notes.txt", "static/**/*.html"]"#, "[]"),
            pairs(&[
                ("notes.txt", "notes.txt"),
                ("static/a.html", "static/a.html"),
                ("static/sub/c.html", "static/sub/c.html"),
            ])
        );
        assert_eq!(
            files_of(r#"["static"]"#, r#"["static/sub/*"]"#),
            pairs(&[
                ("static/a.html", "static/a.html"),
                ("static/b.css", "static/b.css")
            ])
        );
    }

    #[test]
    fn a_placement_puts_a_directory_or_file_at_its_destination() {
        assert_eq!(
            files_of(
                r#"[{ source = "static/sub", destination = "/web" }, { source = "notes.txt", destination = "/etc/n.txt" }]"#,
                "[]"
            ),
            pairs(&[
                ("etc/n.txt", "notes.txt"),
                ("web/c.html", "static/sub/c.html")
            ])
        );
    }

    #[test]
    fn a_files_entry_that_names_nothing_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let toml = HELLO.replace("[component.api]", "[component.api]\nfiles = [\"missing\"]");
        let err = from_str(&toml, dir.path()).unwrap_err();
        assert_eq!(
            err,
            "component api: files: \"missing\" does not exist and is not a glob pattern"
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

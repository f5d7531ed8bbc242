//! From a locked app to what runs: each component's wasm found (in the image's layers, or as
//! a file next to `spin.toml`) and everything kwasi cannot honour refused, with a reason,
//! before anything is compiled.

use base64::Engine as _;
use kwasi_core::engine::WasmBytes;
use kwasi_core::image::layers::WasmLayer;
use kwasi_core::image::SPIN_APPLICATION;
use serde_json::Value;
use std::collections::HashMap;

use crate::files::{archived_files, relative_path, ComponentFile, FileContent};
use crate::locked::{ContentPath, ContentRef, LockedApp, LockedComponent};

/// Host requirements kwasi meets.
const SUPPORTED_REQUIREMENTS: [&str; 1] = ["local_service_chaining"];

/// Why an application cannot be run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AppError {
    /// The image has no locked app, or more than one.
    #[error(
        "the image has {0} Spin application layers ({SPIN_APPLICATION}); it needs exactly one"
    )]
    LockedAppCount(usize),
    /// The locked app is not valid JSON of the expected form.
    #[error("the locked app ({digest}) is invalid: {reason}")]
    InvalidLockedApp {
        /// Its layer.
        digest: String,
        /// Why.
        reason: String,
    },
    /// A component's wasm is in no layer of the image.
    #[error("component {component}: its wasm {digest} is not a layer of the image")]
    MissingLayer {
        /// The component.
        component: String,
        /// The digest the locked app gives.
        digest: String,
    },
    /// A component's source says nowhere kwasi can read.
    #[error("component {component}: {reason}")]
    Source {
        /// The component.
        component: String,
        /// Why its source cannot be read.
        reason: String,
    },
    /// Something the app needs that kwasi does not do.
    #[error("{0}")]
    Unsupported(String),
    /// The manifest is malformed.
    #[error("{0}")]
    Manifest(String),
}

/// A component with its wasm.
#[derive(Debug)]
pub struct ComponentSource {
    /// The component's id.
    pub id: String,
    /// Its wasm, to compile.
    pub wasm: WasmBytes,
    /// Its environment.
    pub env: Vec<(String, String)>,
    /// Its variables, whose values may refer to the app's (`{{ name }}`).
    pub config: std::collections::BTreeMap<String, String>,
    /// The key-value stores it may open.
    pub key_value_stores: Vec<String>,
    /// The SQLite databases it may open.
    pub sqlite_databases: Vec<String>,
    /// The destinations it may send requests to, as written (they may refer to the app's
    /// variables).
    pub allowed_outbound_hosts: Vec<String>,
    /// The files it sees.
    pub files: Vec<ComponentFile>,
}

/// An HTTP trigger: a route and its component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTrigger {
    /// The trigger's id.
    pub id: String,
    /// Its route, as written; `None` for a private route (`route = { private = true }`),
    /// which only service chaining reaches.
    pub route: Option<String>,
    /// The component it invokes.
    pub component: String,
}

/// A Redis trigger: a channel on a server, and the component called with its messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTrigger {
    /// The trigger's id.
    pub id: String,
    /// The server's address (`redis://host:port`), as written: it may refer to variables.
    pub address: String,
    /// The channel, as written.
    pub channel: String,
    /// The component it calls.
    pub component: String,
}

/// An application resolved: its components' wasm and its HTTP triggers.
#[derive(Debug)]
pub struct ResolvedApp {
    /// The app's name.
    pub name: String,
    /// Its components, each with its wasm.
    pub components: Vec<ComponentSource>,
    /// Its HTTP triggers.
    pub http: Vec<HttpTrigger>,
    /// Its Redis triggers.
    pub redis: Vec<RedisTrigger>,
    /// Its variables.
    pub variables: std::collections::BTreeMap<String, crate::locked::Variable>,
}

/// The locked app among an image's layers.
pub fn locked_app_of(layers: &[WasmLayer]) -> Result<LockedApp, AppError> {
    let locked: Vec<&WasmLayer> = layers
        .iter()
        .filter(|l| l.media_type == SPIN_APPLICATION)
        .collect();
    let [layer] = locked.as_slice() else {
        return Err(AppError::LockedAppCount(locked.len()));
    };
    LockedApp::from_json(&layer.bytes).map_err(|e| AppError::InvalidLockedApp {
        digest: layer.digest.clone(),
        reason: e.to_string(),
    })
}

/// The variable naming the components to keep (Spin's selective deployment, as Spin's shim
/// reads it): their ids, separated by commas.
pub const COMPONENTS_TO_RETAIN: &str = "SPIN_COMPONENTS_TO_RETAIN";

/// Keeps only the components `ids` names (comma-separated) and the triggers of those; an id
/// the app does not have is an error.
pub fn retain_components(app: &mut LockedApp, ids: &str) -> Result<(), AppError> {
    let keep: Vec<&str> = ids
        .split(',')
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .collect();
    if let Some(unknown) = keep
        .iter()
        .find(|id| !app.components.iter().any(|c| c.id == **id))
    {
        return Err(AppError::Unsupported(format!(
            "{COMPONENTS_TO_RETAIN} names component {unknown:?}, which the app does not have"
        )));
    }
    let before = app.components.len();
    app.components.retain(|c| keep.contains(&c.id.as_str()));
    let dropped_some = app.components.len() < before;
    for component in &app.components {
        for host in strings(&component.metadata, "allowed_outbound_hosts") {
            let Some(target) = chained_component(&host) else {
                continue;
            };
            let id = &component.id;
            if target == "*" && dropped_some {
                return Err(AppError::Unsupported(format!(
                    "{COMPONENTS_TO_RETAIN}: component {id} may chain to every component \
                     (allowed_outbound_hosts {host:?}); retain them all, or name the ones it calls"
                )));
            }
            if !keep.contains(&target) {
                return Err(AppError::Unsupported(format!(
                    "{COMPONENTS_TO_RETAIN}: component {id} chains to component {target} \
                     (allowed_outbound_hosts {host:?}), which is not retained: retain it too"
                )));
            }
        }
    }
    app.triggers.retain(|t| {
        t.trigger_config
            .get("component")
            .and_then(Value::as_str)
            .is_some_and(|c| keep.contains(&c))
    });
    Ok(())
}

/// Resolves `app`: its components' wasm from `layers` (by digest), inline, or from `file://`
/// sources; refuses what kwasi cannot run.
pub fn resolve(app: &LockedApp, layers: &[WasmLayer]) -> Result<ResolvedApp, AppError> {
    check_requirements(app)?;
    let archived = archived_files(layers).map_err(AppError::Unsupported)?;
    let layers: Vec<&WasmLayer> = layers.iter().collect();
    let mut components = Vec::new();
    for component in &app.components {
        components.push(component_source(component, &layers, &archived)?);
    }
    let mut http = Vec::new();
    let mut redis = Vec::new();
    for trigger in &app.triggers {
        match trigger.trigger_type.as_str() {
            "http" => http.push(http_trigger(&trigger.id, &trigger.trigger_config, app)?),
            "redis" => redis.push(redis_trigger(&trigger.id, &trigger.trigger_config, app)?),
            other => {
                return Err(AppError::Unsupported(format!(
                    "trigger {}: kwasi does not run {other} triggers yet (it runs http and redis)",
                    trigger.id
                )))
            }
        }
    }
    if http.is_empty() && redis.is_empty() {
        return Err(AppError::Unsupported(
            "the app has no HTTP or Redis trigger: nothing would ever run".into(),
        ));
    }
    Ok(ResolvedApp {
        name: app.name().unwrap_or("spin-app").to_string(),
        components,
        http,
        redis,
        variables: app.variables.clone(),
    })
}

fn check_requirements(app: &LockedApp) -> Result<(), AppError> {
    for feature in &app.must_understand {
        if feature != "host_requirements" && feature != "component_host_requirements" {
            return Err(AppError::Unsupported(format!(
                "the app needs a host that understands {feature:?}, which kwasi does not"
            )));
        }
    }
    let required = app
        .host_requirements
        .iter()
        .filter(|(_, v)| v.as_str() != Some("optional"))
        .map(|(k, _)| k)
        .find(|k| !SUPPORTED_REQUIREMENTS.contains(&k.as_str()));
    if let Some(requirement) = required {
        return Err(AppError::Unsupported(format!(
            "the app requires {requirement:?} of its host, which kwasi does not provide"
        )));
    }
    Ok(())
}

fn component_source(
    component: &LockedComponent,
    layers: &[&WasmLayer],
    archived: &HashMap<String, Vec<u8>>,
) -> Result<ComponentSource, AppError> {
    let id = &component.id;
    let source_error = |reason: String| AppError::Source {
        component: id.clone(),
        reason,
    };
    if !component.dependencies.is_empty() {
        return Err(source_error(
            "has dependencies; compose them into one component first (`spin registry push` \
             does this by default)"
                .into(),
        ));
    }
    let files = component
        .files
        .iter()
        .map(|file| component_file(id, file, layers, archived))
        .collect::<Result<Vec<_>, _>>()?;
    let wasm = source_bytes(id, &component.source.content, layers)?;
    if !wasm.bytes.starts_with(b"\0asm") {
        return Err(source_error(format!(
            "{} is not a WebAssembly binary",
            wasm.origin
        )));
    }
    Ok(ComponentSource {
        id: id.clone(),
        wasm,
        env: component
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        config: component.config.clone(),
        key_value_stores: strings(&component.metadata, "key_value_stores"),
        sqlite_databases: strings(&component.metadata, "databases"),
        allowed_outbound_hosts: strings(&component.metadata, "allowed_outbound_hosts"),
        files,
    })
}

/// A file of `component`: its bytes from a data layer or an archive layer (by digest),
/// inline, or its `file://` source.
fn component_file(
    component: &str,
    file: &ContentPath,
    layers: &[&WasmLayer],
    archived: &HashMap<String, Vec<u8>>,
) -> Result<ComponentFile, AppError> {
    let source_error = |reason: String| AppError::Source {
        component: component.to_string(),
        reason: format!("file {:?}: {reason}", file.path),
    };
    if relative_path(&file.path).is_none() {
        return Err(source_error("is outside the component's filesystem".into()));
    }
    let content = &file.content;
    let archived = content.digest.as_ref().and_then(|d| archived.get(d));
    let content = match (archived, &content.source) {
        (Some(bytes), _) => FileContent::Bytes(bytes.clone()),
        // A file next to spin.toml: copied when it is laid out, not read into memory.
        (None, Some(uri)) if content.digest.is_none() && content.inline.is_none() => {
            let path = uri.strip_prefix("file://").ok_or_else(|| {
                source_error(format!("its source {uri} is not a file of the container"))
            })?;
            FileContent::Host(path.into())
        }
        (None, _) => match source_bytes(component, content, layers) {
            Ok(bytes) => FileContent::Bytes(bytes.bytes),
            Err(AppError::MissingLayer { digest, .. }) => {
                return Err(source_error(format!(
                    "its content {digest} is in no layer of the image"
                )))
            }
            Err(other) => return Err(other),
        },
    };
    Ok(ComponentFile {
        path: file.path.clone(),
        content,
    })
}

/// The strings of list `key` in `metadata`.
/// The component an `allowed_outbound_hosts` entry lets its component chain to
/// (`http://<component>.spin.internal`), or `*` for every one.
fn chained_component(entry: &str) -> Option<&str> {
    crate::outbound::entry_host(entry).and_then(crate::chaining::target)
}

fn strings(metadata: &serde_json::Map<String, Value>, key: &str) -> Vec<String> {
    metadata
        .get(key)
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The bytes `content` refers to: the layer of its digest among `layers`, its inline
/// content, or its `file://` source.
pub fn source_bytes(
    component: &str,
    content: &ContentRef,
    layers: &[&WasmLayer],
) -> Result<WasmBytes, AppError> {
    let source_error = |reason: String| AppError::Source {
        component: component.to_string(),
        reason,
    };
    if let Some(digest) = &content.digest {
        if let Some(layer) = layers.iter().find(|l| l.digest == *digest) {
            return Ok(WasmBytes {
                origin: format!("component {component} (layer {digest})"),
                bytes: layer.bytes.clone(),
                sha256: digest.strip_prefix("sha256:").map(str::to_string),
            });
        }
    }
    if let Some(inline) = &content.inline {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(inline)
            .map_err(|e| source_error(format!("its inline content is not base64: {e}")))?;
        return Ok(WasmBytes {
            origin: format!("component {component} (inline)"),
            bytes,
            sha256: None,
        });
    }
    if let Some(uri) = &content.source {
        let Some(path) = uri.strip_prefix("file://") else {
            return Err(source_error(format!(
                "its source {uri} is not a file of the container"
            )));
        };
        let bytes = std::fs::read(path).map_err(|e| source_error(format!("{path}: {e}")))?;
        return Ok(WasmBytes {
            origin: format!("component {component} ({path})"),
            bytes,
            sha256: None,
        });
    }
    match &content.digest {
        Some(digest) => Err(AppError::MissingLayer {
            component: component.to_string(),
            digest: digest.clone(),
        }),
        None => Err(source_error("its source names no content".into())),
    }
}

/// The component trigger `id`'s `config` names, which `app` must have; `missing` says why a
/// trigger without one cannot run.
fn trigger_component(
    id: &str,
    config: &Value,
    app: &LockedApp,
    missing: &str,
) -> Result<String, AppError> {
    let unsupported = |what: String| AppError::Unsupported(format!("trigger {id}: {what}"));
    let component = config
        .get("component")
        .and_then(Value::as_str)
        .ok_or_else(|| unsupported(missing.to_string()))?;
    if !app.components.iter().any(|c| c.id == component) {
        return Err(unsupported(format!(
            "names component {component:?}, which the app does not have"
        )));
    }
    Ok(component.to_string())
}

fn redis_trigger(id: &str, config: &Value, app: &LockedApp) -> Result<RedisTrigger, AppError> {
    let unsupported = |what: String| AppError::Unsupported(format!("trigger {id}: {what}"));
    let text = |value: Option<&Value>| value.and_then(Value::as_str).map(str::to_string);
    let component = trigger_component(id, config, app, "names no component")?;
    let channel =
        text(config.get("channel")).ok_or_else(|| unsupported("has no channel".into()))?;
    let app_address = app
        .metadata
        .get("triggers")
        .and_then(|t| t.get("redis"))
        .and_then(|r| r.get("address"));
    let address = text(config.get("address"))
        .or_else(|| text(app_address))
        .ok_or_else(|| {
            unsupported(
                "has no address: give it one, or the app one in [application.trigger.redis]".into(),
            )
        })?;
    Ok(RedisTrigger {
        id: id.to_string(),
        address,
        channel,
        component,
    })
}

fn http_trigger(id: &str, config: &Value, app: &LockedApp) -> Result<HttpTrigger, AppError> {
    let unsupported = |what: String| AppError::Unsupported(format!("trigger {id}: {what}"));
    let component = trigger_component(
        id,
        config,
        app,
        "names no component (static responses are not supported)",
    )?;
    let route = match config.get("route") {
        Some(Value::String(route)) => Some(route.clone()),
        Some(Value::Object(o)) if o.get("private") == Some(&Value::Bool(true)) => None,
        _ => return Err(unsupported("has no route".into())),
    };
    if let Some(executor) = config.get("executor") {
        let kind = executor
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("http");
        if kind != "http" && kind != "spin" {
            return Err(unsupported(format!(
                "has executor {kind:?}; kwasi runs wasi:http components (executor \"http\")"
            )));
        }
    }
    if let Some(base) = app
        .metadata
        .get("triggers")
        .and_then(|t| t.get("http"))
        .and_then(|h| h.get("base"))
        .and_then(Value::as_str)
    {
        if !base.trim_end_matches('/').is_empty() {
            return Err(AppError::Unsupported(format!(
                "the app sets the HTTP trigger's base to {base:?}; Spin no longer supports a \
                 base: prepend it to each trigger's route"
            )));
        }
    }
    Ok(HttpTrigger {
        id: id.to_string(),
        route,
        component,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const WASM: &[u8] = b"\0asm\x0d\0\x01\0";

    fn layer(media_type: &str, digest: &str, bytes: &[u8]) -> WasmLayer {
        WasmLayer {
            digest: digest.into(),
            media_type: media_type.into(),
            title: None,
            bytes: bytes.to_vec(),
        }
    }

    fn image(locked: &str) -> Vec<WasmLayer> {
        vec![
            layer(
                "application/vnd.wasm.content.layer.v1+wasm",
                "sha256:aa",
                WASM,
            ),
            layer(SPIN_APPLICATION, "sha256:cc", locked.as_bytes()),
        ]
    }

    const LOCKED: &str = r#"{"spin_lock_version":0,"metadata":{"name":"hi"},
        "triggers":[{"id":"t","trigger_type":"http","trigger_config":{"component":"c","route":"/..."}}],
        "components":[{"id":"c","source":{"content_type":"application/wasm","digest":"sha256:aa"}}]}"#;

    #[test]
    fn a_component_gets_the_layer_its_digest_names() {
        let layers = image(LOCKED);
        let app = resolve(&locked_app_of(&layers).unwrap(), &layers).unwrap();
        assert_eq!(app.name, "hi");
        assert_eq!(app.components[0].wasm.bytes, WASM);
        assert_eq!(app.components[0].wasm.sha256.as_deref(), Some("aa"));
        assert_eq!(
            app.http,
            [HttpTrigger {
                id: "t".into(),
                route: Some("/...".into()),
                component: "c".into()
            }]
        );
    }

    #[test]
    fn a_component_whose_layer_is_missing_is_refused_naming_the_digest() {
        let layers = image(&LOCKED.replace("sha256:aa", "sha256:dd"));
        let err = resolve(&locked_app_of(&layers).unwrap(), &layers).unwrap_err();
        assert_eq!(
            err.to_string(),
            "component c: its wasm sha256:dd is not a layer of the image"
        );
    }

    /// LOCKED with component c's `files` set to `files` (JSON).
    fn with_files(files: &str) -> String {
        LOCKED.replace(
            r#""digest":"sha256:aa"}}"#,
            &format!(r#""digest":"sha256:aa"}},"files":{files}}}"#),
        )
    }

    #[test]
    fn a_component_file_comes_from_its_data_layer_or_inline() {
        let mut layers = image(&with_files(
            r#"[{"digest":"sha256:ee","path":"static/a.txt"},{"inline":"aGk=","digest":"sha256:ff","path":"b.txt"}]"#,
        ));
        layers.insert(
            1,
            layer(crate::oci::DATA_LAYER, "sha256:ee", b"from a layer"),
        );
        let app = resolve(&locked_app_of(&layers).unwrap(), &layers).unwrap();
        assert_eq!(
            app.components[0].files,
            [
                ComponentFile {
                    path: "static/a.txt".into(),
                    content: FileContent::Bytes(b"from a layer".to_vec())
                },
                ComponentFile {
                    path: "b.txt".into(),
                    content: FileContent::Bytes(b"hi".to_vec())
                },
            ]
        );
    }

    #[test]
    fn a_component_file_whose_layer_is_missing_is_refused_naming_it() {
        let layers = image(&with_files(r#"[{"digest":"sha256:ee","path":"a.txt"}]"#));
        let err = resolve(&locked_app_of(&layers).unwrap(), &layers).unwrap_err();
        assert_eq!(
            err.to_string(),
            "component c: file \"a.txt\": its content sha256:ee is in no layer of the image"
        );
    }

    #[test]
    fn a_component_file_outside_its_filesystem_is_refused() {
        let layers = image(&with_files(r#"[{"inline":"aGk=","path":"../../etc/x"}]"#));
        let err = resolve(&locked_app_of(&layers).unwrap(), &layers).unwrap_err();
        assert!(
            err.to_string()
                .contains("outside the component's filesystem"),
            "{err}"
        );
    }

    #[test]
    fn a_redis_trigger_takes_the_apps_address_unless_it_has_its_own() {
        let locked = LOCKED
            .replace(
                r#""metadata":{"name":"hi"}"#,
                r#""metadata":{"name":"hi","triggers":{"redis":{"address":"redis://app:6379"}}}"#,
            )
            .replace(
                r#""triggers":["#,
                r#""triggers":[{"id":"r1","trigger_type":"redis","trigger_config":{"component":"c","channel":"a"}},
                    {"id":"r2","trigger_type":"redis","trigger_config":{"component":"c","channel":"b","address":"redis://own:6379"}},"#,
            );
        let layers = image(&locked);
        let app = resolve(&locked_app_of(&layers).unwrap(), &layers).unwrap();
        let addresses: Vec<(&str, &str)> = app
            .redis
            .iter()
            .map(|t| (t.channel.as_str(), t.address.as_str()))
            .collect();
        assert_eq!(
            addresses,
            [("a", "redis://app:6379"), ("b", "redis://own:6379")]
        );
    }

    #[test]
    fn an_image_without_a_locked_app_is_refused() {
        let layers = &image(LOCKED)[..1];
        assert_eq!(locked_app_of(layers), Err(AppError::LockedAppCount(0)));
    }

    #[test]
    fn a_trigger_type_kwasi_does_not_run_is_refused() {
        let layers =
            image(&LOCKED.replace("\"trigger_type\":\"http\"", "\"trigger_type\":\"mqtt\""));
        let err = resolve(&locked_app_of(&layers).unwrap(), &layers).unwrap_err();
        assert!(err.to_string().contains("mqtt triggers"), "{err}");
    }

    #[test]
    fn a_required_host_feature_kwasi_lacks_is_refused() {
        let layers = image(&LOCKED.replace(
            "\"spin_lock_version\":0",
            "\"spin_lock_version\":1,\"host_requirements\":{\"teleportation\":\"required\"}",
        ));
        let err = resolve(&locked_app_of(&layers).unwrap(), &layers).unwrap_err();
        assert!(err.to_string().contains("teleportation"), "{err}");
    }

    #[test]
    fn an_app_that_requires_service_chaining_runs() {
        let layers = image(&LOCKED.replace(
            "\"spin_lock_version\":0",
            "\"spin_lock_version\":1,\"host_requirements\":{\"local_service_chaining\":\"required\"}",
        ));
        assert!(resolve(&locked_app_of(&layers).unwrap(), &layers).is_ok());
    }

    #[test]
    fn a_private_route_gives_a_trigger_without_a_route() {
        let layers = image(&LOCKED.replace("\"route\":\"/...\"", "\"route\":{\"private\":true}"));
        let app = resolve(&locked_app_of(&layers).unwrap(), &layers).unwrap();
        assert_eq!(app.http[0].route, None);
    }

    /// Components a and b, a allowed to reach `allowed`.
    fn chaining_app(allowed: &str) -> LockedApp {
        let locked = format!(
            r#"{{"spin_lock_version":0,
            "triggers":[{{"id":"a","trigger_type":"http","trigger_config":{{"component":"a","route":"/a"}}}},
                        {{"id":"b","trigger_type":"http","trigger_config":{{"component":"b","route":{{"private":true}}}}}}],
            "components":[{{"id":"a","metadata":{{"allowed_outbound_hosts":["{allowed}"]}},
                            "source":{{"content_type":"application/wasm","digest":"sha256:aa"}}}},
                          {{"id":"b","source":{{"content_type":"application/wasm","digest":"sha256:aa"}}}}]}}"#
        );
        LockedApp::from_json(locked.as_bytes()).unwrap()
    }

    #[test]
    fn a_retained_component_may_not_chain_to_one_left_out() {
        let err = retain_components(&mut chaining_app("http://b.spin.internal"), "a").unwrap_err();
        assert!(
            err.to_string()
                .contains("component a chains to component b (allowed_outbound_hosts \"http://b.spin.internal\"), which is not retained"),
            "{err}"
        );
        assert!(retain_components(&mut chaining_app("http://b.spin.internal"), "a,b").is_ok());
        assert!(retain_components(&mut chaining_app("http://example.com"), "a").is_ok());
    }

    #[test]
    fn a_retained_component_may_not_chain_to_every_component() {
        let err = retain_components(&mut chaining_app("http://*.spin.internal"), "a").unwrap_err();
        assert!(
            err.to_string().contains("may chain to every component"),
            "{err}"
        );
    }

    #[test]
    fn retaining_components_drops_the_others_and_their_triggers() {
        let locked = r#"{"spin_lock_version":0,
            "triggers":[{"id":"a","trigger_type":"http","trigger_config":{"component":"a","route":"/a"}},
                        {"id":"b","trigger_type":"http","trigger_config":{"component":"b","route":"/b"}}],
            "components":[{"id":"a","source":{"content_type":"application/wasm","digest":"sha256:aa"}},
                          {"id":"b","source":{"content_type":"application/wasm","digest":"sha256:aa"}}]}"#;
        let mut app = LockedApp::from_json(locked.as_bytes()).unwrap();
        retain_components(&mut app, " b ,").unwrap();
        assert_eq!(app.components.len(), 1);
        assert_eq!(app.triggers[0].id, "b");
        let err = retain_components(&mut app, "a").unwrap_err();
        assert!(err.to_string().contains("\"a\""), "{err}");
    }

    #[test]
    fn inline_content_is_base64() {
        use base64::Engine as _;
        let inline = base64::engine::general_purpose::STANDARD.encode(WASM);
        let locked = LOCKED.replace(
            "\"digest\":\"sha256:aa\"",
            &format!("\"inline\":\"{inline}\",\"digest\":\"sha256:ee\""),
        );
        let layers = image(&locked);
        let app = resolve(&locked_app_of(&layers).unwrap(), &layers).unwrap();
        assert_eq!(app.components[0].wasm.bytes, WASM);
    }
}

//! The locked app: Spin's resolved form of an application (`spin.lock`), which `spin registry
//! push` stores as the last layer of an image and kwasi also derives from a `spin.toml`
//! ([`crate::manifest`]). Only the fields kwasi acts on are typed; the rest are kept as JSON.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A whole application: its variables, triggers and components.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct LockedApp {
    /// 0, or 1 when the app has host requirements.
    pub spin_lock_version: u32,
    /// Features a host must understand to run the app.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub must_understand: Vec<String>,
    /// The app's name, version, trigger settings and more.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
    /// What the app requires of its host (`"required"` or `"optional"` per feature).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub host_requirements: Map<String, Value>,
    /// The app's variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, Variable>,
    /// How the app's components are invoked.
    #[serde(default)]
    pub triggers: Vec<LockedTrigger>,
    /// The app's components.
    #[serde(default)]
    pub components: Vec<LockedComponent>,
}

/// An application variable.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct Variable {
    /// What it is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Its value when nothing else gives one; `None` for a required variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// Whether its value is a secret.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub secret: bool,
}

/// A trigger: which component an event (an HTTP request on a route, a Redis message) goes to.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct LockedTrigger {
    /// Its id, unique in the app.
    pub id: String,
    /// `http`, `redis`, ...
    pub trigger_type: String,
    /// The trigger's table from the manifest, with `component` naming the component.
    pub trigger_config: Value,
}

/// A component: its wasm, environment, files and settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct LockedComponent {
    /// Its id, unique in the app.
    pub id: String,
    /// `allowed_outbound_hosts`, `key_value_stores`, `databases` and more.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
    /// Its wasm.
    pub source: LockedSource,
    /// Its environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Files it sees.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<ContentPath>,
    /// Its variables (values may refer to the app's: `{{ name }}`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
    /// Components it imports from (composed away by `spin registry push`).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub dependencies: Map<String, Value>,
}

/// A component's wasm.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct LockedSource {
    /// `application/wasm`.
    pub content_type: String,
    /// Where its bytes are.
    #[serde(flatten)]
    pub content: ContentRef,
}

/// Where some content is: a layer (by digest), inline, or a local URI.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct ContentRef {
    /// A `file://` URI (a locked app made from a local manifest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The content itself, base64 (small files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<String>,
    /// `sha256:<hex>`: the layer holding it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// A file a component sees, and where.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct ContentPath {
    /// Its content.
    #[serde(flatten)]
    pub content: ContentRef,
    /// Its path in the component's filesystem, relative to `/`.
    pub path: String,
}

impl LockedApp {
    /// Parses a locked app's JSON.
    pub fn from_json(bytes: &[u8]) -> Result<LockedApp, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The app's name, from its metadata.
    pub fn name(&self) -> Option<&str> {
        self.metadata.get("name").and_then(Value::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pushed_locked_app_parses_with_digests_flattened_into_source_and_files() {
        let json = br#"{"spin_lock_version":0,"metadata":{"name":"hello"},
            "variables":{"api_key":{"secret":true},"greeting":{"default":"hi"}},
            "triggers":[{"id":"hello-http-trigger","trigger_type":"http",
                "trigger_config":{"component":"hello","route":"/..."}}],
            "components":[{"id":"hello","source":{"content_type":"application/wasm",
                "digest":"sha256:aa"},"env":{"A":"1"},
                "files":[{"inline":"aGk=","digest":"sha256:bb","path":"hello.txt"}],
                "config":{"greeting":"{{ greeting }}"}}]}"#;
        let app = LockedApp::from_json(json).unwrap();
        assert_eq!(app.name(), Some("hello"));
        assert!(app.variables["api_key"].secret);
        assert_eq!(app.variables["greeting"].default.as_deref(), Some("hi"));
        let component = &app.components[0];
        assert_eq!(
            component.source.content.digest.as_deref(),
            Some("sha256:aa")
        );
        assert_eq!(component.files[0].content.inline.as_deref(), Some("aGk="));
        assert_eq!(component.files[0].path, "hello.txt");
        assert_eq!(app.triggers[0].trigger_config["route"], "/...");
    }

    #[test]
    fn serialising_leaves_out_what_is_empty() {
        let app = LockedApp {
            spin_lock_version: 0,
            must_understand: vec![],
            metadata: Map::new(),
            host_requirements: Map::new(),
            variables: BTreeMap::new(),
            triggers: vec![],
            components: vec![],
        };
        assert_eq!(
            serde_json::to_string(&app).unwrap(),
            r#"{"spin_lock_version":0,"triggers":[],"components":[]}"#
        );
    }
}

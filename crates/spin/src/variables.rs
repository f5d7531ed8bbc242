//! Variables, as Spin gives them to components: the app's `[variables]`, each valued from the
//! container's environment (`SPIN_VARIABLE_<NAME>`, as Spin's environment provider) or its
//! default, and each component's own `variables`, whose values may refer to the app's as
//! `{{ name }}`. A component reads its own through `fermyon:spin/variables@2.0.0`,
//! `spin:variables/variables@3.0.0` or `wasi:config/store`.

use std::collections::BTreeMap;

use crate::locked::Variable;

use wasmtime::component::{Accessor, HasSelf};

use crate::host::bindings::fermyon::spin2_0_0::variables::{self as wit, Error};
use crate::host::bindings::spin::variables::variables as wit3;
use crate::host::bindings::wasi::config::store as config;
use crate::host::SpinState;

/// The prefix of the environment variables that give app variables their values.
pub const ENV_PREFIX: &str = "SPIN_VARIABLE_";

/// One component's variables, resolved against the app's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Variables {
    values: BTreeMap<String, String>,
}

/// Whether `name` is a valid variable name: lowercase letters, digits and single
/// underscores, starting with a letter and not ending with an underscore.
fn valid_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.contains("__")
        && !name.ends_with('_')
}

impl Variables {
    /// The variables of a component with `config`, in an app with `app` variables, valued
    /// from `env`. A reference to a variable the app does not declare, or to a required one
    /// that `env` does not set, is an error.
    pub fn resolve(
        app: &BTreeMap<String, Variable>,
        config: &BTreeMap<String, String>,
        env: &[(String, String)],
    ) -> Result<Variables, String> {
        let value_of = |name: &str| app_value(app, env, name);
        let mut values = BTreeMap::new();
        for (key, template) in config {
            if !valid_name(key) {
                return Err(format!("variable {key:?}: not a valid variable name (lowercase letters, digits and single underscores)"));
            }
            let value = expand(template, &value_of).map_err(|e| format!("variable {key:?} {e}"))?;
            values.insert(key.clone(), value);
        }
        Ok(Variables { values })
    }

    /// The value of variable `name`.
    pub fn get(&self, name: &str) -> Result<String, Error> {
        if !valid_name(name) {
            return Err(Error::InvalidName(name.to_string()));
        }
        self.values
            .get(name)
            .cloned()
            .ok_or_else(|| Error::Undefined(format!("no variable for {name:?}")))
    }
}

/// The value of app variable `name`: from `env`, or its default.
fn app_value(
    app: &BTreeMap<String, Variable>,
    env: &[(String, String)],
    name: &str,
) -> Result<String, String> {
    let declared = app
        .get(name)
        .ok_or_else(|| format!("refers to variable {name:?}, which the app does not declare"))?;
    let from_env = format!("{ENV_PREFIX}{}", name.to_ascii_uppercase());
    kwasi_core::workload::env_var(env, &from_env)
        .map(str::to_string)
        .or_else(|| declared.default.clone())
        .ok_or_else(|| {
            format!("needs variable {name:?}, which is required: set {from_env} in the container's environment")
        })
}

/// `template` (a setting such as an allowed outbound host) with each `{{ name }}` replaced
/// by the value of the app's variable `name`, valued from `env`.
pub fn expand_app(
    app: &BTreeMap<String, Variable>,
    template: &str,
    env: &[(String, String)],
) -> Result<String, String> {
    expand(template, &|name| app_value(app, env, name)).map_err(|e| format!("{template:?} {e}"))
}

/// `template` with each `{{ name }}` replaced by `value_of(name)`.
fn expand(
    template: &str,
    value_of: &dyn Fn(&str) -> Result<String, String>,
) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("has an unclosed {{{{ in {template:?}"))?;
        out.push_str(&value_of(after[..end].trim())?);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

impl wit::Host for SpinState {
    fn get(&mut self, name: String) -> Result<String, Error> {
        self.variables.get(&name)
    }
}

impl wit3::Host for SpinState {}

impl<U> wit3::HostWithStore<U> for HasSelf<SpinState> {
    async fn get(accessor: &Accessor<U, Self>, name: String) -> Result<String, wit3::Error> {
        accessor
            .with(|mut access| access.get().variables.get(&name))
            .map_err(|err| match err {
                Error::InvalidName(text) => wit3::Error::InvalidName(text),
                Error::Undefined(text) => wit3::Error::Undefined(text),
                Error::Provider(text) => wit3::Error::Provider(text),
                Error::Other(text) => wit3::Error::Other(text),
            })
    }
}

/// `wasi:config/store`, as Spin gives it: the component's variables, by name. A name the
/// component has no variable for has no value.
impl config::Host for SpinState {
    fn get(&mut self, key: String) -> Result<Option<String>, config::Error> {
        Ok(self.variables.values.get(&key).cloned())
    }

    fn get_all(&mut self) -> Result<Vec<(String, String)>, config::Error> {
        Ok(self
            .variables
            .values
            .iter()
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> BTreeMap<String, Variable> {
        [
            (
                "greeting".to_string(),
                Variable {
                    default: Some("hi".into()),
                    ..Default::default()
                },
            ),
            (
                "api_key".to_string(),
                Variable {
                    secret: true,
                    ..Default::default()
                },
            ),
        ]
        .into()
    }

    fn config(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_template_takes_the_default_unless_the_environment_sets_the_variable() {
        let c = config(&[("message", "{{ greeting }}, world")]);
        let v = Variables::resolve(&app(), &c, &[]).unwrap();
        assert_eq!(v.get("message").ok().as_deref(), Some("hi, world"));
        let e = env(&[("SPIN_VARIABLE_GREETING", "hello")]);
        let v = Variables::resolve(&app(), &c, &e).unwrap();
        assert_eq!(v.get("message").ok().as_deref(), Some("hello, world"));
    }

    #[test]
    fn a_required_variable_the_environment_does_not_set_is_refused_naming_its_env_var() {
        let c = config(&[("key", "{{api_key}}")]);
        let err = Variables::resolve(&app(), &c, &[]).unwrap_err();
        assert!(err.contains("SPIN_VARIABLE_API_KEY"), "{err}");
        let e = env(&[("SPIN_VARIABLE_API_KEY", "s3cret")]);
        let v = Variables::resolve(&app(), &c, &e).unwrap();
        assert_eq!(v.get("key").ok().as_deref(), Some("s3cret"));
    }

    #[test]
    fn a_reference_to_an_undeclared_variable_is_refused() {
        let c = config(&[("x", "{{ nope }}")]);
        let err = Variables::resolve(&app(), &c, &[]).unwrap_err();
        assert!(err.contains("\"nope\""), "{err}");
    }

    #[test]
    fn get_answers_undefined_and_invalid_names_as_spin_does() {
        let v = Variables::resolve(&app(), &config(&[("a", "1")]), &[]).unwrap();
        assert!(matches!(v.get("b"), Err(Error::Undefined(_))));
        assert!(matches!(v.get("Bad-Name"), Err(Error::InvalidName(_))));
        assert_eq!(v.get("a").ok().as_deref(), Some("1"));
    }
}

//! Variables, as Spin gives them to components: the app's `[variables]`, each valued by the
//! first of its [`Providers`] that knows it (the runtime config's, then the container's
//! environment as `SPIN_VARIABLE_<NAME>`) or else by its default, and each component's own
//! `variables`, whose values may refer to the app's as `{{ name }}`. A component reads its
//! own through `fermyon:spin/variables@2.0.0`, `spin:variables/variables@3.0.0` or
//! `wasi:config/store`.

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::locked::Variable;

use wasmtime::component::{Accessor, HasSelf};

use crate::host::bindings::fermyon::spin2_0_0::variables::{self as wit, Error};
use crate::host::bindings::spin::variables::variables as wit3;
use crate::host::bindings::wasi::config::store as config;
use crate::host::SpinState;

/// The prefix of the environment variables that give app variables their values when no
/// provider does (joined to the upper-cased name with an underscore).
pub const ENV_PREFIX: &str = "SPIN_VARIABLE";

/// A source of app variables' values that a runtime config lists (`[[variables_provider]]`,
/// or its older name `[[config_provider]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provider {
    /// `type = "env"`: the container's environment variable `<PREFIX>_<NAME>` (`<NAME>` alone
    /// when the prefix is empty), or else that key in the `dotenv_path` file, read at
    /// `create`.
    Env {
        /// The prefix (`SPIN_VARIABLE` when the config gives none).
        prefix: Cow<'static, str>,
        /// The pairs of the dotenv file, if the config names one.
        dotenv: BTreeMap<String, String>,
    },
    /// `type = "static"`: values given in the runtime config, by variable name.
    Static(BTreeMap<String, String>),
}

/// Where app variables get their values, in order: the runtime config's providers, then the
/// container's environment (`SPIN_VARIABLE_<NAME>`), which Spin always consults last.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Providers(Vec<Provider>);

impl Providers {
    /// The providers a runtime config lists, in its order.
    pub fn new(listed: Vec<Provider>) -> Providers {
        Providers(listed)
    }

    /// The value of app variable `name` from the first provider that has one, the
    /// environment `env` (as `SPIN_VARIABLE_<NAME>`) last.
    fn value(&self, name: &str, env: &[(String, String)]) -> Option<String> {
        let always = Provider::Env {
            prefix: Cow::Borrowed(ENV_PREFIX),
            dotenv: BTreeMap::new(),
        };
        self.0
            .iter()
            .chain(std::iter::once(&always))
            .find_map(|provider| provider.value(name, env))
    }
}

impl Provider {
    /// The value this provider gives app variable `name`, if any.
    fn value(&self, name: &str, env: &[(String, String)]) -> Option<String> {
        match self {
            Provider::Env { prefix, dotenv } => {
                let upper = name.to_ascii_uppercase();
                let key = match prefix.as_ref() {
                    "" => upper,
                    prefix => format!("{prefix}_{upper}"),
                };
                kwasi_core::workload::env_var(env, &key)
                    .map(str::to_string)
                    .or_else(|| dotenv.get(&key).cloned())
            }
            Provider::Static(values) => values.get(name).cloned(),
        }
    }
}

/// What values app variables: the runtime config's providers and the container's
/// environment.
#[derive(Debug, Clone, Copy)]
pub struct Sources<'a> {
    /// The runtime config's providers.
    pub providers: &'a Providers,
    /// The container's environment.
    pub env: &'a [(String, String)],
}

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
    /// from `sources`. A reference to a variable the app does not declare, or to a required
    /// one that no source values, is an error.
    pub fn resolve(
        app: &BTreeMap<String, Variable>,
        config: &BTreeMap<String, String>,
        sources: Sources<'_>,
    ) -> Result<Variables, String> {
        let value_of = |name: &str| app_value(app, sources, name);
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

/// The value of app variable `name`: from `sources`, or its default.
fn app_value(
    app: &BTreeMap<String, Variable>,
    sources: Sources<'_>,
    name: &str,
) -> Result<String, String> {
    let declared = app
        .get(name)
        .ok_or_else(|| format!("refers to variable {name:?}, which the app does not declare"))?;
    sources
        .providers
        .value(name, sources.env)
        .or_else(|| declared.default.clone())
        .ok_or_else(|| {
            format!(
                "needs variable {name:?}, which is required: set {ENV_PREFIX}_{} in the \
                 container's environment",
                name.to_ascii_uppercase()
            )
        })
}

/// `template` (a setting such as an allowed outbound host) with each `{{ name }}` replaced
/// by the value of the app's variable `name`, valued from `sources`.
pub fn expand_app(
    app: &BTreeMap<String, Variable>,
    template: &str,
    sources: Sources<'_>,
) -> Result<String, String> {
    expand(template, &|name| app_value(app, sources, name)).map_err(|e| format!("{template:?} {e}"))
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

    /// `config` resolved with no provider but the environment `env`.
    fn resolve(
        c: &BTreeMap<String, String>,
        env: &[(String, String)],
    ) -> Result<Variables, String> {
        let providers = Providers::default();
        Variables::resolve(
            &app(),
            c,
            Sources {
                providers: &providers,
                env,
            },
        )
    }

    #[test]
    fn a_template_takes_the_default_unless_the_environment_sets_the_variable() {
        let c = config(&[("message", "{{ greeting }}, world")]);
        let v = resolve(&c, &[]).unwrap();
        assert_eq!(v.get("message").ok().as_deref(), Some("hi, world"));
        let e = env(&[("SPIN_VARIABLE_GREETING", "hello")]);
        let v = resolve(&c, &e).unwrap();
        assert_eq!(v.get("message").ok().as_deref(), Some("hello, world"));
    }

    #[test]
    fn a_required_variable_the_environment_does_not_set_is_refused_naming_its_env_var() {
        let c = config(&[("key", "{{api_key}}")]);
        let err = resolve(&c, &[]).unwrap_err();
        assert!(err.contains("SPIN_VARIABLE_API_KEY"), "{err}");
        let e = env(&[("SPIN_VARIABLE_API_KEY", "s3cret")]);
        let v = resolve(&c, &e).unwrap();
        assert_eq!(v.get("key").ok().as_deref(), Some("s3cret"));
    }

    #[test]
    fn a_reference_to_an_undeclared_variable_is_refused() {
        let c = config(&[("x", "{{ nope }}")]);
        let err = resolve(&c, &[]).unwrap_err();
        assert!(err.contains("\"nope\""), "{err}");
    }

    #[test]
    fn get_answers_undefined_and_invalid_names_as_spin_does() {
        let v = resolve(&config(&[("a", "1")]), &[]).unwrap();
        assert!(matches!(v.get("b"), Err(Error::Undefined(_))));
        assert!(matches!(v.get("Bad-Name"), Err(Error::InvalidName(_))));
        assert_eq!(v.get("a").ok().as_deref(), Some("1"));
    }

    #[test]
    fn the_runtime_configs_providers_come_first_in_order_then_the_environment() {
        let c = config(&[("message", "{{ greeting }}")]);
        let providers = Providers::new(vec![
            Provider::Env {
                prefix: "APP".into(),
                dotenv: [("APP_GREETING".to_string(), "from dotenv".to_string())].into(),
            },
            Provider::Static([("greeting".to_string(), "static".to_string())].into()),
        ]);
        let message = |pairs: &[(&str, &str)]| {
            let env = env(pairs);
            let sources = Sources {
                providers: &providers,
                env: &env,
            };
            let v = Variables::resolve(&app(), &c, sources).unwrap();
            v.get("message").unwrap()
        };
        assert_eq!(message(&[("APP_GREETING", "from env")]), "from env");
        assert_eq!(message(&[("SPIN_VARIABLE_GREETING", "x")]), "from dotenv");
        let without_dotenv = Providers::new(vec![
            Provider::Env {
                prefix: "APP".into(),
                dotenv: BTreeMap::new(),
            },
            Provider::Static([("greeting".to_string(), "static".to_string())].into()),
        ]);
        let e = env(&[("SPIN_VARIABLE_GREETING", "x")]);
        let sources = Sources {
            providers: &without_dotenv,
            env: &e,
        };
        let v = Variables::resolve(&app(), &c, sources).unwrap();
        assert_eq!(v.get("message").unwrap(), "static");
    }

    #[test]
    fn spin_operators_env_provider_leaves_spin_variable_names_to_the_environment() {
        // SpinKube's operator writes `prefix = "SPIN_VARIABLE_"`: Spin then looks up
        // `SPIN_VARIABLE__NAME` first and finds `SPIN_VARIABLE_NAME` through its last provider.
        let providers = Providers::new(vec![Provider::Env {
            prefix: "SPIN_VARIABLE_".into(),
            dotenv: BTreeMap::new(),
        }]);
        let e = env(&[("SPIN_VARIABLE_GREETING", "hello")]);
        let c = config(&[("message", "{{ greeting }}")]);
        let sources = Sources {
            providers: &providers,
            env: &e,
        };
        let v = Variables::resolve(&app(), &c, sources).unwrap();
        assert_eq!(v.get("message").unwrap(), "hello");
    }
}

//! Adding kwasi's runtimes to a containerd configuration, and taking them out again.
//!
//! Three dialects: containerd 1.x with config `version = 2` (the CRI plugin is
//! `io.containerd.grpc.v1.cri`), its older `version = 1` (`cri`), and containerd 2.x with
//! `version = 3`, or `version = 4` since 2.3 (`io.containerd.cri.v1.runtime` in both). A plain TOML file is edited in place with
//! `toml_edit`, which keeps its comments and layout. A Go template (k3s' `config.toml.tmpl`,
//! which starts with `{{ template "base" . }}`) cannot be parsed as TOML: the runtimes go in a
//! block between two marker comments at its end.

use std::path::Path;

use anyhow::{bail, Context, Result};
use toml_edit::{value, DocumentMut, Item, Table};

/// The first line of the block kwasi adds to a template.
const BEGIN: &str = "# BEGIN kwasi runtimes (kwasi install; kwasi uninstall removes this block)";
/// The last line of that block.
const END: &str = "# END kwasi runtimes";

/// Which configuration dialect the runtimes are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// containerd 1.x, config version 1: `plugins.cri`.
    V1,
    /// containerd 1.x, config version 2: `plugins."io.containerd.grpc.v1.cri"`.
    V2,
    /// containerd 2.x, config version 3 or 4: `plugins."io.containerd.cri.v1.runtime"`.
    V3,
}

impl Dialect {
    /// The tables above the runtimes, below `plugins`.
    fn runtimes_path(self) -> [&'static str; 3] {
        let plugin = match self {
            Dialect::V1 => "cri",
            Dialect::V2 => "io.containerd.grpc.v1.cri",
            Dialect::V3 => "io.containerd.cri.v1.runtime",
        };
        [plugin, "containerd", "runtimes"]
    }
}

/// One runtime to register: the engine's name, which is also the RuntimeClass handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtime {
    /// `wasmtime`, `wasmer`, `wasmedge` or `spin`.
    pub engine: String,
    /// Where the shim binary is installed.
    pub shim_path: String,
}

impl Runtime {
    fn runtime_type(&self) -> String {
        runtime_type(&self.engine)
    }
}

fn runtime_type(engine: &str) -> String {
    format!("io.containerd.{engine}.{}", super::api_version(engine))
}

/// Whether `text` is a Go template rather than TOML.
fn is_template(text: &str) -> bool {
    text.contains("{{")
}

/// The dialect of a template, told by its file name: k3s reads `config-v3.toml.tmpl` for
/// containerd 2.x and `config.toml.tmpl` for 1.x.
pub fn template_dialect(path: &Path) -> Dialect {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if name.contains("-v3") {
        Dialect::V3
    } else {
        Dialect::V2
    }
}

/// `text` (a configuration read from `path`, empty when there is none) with `runtimes`
/// registered. Registering is idempotent: runtimes already there get their type and path set,
/// everything else is kept as it was.
pub fn add_runtimes(text: &str, path: &Path, runtimes: &[Runtime]) -> Result<String> {
    if is_template(text) {
        let mut out = without_block(text);
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&block(template_dialect(path), runtimes));
        return Ok(out);
    }
    let mut doc = parse(text, path)?;
    let dialect = match doc.get("version").and_then(Item::as_integer) {
        Some(3 | 4) => Dialect::V3,
        Some(2) => Dialect::V2,
        Some(1) => Dialect::V1,
        Some(other) => bail!("{}: unknown config version {other}", path.display()),
        // No version: containerd 1.x reads it as version 1, 2.x migrates it. Version 2 is
        // understood by both, so declare it (an empty file says nothing else).
        None if doc.iter().next().is_none() => {
            doc.insert("version", value(2));
            Dialect::V2
        }
        None => Dialect::V1,
    };
    let mut table = doc.as_table_mut();
    for key in std::iter::once("plugins").chain(dialect.runtimes_path()) {
        table = table
            .entry(key)
            .or_insert_with(|| {
                let mut implicit = Table::new();
                implicit.set_implicit(true);
                Item::Table(implicit)
            })
            .as_table_mut()
            .with_context(|| format!("{}: `{key}` is not a table", path.display()))?;
    }
    for runtime in runtimes {
        let entry = table
            .entry(&runtime.engine)
            .or_insert_with(|| Item::Table(Table::new()))
            .as_table_mut()
            .with_context(|| {
                format!(
                    "{}: runtime `{}` is not a table",
                    path.display(),
                    runtime.engine
                )
            })?;
        let wanted = [
            ("runtime_type", runtime.runtime_type()),
            ("runtime_path", runtime.shim_path.clone()),
        ];
        for (key, want) in wanted {
            // Only what differs is written, so that a hand-formatted entry stays as it is.
            if entry.get(key).and_then(Item::as_str) != Some(want.as_str()) {
                entry[key] = value(want);
            }
        }
    }
    Ok(doc.to_string())
}

/// `text` without the runtimes of `engines` that kwasi registered (a runtime of that name
/// whose type is not kwasi's is left alone).
pub fn remove_runtimes(text: &str, path: &Path, engines: &[String]) -> Result<String> {
    if is_template(text) {
        return Ok(without_block(text));
    }
    let mut doc = parse(text, path)?;
    for dialect in [Dialect::V1, Dialect::V2, Dialect::V3] {
        let mut table = Some(doc.as_table_mut());
        for key in std::iter::once("plugins").chain(dialect.runtimes_path()) {
            table = table
                .and_then(|t| t.get_mut(key))
                .and_then(Item::as_table_mut);
        }
        let Some(runtimes) = table else {
            continue;
        };
        for engine in engines {
            let ours = runtimes
                .get(engine)
                .and_then(|r| r.get("runtime_type"))
                .and_then(Item::as_str)
                == Some(runtime_type(engine).as_str());
            if ours {
                runtimes.remove(engine);
            }
        }
    }
    Ok(doc.to_string())
}

fn parse(text: &str, path: &Path) -> Result<DocumentMut> {
    text.parse::<DocumentMut>()
        .with_context(|| format!("{} is not valid TOML", path.display()))
}

/// The runtimes as a marker-delimited block of TOML, for templates.
fn block(dialect: Dialect, runtimes: &[Runtime]) -> String {
    let [plugin, containerd, tables] = dialect.runtimes_path();
    let mut out = format!("{BEGIN}\n");
    for runtime in runtimes {
        out.push_str(&format!(
            "[plugins.\"{plugin}\".{containerd}.{tables}.{}]\n  runtime_type = \"{}\"\n  \
             runtime_path = \"{}\"\n",
            runtime.engine,
            runtime.runtime_type(),
            runtime.shim_path
        ));
    }
    out.push_str(END);
    out.push('\n');
    out
}

/// `text` without kwasi's marker block (and the newline that preceded it, if the block was
/// appended to a text that did not end with one).
fn without_block(text: &str) -> String {
    let Some(start) = text.find(BEGIN) else {
        return text.to_string();
    };
    let end = text[start..]
        .find(END)
        .map_or(text.len(), |at| start + at + END.len());
    let rest = text[end..].strip_prefix('\n').unwrap_or(&text[end..]);
    format!("{}{rest}", &text[..start])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sample configurations without our runtimes: containerd 1.6's default, a 2.x one, and
    /// a k3s template.
    const SAMPLES: [&str; 3] = [
        "containerd-1.6-default.toml",
        "containerd-2.x.toml",
        "k3s-config.toml.tmpl",
    ];

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/tests/containerd-configs/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    fn ours() -> Vec<Runtime> {
        ["wasmtime", "wasmer"]
            .iter()
            .map(|engine| Runtime {
                engine: engine.to_string(),
                shim_path: format!("/opt/kwasi/bin/containerd-shim-{engine}-v1"),
            })
            .collect()
    }

    #[test]
    fn the_spin_runtime_has_the_type_spinkube_uses() {
        assert_eq!(runtime_type("spin"), "io.containerd.spin.v2");
        assert_eq!(runtime_type("wasmtime"), "io.containerd.wasmtime.v1");
    }

    fn engines() -> Vec<String> {
        vec!["wasmtime".into(), "wasmer".into()]
    }

    /// The runtime table of `engine` in a parsed TOML configuration, below `plugin`.
    fn runtime<'a>(doc: &'a toml::Table, plugin: &str, engine: &str) -> Option<&'a toml::Table> {
        doc.get("plugins")?
            .get(plugin)?
            .get("containerd")?
            .get("runtimes")?
            .get(engine)?
            .as_table()
    }

    fn assert_registered(text: &str, plugin: &str) {
        let doc: toml::Table = text.parse().expect("still valid TOML");
        for engine in ["wasmtime", "wasmer"] {
            let table = runtime(&doc, plugin, engine)
                .unwrap_or_else(|| panic!("no {engine} runtime under {plugin} in:\n{text}"));
            assert_eq!(
                table["runtime_type"].as_str(),
                Some(format!("io.containerd.{engine}.v1").as_str())
            );
            assert_eq!(
                table["runtime_path"].as_str(),
                Some(format!("/opt/kwasi/bin/containerd-shim-{engine}-v1").as_str())
            );
        }
    }

    #[test]
    fn a_default_1_x_config_gets_the_runtimes_under_the_grpc_cri_plugin() {
        let path = Path::new("/etc/containerd/config.toml");
        let before = fixture("containerd-1.6-default.toml");
        let after = add_runtimes(&before, path, &ours()).unwrap();
        assert_registered(&after, "io.containerd.grpc.v1.cri");
        // runc and everything else is untouched.
        assert!(after.contains("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]"));
        // Two tables of two keys, each with its header and a blank line after it.
        assert_eq!(after.lines().count(), before.lines().count() + 8);
    }

    #[test]
    fn a_2_x_config_gets_the_runtimes_under_the_cri_runtime_plugin() {
        let path = Path::new("/etc/containerd/config.toml");
        let after = add_runtimes(&fixture("containerd-2.x.toml"), path, &ours()).unwrap();
        assert_registered(&after, "io.containerd.cri.v1.runtime");
        assert!(!after.contains("io.containerd.grpc.v1.cri"));
    }

    #[test]
    fn adding_twice_changes_nothing_the_second_time() {
        let path = Path::new("/etc/containerd/config.toml");
        for name in SAMPLES {
            let once = add_runtimes(&fixture(name), path, &ours()).unwrap();
            let twice = add_runtimes(&once, path, &ours()).unwrap();
            assert_eq!(once, twice, "{name}");
        }
    }

    #[test]
    fn a_config_that_already_has_our_runtimes_is_left_as_it_is() {
        let path = Path::new("/etc/containerd/config.toml");
        let before = fixture("with-kwasi.toml");
        assert_eq!(add_runtimes(&before, path, &ours()).unwrap(), before);
    }

    #[test]
    fn removing_undoes_adding() {
        let path = Path::new("/etc/containerd/config.toml");
        for name in SAMPLES {
            let before = fixture(name);
            let added = add_runtimes(&before, path, &ours()).unwrap();
            assert_eq!(
                remove_runtimes(&added, path, &engines()).unwrap(),
                before,
                "{name}"
            );
        }
    }

    #[test]
    fn removing_leaves_a_runtime_of_the_same_name_that_is_not_ours() {
        let path = Path::new("/etc/containerd/config.toml");
        let theirs =
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmtime]\n  \
                      runtime_type = \"io.containerd.wasmtime.v2\"\n";
        assert_eq!(remove_runtimes(theirs, path, &engines()).unwrap(), theirs);
    }

    #[test]
    fn an_empty_config_declares_version_2() {
        let after = add_runtimes("", Path::new("/etc/containerd/config.toml"), &ours()).unwrap();
        assert!(after.starts_with("version = 2\n"), "{after}");
        assert_registered(&after, "io.containerd.grpc.v1.cri");
    }

    #[test]
    fn a_k3s_template_gets_a_block_after_its_base() {
        let path = Path::new("/var/lib/rancher/k3s/agent/etc/containerd/config.toml.tmpl");
        let before = fixture("k3s-config.toml.tmpl");
        let after = add_runtimes(&before, path, &ours()).unwrap();
        assert!(after.starts_with(&before));
        let block = &after[before.len()..];
        assert!(
            block.starts_with(BEGIN) && block.trim_end().ends_with(END),
            "{block}"
        );
        assert_registered(block, "io.containerd.grpc.v1.cri");
    }

    #[test]
    fn a_k3s_v3_template_gets_the_2_x_tables() {
        let path = Path::new("/var/lib/rancher/k3s/agent/etc/containerd/config-v3.toml.tmpl");
        let after = add_runtimes("{{ template \"base\" . }}\n", path, &ours()).unwrap();
        assert_registered(
            after.split_once('\n').unwrap().1,
            "io.containerd.cri.v1.runtime",
        );
    }

    #[test]
    fn an_unknown_version_is_refused() {
        let err = add_runtimes("version = 9\n", Path::new("/x/config.toml"), &ours()).unwrap_err();
        assert_eq!(err.to_string(), "/x/config.toml: unknown config version 9");
    }

    #[test]
    fn invalid_toml_is_refused_with_the_path() {
        let err = add_runtimes("[plugins\n", Path::new("/x/config.toml"), &ours()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/x/config.toml is not valid TOML"),
            "{err}"
        );
    }
}

//! The runtime options containerd passes at `create`: for kwasi's handlers, CRI's generic
//! `runtimeoptions.v1.Options`, whose `config_body` is the runtime's options table as TOML
//! (or `config_path`, a file of it); runc's own `containerd.runc.v1.Options` where a runtime is
//! configured like runc. kwasi reads one option: `SystemdCgroup`, the cgroup driver.

use anyhow::{bail, Context, Result};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::{CodedInputStream, Message};
use containerd_shim::protos::shim::oci::Options as RuncOptions;

/// What kwasi takes from the runtime options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RuntimeOptions {
    /// Whether cgroups are managed through systemd (`SystemdCgroup = true`), as kubelet's
    /// `cgroupDriver: systemd` requires: the cgroups path is then `slice:prefix:name`.
    pub(crate) systemd_cgroup: bool,
}

impl RuntimeOptions {
    /// Reads the options containerd passed, if any.
    pub(crate) fn from_any(any: Option<&Any>) -> Result<RuntimeOptions> {
        let Some(any) = any.filter(|a| !a.type_url.is_empty() || !a.value.is_empty()) else {
            return Ok(RuntimeOptions::default());
        };
        let name = any.type_url.rsplit('/').next().unwrap_or_default();
        match name {
            "runtimeoptions.v1.Options" => {
                let (config_path, config_body) = decode_runtime_options(&any.value)?;
                let toml = if !config_path.is_empty() {
                    std::fs::read_to_string(&config_path)
                        .with_context(|| format!("reading the runtime options {config_path}"))?
                } else {
                    String::from_utf8(config_body).context("the runtime options are not UTF-8")?
                };
                Self::from_toml(&toml)
            }
            "containerd.runc.v1.Options" => {
                let runc = RuncOptions::parse_from_bytes(&any.value)
                    .context("decoding runc's runtime options")?;
                Ok(RuntimeOptions {
                    systemd_cgroup: runc.systemd_cgroup,
                })
            }
            other => bail!("unknown runtime options type {other:?}"),
        }
    }

    /// Reads a runtime's options table (`SystemdCgroup = true`).
    fn from_toml(text: &str) -> Result<RuntimeOptions> {
        let table: toml::Table = text.parse().context("parsing the runtime options")?;
        let systemd_cgroup = match table.get("SystemdCgroup") {
            None => false,
            Some(toml::Value::Boolean(b)) => *b,
            Some(other) => bail!(
                "runtime option SystemdCgroup must be true or false, not {}",
                other.type_str()
            ),
        };
        Ok(RuntimeOptions { systemd_cgroup })
    }
}

/// The `config_path` (2) and `config_body` (3) of a `runtimeoptions.v1.Options` message.
fn decode_runtime_options(bytes: &[u8]) -> Result<(String, Vec<u8>)> {
    let mut input = CodedInputStream::from_bytes(bytes);
    let (mut path, mut body) = (String::new(), Vec::new());
    while let Some(tag) = input
        .read_raw_tag_or_eof()
        .context("decoding the runtime options")?
    {
        match (tag >> 3, tag & 7) {
            (2, 2) => path = input.read_string()?,
            (3, 2) => body = input.read_bytes()?,
            (_, wire) => {
                let wire = containerd_shim::protos::protobuf::rt::WireType::new(wire)
                    .context("decoding the runtime options: bad wire type")?;
                input.skip_field(wire)?;
            }
        }
    }
    Ok((path, body))
}

/// Checks that the spec's cgroups path fits the cgroup driver: systemd's are
/// `slice:prefix:name`, cgroupfs's are paths.
pub(crate) fn check_cgroups_path(path: Option<&str>, options: RuntimeOptions) -> Result<()> {
    let Some(path) = path.filter(|p| !p.is_empty()) else {
        return Ok(());
    };
    let systemd_form = path.split(':').count() == 3 && !path.starts_with('/');
    match (systemd_form, options.systemd_cgroup) {
        (true, false) => bail!(
            "cgroupsPath {path:?} is a systemd unit (slice:prefix:name) but the runtime's \
             options do not set SystemdCgroup = true: set it under the runtime's options, as \
             for runc, when kubelet's cgroupDriver is systemd"
        ),
        (false, true) => bail!(
            "cgroupsPath {path:?} is not a systemd unit (slice:prefix:name) but the runtime's \
             options set SystemdCgroup = true: kubelet's cgroupDriver and the runtime's \
             SystemdCgroup must agree"
        ),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `runtimeoptions.v1.Options` with `config_body` as CRI sends it.
    fn runtime_options(body: &str) -> Any {
        let mut value = Vec::new();
        let mut out = containerd_shim::protos::protobuf::CodedOutputStream::vec(&mut value);
        out.write_string(1, "").unwrap();
        out.write_bytes(3, body.as_bytes()).unwrap();
        out.flush().unwrap();
        drop(out);
        Any {
            type_url: "runtimeoptions.v1.Options".into(),
            value,
            ..Default::default()
        }
    }

    #[test]
    fn no_options_mean_cgroupfs() {
        assert_eq!(
            RuntimeOptions::from_any(None).unwrap(),
            RuntimeOptions::default()
        );
    }

    #[test]
    fn systemd_cgroup_is_read_from_the_runtime_options_toml() {
        let any = runtime_options("SystemdCgroup = true\nBinaryName = \"x\"\n");
        assert!(RuntimeOptions::from_any(Some(&any)).unwrap().systemd_cgroup);
        let any = runtime_options("");
        assert!(!RuntimeOptions::from_any(Some(&any)).unwrap().systemd_cgroup);
    }

    #[test]
    fn systemd_cgroup_is_read_from_runcs_options() {
        let runc = RuncOptions {
            systemd_cgroup: true,
            ..Default::default()
        };
        let any = Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: runc.write_to_bytes().unwrap(),
            ..Default::default()
        };
        assert!(RuntimeOptions::from_any(Some(&any)).unwrap().systemd_cgroup);
    }

    #[test]
    fn a_malformed_option_is_refused_with_its_name() {
        let any = runtime_options("SystemdCgroup = \"yes\"\n");
        let err = RuntimeOptions::from_any(Some(&any))
            .unwrap_err()
            .to_string();
        assert!(err.contains("SystemdCgroup must be true or false"), "{err}");
    }

    #[test]
    fn a_systemd_cgroups_path_needs_the_systemd_driver() {
        let systemd = RuntimeOptions {
            systemd_cgroup: true,
        };
        let unit = Some("kubepods-besteffort-pod1.slice:cri-containerd:abc");
        assert!(check_cgroups_path(unit, systemd).is_ok());
        let err = check_cgroups_path(unit, RuntimeOptions::default()).unwrap_err();
        assert!(
            err.to_string().contains("set SystemdCgroup = true"),
            "{err}"
        );
        let path = Some("/kubepods/besteffort/pod1/abc");
        assert!(check_cgroups_path(path, RuntimeOptions::default()).is_ok());
        assert!(check_cgroups_path(path, systemd).is_err());
        assert!(check_cgroups_path(None, systemd).is_ok());
    }
}

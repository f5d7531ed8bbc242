//! The OCI bundle as libcontainer reads it. runc, and so containerd's CRI plugin, accept
//! spellings that libcontainer 0.7 refuses; the shim rewrites them in the bundle's
//! `config.json` before libcontainer reads it, to what means the same there.

use std::path::Path;

use anyhow::{Context, Result};
use oci_spec::runtime::Spec;

/// Rewrites the bundle's `config.json` where libcontainer would refuse what runc accepts:
/// the recursive rootfs propagations `rshared`, `rslave` and `rprivate` (CRI sets them for
/// bidirectional and host-to-container mount propagation) become `shared`, `slave` and
/// `private`, which libcontainer always applies recursively; a process without arguments (a
/// wasm layer or a Spin app needs none, and SpinKube's pods often give none) gets one empty
/// argument, which libcontainer requires and kwasi reads as "no program named". A spec that
/// needs no change is not written.
pub(crate) fn adapt_for_libcontainer(bundle: &Path) -> Result<()> {
    let path = bundle.join("config.json");
    let mut spec = Spec::load(&path).with_context(|| format!("reading {}", path.display()))?;
    if adapt(&mut spec) {
        spec.save(&path)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Adapts `spec` in place; returns whether it changed.
fn adapt(spec: &mut Spec) -> bool {
    let mut changed = false;
    if let Some(process) = spec.process_mut() {
        if process.args().as_ref().is_none_or(Vec::is_empty) {
            process.set_args(Some(vec![String::new()]));
            changed = true;
        }
    }
    let Some(linux) = spec.linux_mut() else {
        return changed;
    };
    let recursive = linux
        .rootfs_propagation()
        .as_deref()
        .and_then(|p| p.strip_prefix('r'))
        .filter(|base| ["shared", "slave", "private"].contains(base))
        .map(str::to_string);
    match recursive {
        Some(base) => {
            linux.set_rootfs_propagation(Some(base));
            true
        }
        None => changed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxBuilder, SpecBuilder};

    fn spec_with(propagation: Option<&str>) -> Spec {
        let mut linux = LinuxBuilder::default().build().unwrap();
        linux.set_rootfs_propagation(propagation.map(str::to_string));
        SpecBuilder::default().linux(linux).build().unwrap()
    }

    fn propagation(spec: &Spec) -> Option<String> {
        spec.linux().as_ref().unwrap().rootfs_propagation().clone()
    }

    #[test]
    fn recursive_propagations_become_their_base_names() {
        for (given, wanted) in [
            ("rshared", "shared"),
            ("rslave", "slave"),
            ("rprivate", "private"),
        ] {
            let mut spec = spec_with(Some(given));
            assert!(adapt(&mut spec));
            assert_eq!(propagation(&spec).as_deref(), Some(wanted));
        }
    }

    #[test]
    fn a_process_without_arguments_gets_one_empty_argument() {
        let mut spec = SpecBuilder::default().build().unwrap();
        spec.process_mut().as_mut().unwrap().set_args(Some(vec![]));
        assert!(adapt(&mut spec));
        assert_eq!(
            spec.process().as_ref().unwrap().args().as_deref(),
            Some(&[String::new()][..])
        );
        assert!(!adapt(&mut spec));
    }

    #[test]
    fn other_propagations_are_left_as_they_are() {
        for given in [None, Some("shared"), Some("slave"), Some("unbindable")] {
            let mut spec = spec_with(given);
            assert!(!adapt(&mut spec));
            assert_eq!(propagation(&spec).as_deref(), given);
        }
    }
}

//! What a kwasi shim reports of itself to containerd's `-info` action (containerd 2.x asks
//! every runtime handler at start): its name and version, and the OCI runtime features of its
//! sandbox, as `runc features` reports runc's. containerd's CRI plugin reads two of them:
//! recursive read-only mounts (`rro` among the mount options) and user namespaces with
//! idmapped mounts.
//!
//! The sandbox is youki's libcontainer 0.7: the lists below are what it parses and sets up.
//! It has user namespaces but no idmapped mounts, so CRI's user namespaces stay off.

use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::types::introspection::{RuntimeInfo, RuntimeVersion};
use oci_spec::runtime::{
    Arch, Features, FeaturesBuilder, IDMapBuilder, LinuxFeatureBuilder, LinuxNamespaceType,
    LinuxSeccompAction, MountExtensionsBuilder, SeccompBuilder,
};

/// The type URL containerd registers for `specs-go/features.Features` (JSON-encoded).
const FEATURES_TYPE_URL: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/features/Features";

/// The mount options libcontainer 0.7 understands (`mount(2)` flags, propagation, and the
/// recursive `mount_setattr(2)` attributes).
const MOUNT_OPTIONS: &[&str] = &[
    "async",
    "atime",
    "bind",
    "defaults",
    "dev",
    "diratime",
    "dirsync",
    "exec",
    "mand",
    "noatime",
    "nodev",
    "nodiratime",
    "noexec",
    "nomand",
    "norelatime",
    "nostrictatime",
    "nosuid",
    "private",
    "ratime",
    "rbind",
    "rdev",
    "rdiratime",
    "relatime",
    "remount",
    "rexec",
    "rnoatime",
    "rnodev",
    "rnodiratime",
    "rnoexec",
    "rnorelatime",
    "rnostrictatime",
    "rnosuid",
    "rnosymfollow",
    "ro",
    "rprivate",
    "rrelatime",
    "rro",
    "rrw",
    "rshared",
    "rslave",
    "rstrictatime",
    "rsuid",
    "rsymfollow",
    "runbindable",
    "rw",
    "shared",
    "slave",
    "strictatime",
    "suid",
    "sync",
    "unbindable",
];

/// The hooks libcontainer runs.
const HOOKS: &[&str] = &[
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

/// Every capability, as the OCI spec names them.
const CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The runtime info of the shim for `runtime_id`.
pub(super) fn runtime_info(runtime_id: &str) -> RuntimeInfo {
    let features = serde_json::to_vec(&features()).unwrap_or_default();
    RuntimeInfo {
        name: runtime_id.to_string(),
        version: Some(RuntimeVersion {
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
        .into(),
        features: Some(Any {
            type_url: FEATURES_TYPE_URL.to_string(),
            value: features,
            ..Default::default()
        })
        .into(),
        ..Default::default()
    }
}

/// The OCI features of the sandbox.
fn features() -> Features {
    let strings = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let namespaces = vec![
        LinuxNamespaceType::Cgroup,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Network,
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::User,
        LinuxNamespaceType::Uts,
    ];
    let seccomp = SeccompBuilder::default()
        .enabled(true)
        .actions(vec![
            LinuxSeccompAction::ScmpActKill,
            LinuxSeccompAction::ScmpActKillProcess,
            LinuxSeccompAction::ScmpActKillThread,
            LinuxSeccompAction::ScmpActTrap,
            LinuxSeccompAction::ScmpActErrno,
            LinuxSeccompAction::ScmpActTrace,
            LinuxSeccompAction::ScmpActAllow,
            LinuxSeccompAction::ScmpActLog,
            LinuxSeccompAction::ScmpActNotify,
        ])
        .archs(vec![Arch::ScmpArchX86_64, Arch::ScmpArchAarch64])
        .build()
        .unwrap_or_default();
    // No idmapped mounts: containerd then keeps CRI's user namespaces off for this handler.
    let mount_extensions = MountExtensionsBuilder::default()
        .idmap(
            IDMapBuilder::default()
                .enabled(false)
                .build()
                .unwrap_or_default(),
        )
        .build()
        .unwrap_or_default();
    let linux = LinuxFeatureBuilder::default()
        .namespaces(namespaces)
        .capabilities(strings(CAPABILITIES))
        .seccomp(seccomp)
        .mount_extensions(mount_extensions)
        .build()
        .unwrap_or_default();
    FeaturesBuilder::default()
        .oci_version_min("1.0.0")
        .oci_version_max("1.2.0")
        .hooks(strings(HOOKS))
        .mount_options(strings(MOUNT_OPTIONS))
        .linux(linux)
        .build()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_features_say_rro_and_no_idmapped_mounts_as_containerd_reads_them() {
        let info = runtime_info("io.containerd.wasmtime.v1");
        let any = info.features.as_ref().unwrap();
        assert_eq!(any.type_url, FEATURES_TYPE_URL);
        let json: serde_json::Value = serde_json::from_slice(&any.value).unwrap();
        let options = json["mountOptions"].as_array().unwrap();
        assert!(options.iter().any(|o| o == "rro"), "{json}");
        assert_eq!(json["linux"]["mountExtensions"]["idmap"]["enabled"], false);
        assert!(json["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "user"));
        assert_eq!(info.name, "io.containerd.wasmtime.v1");
    }
}

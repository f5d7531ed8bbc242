//! Run after the whole suite (`tests/run-all.sh` does): nothing the suite started is still
//! running, mounted, or holding a cgroup or sandbox state.

use kwasi_e2e::*;

#[test]
#[ignore = "checks the machine after the whole suite; tests/run-all.sh runs it last"]
fn nothing_the_suite_started_is_left_running_or_mounted() {
    let running: Vec<_> = processes()
        .into_iter()
        .filter(|(_, cmdline)| cmdline.contains(&format!("/{TMP_PREFIX}")))
        .collect();
    assert!(running.is_empty(), "still running: {running:#?}");

    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mounted: Vec<_> = mountinfo
        .lines()
        .filter(|l| l.contains(TMP_PREFIX))
        .collect();
    assert!(mounted.is_empty(), "still mounted: {mounted:#?}");

    let cgroups = cgroups_left_below(NAMESPACE);
    assert!(cgroups.is_empty(), "cgroups left: {cgroups:#?}");

    // The CRI suite's pods: their cgroups, and its CNI networks' address books and bridges.
    let pods = cgroups_left_below(kwasi_e2e::cri::CGROUP_ROOT);
    assert!(pods.is_empty(), "pod cgroups left: {pods:#?}");
    let networks: Vec<_> = std::fs::read_dir("/var/lib/cni/networks")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(TMP_PREFIX))
        .map(|e| e.path())
        .collect();
    assert!(networks.is_empty(), "CNI address books left: {networks:#?}");
    let bridges: Vec<_> = std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(kwasi_e2e::cri::BRIDGE_PREFIX))
        .collect();
    assert!(bridges.is_empty(), "CNI bridges left: {bridges:#?}");

    // critest's node maps host ports with CNI's portmap plugin, which leaves iptables chains.
    let nat = std::process::Command::new("iptables")
        .args(["-w", "-t", "nat", "-S"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let portmap: Vec<_> = nat.lines().filter(|l| l.contains("CNI-HOSTPORT")).collect();
    assert!(
        portmap.is_empty(),
        "portmap's iptables rules left: {portmap:#?}"
    );

    // The Kubernetes suite's kubelet: its cgroup tree.
    let kube = cgroups_left_below(kwasi_e2e::kube::CGROUP_ROOT);
    assert!(kube.is_empty(), "the kubelet's cgroups left: {kube:#?}");

    let state: Vec<_> = std::fs::read_dir(format!("/run/kwasi/{NAMESPACE}"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(state.is_empty(), "sandbox state left: {state:#?}");
    let _ = std::fs::remove_dir(format!("/run/kwasi/{NAMESPACE}"));
}

/// The cgroups still below `<hierarchy>/<parent>` in every hierarchy; then removes the parent
/// itself where it is empty (it is runtime-independent: runc leaves it too).
fn cgroups_left_below(parent: &str) -> Vec<std::path::PathBuf> {
    let mut left = Vec::new();
    for hierarchy in cgroup_hierarchies() {
        let dir = hierarchy.join(parent);
        left.extend(
            std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir()),
        );
        let _ = std::fs::remove_dir(&dir);
    }
    left
}

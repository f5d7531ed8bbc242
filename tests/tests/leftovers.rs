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

    let mut cgroups = Vec::new();
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let ns = hierarchy.path().join(NAMESPACE);
        for entry in std::fs::read_dir(&ns).into_iter().flatten().flatten() {
            if entry.path().is_dir() {
                cgroups.push(entry.path());
            }
        }
        // The namespace-level parent is runtime-independent (runc leaves it too): tidy it.
        let _ = std::fs::remove_dir(&ns);
    }
    assert!(cgroups.is_empty(), "cgroups left: {cgroups:#?}");

    let state: Vec<_> = std::fs::read_dir(format!("/run/kwasi/{NAMESPACE}"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(state.is_empty(), "sandbox state left: {state:#?}");
    let _ = std::fs::remove_dir(format!("/run/kwasi/{NAMESPACE}"));
}

//! Run after the whole suite (`tests/run-all.sh` does): nothing the suite started is still
//! running, mounted, or holding a cgroup, a CNI network, an iptables rule or sandbox state.

use kwasi_e2e::leftovers::Leftovers;

#[test]
#[ignore = "checks the machine after the whole suite; tests/run-all.sh runs it last"]
fn nothing_the_suite_started_is_left_running_or_mounted() {
    let left = Leftovers::find();
    assert!(left.is_empty(), "left behind:\n{left}");
    // The empty cgroup parents and sandbox state directory: any runtime leaves them (runc too).
    left.sweep();
}

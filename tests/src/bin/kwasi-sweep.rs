//! Removes what an interrupted test run (Ctrl-C, a killed job) left on the machine: its
//! processes, mounts, directories, cgroups, CNI networks, portmap's iptables rules and sandbox
//! state. `tests/run-all.sh` runs it first, so that the suite's own leftovers check sees only
//! what this run left. The suite needs the machine to itself: this also ends a cluster that
//! `tests/node/cluster.sh` started.

use kwasi_e2e::leftovers::Leftovers;

fn main() -> std::process::ExitCode {
    let found = Leftovers::find();
    if found.is_empty() {
        return std::process::ExitCode::SUCCESS;
    }
    eprint!("an earlier test run left these behind; removing them:\n{found}");
    let left = found.sweep();
    if left.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        eprint!("could not remove:\n{left}");
        std::process::ExitCode::FAILURE
    }
}

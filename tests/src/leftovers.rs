//! What a test run leaves on the machine: processes, mounts, cgroups, CNI networks, portmap's
//! iptables rules and sandbox state. The `leftovers` test checks that the whole suite left
//! none; `kwasi-sweep` removes what an interrupted run (Ctrl-C, a killed job) left, so that
//! the next run starts from a clean machine.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::{cgroup_hierarchies, cri, kube, processes, unmount_below, NAMESPACE, TMP_PREFIX};

/// Everything of the suite's still on the machine.
#[derive(Debug, Default)]
pub struct Leftovers {
    /// Processes whose command line names one of the suite's directories, or that sit in one
    /// of its cgroups (a container's): pid and command line.
    pub processes: Vec<(i32, String)>,
    /// Mount points below one of the suite's directories.
    pub mounts: Vec<String>,
    /// Cgroups below the suite's parents (containers, CRI pods, the kubelet's tree).
    pub cgroups: Vec<PathBuf>,
    /// CNI address books of the suite's networks.
    pub networks: Vec<PathBuf>,
    /// CNI bridges of the suite's networks.
    pub bridges: Vec<String>,
    /// Rules of CNI's portmap plugin in the `nat` table.
    pub portmap: Vec<String>,
    /// Sandbox state of the suite's containerd namespace.
    pub state: Vec<PathBuf>,
}

/// The cgroup parents the suite's containers, pods and kubelet live below.
const CGROUP_PARENTS: [&str; 3] = [NAMESPACE, cri::CGROUP_ROOT, kube::CGROUP_ROOT];

/// Where the kwasi shims keep the sandbox state of the suite's namespace.
fn state_dir() -> PathBuf {
    Path::new("/run/kwasi").join(NAMESPACE)
}

impl Leftovers {
    /// Looks at the whole machine.
    pub fn find() -> Leftovers {
        let cgroups: Vec<PathBuf> = CGROUP_PARENTS
            .iter()
            .flat_map(|p| cgroups_below(p))
            .collect();
        let in_cgroups: Vec<i32> = cgroups.iter().flat_map(|c| cgroup_tree_pids(c)).collect();
        let processes = processes()
            .into_iter()
            .filter(|(pid, cmdline)| {
                (cmdline.contains(&format!("/{TMP_PREFIX}")) || in_cgroups.contains(pid))
                    && *pid != std::process::id() as i32
            })
            .collect();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mounts = mountinfo
            .lines()
            .filter(|l| l.contains(TMP_PREFIX))
            .map(str::to_string)
            .collect();
        let networks = suite_entries(Path::new(cri::CNI_IPAM_DIR));
        let bridges = std::fs::read_dir("/sys/class/net")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with(cri::BRIDGE_PREFIX))
            .collect();
        let nat = std::process::Command::new("iptables")
            .args(["-w", "-t", "nat", "-S"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let portmap = nat
            .lines()
            .filter(|l| l.contains("CNI-HOSTPORT"))
            .map(str::to_string)
            .collect();
        let state = std::fs::read_dir(state_dir())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        Leftovers {
            processes,
            mounts,
            cgroups,
            networks,
            bridges,
            portmap,
            state,
        }
    }

    /// Whether nothing is left.
    pub fn is_empty(&self) -> bool {
        self.processes.is_empty()
            && self.mounts.is_empty()
            && self.cgroups.is_empty()
            && self.networks.is_empty()
            && self.bridges.is_empty()
            && self.portmap.is_empty()
            && self.state.is_empty()
    }

    /// Removes what is left: kills the processes (and waits for them), unmounts, removes the
    /// suite's directories, cgroups, networks, portmap's rules and the sandbox state; then
    /// the empty cgroup parents, which any runtime leaves. Returns what is still left after.
    pub fn sweep(self) -> Leftovers {
        for (pid, _) in &self.processes {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self
            .processes
            .iter()
            .any(|(pid, _)| Path::new(&format!("/proc/{pid}")).exists())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        let dirs = suite_entries(&std::env::temp_dir());
        for dir in dirs.iter().chain([&state_dir()]) {
            unmount_below(dir);
        }
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for dir in &dirs {
            // remove_dir_all crosses mount points: only a directory with none below it goes.
            let prefix = dir.display().to_string();
            if !mountinfo.lines().any(|l| l.contains(&prefix)) {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
        for parent in CGROUP_PARENTS {
            kube::remove_cgroup_tree(parent);
        }
        for network in &self.networks {
            let _ = std::fs::remove_dir_all(network);
        }
        for bridge in &self.bridges {
            let _ = std::process::Command::new("ip")
                .args(["link", "delete", bridge])
                .stderr(std::process::Stdio::null())
                .status();
        }
        if !self.portmap.is_empty() {
            cri::remove_portmap_chains();
        }
        for state in &self.state {
            let _ = std::fs::remove_dir_all(state);
        }
        let _ = std::fs::remove_dir(state_dir());
        Leftovers::find()
    }
}

impl fmt::Display for Leftovers {
    /// One line per thing left, each saying what it is.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (pid, cmdline) in &self.processes {
            writeln!(f, "{}", crate::left_process(*pid, cmdline))?;
        }
        let lines = [
            ("mount", self.mounts.clone()),
            ("cgroup", paths(&self.cgroups)),
            ("CNI address book", paths(&self.networks)),
            ("CNI bridge", self.bridges.clone()),
            ("portmap rule", self.portmap.clone()),
            ("sandbox state", paths(&self.state)),
        ];
        for (what, items) in lines {
            for item in items {
                writeln!(f, "{what}: {item}")?;
            }
        }
        Ok(())
    }
}

fn paths(paths: &[PathBuf]) -> Vec<String> {
    paths.iter().map(|p| p.display().to_string()).collect()
}

/// The cgroups directly below `<hierarchy>/<parent>`, in every hierarchy.
fn cgroups_below(parent: &str) -> Vec<PathBuf> {
    cgroup_hierarchies()
        .into_iter()
        .flat_map(|hierarchy| {
            std::fs::read_dir(hierarchy.join(parent))
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
        })
        .collect()
}

/// The processes in cgroup directory `dir` and every cgroup below it.
pub fn cgroup_tree_pids(dir: &Path) -> Vec<i32> {
    let mut pids: Vec<i32> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            pids.extend(cgroup_tree_pids(&entry.path()));
        }
    }
    pids
}

/// The entries of directory `dir` whose names start with the suite's prefix.
fn suite_entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(TMP_PREFIX))
        .map(|e| e.path())
        .collect()
}

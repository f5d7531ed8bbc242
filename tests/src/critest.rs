//! critest, the CRI validation suite of the Kubernetes project (sigs.k8s.io/cri-tools), run
//! against a containerd 2.x node ([`Node`]) with one runtime handler, and its report read back.
//!
//! There is no registry here: the images critest asks for are built from this machine's own
//! binaries and imported under the names critest uses ([`import_images`]); the specs that
//! always pull from a registry are skipped ([`SKIP`]).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cri::Node;
use crate::layout::{Entry, LinuxImage};
use crate::{guests_dir, node};

/// The specs that always pull from a registry (Image Manager, Image Consistency, Image
/// Identifier Consistency, Image Volume): the only ones skipped.
pub const SKIP: &str =
    r"\[k8s\.io\] (Image Manager|Image Consistency|Image Identifier Consistency|Image Volume) ";

/// How one spec went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecResult {
    /// Its full name: the `Describe` texts and the `It` text.
    pub name: String,
    /// `passed`, `failed`, `skipped`, `timedout`, `panicked`...
    pub state: String,
    /// Why it failed or was skipped: Gomega's whole message (the cause is on its later lines).
    pub message: String,
    /// For a spec that failed, the lines of containerd's log (the shims' included) that name
    /// a container or pod sandbox its message names: the last [`LOG_LINES`] of them.
    pub log: Vec<String>,
}

/// How many log lines a failed spec keeps.
pub const LOG_LINES: usize = 40;

impl SpecResult {
    /// Whether it ran and did not pass.
    pub fn failed(&self) -> bool {
        !matches!(self.state.as_str(), "passed" | "skipped" | "pending")
    }
}

/// A spec that passes with runc here and not with the kwasi handlers, and why. The README
/// lists each of them.
#[derive(Debug, Clone, Copy)]
pub struct KnownGap {
    /// The spec's name, as [`SpecResult::name`].
    pub spec: &'static str,
    /// Why.
    pub reason: &'static str,
}

/// Why CRI's user namespace specs do not run with kwasi's handlers.
const NO_IDMAPPED_MOUNTS: &str = "skipped: CRI enables pod user namespaces only for a runtime \
    whose features report idmapped mounts, and libcontainer 0.7 has none";

/// Every spec that passes with runc here and not with the kwasi handlers.
pub const KNOWN_GAPS: &[KnownGap] = &[
    KnownGap {
        spec: "[k8s.io] Security Context UserNamespaces when Host idmap mount support is needed runtime should support NamespaceMode_POD",
        reason: NO_IDMAPPED_MOUNTS,
    },
    KnownGap {
        spec: "[k8s.io] Security Context UserNamespaces when Host idmap mount support is not needed runtime should support NamespaceMode_NODE",
        reason: NO_IDMAPPED_MOUNTS,
    },
    KnownGap {
        spec: "[k8s.io] Security Context UserNamespaces when Host idmap mount support is not needed runtime should fail if more than one mapping provided",
        reason: NO_IDMAPPED_MOUNTS,
    },
    KnownGap {
        spec: "[k8s.io] Security Context UserNamespaces when Host idmap mount support is not needed runtime should fail if container ID 0 is not mapped",
        reason: NO_IDMAPPED_MOUNTS,
    },
    KnownGap {
        spec: "[k8s.io] Security Context UserNamespaces when Host idmap mount support is not needed runtime should fail with NamespaceMode_CONTAINER",
        reason: NO_IDMAPPED_MOUNTS,
    },
    KnownGap {
        spec: "[k8s.io] Security Context UserNamespaces when Host idmap mount support is not needed runtime should fail with NamespaceMode_TARGET",
        reason: NO_IDMAPPED_MOUNTS,
    },
];

/// Runs critest against `node` with `handler` as every pod's runtime handler, writing its
/// console output, its report and containerd's log (with the shims') in `dir`, and returns
/// every spec it ran or skipped. `$KWASI_CRITEST_FOCUS`, when set, runs only the specs it
/// matches (a Ginkgo regular expression).
pub fn run(node: &Node, handler: &str, dir: &Path) -> Result<Vec<SpecResult>> {
    std::fs::create_dir_all(dir)?;
    let endpoint = format!("unix://{}", node.containerd.socket().display());
    let report = dir.join(format!("critest-{handler}.json"));
    let log = std::fs::File::create(dir.join(format!("critest-{handler}.log")))?;
    let mut critest = Command::new(node::binary("critest")?);
    if let Ok(focus) = std::env::var("KWASI_CRITEST_FOCUS") {
        critest.arg(format!("-ginkgo.focus={focus}"));
    }
    let status = critest
        .arg(format!("-runtime-endpoint={endpoint}"))
        .arg(format!("-image-endpoint={endpoint}"))
        .arg(format!("-runtime-handler={handler}"))
        .arg(format!("-config={}", dir.join("crictl.yaml").display()))
        .arg(format!("-ginkgo.skip={SKIP}"))
        .arg(format!("-ginkgo.json-report={}", report.display()))
        .arg("-ginkgo.no-color")
        .arg("-ginkgo.timeout=60m")
        .current_dir(dir)
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .context("running critest")?;
    let containerd_log = node.containerd.log();
    std::fs::write(
        dir.join(format!("containerd-{handler}.log")),
        &containerd_log,
    )?;
    let text = std::fs::read_to_string(&report).with_context(|| {
        format!(
            "critest ({status}) wrote no report {}: see {}",
            report.display(),
            dir.join(format!("critest-{handler}.log")).display()
        )
    })?;
    let mut specs = parse_report(&text)?;
    for spec in specs.iter_mut().filter(|s| s.failed()) {
        spec.log = lines_about(&spec.message, &containerd_log);
    }
    Ok(specs)
}

/// The last [`LOG_LINES`] lines of `log` that name an id (64 hex digits: a container or a
/// pod sandbox) that `message` names.
fn lines_about(message: &str, log: &str) -> Vec<String> {
    let ids: Vec<&str> = message
        .split(|c: char| !c.is_ascii_hexdigit())
        .filter(|word| word.len() == 64)
        .collect();
    let lines: Vec<&str> = log
        .lines()
        .filter(|line| ids.iter().any(|id| line.contains(id)))
        .collect();
    let skip = lines.len().saturating_sub(LOG_LINES);
    lines[skip..].iter().map(|l| l.to_string()).collect()
}

/// The `It` specs of a Ginkgo JSON report.
fn parse_report(text: &str) -> Result<Vec<SpecResult>> {
    let suites: serde_json::Value = serde_json::from_str(text).context("parsing the report")?;
    let mut specs = Vec::new();
    for suite in suites.as_array().into_iter().flatten() {
        for spec in suite["SpecReports"].as_array().into_iter().flatten() {
            if spec["LeafNodeType"] != "It" {
                continue;
            }
            let mut parts: Vec<&str> = spec["ContainerHierarchyTexts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str())
                .collect();
            parts.push(spec["LeafNodeText"].as_str().unwrap_or_default());
            specs.push(SpecResult {
                name: parts.join(" "),
                state: spec["State"].as_str().unwrap_or("unknown").to_string(),
                message: spec["Failure"]["Message"]
                    .as_str()
                    .unwrap_or_default()
                    .trim_end()
                    .to_string(),
                log: Vec::new(),
            });
        }
    }
    if specs.is_empty() {
        bail!("the report lists no spec");
    }
    Ok(specs)
}

/// Builds the images critest uses and imports them into `node` under critest's names: a
/// busybox (Debian's, every applet a hard link, plus procps' `pgrep` and util-linux's `ipcs`,
/// with the libraries they load), nginx (Debian's) for the web server images, busybox's httpd
/// for httpd, a setuid `nnp` for nonewprivs, and busybox with a user and group of its own for
/// predefined-group. Debian's busybox and nginx come from the node's components.
pub fn import_images(node: &Node) -> Result<()> {
    let dir = node.containerd.dir().join("critest-images");
    std::fs::create_dir_all(&dir)?;
    let files = HostFiles::collect(&dir)?;
    for image in files.images() {
        let tar = dir.join(format!("{}.tar", image.name.replace(['/', ':'], "_")));
        image.write(&tar)?;
        node.containerd.import_archive(&tar)?;
    }
    Ok(())
}

/// The files of this machine that go into the images, and the ones made for them.
struct HostFiles {
    /// `/bin/<applet>` for each of busybox's applets.
    applets: Vec<String>,
    /// `(source, destination)`: busybox, pgrep, ipcs, nginx and the libraries they load.
    binaries: Vec<(PathBuf, String)>,
    nnp: PathBuf,
    /// nginx's configuration on port 80, and on 12003 (the host-network image).
    nginx_conf: [Vec<u8>; 2],
}

const PASSWD: &[u8] = b"root:x:0:0:root:/root:/bin/sh\n\
nobody:x:65534:65534:nobody:/home:/bin/false\n\
www-data:x:33:33:www-data:/var/www:/bin/false\n";
const GROUP: &[u8] = b"root:x:0:\nnogroup:x:65534:\nwww-data:x:33:\n";
const GROUP_PASSWD: &[u8] = b"root:x:0:0:root:/root:/bin/sh\n\
nobody:x:65534:65534:nobody:/home:/bin/false\n\
default-user:x:1000:1000::/home/default-user:/bin/sh\n";
const GROUP_GROUP: &[u8] = b"root:x:0:\nnogroup:x:65534:\ndefault-user:x:1000:\n\
group-defined-in-image:x:50000:default-user\n";
const INDEX: &[u8] = b"<html><body>kwasi test web server</body></html>\n";

/// nginx's configuration for a server on `port`, PID 1 of its container in the foreground.
fn nginx_conf(port: u16) -> Vec<u8> {
    format!(
        "user root;\nworker_processes 1;\npid /var/run/nginx.pid;\nerror_log stderr;\n\
         events {{ worker_connections 64; }}\n\
         http {{ access_log /dev/stdout; server {{ listen {port}; \
         root /usr/share/nginx/html; index index.html; }} }}\n"
    )
    .into_bytes()
}

impl HostFiles {
    fn collect(dir: &Path) -> Result<HostFiles> {
        let busybox = node::binary("busybox")?;
        let out = Command::new(&busybox)
            .arg("--list")
            .output()
            .context("listing busybox's applets")?;
        let applets = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|a| !a.is_empty() && *a != "busybox")
            .map(|a| format!("/bin/{a}"))
            .collect();
        let mut binaries = Vec::new();
        for (source, dest) in [
            (busybox, "/bin/busybox"),
            (PathBuf::from("/usr/bin/pgrep"), "/usr/bin/pgrep"),
            (PathBuf::from("/usr/bin/ipcs"), "/usr/bin/ipcs"),
            (node::binary("nginx")?, "/usr/sbin/nginx"),
        ] {
            for library in libraries(&source)? {
                if !binaries.iter().any(|(s, _)| *s == library) {
                    let dest = library.display().to_string();
                    binaries.push((library, dest));
                }
            }
            binaries.push((source, dest.to_string()));
        }
        let nnp = dir.join("nnp");
        let out = Command::new("gcc")
            .args(["-static", "-Os", "-o"])
            .arg(&nnp)
            .arg(guests_dir().join("nnp.c"))
            .output()
            .context("building nnp (apt-get install gcc libc6-dev)")?;
        if !out.status.success() {
            bail!("gcc nnp.c: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(HostFiles {
            applets,
            binaries,
            nnp,
            nginx_conf: [nginx_conf(80), nginx_conf(12003)],
        })
    }

    /// The userland every image has: busybox, each applet a hard link to it in `/bin`, pgrep,
    /// ipcs, nginx and their libraries, `passwd` and `group`.
    fn userland<'a>(&'a self, passwd: &'a [u8], group: &'a [u8]) -> Vec<Entry<'a>> {
        let mut entries = vec![
            Entry::Dir("/tmp", 0o1777),
            Entry::Dir("/root", 0o700),
            Entry::Dir("/var/run", 0o755),
        ];
        entries.extend(
            self.binaries
                .iter()
                .map(|(source, dest)| Entry::File(source, dest, 0o755)),
        );
        entries.extend(
            self.applets
                .iter()
                .map(|a| Entry::Hardlink(a, "/bin/busybox")),
        );
        entries.push(Entry::Data("/etc/passwd", passwd, 0o644));
        entries.push(Entry::Data("/etc/group", group, 0o644));
        entries
    }

    /// An nginx image named `name`, configured by `conf`.
    fn web_server<'a>(&'a self, name: &'a str, conf: &'a [u8]) -> LinuxImage<'a> {
        let mut entries = self.userland(PASSWD, GROUP);
        entries.extend([
            Entry::Data("/etc/nginx/nginx.conf", conf, 0o644),
            Entry::Data("/usr/share/nginx/html/index.html", INDEX, 0o644),
            Entry::Dir("/var/log/nginx", 0o755),
            Entry::Dir("/var/lib/nginx", 0o755),
        ]);
        LinuxImage {
            name,
            entries,
            cmd: &["nginx", "-g", "daemon off;"],
            ..Default::default()
        }
    }

    fn images(&self) -> Vec<LinuxImage<'_>> {
        let mut httpd = self.userland(PASSWD, GROUP);
        httpd.push(Entry::Data("/www/index.html", INDEX, 0o644));
        let mut nonewprivs = self.userland(PASSWD, GROUP);
        nonewprivs.push(Entry::File(&self.nnp, "/usr/local/bin/nnp", 0o4755));
        vec![
            LinuxImage {
                name: "registry.k8s.io/e2e-test-images/busybox:1.29-2",
                entries: self.userland(PASSWD, GROUP),
                cmd: &["sh"],
                ..Default::default()
            },
            self.web_server(
                "registry.k8s.io/e2e-test-images/nginx:1.14-2",
                &self.nginx_conf[0],
            ),
            self.web_server(
                "gcr.io/k8s-staging-cri-tools/hostnet-nginx-amd64:latest",
                &self.nginx_conf[1],
            ),
            LinuxImage {
                name: "registry.k8s.io/e2e-test-images/httpd:2.4.39-4",
                entries: httpd,
                cmd: &[
                    "/bin/sh",
                    "-c",
                    "echo 'httpd: serving /www on port 80' >&2; exec httpd -f -p 80 -h /www",
                ],
                ..Default::default()
            },
            LinuxImage {
                name: "registry.k8s.io/e2e-test-images/nonewprivs:1.3",
                entries: nonewprivs,
                cmd: &["nnp"],
                ..Default::default()
            },
            LinuxImage {
                name: "gcr.io/k8s-staging-cri-tools/test-image-predefined-group:latest",
                entries: self.userland(GROUP_PASSWD, GROUP_GROUP),
                cmd: &["sh"],
                user: "1000",
                ..Default::default()
            },
        ]
    }
}

/// The shared libraries `binary` loads, the dynamic loader included (`ldd`).
fn libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .with_context(|| format!("ldd {}", binary.display()))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, after)) => after.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_gives_each_it_with_its_full_name_and_state() {
        let report = r#"[{"SpecReports": [
            {"LeafNodeType": "BeforeSuite", "State": "passed"},
            {"LeafNodeType": "It", "ContainerHierarchyTexts": ["[k8s.io] Runtime info", "runtime"],
             "LeafNodeText": "should return version info", "State": "passed"},
            {"LeafNodeType": "It", "ContainerHierarchyTexts": ["[k8s.io] Streaming"],
             "LeafNodeText": "should support attach", "State": "failed",
             "Failure": {"Message": "attach failed\nmore"}}
        ]}]"#;
        let specs = parse_report(report).unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(
            specs[0].name,
            "[k8s.io] Runtime info runtime should return version info"
        );
        assert!(!specs[0].failed());
        assert!(specs[1].failed());
        assert_eq!(specs[1].message, "attach failed\nmore");
    }

    #[test]
    fn a_failed_spec_keeps_the_log_lines_about_the_containers_its_message_names() {
        let id = "ab".repeat(32);
        let other = "cd".repeat(32);
        let message = format!("failed to execSync in container \"{id}\"\nrpc error");
        let log = format!("start {id}\nstart {other}\nlevel=error exec in {id}: no pid\n");
        assert_eq!(
            lines_about(&message, &log),
            [
                format!("start {id}"),
                format!("level=error exec in {id}: no pid")
            ]
        );
    }

    #[test]
    fn the_readme_lists_every_known_critest_gap() {
        let rows = KNOWN_GAPS.iter().map(|k| format!("| {} |", k.spec));
        assert_eq!(crate::missing_readme_rows(rows), Vec::<String>::new());
    }
}

#[cfg(test)]
mod image_tests {
    use super::*;

    #[test]
    fn the_busybox_image_has_every_applet_as_an_executable_hard_link_and_pgrep() {
        let dir = tempfile::tempdir().unwrap();
        let files = HostFiles::collect(dir.path()).unwrap();
        let images = files.images();
        let tar = dir.path().join("busybox.tar");
        images[0].write(&tar).unwrap();
        let mut outer = tar::Archive::new(std::fs::File::open(&tar).unwrap());
        let mut layer = None;
        for entry in outer.entries().unwrap() {
            let mut entry = entry.unwrap();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
            if bytes.len() > 1_000_000 {
                layer = Some(bytes);
            }
        }
        let layer = layer.expect("a layer");
        let mut inner = tar::Archive::new(layer.as_slice());
        let names: Vec<(String, tar::EntryType, u32)> = inner
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let header = e.header();
                let path = e.path().unwrap().display().to_string();
                (path, header.entry_type(), header.mode().unwrap())
            })
            .collect();
        // A link carries its file's mode: unpacking applies it to the shared inode.
        let top = ("bin/top".to_string(), tar::EntryType::Link, 0o755);
        assert!(names.contains(&top), "{names:?}");
        assert!(names.iter().any(|(n, _, _)| n == "usr/bin/pgrep"));
    }
}

//! The official WASI test suite (WebAssembly/wasi-testsuite, wasm32-wasip1), run through a
//! private containerd: each test becomes an image whose rootfs is the test's `root` directory
//! and whose module is a wasm layer, run with exactly the test's `args` and `env`, and judged
//! by its `exit_code`, `stdout` and `stderr`, as the suite's specification defines them.
//!
//! The suite is data every developer and CI has beside the clone, in
//! `../shared/wasi-testsuite` (or `$KWASI_WASI_TESTSUITE`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{unique_id, Containerd, Shim};

/// A test of the suite that fails with an engine, and why. The README lists each of them.
#[derive(Debug, Clone, Copy)]
pub struct ExpectedFailure {
    /// The engine (`wasmer`).
    pub engine: &'static str,
    /// The test, as `<suite>/<name>` (`c/sock_shutdown-invalid_fd`).
    pub test: &'static str,
    /// Why it fails.
    pub reason: &'static str,
}

/// Why `c/sock_shutdown-invalid_fd` fails with every engine.
const FD_3_IS_THE_ROOT: &str = "the test assumes that fd 3 is not open; in a container the \
    guest's first preopen (its working directory, `.`) is fd 3";

/// Every test that fails with an engine (the suite's count is printed by engine). wasmer's
/// are wasmer-wasix's own answers to the WASI calls named, which the engine crate does not
/// rewrite.
pub const EXPECTED_FAILURES: &[ExpectedFailure] = &[
    ExpectedFailure {
        engine: "wasmtime",
        test: "c/sock_shutdown-invalid_fd",
        reason: FD_3_IS_THE_ROOT,
    },
    ExpectedFailure {
        engine: "wasmer",
        test: "c/sock_shutdown-invalid_fd",
        reason: FD_3_IS_THE_ROOT,
    },
    ExpectedFailure {
        engine: "wasmer",
        test: "c/sock_shutdown-not_sock",
        reason: "wasmer-wasix: `sock_shutdown` on a file answers another errno than `NOTSOCK`",
    },
    ExpectedFailure {
        engine: "wasmer",
        test: "rust/close_preopen",
        reason: "wasmer-wasix: `fd_close` of a preopened directory leaves it open (`fd_fdstat_get` still answers)",
    },
    ExpectedFailure {
        engine: "wasmer",
        test: "rust/dir_fd_op_failures",
        reason: "wasmer-wasix: a call on a directory descriptor answers `OVERFLOW` where the test expects `INVAL` or `NAMETOOLONG`",
    },
    ExpectedFailure {
        engine: "wasmer",
        test: "rust/directory_seek",
        reason: "wasmer-wasix: `fd_seek` on a directory succeeds instead of failing",
    },
    ExpectedFailure {
        engine: "wasmer",
        test: "rust/fd_flags_set",
        reason: "wasmer-wasix: `fd_fdstat_set_flags` does not change how later writes land (append)",
    },
    ExpectedFailure {
        engine: "wasmer",
        test: "rust/fd_readdir",
        reason: "wasmer-wasix: `fd_readdir` gives other entries (cookies, inode numbers) than the directory's",
    },
    ExpectedFailure {
        engine: "wasmer",
        test: "rust/interesting_paths",
        reason: "wasmer-wasix: `path_open` of an absolute path answers `NOENT`, not `PERM` or `NOTCAPABLE`",
    },
    ExpectedFailure {
        engine: "wasmer",
        test: "rust/overwrite_preopen",
        reason: "wasmer-wasix: `fd_renumber` onto a preopened descriptor answers `NOTSUP`",
    },
    ExpectedFailure {
        engine: "wasmer",
        test: "rust/path_filestat",
        reason: "wasmer-wasix: `path_filestat_get` reports other values than `fd_filestat_get` for the same file",
    },
    ExpectedFailure {
        engine: "wasmer",
        test: "rust/path_link",
        reason: "wasmer-wasix: after `path_link`, the two names' `filestat` differ",
    },
    ExpectedFailure {
        engine: "wasmer",
        test: "rust/path_open_dirfd_not_dir",
        reason: "wasmer-wasix: `path_open` relative to a file descriptor answers `ACCES`, not `NOTDIR`",
    },
    ExpectedFailure {
        engine: "wasmer",
        test: "rust/path_rename",
        reason: "wasmer-wasix: `path_remove_directory` answers `NOENT` for a directory that `path_rename` has just moved: its table of inodes keeps the old names",
    },
    ExpectedFailure {
        engine: "wasmer",
        test: "rust/path_symlink_trailing_slashes",
        reason: "wasmer-wasix: `path_symlink` to a destination that ends with `/` succeeds",
    },
    ExpectedFailure {
        engine: "wasmer",
        test: "rust/readlink",
        reason: "wasmer-wasix: `path_readlink` into a buffer shorter than the link answers `OVERFLOW` instead of truncating",
    },
    ExpectedFailure {
        engine: "wasmer",
        test: "rust/renumber",
        reason: "wasmer-wasix: the descriptor that `fd_renumber` makes does not keep the source's rights (`fd_fdstat_get` answers 0)",
    },
    ExpectedFailure {
        engine: "wasmer",
        test: "rust/stdio",
        reason: "wasmer-wasix: a standard stream's descriptor still answers `fd_fdstat_get` once `fd_renumber` has moved it away",
    },
    ExpectedFailure {
        engine: "wasmer",
        test: "rust/symlink_filestat",
        reason: "wasmer-wasix: `path_filestat_get` of a symlink without following it gives timestamps the test cannot order",
    },
    ExpectedFailure {
        engine: "wasmer",
        test: "rust/truncation_rights",
        reason: "wasmer-wasix: `path_open` with `TRUNC` succeeds without the `path_filestat_set_size` right",
    },
    ExpectedFailure {
        engine: "wasmer",
        test: "rust/unlink_file_trailing_slashes",
        reason: "wasmer-wasix: `path_unlink_file` of a directory answers `ISDIR` but first drops it from its table of inodes, so the `path_remove_directory` that follows answers `NOENT`",
    },
    ExpectedFailure {
        engine: "wasmedge",
        test: "c/sock_shutdown-invalid_fd",
        reason: FD_3_IS_THE_ROOT,
    },
];

/// What a test asks for: its `<name>.json`, defaults where it has none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestSpec {
    /// The arguments after the program's name.
    pub args: Vec<String>,
    /// The whole environment.
    pub env: BTreeMap<String, String>,
    /// A directory beside the test whose contents are the guest's filesystem.
    pub root: Option<String>,
    /// The exit status expected.
    pub exit_code: i32,
    /// The output expected, when given.
    pub stdout: Option<String>,
    /// The error output expected, when given.
    pub stderr: Option<String>,
}

impl TestSpec {
    /// Reads a spec's JSON; a field that is missing has its default.
    pub fn parse(text: &str) -> Result<TestSpec> {
        let json: Value = serde_json::from_str(text)?;
        let string = |key: &str| -> Result<Option<String>> {
            match &json[key] {
                Value::Null => Ok(None),
                Value::String(s) => Ok(Some(s.clone())),
                other => bail!("{key} is not a string: {other}"),
            }
        };
        let mut spec = TestSpec {
            root: string("root")?,
            stdout: string("stdout")?,
            stderr: string("stderr")?,
            ..TestSpec::default()
        };
        for arg in json["args"].as_array().into_iter().flatten() {
            let arg = arg.as_str().context("an argument is not a string")?;
            spec.args.push(arg.to_string());
        }
        for (key, value) in json["env"].as_object().into_iter().flatten() {
            let value = value
                .as_str()
                .context("an environment value is not a string")?;
            spec.env.insert(key.clone(), value.to_string());
        }
        if let Some(code) = json.get("exit_code") {
            spec.exit_code = code.as_i64().context("exit_code is not a number")? as i32;
        }
        Ok(spec)
    }
}

/// One test: its name (`<suite>/<name>`), module and spec.
#[derive(Debug, Clone)]
pub struct Test {
    /// `<suite>/<name>`.
    pub name: String,
    /// The `.wasm`.
    pub module: PathBuf,
    /// What it asks for.
    pub spec: TestSpec,
}

/// Where the suite is: `$KWASI_WASI_TESTSUITE`, else `../shared/wasi-testsuite` beside the
/// clone, else beside the repository the clone was made from (a fresh clone of a local
/// checkout, as CI's, may sit anywhere).
pub fn suite_dir() -> Result<PathBuf> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let candidates: Vec<PathBuf> = match std::env::var_os("KWASI_WASI_TESTSUITE") {
        Some(dir) => vec![PathBuf::from(dir)],
        None => [Some(repo.clone()), local_origin(&repo)]
            .into_iter()
            .flatten()
            .map(|root| root.join("../shared/wasi-testsuite"))
            .collect(),
    };
    match candidates.iter().find(|dir| dir.join("tests").is_dir()) {
        Some(dir) => Ok(dir.clone()),
        None => bail!(
            "the WASI test suite is not at {} (set KWASI_WASI_TESTSUITE to its directory)",
            candidates
                .iter()
                .map(|dir| dir.display().to_string())
                .collect::<Vec<_>>()
                .join(" nor at ")
        ),
    }
}

/// The directory `repo`'s `origin` remote names, when it is a local checkout.
fn local_origin(repo: &Path) -> Option<PathBuf> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["config", "--get", "remote.origin.url"])
        .output()
        .ok()?;
    let url = String::from_utf8(out.stdout).ok()?;
    let url = url.trim();
    let path = PathBuf::from(url.strip_prefix("file://").unwrap_or(url));
    (out.status.success() && path.is_absolute() && path.is_dir()).then_some(path)
}

/// Every test of the suite in `dir`, sorted by name.
pub fn tests(dir: &Path) -> Result<Vec<Test>> {
    let mut tests = Vec::new();
    for suite in std::fs::read_dir(dir.join("tests"))? {
        let suite = suite?.path();
        let modules = suite.join("testsuite/wasm32-wasip1");
        let Ok(entries) = std::fs::read_dir(&modules) else {
            continue;
        };
        let suite_name = suite.file_name().unwrap_or_default().to_string_lossy();
        for entry in entries {
            let module = entry?.path();
            if module.extension().is_none_or(|e| e != "wasm") {
                continue;
            }
            let stem = module.file_stem().unwrap_or_default().to_string_lossy();
            let json = module.with_extension("json");
            let spec = if json.exists() {
                let text = std::fs::read_to_string(&json)?;
                TestSpec::parse(&text).with_context(|| format!("{}", json.display()))?
            } else {
                TestSpec::default()
            };
            tests.push(Test {
                name: format!("{suite_name}/{stem}"),
                module,
                spec,
            });
        }
    }
    tests.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(tests)
}

impl Test {
    /// Builds and imports the test's image into `c`: its module as a wasm layer, the files of
    /// its `root` as the rootfs. Returns the image's reference.
    pub fn import(&self, c: &Containerd) -> Result<String> {
        let mut extra = vec!["--layer-type".to_string(), "wasm".to_string()];
        if let Some(root) = &self.spec.root {
            let root = self.module.with_file_name(root);
            for file in files_below(&root)? {
                let inside = file.strip_prefix(&root)?.display().to_string();
                extra.push("--file".into());
                extra.push(format!("{}:/{inside}", file.display()));
            }
        }
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let image = format!("wasi-testsuite.test/{}", self.name).to_lowercase();
        c.import_wasm_for_api(&image, &self.module, &extra)
    }

    /// Runs the test's image with `shim`; `None` when it passed, else what went wrong.
    pub fn run(&self, c: &Containerd, shim: &Shim, image: &str) -> Option<String> {
        let program = self.module.file_name()?.to_string_lossy().into_owned();
        let args: Vec<&str> = std::iter::once(program.as_str())
            .chain(self.spec.args.iter().map(String::as_str))
            .collect();
        let env: Vec<String> = self
            .spec
            .env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let id = unique_id("wasi-testsuite");
        let out = c.run_via_api_with_env(shim.runtime, image, &id, &args, &env);
        let mut wrong = Vec::new();
        if out.status != self.spec.exit_code {
            wrong.push(format!(
                "exit status {} (expected {})",
                out.status, self.spec.exit_code
            ));
        }
        if self.spec.stdout.as_ref().is_some_and(|s| *s != out.stdout) {
            wrong.push(format!("stdout {:?}", out.stdout));
        }
        if self.spec.stderr.as_ref().is_some_and(|s| *s != out.stderr) {
            wrong.push(format!("stderr {:?}", out.stderr));
        }
        if wrong.is_empty() {
            return None;
        }
        let stderr = crate::last_lines(&out.stderr, 3);
        Some(format!(
            "{}; stderr ends with: {stderr:?}",
            wrong.join(", ")
        ))
    }
}

/// The files below `dir`, recursively.
fn files_below(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("{}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            files.extend(files_below(&path)?);
        } else {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_without_fields_has_the_suites_defaults() {
        let spec = TestSpec::parse("{}").unwrap();
        assert_eq!(spec, TestSpec::default());
        assert_eq!(spec.exit_code, 0);
    }

    #[test]
    fn a_spec_reads_args_env_root_and_expectations() {
        let spec = TestSpec::parse(
            r#"{"args": ["a"], "env": {"K": "new\nline"}, "root": "fs-tests.dir",
                "exit_code": 33, "stdout": "out"}"#,
        )
        .unwrap();
        assert_eq!(spec.args, ["a"]);
        assert_eq!(spec.env["K"], "new\nline");
        assert_eq!(spec.root.as_deref(), Some("fs-tests.dir"));
        assert_eq!(spec.exit_code, 33);
        assert_eq!(spec.stdout.as_deref(), Some("out"));
        assert_eq!(spec.stderr, None);
    }

    #[test]
    fn the_readme_lists_every_expected_failure() {
        let rows = EXPECTED_FAILURES
            .iter()
            .map(|f| format!("| {} | {} |", f.engine, f.test));
        assert_eq!(crate::missing_readme_rows(rows), Vec::<String>::new());
    }
}

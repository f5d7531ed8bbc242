//! The official WASI test suite through containerd 2.x, for every built shim: each of its 72
//! tests as an image run through the shim ([`kwasi_e2e::wasi_testsuite`]). The tests that fail
//! must be exactly the listed ones ([`EXPECTED_FAILURES`], each with its reason, also a table
//! in the README): a new failure is a regression, and a listed test that passes must leave the
//! list.

use std::time::Instant;

use kwasi_e2e::wasi_testsuite::{suite_dir, tests, EXPECTED_FAILURES};
use kwasi_e2e::*;

fn the_suite_passes_but_for_the_expected_failures(shim: &Shim) {
    let dir = suite_dir().unwrap();
    let tests = tests(&dir).unwrap();
    assert_eq!(
        tests.len(),
        72,
        "the suite in {} has changed",
        dir.display()
    );
    let c = shim.containerd().expect("starting containerd");
    let started = Instant::now();
    let mut failed = Vec::new();
    for test in &tests {
        let image = test
            .import(&c)
            .unwrap_or_else(|e| panic!("{}: {e:#}", test.name));
        if let Some(why) = test.run(&c, shim, &image) {
            println!("{}: {} failed: {why}", shim.engine, test.name);
            failed.push((test.name.as_str(), why));
        }
    }
    println!(
        "{}: {} of {} passed in {:.1} s",
        shim.engine,
        tests.len() - failed.len(),
        tests.len(),
        started.elapsed().as_secs_f64()
    );
    let expected: Vec<&str> = EXPECTED_FAILURES
        .iter()
        .filter(|f| f.engine == shim.engine)
        .map(|f| f.test)
        .collect();
    let unexpected: Vec<_> = failed
        .iter()
        .filter(|(name, _)| !expected.contains(name))
        .collect();
    let passing: Vec<_> = expected
        .iter()
        .filter(|name| !failed.iter().any(|(f, _)| f == *name))
        .collect();
    assert!(
        unexpected.is_empty() && passing.is_empty(),
        "{}: failed and not listed: {unexpected:#?}\nlisted and passed: {passing:#?}",
        shim.engine
    );
}

mod containerd_2 {
    use kwasi_e2e::{Release, Shim};

    #[test]
    fn wasmtime() {
        super::the_suite_passes_but_for_the_expected_failures(
            Shim::WASMTIME.on(Release::V2).built(),
        );
    }

    #[test]
    fn wasmer() {
        super::the_suite_passes_but_for_the_expected_failures(Shim::WASMER.on(Release::V2).built());
    }

    // Only with `--features wasmedge`, when libwasmedge is installed (`tests/run-all.sh`).
    #[cfg(feature = "wasmedge")]
    #[test]
    fn wasmedge() {
        super::the_suite_passes_but_for_the_expected_failures(
            Shim::WASMEDGE.on(Release::V2).built(),
        );
    }
}

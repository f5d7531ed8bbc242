//! critest, the Kubernetes project's CRI validation suite, against containerd 2.x: once with
//! runc (the baseline) and once with each kwasi handler, in the same run. The pods' pause
//! containers, and critest's busybox and web server containers, go through the kwasi shim's
//! native-container path.
//!
//! Every spec that passes with runc must pass with a kwasi handler, and the specs that fail
//! are exactly the known ones (`kwasi_e2e::critest::KNOWN_FAILURES`: those of this machine,
//! which fail with runc too, and the kwasi handlers' own, each with its reason and listed in
//! the README), so that a regression and a fix both show. The counts are printed.
//!
//! critest binds host ports and expects to be the only CRI client: the handlers run one after
//! the other, each on a containerd of its own.

use std::collections::BTreeSet;
use std::sync::Mutex;

use kwasi_e2e::cri::Node;
use kwasi_e2e::critest::{self, known_failures, SpecResult};
use kwasi_e2e::{Release, Shim};

/// One critest run at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs critest with `handler` on a containerd of its own and returns its specs, after
/// printing the counts.
fn run(handler: &str) -> Vec<SpecResult> {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let node = Node::start_mapping_ports(Release::V2).expect("starting containerd 2.x with CRI");
    critest::import_images(&node).expect("building critest's images");
    let reports = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("critest");
    let started = std::time::Instant::now();
    let specs = critest::run(&node, handler, &reports).expect("running critest");
    let count = |state: &str| specs.iter().filter(|s| s.state == state).count();
    let failed = specs.iter().filter(|s| s.failed()).count();
    eprintln!(
        "critest with {handler}: {} passed, {failed} failed, {} skipped of {} in {:.0} s",
        count("passed"),
        count("skipped"),
        specs.len(),
        started.elapsed().as_secs_f64()
    );
    for spec in specs.iter().filter(|s| s.failed()) {
        eprintln!("  {}: {} ({})", spec.state, spec.name, spec.message);
    }
    specs
}

/// The names of the specs that failed.
fn failures(specs: &[SpecResult]) -> BTreeSet<String> {
    specs
        .iter()
        .filter(|s| s.failed())
        .map(|s| s.name.clone())
        .collect()
}

/// Checks that exactly the known failures of `handler` failed.
fn assert_known_failures(handler: &str, specs: &[SpecResult]) {
    let failed = failures(specs);
    let known: BTreeSet<String> = known_failures(handler)
        .into_iter()
        .map(|k| k.spec.to_string())
        .collect();
    let new: Vec<_> = failed.difference(&known).collect();
    let fixed: Vec<_> = known.difference(&failed).collect();
    assert!(
        new.is_empty() && fixed.is_empty(),
        "critest with {handler}: failing and not known: {new:#?}\nknown but passing now (take \
         them off KNOWN_FAILURES and the README): {fixed:#?}"
    );
}

#[test]
fn critest_with_runc_fails_only_its_known_specs() {
    assert_known_failures("runc", &run("runc"));
}

/// critest with a kwasi handler: what fails with runc here, and the kwasi failures listed
/// with their reasons; nothing else.
fn critest_with(shim: Shim) {
    let specs = run(shim.built().engine);
    assert_known_failures(shim.engine, &specs);
}

#[test]
fn critest_with_wasmtime_passes_what_runc_passes() {
    critest_with(Shim::WASMTIME);
}

#[test]
fn critest_with_wasmer_passes_what_runc_passes() {
    critest_with(Shim::WASMER);
}

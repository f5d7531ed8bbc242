//! critest, the Kubernetes project's CRI validation suite, against containerd 2.x: once with
//! runc, the baseline, then once with each kwasi handler, in the same run. The pods' pause
//! containers, and critest's busybox and web server containers, go through the kwasi shims'
//! native-container path.
//!
//! Every spec must pass with runc, and every spec that passes with runc must pass with each
//! kwasi handler, except the known gaps (`kwasi_e2e::critest::KNOWN_GAPS`, each with its
//! reason and listed in the README): a regression and a fix both show. The counts are
//! printed.
//!
//! critest binds host ports and expects to be the only CRI client: the handlers run one after
//! the other, each on a containerd of its own.

use std::collections::BTreeSet;

use kwasi_e2e::cri::Node;
use kwasi_e2e::critest::{self, SpecResult, KNOWN_GAPS};
use kwasi_e2e::{Release, Shim};

/// Runs critest with `handler` on a containerd of its own and returns its specs, after
/// printing the counts.
fn run(handler: &str) -> Vec<SpecResult> {
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
        eprintln!(
            "  {}: {}\n    {}",
            spec.state,
            spec.name,
            spec.message.replace('\n', "\n    ")
        );
        if !spec.log.is_empty() {
            eprintln!("    containerd's log about its containers:");
        }
        for line in &spec.log {
            eprintln!("      {line}");
        }
    }
    specs
}

/// The names of the specs that passed.
fn passed(specs: &[SpecResult]) -> BTreeSet<String> {
    specs
        .iter()
        .filter(|s| s.state == "passed")
        .map(|s| s.name.clone())
        .collect()
}

#[test]
fn every_spec_that_passes_with_runc_passes_with_each_kwasi_handler() {
    let runc = run("runc");
    let failed: Vec<&str> = runc
        .iter()
        .filter(|s| s.failed())
        .map(|s| s.name.as_str())
        .collect();
    assert!(
        failed.is_empty(),
        "critest fails with runc here: {failed:#?}"
    );
    let baseline = passed(&runc);
    let known: BTreeSet<String> = KNOWN_GAPS.iter().map(|g| g.spec.to_string()).collect();
    for shim in Shim::built_ones() {
        if shim.engine == "wasmedge" && !cfg!(feature = "wasmedge") {
            continue;
        }
        let specs = run(shim.engine);
        let ours = passed(&specs);
        let gaps: BTreeSet<String> = baseline.difference(&ours).cloned().collect();
        let new: Vec<_> = gaps.difference(&known).collect();
        let closed: Vec<_> = known.intersection(&ours).collect();
        assert!(
            new.is_empty() && closed.is_empty(),
            "critest with {}: passing with runc, not with kwasi, and not known: {new:#?}\n\
             known gaps that pass now (take them off KNOWN_GAPS and the README): {closed:#?}",
            shim.engine
        );
    }
}

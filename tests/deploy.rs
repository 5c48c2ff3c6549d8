//! The deployment files, checked the way they are used: the systemd unit by
//! `systemd-analyze`, the VM install script by installing into a temporary
//! root and running what it installed, and the Helm chart by rendering it
//! with Helm's template engine and validating every object against the
//! Kubernetes schemas.
//!
//! Each check is a script under `deploy/test/` (they drive shell tools, so
//! they are shell). Exit 0 passes, 77 skips (a tool is missing here; the
//! script says which), anything else fails. `.ci/run` installs the tools
//! and sets `WEFT_CI`, which turns a skip into a failure.

mod support;

use std::path::Path;
use std::process::Command;

/// "Skipped": the automake convention the scripts follow.
const SKIPPED: i32 = 77;

fn run_script(name: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/test").join(name);
    let output = Command::new("bash")
        .arg(&script)
        .env("WEFT_BIN", support::weft_bin())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    match output.status.code() {
        Some(0) => println!("{stdout}"),
        Some(SKIPPED) => println!("SKIPPED {name}: {stdout}{stderr}"),
        code => panic!("{name} failed ({code:?}):\n{stdout}\n{stderr}"),
    }
}

#[test]
fn systemd_unit_verifies_cleanly() {
    run_script("systemd-units.sh");
}

#[test]
fn vm_install_script_installs_runs_and_uninstalls() {
    run_script("install.sh");
}

#[test]
fn helm_chart_renders_and_validates() {
    run_script("helm.sh");
}

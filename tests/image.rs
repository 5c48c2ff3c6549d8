//! The container image the Helm chart runs, built by
//! `deploy/image/build.sh` from this build's `weft`: its configuration
//! (entrypoint, non-root user), no shell, and its root file system running
//! `weft dev` (as the image's user, reached over HTTP) and the transparent
//! proxying init container's `weft k8s redirect-traffic` (in a network
//! namespace of its own), each chrooted into the unpacked image, so that
//! nothing outside the image is used.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{eventually, free_port, weft_bin, Process};
use weft_api::client::HttpClient;

/// Why the image cannot be built and run here, if it cannot.
fn missing_prerequisite() -> Option<String> {
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if !root {
        return Some("not root (chroot and mknod)".into());
    }
    for (tool, arg) in [("umoci", "--version"), ("xtables-nft-multi", "--version"), ("python3", "--version")] {
        if Command::new(tool).arg(arg).output().is_err() {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

fn run(program: &str, args: &[&str]) -> (bool, String) {
    let output = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_runs_weft_from_its_own_root_file_system() {
    if let Some(missing) = missing_prerequisite() {
        assert!(std::env::var_os("WEFT_CI").is_none(), "the image test must run in CI: {missing}");
        eprintln!("skipping: {missing}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("image");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/image/build.sh");
    let build = Command::new(&script).arg(&out).env("WEFT", weft_bin()).env("TAG", "test").output().unwrap();
    let log = String::from_utf8_lossy(&build.stdout).into_owned() + &String::from_utf8_lossy(&build.stderr);
    assert!(build.status.success(), "{log}");
    println!("{}", log.lines().last().unwrap_or_default());
    assert!(out.join("weft-test.oci.tar").exists(), "{log}");

    // Unpacked as a runtime would: its configuration and its files.
    let bundle = dir.path().join("bundle");
    let image = format!("{}:test", out.join("oci").display());
    let (ok, text) = run("umoci", &["unpack", "--image", &image, bundle.to_str().unwrap()]);
    assert!(ok, "{text}");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["process"]["args"], serde_json::json!(["/usr/local/bin/weft"]));
    assert_eq!(
        (config["process"]["user"]["uid"].as_u64(), config["process"]["user"]["gid"].as_u64()),
        (Some(1000), Some(1000))
    );
    let rootfs = bundle.join("rootfs");
    for shell in ["bin/sh", "usr/bin/sh", "bin/bash"] {
        assert!(!rootfs.join(shell).exists(), "the image has no shell, but {shell} is there");
    }
    // What a runtime provides: /dev/null (iptables' stdin).
    std::fs::create_dir_all(rootfs.join("dev")).unwrap();
    let (ok, text) = run("mknod", &["-m", "666", rootfs.join("dev/null").to_str().unwrap(), "c", "1", "3"]);
    assert!(ok, "{text}");
    let root = rootfs.to_str().unwrap();

    // weft dev, as the image's user, reached from outside.
    let http = format!("127.0.0.1:{}", free_port());
    let _dev = Process(
        Command::new("chroot")
            .args(["--userspec=1000:1000", root, "/usr/local/bin/weft", "dev", "--http-addr", &http])
            .args(["--dns-addr", &format!("127.0.0.1:{}", free_port())])
            .args(["--rpc-addr", &format!("127.0.0.1:{}", free_port())])
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/sbin:/usr/bin")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let client = HttpClient::new(&http, None);
    eventually("weft dev from the image to take a write", Duration::from_secs(30), || async {
        (client.put("/v1/kv/from-the-image", "yes").await.ok()?.status == 200).then_some(())
    })
    .await;
    assert_eq!(client.get("/v1/kv/from-the-image?raw").await.unwrap().text(), "yes");

    // The init container's rules, with the image's iptables, in a network
    // namespace of its own.
    let script = format!(
        "chroot {root} /usr/local/bin/weft k8s redirect-traffic >/dev/null && chroot {root} /usr/sbin/iptables -t nat -S"
    );
    let (ok, rules) = run("unshare", &["-n", "sh", "-c", &script]);
    assert!(ok, "{rules}");
    assert!(
        rules.contains("-N WEFT_OUTPUT") && rules.contains("--uid-owner 5995") && rules.contains("REDIRECT"),
        "{rules}"
    );
}

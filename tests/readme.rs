//! The documentation runs as written: every shell block of README.md and
//! examples/*/README.md marked `<!-- runnable -->` (on the line before its
//! fence) runs, in order, against one fresh `weft dev` per file, with
//! `weft` on the PATH, in a scratch directory. The only edits are the
//! addresses: the README's 127.0.0.1:8500 and port 8600 become the ports
//! this test's `weft dev` got.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{dig_available, eventually, free_port, weft_bin, Process};
use weft_api::client::HttpClient;

const MARK: &str = "<!-- runnable -->";

/// The marked shell blocks of `markdown`, with the line each starts on.
fn runnable_blocks(markdown: &str) -> Vec<(usize, String)> {
    let lines: Vec<&str> = markdown.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() == MARK {
            let fence = lines.get(i + 1).map(|l| l.trim()).unwrap_or_default();
            assert!(fence == "```sh", "line {}: {MARK} must come right before a ```sh fence, not {fence:?}", i + 1);
            let start = i + 2;
            let end = (start..lines.len()).find(|&j| lines[j].trim() == "```").expect("an unclosed block");
            blocks.push((start + 1, lines[start..end].join("\n")));
            i = end;
        }
        i += 1;
    }
    blocks
}

fn documents() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut documents = vec![root.join("README.md")];
    for example in std::fs::read_dir(root.join("examples")).unwrap().flatten() {
        let readme = example.path().join("README.md");
        if readme.exists() {
            documents.push(readme);
        }
    }
    documents
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runnable_blocks_in_the_readmes_run_as_written() {
    let curl = Command::new("curl").arg("--version").output().is_ok();
    if !dig_available() || !curl {
        assert!(curl || std::env::var_os("WEFT_CI").is_none(), "curl is required in CI");
        return;
    }
    let weft_dir = Path::new(weft_bin()).parent().unwrap().to_owned();
    let path = format!("{}:{}", weft_dir.display(), std::env::var("PATH").unwrap_or_default());
    let mut ran = 0;
    for document in documents() {
        let blocks = runnable_blocks(&std::fs::read_to_string(&document).unwrap());
        if blocks.is_empty() {
            continue;
        }
        let (http, dns) = (format!("127.0.0.1:{}", free_port()), free_port());
        let scratch = tempfile::tempdir().unwrap();
        let _dev = Process(
            Command::new(weft_bin())
                .args(["dev", "--http-addr", &http, "--dns-addr", &format!("127.0.0.1:{dns}")])
                .args(["--rpc-addr", &format!("127.0.0.1:{}", free_port())])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let client = HttpClient::new(&http, None);
        eventually("weft dev to serve", Duration::from_secs(20), || async {
            (client.get("/v1/status/leader").await.ok()?.text().len() > 2).then_some(())
        })
        .await;
        for (line, block) in blocks {
            let script = block
                .replace("localhost:8500", &http)
                .replace("127.0.0.1:8500", &http)
                .replace("-p 8600", &format!("-p {dns}"));
            let output = Command::new("bash")
                .args(["-eo", "pipefail", "-c", &script])
                .current_dir(scratch.path())
                .env("PATH", &path)
                .env("WEFT_HTTP_ADDR", &http)
                .output()
                .unwrap();
            let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
            println!("{}:{line}:\n{stdout}", document.display());
            assert!(output.status.success(), "{}:{line} failed:\n{script}\n{stdout}\n{stderr}", document.display());
            ran += 1;
        }
    }
    assert!(ran >= 2, "the README's runnable blocks were not found ({ran} ran)");
}

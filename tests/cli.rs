//! The `weft` CLI as scripts and people use it: messages, `--format json`,
//! exit codes, config files, and `weft dev`.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::{eventually, free_port, weft, weft_bin, Cluster};
use weft_api::client::HttpClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_commands_print_and_exit_like_consul() {
    let cluster = Cluster::servers(1).await;
    let addr = cluster.specs[0].http_addr.clone();
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--http-addr", &addr]);
        weft(&all)
    };

    let (code, stdout, _) = run(&["kv", "put", "greeting", "hello"]);
    assert_eq!((code, stdout.trim()), (0, "Success! Data written to: greeting"));
    let (code, stdout, _) = run(&["kv", "get", "greeting"]);
    assert_eq!((code, stdout.as_str()), (0, "hello\n"));

    let (code, _, stderr) = run(&["kv", "get", "missing"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("No key exists at: missing"), "{stderr}");

    let (code, _, stderr) = run(&["kv", "put", "--cas", "--modify-index", "0", "greeting", "again"]);
    assert_eq!(code, 1, "CAS on an existing key fails");
    assert!(stderr.contains("CAS failed"), "{stderr}");

    let (code, stdout, _) = run(&["kv", "get", "greeting", "--format", "json"]);
    assert_eq!(code, 0);
    let entries: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(entries[0]["Key"], "greeting");

    run(&["kv", "put", "dir/a", "1"]);
    run(&["kv", "put", "dir/b", "2"]);
    let (_, stdout, _) = run(&["kv", "get", "--recurse", "dir/"]);
    assert_eq!(stdout, "dir/a:1\ndir/b:2\n");
    let (code, stdout, _) = run(&["kv", "delete", "--recurse", "dir/"]);
    assert_eq!((code, stdout.trim()), (0, "Success! Deleted key: dir/"));

    // WEFT_HTTP_ADDR works in place of --http-addr.
    let output = Command::new(weft_bin())
        .args(["kv", "get", "greeting"])
        .env("WEFT_HTTP_ADDR", &addr)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "hello\n");

    let (code, stdout, _) = run(&["catalog", "nodes"]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("Node"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_save_and_restore_round_trip() {
    let cluster = Cluster::servers(1).await;
    let addr = cluster.specs[0].http_addr.clone();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.snap");
    let file = file.to_str().unwrap();

    weft(&["kv", "put", "k", "before", "--http-addr", &addr]);
    let (code, stdout, stderr) = weft(&["snapshot", "save", file, "--http-addr", &addr]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    weft(&["kv", "put", "k", "after", "--http-addr", &addr]);
    let (code, _, _) = weft(&["snapshot", "restore", file, "--http-addr", &addr]);
    assert_eq!(code, 0);
    let (_, stdout, _) = weft(&["kv", "get", "k", "--http-addr", &addr]);
    assert_eq!(stdout, "before\n");
}

#[test]
fn an_unreachable_agent_is_a_clear_error_with_exit_1() {
    let addr = format!("127.0.0.1:{}", free_port());
    let (code, _, stderr) = weft(&["kv", "get", "k", "--http-addr", &addr]);
    assert_eq!(code, 1);
    assert!(stderr.contains("could not reach the Weft agent"), "{stderr}");
}

#[test]
fn an_invalid_config_exits_64_listing_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.hcl");
    std::fs::write(&file, "bootstrap_expect = 0\nhttp_addr = \"nowhere\"\n").unwrap();
    let (code, _, stderr) = weft(&["agent", "--config-file", file.to_str().unwrap()]);
    assert_eq!(code, 64, "{stderr}");
    for problem in ["data_dir is required", "bootstrap_expect must be at least 1", "http_addr \"nowhere\""] {
        assert!(stderr.contains(problem), "{stderr} should mention {problem}");
    }
    std::fs::write(&file, "node_nmae = \"typo\"\n").unwrap();
    let (code, _, stderr) = weft(&["agent", "--config-file", file.to_str().unwrap()]);
    assert_eq!(code, 64);
    assert!(stderr.contains("node_nmae"), "{stderr}");
}

#[test]
fn validate_checks_config_files_and_directories_without_starting_anything() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("weft.d");
    std::fs::create_dir(&config).unwrap();
    std::fs::write(
        config.join("agent.hcl"),
        "data_dir = \"/var/lib/weft\"\nretry_join = [\"10.0.0.1\"]\ntls {\n  defaults {\n    ca_file = \"/etc/weft.d/ca.pem\"\n  }\n}\n",
    )
    .unwrap();
    std::fs::write(config.join("web.hcl"), "service {\n  name = \"web\"\n  port = 8080\n}\n").unwrap();
    let (code, stdout, stderr) = weft(&["validate", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), "Configuration is valid!");
    let (code, stdout, _) = weft(&["validate", "--quiet", config.to_str().unwrap()]);
    assert_eq!((code, stdout.as_str()), (0, ""));

    // A service that could not run, in a file given after the directory.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"service": {"name": "db", "port": 70000}}"#).unwrap();
    let (code, _, stderr) = weft(&["validate", config.to_str().unwrap(), bad.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("70000"), "{stderr}");

    // Typos inside a service block are named with the field meant, all of them.
    let typo = dir.path().join("typo.hcl");
    std::fs::write(
        &typo,
        "service {\n  name = \"web\"\n  port = 80\n  tagz = [\"a\"]\n  chek {\n    ttl = \"10s\"\n  }\n}\n",
    )
    .unwrap();
    let (code, _, stderr) = weft(&["validate", config.to_str().unwrap(), typo.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(r#""chek" (did you mean "Check"?)"#) && stderr.contains(r#""tagz" (did you mean "Tags"?)"#),
        "{stderr}"
    );
    // ... at every depth, with the file and the line of the service.
    let deep = dir.path().join("deep.hcl");
    std::fs::write(
        &deep,
        "service {\n  name = \"web\"\n  port = 80\n}\nservice {\n  name = \"api\"\n  port = 81\n  connect {\n    \
         sidecar_service {\n      proxy {\n        upstreamz = []\n      }\n    }\n  }\n}\n",
    )
    .unwrap();
    let (code, _, stderr) = weft(&["validate", config.to_str().unwrap(), deep.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    let expected = format!(
        "{}:5: service #2: unknown field in the Connect.SidecarService.Proxy definition: \"upstreamz\" (did you mean \"Upstreams\"?)",
        deep.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");

    // Agent settings: every wrong one in a file, each with its line and key.
    let settings = dir.path().join("settings.hcl");
    std::fs::write(&settings, "datacenter = \"dc1\"\nserver = yes\nports {\n  http = \"x\"\n}\nnode_nmae = \"a\"\n")
        .unwrap();
    let (code, _, stderr) = weft(&["validate", settings.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    let at = |line: usize, text: &str| format!("{}:{line}: {text}", settings.display());
    for expected in [
        at(2, "server: invalid type"),
        at(4, "ports.http: invalid type"),
        at(6, "node_nmae: unknown setting (did you mean node_name?)"),
    ] {
        assert!(stderr.contains(&expected), "{expected:?} in {stderr}");
    }

    // `weft agent`'s flags, as the README's client agent is started: a
    // directory with only services in it is valid with them, not without.
    let services = dir.path().join("services.d");
    std::fs::create_dir(&services).unwrap();
    std::fs::write(services.join("web.hcl"), "service {\n  name = \"web\"\n  port = 8080\n}\n").unwrap();
    let readme = [
        "validate",
        "--node",
        "vm1",
        "--data-dir",
        "/tmp/vm1",
        "--retry-join",
        "127.0.0.1:8300",
        "--http-addr",
        "127.0.0.1:8502",
        "--dns-addr",
        "127.0.0.1:8602",
        "--config-dir",
        services.to_str().unwrap(),
    ];
    let (code, stdout, stderr) = weft(&readme);
    assert_eq!((code, stdout.trim()), (0, "Configuration is valid!"), "{stderr}");
    let (code, _, stderr) = weft(&["validate", "--config-dir", services.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("data_dir is required"), "{stderr}");
    // A retry_join address the agent could never dial is refused at load.
    let (code, _, stderr) = weft(&["validate", "--data-dir", "/tmp/vm1", "--retry-join", "10.0.0.1:99999"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains(r#"retry_join "10.0.0.1:99999": the port must be"#), "{stderr}");
    // A flag's value is checked as the agent checks it.
    let (code, _, stderr) = weft(&["validate", "--data-dir", "/tmp/vm1", "--server", "--bootstrap-expect", "0"]);
    assert_eq!(code, 1, "{stderr}");
}

/// Kills the child on drop, so a failing test leaves nothing running.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_configured_by_an_hcl_file_serves_as_configured() {
    let dir = tempfile::tempdir().unwrap();
    let (http_port, rpc_port) = (free_port(), free_port());
    let config = format!(
        "node_name = \"from-file\"\ndatacenter = \"east\"\nserver = true\nbootstrap_expect = 1\ndata_dir = \"{}\"\nports {{\n  http = {http_port}\n  server = {rpc_port}\n  dns = {}\n}}\n",
        dir.path().join("data").display(),
        free_port()
    );
    let file = dir.path().join("server.hcl");
    std::fs::write(&file, config).unwrap();
    let _agent = Running(
        Command::new(weft_bin())
            .args(["agent", "--config-file", file.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let client = HttpClient::new(&format!("127.0.0.1:{http_port}"), None);
    let self_info = eventually("the agent to serve", Duration::from_secs(20), || async {
        let response = client.get("/v1/agent/self").await.ok()?;
        serde_json::from_slice::<serde_json::Value>(&response.body).ok()
    })
    .await;
    assert_eq!(self_info["Config"]["NodeName"], "from-file");
    assert_eq!(self_info["Config"]["Datacenter"], "east");
    let leader = eventually("a leader", Duration::from_secs(20), || async {
        let leader: String = serde_json::from_slice(&client.get("/v1/status/leader").await.ok()?.body).ok()?;
        (!leader.is_empty()).then_some(leader)
    })
    .await;
    assert_eq!(leader, format!("127.0.0.1:{rpc_port}"));
    // ?dc= for its own datacenter is fine; another is an error.
    assert_eq!(client.get("/v1/kv/x?dc=east").await.unwrap().status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weft_dev_needs_no_setup_and_says_what_to_try() {
    let (http_port, rpc_port) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let stderr_path = dir.path().join("dev.log");
    let _dev = Running(
        Command::new(weft_bin())
            .args([
                "dev",
                "--http-addr",
                &format!("127.0.0.1:{http_port}"),
                "--rpc-addr",
                &format!("127.0.0.1:{rpc_port}"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let client = HttpClient::new(&format!("127.0.0.1:{http_port}"), None);
    eventually("weft dev to accept a write", Duration::from_secs(20), || async {
        let response = client.put("/v1/kv/hello", "world").await.ok()?;
        (response.status == 200).then_some(())
    })
    .await;
    let banner = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(banner.contains("Try:") && banner.contains("weft kv put"), "{banner}");
    // Dev mode allows traffic no intention matches, and says so.
    assert!(banner.contains("ALLOWED in dev mode"), "{banner}");
    let http = format!("127.0.0.1:{http_port}");
    eventually("dev mode's default allow", Duration::from_secs(10), || async {
        let (code, out, _) = weft(&["intention", "check", "web", "api", "--http-addr", &http]);
        (code == 0 && out.contains("Allowed")).then_some(())
    })
    .await;
    let (code, _, err) = weft(&["intention", "create", "--deny", "web", "api", "--http-addr", &http]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = weft(&["intention", "check", "web", "api", "--http-addr", &http]);
    assert_eq!((code, out.trim()), (2, "Denied"));

    // Its log, written to a file, has no colour codes.
    let log = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(log.contains("agent ready") && !log.contains('\u{1b}'), "{log}");

    // A second `weft dev` on the same HTTP port names the port and exits
    // before it says it is ready.
    let second = Command::new(weft_bin())
        .args(["dev", "--http-addr", &http, "--rpc-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--dns-addr", &format!("127.0.0.1:{}", free_port())])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "{err}");
    assert!(err.contains(&format!("cannot listen for http on {http}")) && !err.contains("Try:"), "{err}");
}

/// `weft dev --help` lists what dev uses: not the flags for joining or
/// bootstrapping a cluster (dev is a lone server), which `weft agent
/// --help` and `weft validate --help` still list.
#[test]
fn weft_dev_help_lists_only_what_dev_uses() {
    let joining = ["--server", "--bootstrap-expect", "--retry-join", "--join-token", "--k8s"];
    let (code, dev, _) = weft(&["dev", "--help"]);
    assert_eq!(code, 0);
    assert!(dev.contains("--http-addr") && dev.contains("--acl"), "{dev}");
    for flag in joining {
        assert!(!dev.contains(flag), "weft dev --help lists {flag}:\n{dev}");
    }
    for command in ["agent", "validate"] {
        let (_, help, _) = weft(&[command, "--help"]);
        assert!(joining.iter().all(|flag| help.contains(flag)), "weft {command} --help:\n{help}");
    }
}

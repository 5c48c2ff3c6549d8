//! Server RPC over TLS, attacked through the real binary:
//! - a capture of the loopback traffic of a cluster (a server joining, an
//!   agent enrolling, a KV write, a leaf signed) finds no private key, no
//!   secret and no KV value in clear; the same capture of a plaintext
//!   cluster does find them, so the capture could see them;
//! - an anonymous peer sending a 1 GiB message, then opening 10,000
//!   connections, leaves the server's memory near idle and its other
//!   clients served;
//! - a running plaintext cluster moves to TLS in Consul's three steps with
//!   every write answered;
//! - agents' certificates renew under load without a failed call.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use support::{eventually, rss_kib, weft, weft_in, Cluster};

/// `tcpdump` is a real capture; CI installs it, so there it is required.
fn tcpdump_available() -> bool {
    let found = Command::new("tcpdump").arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        assert!(std::env::var_os("WEFT_CI").is_none(), "tcpdump is required in CI (apt-get install tcpdump)");
        eprintln!("skipping: tcpdump is not installed");
    }
    found
}

/// A capture of loopback TCP on `ports`, written to a file until stopped.
struct Capture {
    child: Child,
    file: PathBuf,
    /// What tcpdump said on stderr (it reports when it listens, and what it captured).
    said: std::sync::mpsc::Receiver<String>,
}

impl Capture {
    /// Starts tcpdump and waits until it says it is listening.
    fn start(dir: &Path, name: &str, ports: &[u16]) -> Capture {
        use std::io::BufRead;
        let file = dir.join(format!("{name}.pcap"));
        let filter = ports.iter().map(|p| format!("port {p}")).collect::<Vec<_>>().join(" or ");
        let mut child = Command::new("tcpdump")
            // Immediate mode: every packet is delivered (and written) as it
            // comes, not only when a kernel buffer block fills or times out.
            .args(["-i", "lo", "--immediate-mode", "-B", "32768", "-U", "-s", "0", "-w"])
            .arg(&file)
            .arg(format!("tcp and ({filter})"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run tcpdump");
        let stderr = child.stderr.take().expect("tcpdump's stderr");
        let (tell, said) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tell.send(line);
            }
        });
        let listening = said.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
        assert!(listening.contains("listening on lo"), "tcpdump did not start: {listening}");
        Capture { child, file, said }
    }

    /// Stops the capture; everything it saw.
    fn stop(mut self) -> Vec<u8> {
        std::thread::sleep(Duration::from_millis(500));
        let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
        let summary: Vec<String> = self.said.try_iter().collect();
        println!("tcpdump: {}", summary.join("; "));
        std::fs::read(&self.file).unwrap_or_default()
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn port(addr: &str) -> u16 {
    addr.rsplit_once(':').unwrap().1.parse().unwrap()
}

/// What crosses the servers' RPC ports while a fourth server joins (the
/// whole log: the CA keys), a client agent joins (with a token when
/// `tls`), writes `marker` and has a leaf signed. Returns the capture and
/// the secrets that must not be in it.
async fn capture_a_cluster_at_work(mut cluster: Cluster, tls: bool, marker: &str) -> (Vec<u8>, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let fourth = cluster.add_server_stopped(&[]);
    let ports: Vec<u16> = cluster.specs.iter().map(|s| port(&s.rpc_addr)).collect();
    let capture = Capture::start(dir.path(), "rpc", &ports);
    cluster.start_server(fourth);
    eventually("the fourth server to be a voter", Duration::from_secs(60), || async {
        let voters = cluster.voters_seen_by(0).await?;
        (voters.len() == 4).then_some(())
    })
    .await;
    let vm1 = cluster.add_client("vm1", &[]);
    cluster.wait_ready(vm1).await;
    let vm1_http = cluster.client(vm1);
    eventually("a KV write through vm1", Duration::from_secs(30), || async {
        let response = vm1_http.put("/v1/kv/secret-value", marker.to_owned()).await.ok()?;
        (response.status == 200).then_some(())
    })
    .await;
    let web = serde_json::json!({"Name": "web", "Port": 8080});
    assert_eq!(vm1_http.put("/v1/agent/service/register", web.to_string()).await.unwrap().status, 200);
    let leaf = eventually("a leaf for web", Duration::from_secs(30), || async {
        let response = vm1_http.get("/v1/agent/connect/ca/leaf/web").await.ok()?;
        (response.status == 200).then(|| response.text())
    })
    .await;
    let seen = capture.stop();
    let mut secrets = vec![marker.to_owned(), "PRIVATE KEY".to_owned()];
    let leaf: serde_json::Value = serde_json::from_str(&leaf).unwrap();
    assert!(leaf["PrivateKeyPEM"].as_str().unwrap().contains("PRIVATE KEY"));
    if tls {
        let credential = std::fs::read_to_string(cluster.data_dir(vm1).join("agent-credential.json")).unwrap();
        let credential: serde_json::Value = serde_json::from_str(&credential).unwrap();
        secrets.push(credential["secret"].as_str().unwrap().to_owned());
    }
    (seen, secrets)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_secret_crosses_the_wire_in_clear() {
    if !tcpdump_available() {
        return;
    }
    // With TLS: nothing.
    let marker = format!("kv-marker-{}", std::process::id());
    let (seen, secrets) = capture_a_cluster_at_work(Cluster::servers(3).await, true, &marker).await;
    println!("captured {} bytes of RPC with TLS", seen.len());
    assert!(seen.len() > 10_000, "the capture saw the traffic");
    for secret in &secrets {
        assert!(!contains(&seen, secret), "{secret:?} crossed the wire in clear");
    }
    // The same without TLS: the capture sees the value and the CA's key.
    let marker = format!("plain-marker-{}", std::process::id());
    let (seen, secrets) = capture_a_cluster_at_work(Cluster::plaintext(3).await, false, &marker).await;
    println!("captured {} bytes of RPC without TLS", seen.len());
    for secret in &secrets {
        assert!(contains(&seen, secret), "the capture should see {secret:?} in plaintext");
    }
}

/// This process's open-file limit, raised to `at_least` if allowed.
fn raise_open_files(at_least: u64) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    let hard = limit.maximum.unwrap_or(u64::MAX);
    if limit.current.is_some_and(|current| current < at_least) {
        limit.current = Some(at_least.min(hard));
        let _ = setrlimit(Resource::Nofile, limit);
    }
}

/// Sends one gRPC request to `RedeemJoinToken` whose message claims (and,
/// if read, carries) 1 GiB, from `source`, over TLS without a
/// certificate. Returns how many bytes the server took before it refused.
async fn send_a_gigabyte(cluster: &Cluster, source: &str) -> usize {
    use http_body_util::StreamBody;
    use hyper::body::{Bytes, Frame};
    const GIB: usize = 1 << 30;
    const CHUNK: usize = 64 * 1024;
    let tls = support::cluster_client_tls(cluster, None);
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let tcp = socket.connect(cluster.specs[0].rpc_addr.parse().unwrap()).await.unwrap();
    let stream = tokio_rustls::TlsConnector::from(tls.config()).connect(tls.server_name(), tcp).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let sent = Arc::new(AtomicUsize::new(0));
    let counted = sent.clone();
    let chunks = futures::stream::iter(0..GIB / CHUNK).map(move |i| {
        counted.fetch_add(CHUNK, Ordering::Relaxed);
        let mut chunk = vec![0u8; CHUNK];
        if i == 0 {
            chunk[1..5].copy_from_slice(&(GIB as u32 - 5).to_be_bytes());
        }
        Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(chunk)))
    });
    let request =
        hyper::Request::post(format!("http://{}/weft.cluster.v1.Cluster/RedeemJoinToken", cluster.specs[0].rpc_addr))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(StreamBody::new(chunks))
            .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(60), sender.send_request(request)).await;
    println!(
        "a 1 GiB message: {:?}",
        answer.as_ref().map(|r| r.as_ref().map(|r| r.headers().get("grpc-message").cloned()))
    );
    sent.load(Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_flood_leaves_the_server_near_idle_and_serving() {
    let mut cluster = Cluster::servers(3).await;
    let server = cluster.client(0);
    let pid = cluster.pid(0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = rss_kib(pid);
    // An attacker on another address of this host (loopback is a /8).
    let attacker = "127.0.0.2";

    let taken = send_a_gigabyte(&cluster, attacker).await;
    let after_message = rss_kib(pid);
    println!(
        "the server read {} KiB of the 1 GiB message; RSS idle {idle} KiB, after {after_message} KiB",
        taken / 1024
    );
    assert!(taken < 64 << 20, "the server read {taken} bytes of a message it should refuse");

    raise_open_files(12_000);
    let target: std::net::SocketAddr = cluster.specs[0].rpc_addr.parse().unwrap();
    let mut held = Vec::new();
    let started = Instant::now();
    for _ in 0..10_000 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{attacker}:0").parse().unwrap()).unwrap();
        if let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(2), socket.connect(target)).await {
            held.push(stream);
        }
    }
    println!("{} of 10,000 connections opened in {:?}", held.len(), started.elapsed());
    // While they are held: other clients are served, and memory stays near idle.
    let write = server.put("/v1/kv/during-the-flood", "served").await.unwrap();
    assert_eq!(write.text(), "true");
    let vm1 = cluster.add_client("vm1", &[]);
    cluster.wait_ready(vm1).await;
    eventually("a new agent to write during the flood", Duration::from_secs(30), || async {
        let response = cluster.client(vm1).put("/v1/kv/from-vm1", "x").await.ok()?;
        (response.status == 200).then_some(())
    })
    .await;
    let during = rss_kib(pid);
    println!("RSS with 10,000 connections attempted: {during} KiB (idle {idle} KiB)");
    assert!(during < idle + 50 * 1024, "the server grew by {} KiB", during.saturating_sub(idle));
    drop(held);
}

/// The tls block for a server, with `verify` flags.
fn server_tls(dir: &Path, i: usize, verify_incoming: bool, verify_outgoing: bool) -> String {
    let path = dir.join(format!("s{i}-tls-{verify_incoming}-{verify_outgoing}.hcl"));
    let ca = dir.join("weft-agent-ca.pem").display().to_string();
    let cert = dir.join(format!("dc1-server-weft-{i}.pem")).display().to_string();
    let key = dir.join(format!("dc1-server-weft-{i}-key.pem")).display().to_string();
    std::fs::write(
        &path,
        format!(
            "tls {{\n  defaults {{\n    ca_file = {ca:?}\n    cert_file = {cert:?}\n    key_file = {key:?}\n    verify_incoming = {verify_incoming}\n    verify_outgoing = {verify_outgoing}\n  }}\n}}\n"
        ),
    )
    .unwrap();
    path.display().to_string()
}

/// Restarts agent `i` with `extra_args`, and waits until it answers, the
/// cluster has a leader, every server is alive, and `written` has grown by
/// a few writes since.
/// Restarts agent `i` the way an operator's rolling upgrade does
/// (`systemctl restart`: SIGTERM, wait for the exit, start). A graceful stop
/// answers the writes the leader proposed; a SIGKILLed leader would leave a
/// write in flight unknown, as Consul's would.
async fn restart_with(cluster: &mut Cluster, i: usize, extra_args: Vec<String>, written: &AtomicUsize) {
    assert!(cluster.stop(i), "{} did not stop by itself", cluster.specs[i].name);
    cluster.specs[i].extra_args = extra_args;
    cluster.start_server(i);
    cluster.wait_ready(i).await;
    cluster.wait_for_leader().await;
    let names: Vec<String> = cluster.specs.iter().filter(|s| s.server).map(|s| s.name.clone()).collect();
    cluster.wait_alive(&names).await;
    let before = written.load(Ordering::Relaxed);
    eventually("writes to go on after the restart", Duration::from_secs(30), || async {
        (written.load(Ordering::Relaxed) >= before + 3).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_plaintext_cluster_moves_to_tls_with_every_write_answered() {
    let mut cluster = Cluster::plaintext(3).await;
    let vm1 = cluster.add_client("vm1", &[]);
    let vm2 = cluster.add_client("vm2", &[]);
    cluster.wait_ready(vm1).await;
    cluster.wait_ready(vm2).await;
    let agents = [cluster.specs[vm1].http_addr.clone(), cluster.specs[vm2].http_addr.clone()];
    let tls = tempfile::tempdir().unwrap();
    weft_in(tls.path(), &["tls", "ca", "create"]);
    for _ in 0..3 {
        weft_in(tls.path(), &["tls", "cert", "create", "-server"]);
    }

    // A writer through the client agents: each write must be answered by one of them.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let progress = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (stop, agents, progress) = (stop.clone(), agents.clone(), progress.clone());
        tokio::spawn(async move {
            let (mut written, mut failed) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                let key = format!("/v1/kv/upgrade/{written}");
                let mut answered = false;
                let mut why = Vec::new();
                for agent in &agents {
                    let client = weft_api::client::HttpClient::new(agent, None).with_timeout(Duration::from_secs(15));
                    match client.put(&key, "x").await {
                        Ok(r) if r.text() == "true" => {
                            answered = true;
                            break;
                        }
                        Ok(r) => why.push(format!("{agent}: {} {}", r.status, r.text())),
                        Err(e) => why.push(format!("{agent}: {e}")),
                    }
                }
                if answered {
                    written += 1;
                    progress.store(written, Ordering::Relaxed);
                } else {
                    eprintln!("{key} not answered: {why:?}");
                    failed += 1;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (written, failed)
        })
    };
    let started = Instant::now();
    // 1. Servers with certificates, taking TLS and plaintext, dialing plaintext.
    for i in 0..3 {
        let args = vec!["--config-file".into(), server_tls(tls.path(), i, false, false)];
        restart_with(&mut cluster, i, args, &progress).await;
    }
    // 2. Agents dial TLS (with the CA, no certificate yet), then servers do.
    let ca_config = tls.path().join("client-ca.hcl");
    let ca = tls.path().join("weft-agent-ca.pem").display().to_string();
    std::fs::write(&ca_config, format!("tls {{\n  defaults {{\n    ca_file = {ca:?}\n  }}\n}}\n")).unwrap();
    for agent in [vm1, vm2] {
        restart_with(&mut cluster, agent, vec!["--config-file".into(), ca_config.display().to_string()], &progress)
            .await;
    }
    for i in 0..3 {
        let args = vec!["--config-file".into(), server_tls(tls.path(), i, false, true)];
        restart_with(&mut cluster, i, args, &progress).await;
    }
    // 3. Agents enroll with join tokens; then the servers require certificates.
    for agent in [vm1, vm2] {
        let http = &cluster.specs[0].http_addr;
        let (code, token, err) = weft(&["operator", "join-token", "create", "--http-addr", http]);
        assert_eq!(code, 0, "{err}");
        let args =
            vec!["--config-file".into(), ca_config.display().to_string(), "--join-token".into(), token.trim().into()];
        restart_with(&mut cluster, agent, args, &progress).await;
    }
    for i in 0..3 {
        let args = vec!["--config-file".into(), server_tls(tls.path(), i, true, true)];
        restart_with(&mut cluster, i, args, &progress).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let (written, failed) = writer.await.unwrap();
    println!("moved to TLS in {:?}: {written} writes answered, {failed} not", started.elapsed());
    assert_eq!(failed, 0);
    // Now plaintext is refused, and the agents serve with their certificates.
    let plaintext = weft_api::proto::cluster::cluster_client::ClusterClient::connect(format!(
        "http://{}",
        cluster.specs[0].rpc_addr
    ))
    .await;
    let answered = match plaintext {
        Ok(mut client) => client.info(weft_api::proto::cluster::InfoRequest {}).await.is_ok(),
        Err(_) => false,
    };
    assert!(!answered, "plaintext is still answered");
    let response = cluster.client(vm1).put("/v1/kv/after", "x").await.unwrap();
    assert_eq!(response.text(), "true");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_certificates_renew_under_load_without_a_failed_call() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short-leaves.hcl");
    std::fs::write(&short, "connect {\n  ca_config {\n    leaf_cert_ttl = \"1m\"\n  }\n}\n").unwrap();
    let mut cluster = Cluster::servers_with(3, &["--config-file", short.to_str().unwrap()]).await;
    let vm1 = cluster.add_client("vm1", &[]);
    cluster.wait_ready(vm1).await;
    let cert_file = cluster.data_dir(vm1).join("agent-cert.pem");
    let first =
        eventually("vm1's certificate", Duration::from_secs(30), || async { std::fs::read_to_string(&cert_file).ok() })
            .await;
    let client = cluster.client(vm1);
    let (mut written, mut failed) = (0, 0);
    let started = Instant::now();
    // Issued with a minute to live (and backdated a minute), it is renewed
    // 20 s after it was issued.
    while started.elapsed() < Duration::from_secs(35) {
        match client.put(&format!("/v1/kv/renewal/{written}"), "x").await {
            Ok(response) if response.text() == "true" => written += 1,
            other => {
                failed += 1;
                println!("a write failed: {:?}", other.map(|r| r.text()));
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let renewed = std::fs::read_to_string(&cert_file).unwrap();
    println!("{written} writes through vm1 over {:?}, {failed} failed", started.elapsed());
    assert_ne!(renewed, first, "the certificate was renewed");
    assert_eq!(failed, 0);
}

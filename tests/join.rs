//! Joining, and what a joined agent may do, end to end. Three servers with
//! TLS on RPC serve only callers that prove who they are with a
//! certificate: plaintext, another CA's certificate, another datacenter's
//! server certificate and no certificate at all get nowhere but discovery.
//! A client agent started with nothing but a join token enrolls and gets a
//! certificate for its node (its key never leaves it), keeps it across a
//! restart, and the used-up token lets no second agent in. With its own
//! certificate, that agent may write only its own node's entries and KV:
//! the CA, a restore, join tokens, another node's entries, a leaf or a
//! heartbeat for another node are refused, and nothing changes. Revoking
//! its enrollment refuses its very next call.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{eventually, free_port, weft, weft_bin, weft_in, Cluster};
use weft_api::catalog::{Deregistration, Node, Registration};
use weft_api::command::Command as RaftCommand;
use weft_api::join::JoinTokenRecord;
use weft_api::mesh::CaState;
use weft_api::proto::cluster::cluster_client::ClusterClient;
use weft_api::proto::cluster::{
    ApplyRequest, HeartbeatRequest, InfoRequest, JoinRequest, ReadIndexRequest, SignLeafRequest,
};

/// A client agent given nothing but a join token (and where to listen).
struct TokenAgent {
    http_addr: String,
    args: Vec<String>,
    dir: std::path::PathBuf,
    log: std::path::PathBuf,
}

impl TokenAgent {
    fn new(dir: &std::path::Path, name: &str, token: &str) -> TokenAgent {
        let http_addr = format!("127.0.0.1:{}", free_port());
        let args = vec![
            "agent".to_owned(),
            "--node".into(),
            name.into(),
            "--data-dir".into(),
            dir.join(name).display().to_string(),
            "--http-addr".into(),
            http_addr.clone(),
            "--dns-addr".into(),
            format!("127.0.0.1:{}", free_port()),
            "--join-token".into(),
            token.into(),
        ];
        TokenAgent { http_addr, args, dir: dir.join(name), log: dir.join(format!("{name}.log")) }
    }

    fn start(&self) -> Child {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        Command::new(weft_bin())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its certificate and key, as it keeps them.
    fn identity(&self) -> (String, String) {
        let read = |file: &str| std::fs::read_to_string(self.dir.join(file)).unwrap();
        (read("agent-cert.pem"), read("agent-key.pem"))
    }
}

/// Waits (at most 30 s) for `process` to exit.
async fn exited(process: &mut Child, name: &str) -> std::process::ExitStatus {
    for _ in 0..300 {
        if let Some(status) = process.try_wait().unwrap() {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{name} is still running after 30 s");
}

/// `weft kv put` through the agent at `http`: (exit code, stderr).
fn kv_put(http: &str, key: &str) -> (i32, String) {
    let (code, _, err) = weft(&["kv", "put", key, "v", "--http-addr", http]);
    (code, err)
}

/// Runs a TLS server presenting `identity` (certificate and key, PEM), as
/// an impostor would, and dials it the way agents and servers dial
/// servers: whether the handshake completed, and why not.
async fn dial_impostor(cluster: &Cluster, identity: (&str, &str)) -> Result<(), String> {
    use tokio_rustls::rustls;
    let identity = weft_tls::Identity::from_pem(identity.0, identity.1, "impostor").unwrap();
    let config =
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(identity.chain, identity.key)
            .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    tokio::spawn(async move {
        if let Ok((stream, _)) = listener.accept().await {
            let _ = acceptor.accept(stream).await;
        }
    });
    let tls = support::cluster_client_tls(cluster, None);
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let connected = tokio_rustls::TlsConnector::from(tls.config()).connect(tls.server_name(), tcp).await;
    connected.map(drop).map_err(|e| e.to_string())
}

fn apply(command: &RaftCommand) -> ApplyRequest {
    ApplyRequest { command: postcard::to_allocvec(command).unwrap(), acl_token: String::new() }
}

/// What an attacker with vm1's certificate tries: the CA, a restore, join
/// tokens, an intention, another node's catalog entries, a leaf for another
/// node's service, another node's heartbeat, a server's own calls. Each is
/// refused by name, and the servers' state is unchanged.
async fn the_joined_agent_may_not_act_beyond_its_node(
    vm1: &mut ClusterClient<tonic::transport::Channel>,
    cluster: &Cluster,
) {
    let server = cluster.client(0);
    let s1_service = serde_json::json!({"Name": "payments", "Port": 9000});
    assert_eq!(server.put("/v1/agent/service/register", s1_service.to_string()).await.unwrap().status, 200);
    let state = || async {
        let roots = server.get("/v1/connect/ca/roots").await.unwrap().text();
        let roots: serde_json::Value = serde_json::from_str(&roots).unwrap();
        let node = server.get("/v1/catalog/node/s1").await.unwrap().text();
        let node: serde_json::Value = serde_json::from_str(&node).unwrap();
        let http = &cluster.specs[0].http_addr;
        let (_, tokens, _) = weft(&["operator", "join-token", "list", "--format", "json", "--http-addr", http]);
        let kv = server.get("/v1/kv/?recurse").await.unwrap().text();
        (roots["ActiveRootID"].clone(), node["Node"]["Address"].clone(), node["Services"].clone(), tokens, kv)
    };
    let before = eventually("payments in the catalog", Duration::from_secs(10), || async {
        let state = state().await;
        state.2.get("payments").is_some().then_some(state)
    })
    .await;

    let s1 = Node { name: "s1".into(), address: "203.0.113.66".into(), ..Default::default() };
    let evil_token = JoinTokenRecord {
        id: "evil".into(),
        secret_sha256: "0".repeat(64),
        expires_at: i64::MAX,
        uses_left: 1000,
        ..Default::default()
    };
    let attacks = [
        ("replace the CA", RaftCommand::CaSetState(CaState::default())),
        ("restore a snapshot", RaftCommand::Restore { snapshot: Vec::new() }),
        ("make a join token", RaftCommand::JoinTokenCreate(evil_token)),
        ("revoke another node", RaftCommand::AgentCredentialDelete { node: "vm2".into() }),
        ("delete an intention", RaftCommand::IntentionDelete { id: "any".into() }),
        ("register on s1", RaftCommand::Register(Box::new(Registration { node: s1.clone(), ..Default::default() }))),
        ("deregister s1", RaftCommand::Deregister(Deregistration { node: "s1".into(), ..Default::default() })),
        ("make s1 leave", RaftCommand::NodeLeave(Box::new(s1))),
        (
            "hide a forbidden write in a batch",
            RaftCommand::Batch(vec![
                RaftCommand::KvSet { key: "innocent".into(), value: b"x".to_vec(), flags: 0, cas: None },
                RaftCommand::Deregister(Deregistration { node: "s1".into(), ..Default::default() }),
            ]),
        ),
    ];
    for (what, command) in attacks {
        let refused = vm1.apply(apply(&command)).await.expect_err(what);
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{what}: {refused:?}");
        println!("vm1 tried to {what}: {}", refused.message());
    }
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap().serialize_request(&key).unwrap();
    let leaf =
        |node: &str| SignLeafRequest { csr_pem: csr.pem().unwrap(), node: node.into(), service: "payments".into() };
    let refused = vm1.sign_leaf(leaf("s1")).await.expect_err("a leaf naming s1");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    println!("vm1 asked for a leaf for s1's payments: {}", refused.message());
    // Naming no node means vm1, where payments is not registered (refused by
    // the leader; a follower sends the caller there).
    let refused = vm1.sign_leaf(leaf("")).await.expect_err("a leaf for a service vm1 does not have");
    assert!(matches!(refused.code(), tonic::Code::PermissionDenied | tonic::Code::FailedPrecondition), "{refused:?}");
    let node = postcard::to_allocvec(&Node { name: "s1".into(), ..Default::default() }).unwrap();
    let refused = vm1.heartbeat(HeartbeatRequest { node }).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    let join = JoinRequest { id: 99, name: "rogue".into(), rpc_addr: "127.0.0.1:1".into(), http_addr: String::new() };
    assert_eq!(vm1.join(join).await.unwrap_err().code(), tonic::Code::PermissionDenied);
    assert_eq!(state().await, before, "a refused write changed the state");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_token_is_all_a_new_agent_needs_and_the_servers_serve_no_one_else() {
    let mut cluster = Cluster::servers(3).await;
    let server_http = cluster.specs[0].http_addr.clone();
    let tls_dir = cluster.tls_dir.clone().unwrap();

    // Without a certificate: discovery, and nothing else.
    let mut anonymous = cluster.rpc_client(0, None);
    assert!(anonymous.info(InfoRequest {}).await.is_ok());
    let refused = anonymous.apply(ApplyRequest { command: Vec::new(), acl_token: String::new() }).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    println!("apply without a certificate: {}", refused.message());
    // Plaintext gets no answer at all.
    let plaintext = ClusterClient::connect(format!("http://{}", cluster.specs[0].rpc_addr)).await;
    let answered = match plaintext {
        Ok(mut client) => client.info(InfoRequest {}).await.is_ok(),
        Err(_) => false,
    };
    assert!(!answered, "a plaintext call was answered");
    // Another datacenter's server certificate, from the same CA, is no
    // server here: the servers refuse its calls, and agents refuse it as a
    // server (verify_server_hostname).
    let (_, out) = weft_in(&tls_dir, &["tls", "cert", "create", "-server", "-dc", "dc2"]);
    let saved: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("==> Saved ")).collect();
    let dc2 = (std::fs::read_to_string(saved[0]).unwrap(), std::fs::read_to_string(saved[1]).unwrap());
    let mut as_dc2 = cluster.rpc_client(0, Some((&dc2.0, &dc2.1)));
    let refused = as_dc2.read_index(ReadIndexRequest { linearizable: false }).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    let posing = dial_impostor(&cluster, (&dc2.0, &dc2.1)).await.expect_err("dc2's server posing as dc1's");
    println!("a dc2 server certificate posing as a dc1 server: {posing}");
    let read = |file: &str| std::fs::read_to_string(tls_dir.join(file)).unwrap();
    let real = (read("dc1-server-weft-0.pem"), read("dc1-server-weft-0-key.pem"));
    assert_eq!(dial_impostor(&cluster, (&real.0, &real.1)).await, Ok(()), "a real server certificate is accepted");
    // A certificate from another CA does not get through the handshake.
    let other_ca = tempfile::tempdir().unwrap();
    weft_in(other_ca.path(), &["tls", "ca", "create"]);
    let (_, out) = weft_in(other_ca.path(), &["tls", "cert", "create", "-server"]);
    let saved: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("==> Saved ")).collect();
    let forged = (std::fs::read_to_string(saved[0]).unwrap(), std::fs::read_to_string(saved[1]).unwrap());
    let mut as_forged = cluster.rpc_client(0, Some((&forged.0, &forged.1)));
    let refused = as_forged.read_index(ReadIndexRequest { linearizable: false }).await.unwrap_err();
    assert_ne!(refused.code(), tonic::Code::Ok);
    println!("a certificate from another CA: {:?} {}", refused.code(), refused.message());

    // A client agent with the servers' CA but no enrollment gets nowhere.
    let intruder = cluster.add_client_without_token("intruder", &[]);
    cluster.wait_ready(intruder).await;
    let (code, err) = kv_put(&cluster.specs[intruder].http_addr, "intruder");
    assert_ne!(code, 0);
    println!("a write through an agent without a certificate: {}", err.trim());
    assert!(err.contains("certificate"), "{err}");
    cluster.kill(intruder);

    // A one-use token: all vm1 is given.
    let (code, token, err) =
        weft(&["operator", "join-token", "create", "--description", "vm1", "--http-addr", &server_http]);
    assert_eq!(code, 0, "{err}");
    let token = token.trim().to_owned();
    assert!(token.starts_with("weftjoin1."), "{token}");
    let dir = tempfile::tempdir().unwrap();
    let vm1 = TokenAgent::new(dir.path(), "vm1", &token);
    let mut vm1_process = vm1.start();
    let started = Instant::now();
    eventually("vm1 to join with the token and write", Duration::from_secs(30), || async {
        (kv_put(&vm1.http_addr, "from-vm1").0 == 0).then_some(())
    })
    .await;
    println!(
        "vm1 started with only a join token; it wrote through the servers {} ms later",
        started.elapsed().as_millis()
    );
    let (code, nodes, _) = weft(&["catalog", "nodes", "--http-addr", &server_http]);
    assert!(code == 0 && nodes.contains("vm1"), "{nodes}");
    use std::os::unix::fs::PermissionsExt;
    let key_mode = std::fs::metadata(vm1.dir.join("agent-key.pem")).unwrap().permissions().mode();
    assert_eq!(key_mode & 0o077, 0, "the agent's key is its own");

    // With its certificate, vm1 is vm1 and nothing more.
    let (cert, key) = vm1.identity();
    let mut as_vm1 = cluster.rpc_client(0, Some((&cert, &key)));
    the_joined_agent_may_not_act_beyond_its_node(&mut as_vm1, &cluster).await;
    // ... and its certificate cannot pose as a server.
    let posing = dial_impostor(&cluster, (&cert, &key)).await.expect_err("an agent's certificate posing as a server");
    println!("vm1's certificate posing as a server: {posing}");

    // Join tokens are made on servers only: an agent's API is open to its neighbours.
    let (code, _, err) = weft(&["operator", "join-token", "create", "--http-addr", &vm1.http_addr]);
    assert_ne!(code, 0);
    assert!(err.contains("on a server"), "{err}");

    // The token is used up: a second agent with it is refused and stops.
    let (_, list, _) = weft(&["operator", "join-token", "list", "--http-addr", &server_http]);
    assert!(!list.contains("vm1"), "a used-up token is gone: {list}");
    let vm2 = TokenAgent::new(dir.path(), "vm2", &token);
    let mut vm2_process = vm2.start();
    let exit = exited(&mut vm2_process, "vm2").await;
    assert!(!exit.success());
    assert!(vm2.log().contains("the servers refused the join token"), "{}", vm2.log());

    // An expired token is refused too.
    let (code, short, _) = weft(&["operator", "join-token", "create", "--ttl", "1s", "--http-addr", &server_http]);
    assert_eq!(code, 0);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let vm3 = TokenAgent::new(dir.path(), "vm3", short.trim());
    let mut vm3_process = vm3.start();
    exited(&mut vm3_process, "vm3").await;
    assert!(vm3.log().contains("expired"), "{}", vm3.log());

    // vm1 restarted: what it kept is enough.
    let _ = vm1_process.kill();
    let _ = vm1_process.wait();
    let mut vm1_process = vm1.start();
    eventually("vm1 to write again after a restart", Duration::from_secs(30), || async {
        (kv_put(&vm1.http_addr, "again").0 == 0).then_some(())
    })
    .await;
    assert_eq!(vm1.identity().0, cert, "a restarted agent uses the certificate it kept");

    // Revoked: its very next call is refused, and so are its writes.
    let (code, enrolled, _) = weft(&["operator", "node", "list", "--http-addr", &server_http]);
    assert!(code == 0 && enrolled.contains("vm1"), "{enrolled}");
    let (code, _, err) = weft(&["operator", "node", "revoke", "vm1", "--http-addr", &server_http]);
    assert_eq!(code, 0, "{err}");
    let revoked_at = Instant::now();
    let refused = as_vm1.read_index(ReadIndexRequest { linearizable: false }).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    println!("vm1's next call after the revocation ({:?} later): {}", revoked_at.elapsed(), refused.message());
    assert!(revoked_at.elapsed() < Duration::from_secs(1));
    eventually("vm1's writes to be refused", Duration::from_secs(10), || async {
        (kv_put(&vm1.http_addr, "after-revocation").0 != 0).then_some(())
    })
    .await;
    let _ = vm1_process.kill();
    let _ = vm1_process.wait();
}

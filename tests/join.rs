//! Join tokens end to end: three servers sharing an RPC key serve only
//! callers that prove who they are. A client agent with no credential gets
//! nowhere; one started with nothing but a join token joins (the token
//! names the servers and the datacenter), keeps its credential across a
//! restart, and the used-up token lets no second agent in. Raw gRPC calls
//! without a credential, with a forged one, or a server call made with an
//! agent's, are refused.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::{eventually, free_port, weft, weft_bin, Cluster};
use weft_api::join::{RpcCredential, CREDENTIAL_METADATA};
use weft_api::proto::cluster::cluster_client::ClusterClient;
use weft_api::proto::cluster::{ApplyRequest, InfoRequest, JoinRequest};

const RPC_KEY: &str = "k3y-0123456789abcdef-test";

/// A client agent given nothing but a join token (and where to listen).
struct TokenAgent {
    http_addr: String,
    args: Vec<String>,
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
        TokenAgent { http_addr, args, log: dir.join(format!("{name}.log")) }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_token_is_all_a_new_agent_needs_and_the_servers_serve_no_one_else() {
    let mut cluster = Cluster::servers_with(3, &["--rpc-key", RPC_KEY]).await;
    let server_http = cluster.specs[0].http_addr.clone();
    let rpc = format!("http://{}", cluster.specs[0].rpc_addr);

    // Raw calls: discovery is open; a write needs a credential, a real one;
    // a server call needs the key.
    let mut grpc = ClusterClient::connect(rpc.clone()).await.unwrap();
    assert!(grpc.info(InfoRequest {}).await.is_ok());
    let refused = grpc.apply(ApplyRequest { command: Vec::new() }).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    println!("apply without a credential: {}", refused.message());
    let mut forged = tonic::Request::new(ApplyRequest { command: Vec::new() });
    let credential = RpcCredential::Agent { node: "vm1".into(), secret: "guessed".into() };
    forged.metadata_mut().insert(CREDENTIAL_METADATA, credential.header_value().parse().unwrap());
    assert_eq!(grpc.apply(forged).await.unwrap_err().code(), tonic::Code::Unauthenticated);

    // A client agent with the servers' addresses but no credential gets nowhere.
    let intruder = cluster.add_client("intruder", &[]);
    cluster.wait_ready(intruder).await;
    let (code, err) = kv_put(&cluster.specs[intruder].http_addr, "intruder");
    assert_ne!(code, 0);
    println!("a write through an agent without a credential: {}", err.trim());
    assert!(err.contains("credential"), "{err}");
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
    let started = std::time::Instant::now();
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
    // The credential is the agent's: with it, an agent can still make no server call.
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("vm1/agent-credential.json")).unwrap()).unwrap();
    let agent = RpcCredential::Agent { node: "vm1".into(), secret: stored["secret"].as_str().unwrap().to_owned() };
    let mut join = tonic::Request::new(JoinRequest {
        id: 99,
        name: "rogue".into(),
        rpc_addr: "127.0.0.1:1".into(),
        http_addr: String::new(),
    });
    join.metadata_mut().insert(CREDENTIAL_METADATA, agent.header_value().parse().unwrap());
    assert_eq!(grpc.join(join).await.unwrap_err().code(), tonic::Code::Unauthenticated);

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

    // vm1 restarted: its stored credential is enough.
    let _ = vm1_process.kill();
    let _ = vm1_process.wait();
    let mut vm1_process = vm1.start();
    eventually("vm1 to write again after a restart", Duration::from_secs(30), || async {
        (kv_put(&vm1.http_addr, "again").0 == 0).then_some(())
    })
    .await;
    let _ = vm1_process.kill();
    let _ = vm1_process.wait();
}

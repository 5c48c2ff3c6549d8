//! The mesh CA end to end: the first leader makes a root that every agent
//! serves (without its key), and an agent gets a leaf for a service
//! registered on it, signed from a CSR whose key never left the agent. The
//! leaf is checked with `openssl`, a real verifier.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use support::{eventually, weft, Cluster};
use weft_api::client::HttpClient;

async fn get_json(client: &HttpClient, path: &str) -> (u16, Value) {
    let response = client.get(path).await.unwrap();
    (response.status, serde_json::from_slice(&response.body).unwrap_or(Value::Null))
}

fn openssl_available() -> bool {
    let found = Command::new("openssl").arg("version").output().is_ok();
    if !found {
        assert!(std::env::var_os("CI").is_none(), "openssl is required in CI (apt-get install openssl)");
        eprintln!("skipping the openssl checks: `openssl` is not installed");
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_get_leaves_for_their_services_chained_to_the_mesh_root() {
    let mut cluster = Cluster::servers(3).await;
    let vm1 = cluster.add_client("vm1", &[]);
    cluster.wait_ready(vm1).await;
    let vm1_http = cluster.client(vm1);

    // One root, made by the first leader, the same on every agent; no private key served.
    let roots = eventually("the CA root on every agent", Duration::from_secs(20), || async {
        let mut seen = Vec::new();
        for i in 0..cluster.len() {
            let (status, body) = get_json(&cluster.client(i), "/v1/agent/connect/ca/roots").await;
            if status != 200 || body["ActiveRootID"].as_str().unwrap_or_default().is_empty() {
                return None;
            }
            seen.push(body);
        }
        seen.windows(2).all(|w| w[0]["ActiveRootID"] == w[1]["ActiveRootID"]).then(|| seen.remove(0))
    })
    .await;
    let trust_domain = roots["TrustDomain"].as_str().unwrap().to_owned();
    assert!(trust_domain.ends_with(".weft"), "{trust_domain}");
    let root_pem = roots["Roots"][0]["RootCert"].as_str().unwrap().to_owned();
    assert!(root_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    let text = vm1_http.get("/v1/connect/ca/roots").await.unwrap().text();
    assert!(!text.contains("PRIVATE KEY"), "a root's key is never served: {text}");

    // A leaf for a service registered on vm1.
    let registration = json!({"Name": "web", "Port": 8080});
    assert_eq!(vm1_http.put("/v1/agent/service/register", registration.to_string()).await.unwrap().status, 200);
    let (status, leaf) = get_json(&vm1_http, "/v1/agent/connect/ca/leaf/web").await;
    assert_eq!(status, 200, "{leaf}");
    assert_eq!(leaf["ServiceURI"], format!("spiffe://{trust_domain}/ns/default/dc/dc1/svc/web"));
    assert!(leaf["PrivateKeyPEM"].as_str().unwrap().contains("PRIVATE KEY"));
    // Cached: the same leaf until it is due for renewal.
    let (_, again) = get_json(&vm1_http, "/v1/agent/connect/ca/leaf/web").await;
    assert_eq!(again["SerialNumber"], leaf["SerialNumber"]);

    // A service that is not registered on vm1 gets no leaf there.
    let refused = vm1_http.get("/v1/agent/connect/ca/leaf/api").await.unwrap();
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert!(refused.text().contains("not registered"), "{}", refused.text());

    if openssl_available() {
        let dir = tempfile::tempdir().unwrap();
        let (root_file, leaf_file) = (dir.path().join("root.pem"), dir.path().join("leaf.pem"));
        std::fs::write(&root_file, &root_pem).unwrap();
        std::fs::write(&leaf_file, leaf["CertPEM"].as_str().unwrap()).unwrap();
        let verify = Command::new("openssl")
            .args(["verify", "-purpose", "sslclient", "-CAfile"])
            .arg(&root_file)
            .arg(&leaf_file)
            .output()
            .unwrap();
        assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
        let shown = Command::new("openssl").args(["x509", "-noout", "-text", "-in"]).arg(&leaf_file).output().unwrap();
        let shown = String::from_utf8_lossy(&shown.stdout);
        assert!(shown.contains(&format!("URI:spiffe://{trust_domain}/ns/default/dc/dc1/svc/web")), "{shown}");
        assert!(shown.contains("TLS Web Server Authentication") && shown.contains("TLS Web Client Authentication"));
        // The key the agent handed out matches the certificate.
        let key_file = dir.path().join("leaf.key");
        std::fs::write(&key_file, leaf["PrivateKeyPEM"].as_str().unwrap()).unwrap();
        let public = |args: &[&str]| Command::new("openssl").args(args).output().unwrap().stdout;
        assert_eq!(
            public(&["pkey", "-pubout", "-in", key_file.to_str().unwrap()]),
            public(&["x509", "-noout", "-pubkey", "-in", leaf_file.to_str().unwrap()])
        );
    }

    // The CLI shows the roots.
    let (code, out, err) = weft(&["connect", "ca", "roots", "--http-addr", &cluster.specs[vm1].http_addr]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(roots["ActiveRootID"].as_str().unwrap()), "{out}");
    let (code, out, err) = weft(&["connect", "ca", "get-config", "--http-addr", &cluster.specs[vm1].http_addr]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"LeafCertTTL\": \"72h"), "{out}");

    // A blocking leaf query returns when the root rotates, with a leaf from
    // the new root that chains to the old one through a cross-signed
    // certificate (openssl checks the chain against the old root alone).
    let index = vm1_http.get("/v1/agent/connect/ca/leaf/web").await.unwrap().consul_index().unwrap();
    let waiter = {
        let vm1_http = vm1_http.clone();
        tokio::spawn(async move {
            get_json(&vm1_http, &format!("/v1/agent/connect/ca/leaf/web?index={index}&wait=5m")).await
        })
    };
    let bad_config = vm1_http.put("/v1/connect/ca/configuration", r#"{"Provider": "vault"}"#).await.unwrap();
    assert_eq!(bad_config.status, 400, "{}", bad_config.text());
    // Rotating the CA is a server's business: a client agent's RPC may not.
    let (code, _, err) = weft(&["connect", "ca", "rotate", "--http-addr", &cluster.specs[vm1].http_addr]);
    assert_ne!(code, 0);
    assert!(err.contains("for servers only"), "{err}");
    let (code, out, err) = weft(&["connect", "ca", "rotate", "--http-addr", &cluster.specs[0].http_addr]);
    assert_eq!(code, 0, "{out}{err}");
    let (status, rotated) = waiter.await.unwrap();
    assert_eq!(status, 200, "{rotated}");
    assert_ne!(rotated["SerialNumber"], leaf["SerialNumber"]);
    let chain = rotated["CertPEM"].as_str().unwrap();
    assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2, "leaf and cross-signed root: {chain}");
    if openssl_available() {
        let dir = tempfile::tempdir().unwrap();
        let (root_file, leaf_file, chain_file) =
            (dir.path().join("root.pem"), dir.path().join("leaf.pem"), dir.path().join("chain.pem"));
        std::fs::write(&root_file, &root_pem).unwrap();
        let blocks: Vec<&str> = chain.split_inclusive("-----END CERTIFICATE-----").collect();
        std::fs::write(&leaf_file, blocks[0]).unwrap();
        std::fs::write(&chain_file, blocks[1]).unwrap();
        let verify = Command::new("openssl")
            .args(["verify", "-CAfile"])
            .arg(&root_file)
            .arg("-untrusted")
            .arg(&chain_file)
            .arg(&leaf_file)
            .output()
            .unwrap();
        assert!(
            verify.status.success(),
            "{}{}",
            String::from_utf8_lossy(&verify.stdout),
            String::from_utf8_lossy(&verify.stderr)
        );
    }

    // The CA survives a new leader: a leaf is still signed after the leader dies.
    let leader = cluster.wait_for_leader().await;
    cluster.kill(leader);
    let registration = json!({"Name": "db", "Port": 5432});
    assert_eq!(vm1_http.put("/v1/agent/service/register", registration.to_string()).await.unwrap().status, 200);
    let leaf = eventually("a leaf signed by the new leader", Duration::from_secs(30), || async {
        let (status, leaf) = get_json(&vm1_http, "/v1/agent/connect/ca/leaf/db").await;
        (status == 200).then_some(leaf)
    })
    .await;
    assert_eq!(leaf["ServiceURI"], format!("spiffe://{trust_domain}/ns/default/dc/dc1/svc/db"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leaf_ttl_and_the_sidecar_port_range_come_from_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("connect.hcl");
    std::fs::write(
        &config,
        "connect {\n  ca_config {\n    leaf_cert_ttl = \"2h\"\n  }\n}\nports {\n  sidecar_min_port = 23100\n  sidecar_max_port = 23101\n}\n",
    )
    .unwrap();
    let cluster = Cluster::servers_with(1, &["--config-file", config.to_str().unwrap()]).await;
    let http = cluster.client(0);
    let registration = json!({"Name": "web", "Port": 8080, "Connect": {"SidecarService": {}}});
    assert_eq!(http.put("/v1/agent/service/register", registration.to_string()).await.unwrap().status, 200);
    let sidecar = get_json(&http, "/v1/agent/service/web-sidecar-proxy").await.1;
    assert_eq!(sidecar["Port"], 23100, "{sidecar}");
    let leaf = eventually("a leaf for web", Duration::from_secs(20), || async {
        let (status, leaf) = get_json(&http, "/v1/agent/connect/ca/leaf/web").await;
        (status == 200).then_some(leaf)
    })
    .await;
    let parse = |field: &str| {
        time::OffsetDateTime::parse(leaf[field].as_str().unwrap(), &time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let lifetime = parse("ValidBefore") - parse("ValidAfter");
    assert!(lifetime >= time::Duration::hours(2) && lifetime <= time::Duration::minutes(125), "{lifetime}");
    let (code, out, err) = weft(&["connect", "ca", "get-config", "--http-addr", &cluster.specs[0].http_addr]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"LeafCertTTL\": \"2h"), "{out}");
    let refused = http.put("/v1/connect/ca/configuration", r#"{"Config": {"LeafCertTTL": "5h"}}"#).await.unwrap();
    assert_eq!(refused.status, 400);
    assert!(refused.text().contains("leaf_cert_ttl"), "{}", refused.text());
}

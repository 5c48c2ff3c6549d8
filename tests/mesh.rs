//! The mesh end to end: client agents each run sidecars (started and
//! supervised by the agent, real `weft connect proxy` processes); `web`
//! calls `api` through `127.0.0.1:<upstream port>`, over mutual TLS between
//! the sidecars, only while the intentions allow it: per connection for a
//! TCP service, per request (L7 permissions) for an HTTP one.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use support::{config_dump, eventually, free_port, metric, register, weft, weft_bin, Cluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weft_proxy::TlsMaterial;

/// An application that echoes what it reads.
async fn echo_app() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = socket.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    port
}

/// An HTTP/1.1 application answering `app saw <method> <path>`.
async fn http_app() -> u16 {
    support::http::http_app(|head| async move { ("200 OK", format!("app saw {} {}", head.method, head.path)) }).await
}

/// Sends a line to `port` on loopback; the echo, or `None` if it never came.
async fn round_trip(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    stream.write_all(b"ping\n").await.ok()?;
    let mut buffer = vec![0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buffer)).await.ok()?.ok()?;
    (read > 0).then(|| String::from_utf8_lossy(&buffer[..read]).into_owned())
}

/// One HTTP/1.1 request to `port` on loopback: (status, body).
async fn http_request(port: u16, method: &str, path: &str) -> Option<(u16, String)> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    support::http::http_exchange(stream, method, "api", path, "curl").await
}

/// Waits until `service`'s sidecar has `destination`'s healthy sidecars as
/// endpoints of its upstream.
async fn wait_for_endpoints(http: &str, service: &str, destination: &str) {
    eventually(&format!("{service}'s sidecar to know {destination}'s endpoints"), Duration::from_secs(30), || async {
        let config = config_dump(http, service)?;
        let upstream = config["upstreams"].as_array()?.iter().find(|u| u["destination"] == destination)?.clone();
        (!upstream["endpoints"].as_array()?.is_empty()).then_some(())
    })
    .await
}

/// A `service` leaf signed by a CA that is not the mesh's.
fn foreign_leaf(trust_domain: &str, service: &str) -> TlsMaterial {
    use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    let uri = format!("spiffe://{trust_domain}/ns/default/dc/dc1/svc/{service}");
    params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    TlsMaterial {
        cert_chain_pem: params.signed_by(&key, &issuer).unwrap().pem(),
        private_key_pem: key.serialize_pem(),
        roots_pem: vec![ca_cert.pem()],
    }
}

/// The mesh's leaf for `service` (registered on the agent at `http`) and roots.
async fn mesh_leaf(http: &str, service: &str) -> TlsMaterial {
    let client = weft_api::client::HttpClient::new(http, None);
    let leaf: Value =
        serde_json::from_slice(&client.get(&format!("/v1/agent/connect/ca/leaf/{service}")).await.unwrap().body)
            .unwrap();
    let roots: Value = serde_json::from_slice(&client.get("/v1/agent/connect/ca/roots").await.unwrap().body).unwrap();
    TlsMaterial {
        cert_chain_pem: leaf["CertPEM"].as_str().unwrap().to_owned(),
        private_key_pem: leaf["PrivateKeyPEM"].as_str().unwrap().to_owned(),
        roots_pem: roots["Roots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["RootCert"].as_str().unwrap().to_owned())
            .collect(),
    }
}

/// A line sent over mTLS with `material` to a sidecar of `destination` at
/// `port`; the echo, or `None` if the handshake or the connection failed.
async fn tls_round_trip(material: &TlsMaterial, destination: &str, port: u16) -> Option<String> {
    let config = material.client_tls().ok()?.for_protocol(weft_api::mesh::Protocol::Tcp);
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let name = weft_proxy::tls::server_name(&destination.into(), ([127, 0, 0, 1], port).into()).ok()?;
    let mut tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.ok()?;
    tls.write_all(b"ping\n").await.ok()?;
    let mut buffer = vec![0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(3), tls.read(&mut buffer)).await.ok()?.ok()?;
    (read > 0).then(|| String::from_utf8_lossy(&buffer[..read]).into_owned())
}

/// The thread names of the sidecar running for `service` on this host.
fn sidecar_threads(service: &str) -> Vec<String> {
    let wanted = format!("--sidecar-for\0{service}\0");
    let pid = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(&wanted))
        })
        .unwrap_or_else(|| panic!("no sidecar process for {service}"));
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect()
}

/// A child process killed when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_reaches_api_through_both_sidecars_only_while_an_intention_allows_it() {
    let mut cluster = Cluster::servers(3).await;
    let vm1 = cluster.add_client("vm1", &[]);
    let vm2 = cluster.add_client("vm2", &[]);
    cluster.wait_ready(vm1).await;
    cluster.wait_ready(vm2).await;
    let (vm1_http, vm2_http) = (cluster.specs[vm1].http_addr.clone(), cluster.specs[vm2].http_addr.clone());
    // Intentions and config entries are written through a server.
    let server = cluster.specs[0].http_addr.clone();
    let api_port = echo_app().await;
    let (api_sidecar, web_sidecar, upstream) = (free_port(), free_port(), free_port());

    register(
        &cluster,
        vm2,
        json!({"Name": "api", "Port": api_port, "Connect": {"SidecarService": {"Port": api_sidecar}}}),
    )
    .await;
    register(
        &cluster,
        vm1,
        json!({"Name": "web", "Port": 8080, "Connect": {"SidecarService": {"Port": web_sidecar,
            "Proxy": {"Upstreams": [{"DestinationName": "api", "LocalBindPort": upstream}]}}}}),
    )
    .await;

    // The agent registered the sidecar and started its proxy; its listening check passes.
    let sidecar = cluster.client(vm1).get("/v1/agent/service/web-sidecar-proxy").await.unwrap();
    let sidecar: Value = serde_json::from_slice(&sidecar.body).unwrap();
    assert_eq!(sidecar["Kind"], "connect-proxy");
    assert_eq!(sidecar["Proxy"]["Upstreams"][0]["DestinationName"], "api");
    wait_for_endpoints(&vm1_http, "web", "api").await;

    // config-dump shows what the sidecar runs on, and never its private key.
    let dump = config_dump(&vm1_http, "web").unwrap();
    assert_eq!(dump["service"], "web");
    assert_eq!(dump["upstreams"][0]["endpoints"][0]["address"], format!("127.0.0.1:{api_sidecar}"));
    assert!(dump["tls"]["leaf_serial"].as_str().is_some_and(|s| !s.is_empty()), "{dump}");
    assert!(!dump.to_string().contains("PRIVATE KEY"), "{dump}");
    let valid_before = dump["tls"]["leaf_valid_before"].as_str().unwrap_or_default();
    assert!(
        time::OffsetDateTime::parse(valid_before, &time::format_description::well_known::Rfc3339).is_ok(),
        "{dump}"
    );

    // DNS knows the sidecars as `<service>.connect`.
    if Command::new("dig").arg("-v").output().is_ok() {
        let (ip, port) = cluster.specs[vm1].dns_addr.rsplit_once(':').unwrap();
        let srv =
            Command::new("dig").args([&format!("@{ip}"), "-p", port, "+short", "api.connect.weft", "SRV"]).output();
        let srv = String::from_utf8_lossy(&srv.unwrap().stdout).into_owned();
        assert!(srv.contains(&format!(" {api_sidecar} vm2.node.dc1.weft.")), "{srv}");
    }

    // A new cluster denies what no intention allows: api's sidecar counts the denial.
    eventually("api's sidecar to deny web by default", Duration::from_secs(20), || async {
        assert_eq!(round_trip(upstream).await, None, "denied by default");
        metric(&vm2_http, "api", "weft_proxy_intention_denials_total", "layer=\"L4\"").await.filter(|n| *n > 0.0)
    })
    .await;

    let (code, _, err) = weft(&["intention", "create", "--allow", "web", "api", "--http-addr", &server]);
    assert_eq!(code, 0, "{err}");
    let allowed_at = std::time::Instant::now();
    eventually("web to reach api once allowed", Duration::from_secs(20), || async {
        round_trip(upstream).await.filter(|echo| echo == "ping\n")
    })
    .await;
    println!("intention write to first allowed connection: {:?}", allowed_at.elapsed());
    let served = metric(&vm2_http, "api", "weft_proxy_connections_total", "outcome=\"Served\"").await.unwrap();
    assert!(served >= 1.0, "api's sidecar counts served connections: {served}");

    // A root rotation in the middle of a request loop (a new mTLS handshake
    // each time) fails no request.
    let leaf_of = |http: &str, service: &str| config_dump(http, service).map(|d| d["tls"]["leaf_serial"].clone());
    let (web_leaf, api_leaf) = (leaf_of(&vm1_http, "web").unwrap(), leaf_of(&vm2_http, "api").unwrap());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let requests = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut sent, mut failed) = (0u32, 0u32);
            // Bounded in count; the test stops it once both sidecars rolled.
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && sent < 20_000 {
                sent += 1;
                if round_trip(upstream).await.as_deref() != Some("ping\n") {
                    failed += 1;
                }
            }
            (sent, failed)
        })
    };
    let (code, out, err) = weft(&["connect", "ca", "rotate", "--http-addr", &cluster.specs[0].http_addr]);
    assert_eq!(code, 0, "{out}{err}");
    eventually("both sidecars to use leaves from the new root", Duration::from_secs(60), || async {
        let rolled = |http: &str, service: &str, old: &Value| {
            config_dump(http, service)
                .is_some_and(|d| d["tls"]["leaf_serial"] != *old && d["tls"]["roots_pem"] == "2 root(s)")
        };
        (rolled(&vm1_http, "web", &web_leaf) && rolled(&vm2_http, "api", &api_leaf)).then_some(())
    })
    .await;
    // A few more handshakes with both new leaves, then stop.
    for _ in 0..20 {
        assert_eq!(round_trip(upstream).await.as_deref(), Some("ping\n"));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (sent, failed) = requests.await.unwrap();
    println!("root rotation: {sent} requests during the rotation, {failed} failed");
    assert_eq!(failed, 0, "no request fails during a root rotation ({sent} sent)");
    let roots = cluster.client(vm1).get("/v1/connect/ca/roots").await.unwrap();
    let roots: Value = serde_json::from_slice(&roots.body).unwrap();
    assert_eq!(roots["Roots"].as_array().unwrap().len(), 2, "the old root stays trusted: {roots}");
    assert_eq!(roots["Roots"][1]["IntermediateCerts"].as_array().unwrap().len(), 1, "cross-signed: {roots}");

    // Plaintext straight to api's sidecar never reaches api.
    assert_ne!(round_trip(api_sidecar).await.as_deref(), Some("ping\n"));
    // Nor does a `web` leaf from another CA; the mesh's own `web` leaf does.
    let trust_domain = config_dump(&vm1_http, "web").unwrap()["tls"]["trust_domain"].as_str().unwrap().to_owned();
    assert_eq!(tls_round_trip(&foreign_leaf(&trust_domain, "web"), "api", api_sidecar).await, None);
    let web_leaf = mesh_leaf(&vm1_http, "web").await;
    assert_eq!(tls_round_trip(&web_leaf, "api", api_sidecar).await.as_deref(), Some("ping\n"));
    // A server holding the mesh's `web` leaf cannot pass for `api`.
    let impostor = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let impostor_port = impostor.local_addr().unwrap().port();
    let impostor_tls = tokio_rustls::TlsAcceptor::from(web_leaf.server_config().unwrap());
    tokio::spawn(async move {
        while let Ok((socket, _)) = impostor.accept().await {
            if let Ok(mut tls) = impostor_tls.accept(socket).await {
                let (mut read, mut write) = tokio::io::split(&mut tls);
                let _ = tokio::io::copy(&mut read, &mut write).await;
            }
        }
    });
    assert_eq!(tls_round_trip(&web_leaf, "web", impostor_port).await.as_deref(), Some("ping\n"), "the impostor works");
    assert_eq!(tls_round_trip(&web_leaf, "api", impostor_port).await, None, "but not as api");

    // kill -9 of web's proxy: the agent restarts it and traffic recovers.
    let pattern = format!("sidecar-for web --http-addr {vm1_http}");
    match Command::new("pkill").args(["-9", "-f", &pattern]).status() {
        Ok(killed) => {
            assert!(killed.success(), "no proxy process matched {pattern:?}");
            eventually("traffic through a restarted proxy", Duration::from_secs(20), || async {
                round_trip(upstream).await.filter(|echo| echo == "ping\n")
            })
            .await;
        }
        Err(_) => {
            assert!(std::env::var_os("CI").is_none(), "pkill is required in CI (apt-get install procps)");
            eprintln!("skipping the proxy restart check: `pkill` is not installed");
        }
    }

    // Sidecars carry connections on two worker threads by default.
    let threads = sidecar_threads("web");
    assert!(
        threads.iter().any(|t| t == "weft-worker-0") && threads.iter().any(|t| t == "weft-worker-1"),
        "web's sidecar threads: {threads:?}"
    );

    // A stand-alone proxy (no sidecar registration) for a service registered
    // on vm1 reaches api too, once an intention allows it; it runs on one
    // thread, with no workers.
    register(&cluster, vm1, json!({"Name": "batch", "Port": 9999})).await;
    let (batch_listen, batch_upstream) = (free_port(), free_port());
    let _standalone = Guard(
        Command::new(weft_bin())
            .args(["connect", "proxy", "--threads", "1", "--service", "batch", "--service-addr", "127.0.0.1:9999"])
            .args(["--listen", &format!("127.0.0.1:{batch_listen}")])
            .args(["--upstream", &format!("api:{batch_upstream}"), "--http-addr", &vm1_http])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (code, _, err) = weft(&["intention", "create", "--allow", "batch", "api", "--http-addr", &server]);
    assert_eq!(code, 0, "{err}");
    eventually("the stand-alone proxy to reach api", Duration::from_secs(30), || async {
        round_trip(batch_upstream).await.filter(|echo| echo == "ping\n")
    })
    .await;

    // A deny closes an open connection too, and refuses new ones.
    let mut open = TcpStream::connect(("127.0.0.1", upstream)).await.unwrap();
    open.write_all(b"ping\n").await.unwrap();
    let mut buffer = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), open.read(&mut buffer)).await.unwrap().unwrap();
    assert_eq!(&buffer[..read], b"ping\n");
    let (code, _, err) = weft(&["intention", "create", "--deny", "--replace", "web", "api", "--http-addr", &server]);
    assert_eq!(code, 0, "{err}");
    let denied_at = std::time::Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(30), open.read(&mut buffer)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "the open connection was closed: {closed:?}");
    println!("deny intention written to open connection closed: {:?}", denied_at.elapsed());
    eventually("new connections refused once denied", Duration::from_secs(20), || async {
        round_trip(upstream).await.is_none().then_some(())
    })
    .await;

    // Deregistering the service stops its sidecar.
    let response = cluster.client(vm1).put("/v1/agent/service/deregister/web", Vec::new()).await.unwrap();
    assert_eq!(response.status, 200);
    eventually("web's sidecar stopped", Duration::from_secs(10), || async {
        TcpStream::connect(("127.0.0.1", upstream)).await.is_err().then_some(())
    })
    .await;

    // vm1 stops on SIGTERM without waiting for the stand-alone proxy's
    // long-polls (its leaf and config watches) to end: that took over 70 s.
    let stopping = std::time::Instant::now();
    assert!(cluster.stop(vm1), "vm1 exits on SIGTERM by itself");
    println!("vm1 stopped {:?} after SIGTERM, with a stand-alone proxy's long-polls open on it", stopping.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l7_permissions_allow_get_and_deny_delete_admin_per_request() {
    let mut cluster = Cluster::servers(1).await;
    let vm1 = cluster.add_client("vm1", &[]);
    let vm2 = cluster.add_client("vm2", &[]);
    cluster.wait_ready(vm1).await;
    cluster.wait_ready(vm2).await;
    let (vm1_http, vm2_http) = (cluster.specs[vm1].http_addr.clone(), cluster.specs[vm2].http_addr.clone());
    // Intentions and config entries are written through a server.
    let server = cluster.specs[0].http_addr.clone();
    let dir = tempfile::tempdir().unwrap();

    // api speaks HTTP; its intentions are L7 permissions, in order.
    let defaults = dir.path().join("api-defaults.hcl");
    std::fs::write(&defaults, "Kind = \"service-defaults\"\nName = \"api\"\nProtocol = \"http\"\n").unwrap();
    let intentions = dir.path().join("api-intentions.hcl");
    std::fs::write(
        &intentions,
        r#"
Kind = "service-intentions"
Name = "api"
Sources = [
  {
    Name = "web"
    Permissions = [
      { Action = "deny", HTTP = { PathPrefix = "/admin", Methods = ["DELETE"] } },
      { Action = "allow", HTTP = { PathPrefix = "/" } },
    ]
  },
]
"#,
    )
    .unwrap();
    for file in [&defaults, &intentions] {
        let (code, out, err) = weft(&["config", "write", file.to_str().unwrap(), "--http-addr", &server]);
        assert_eq!(code, 0, "{out}{err}");
    }
    // A permission on a tcp service is refused, saying why.
    let tcp_intentions = dir.path().join("db-intentions.json");
    std::fs::write(
        &tcp_intentions,
        json!({"Kind": "service-intentions", "Name": "db", "Sources": [{"Name": "web",
               "Permissions": [{"Action": "allow", "HTTP": {"PathPrefix": "/"}}]}]})
        .to_string(),
    )
    .unwrap();
    let (code, _, err) = weft(&["config", "write", tcp_intentions.to_str().unwrap(), "--http-addr", &server]);
    assert_ne!(code, 0);
    assert!(err.contains("requires protocol http"), "{err}");

    let app = http_app().await;
    let (api_sidecar, web_sidecar, upstream) = (free_port(), free_port(), free_port());
    register(&cluster, vm2, json!({"Name": "api", "Port": app, "Connect": {"SidecarService": {"Port": api_sidecar}}}))
        .await;
    register(
        &cluster,
        vm1,
        json!({"Name": "web", "Port": 8080, "Connect": {"SidecarService": {"Port": web_sidecar,
            "Proxy": {"Upstreams": [{"DestinationName": "api", "LocalBindPort": upstream}]}}}}),
    )
    .await;
    wait_for_endpoints(&vm1_http, "web", "api").await;

    let answer = eventually("GET / through both sidecars", Duration::from_secs(30), || async {
        http_request(upstream, "GET", "/").await.filter(|(status, _)| *status == 200)
    })
    .await;
    assert_eq!(answer.1, "app saw GET /");
    let (status, body) = http_request(upstream, "DELETE", "/admin/users").await.unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("service-intentions api, source web, permission 1"), "names the intention: {body}");
    assert_eq!(http_request(upstream, "GET", "/admin/users").await.unwrap(), (200, "app saw GET /admin/users".into()));
    let denials = metric(&vm2_http, "api", "weft_proxy_intention_denials_total", "layer=\"L7\"").await.unwrap();
    assert!(denials >= 1.0, "{denials}");

    // weft intention check judges at L4, where an L7 intention counts as a deny (as in Consul).
    let (code, _, _) = weft(&["intention", "check", "web", "api", "--http-addr", &vm1_http]);
    assert_eq!(code, 2);

    // Many concurrent requests, over keep-alive connections between the sidecars.
    let many: Vec<_> =
        (0..50).map(|i| tokio::spawn(http_request(upstream, "GET", if i % 2 == 0 { "/a" } else { "/b" }))).collect();
    for request in many {
        assert_eq!(request.await.unwrap().map(|(status, _)| status), Some(200));
    }
}

/// Two agents on one host (a server and a client agent, as the README sets
/// them up) each give a sidecar a port from the default range: the second
/// skips the port the first one's sidecar listens on (both took 21000, and
/// the second crash-looped), and both sidecars serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_on_one_host_give_their_sidecars_different_ports() {
    let mut cluster = Cluster::servers(1).await;
    let vm1 = cluster.add_client("vm1", &[]);
    cluster.wait_ready(vm1).await;
    let sidecar_port = |agent: usize, service: &'static str| {
        let client = cluster.client(agent);
        async move {
            let services: Value = serde_json::from_slice(&client.get("/v1/agent/services").await.ok()?.body).ok()?;
            services[format!("{service}-sidecar-proxy")]["Port"].as_u64().map(|p| p as u16)
        }
    };
    let listening = |port: u16| async move { TcpStream::connect(("127.0.0.1", port)).await.ok().map(drop) };
    register(&cluster, 0, json!({"Name": "web", "Port": free_port(), "Connect": {"SidecarService": {}}})).await;
    let web = sidecar_port(0, "web").await.expect("web's sidecar port");
    eventually("web's sidecar to listen", Duration::from_secs(30), || listening(web)).await;
    // The catalog's connect-capable instances of web: its sidecar.
    let connect: Value =
        serde_json::from_slice(&cluster.client(0).get("/v1/catalog/connect/web").await.unwrap().body).unwrap();
    let found: Vec<(&str, &str, u64)> = connect
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (i["ServiceKind"].as_str().unwrap(), i["ServiceName"].as_str().unwrap(), i["ServicePort"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(found, [("connect-proxy", "web-sidecar-proxy", u64::from(web))], "{connect}");
    register(&cluster, vm1, json!({"Name": "api", "Port": free_port(), "Connect": {"SidecarService": {}}})).await;
    let api = sidecar_port(vm1, "api").await.expect("api's sidecar port");
    println!("sidecar ports on one host: web {web} (server agent), api {api} (client agent)");
    assert!((21000..=21255).contains(&web) && (21000..=21255).contains(&api), "{web} {api}");
    assert_ne!(web, api, "the second agent skips the port the first one's sidecar listens on");
    eventually("api's sidecar to listen", Duration::from_secs(30), || listening(api)).await;
    eventually("both sidecars' listening checks to pass", Duration::from_secs(30), || async {
        let checks: Value =
            serde_json::from_slice(&cluster.client(0).get("/v1/health/state/passing").await.ok()?.body).ok()?;
        let passing: Vec<&str> = checks.as_array()?.iter().filter_map(|c| c["ServiceID"].as_str()).collect();
        (passing.contains(&"web-sidecar-proxy") && passing.contains(&"api-sidecar-proxy")).then_some(())
    })
    .await;
}

/// A sidecar's "Connect Sidecar Listening" check asks the sidecar itself
/// (its admin port's `/ready`): a port that something else holds never
/// passes for it, as a TCP connect would. And a sidecar whose picked port
/// is taken before it binds it gets another port from its agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_listening_check_asks_the_sidecar_and_a_taken_port_is_repicked() {
    let cluster = Cluster::servers(1).await;
    let agent = cluster.client(0);
    let sidecar_check = |service: &'static str| {
        let agent = agent.clone();
        async move {
            let checks: Value = serde_json::from_slice(&agent.get("/v1/agent/checks").await.ok()?.body).ok()?;
            let sidecar = format!("{service}-sidecar-proxy");
            let check = checks.as_object()?.values().find(|c| c["ServiceID"] == sidecar.as_str())?;
            Some((check["Status"].as_str()?.to_owned(), check["Output"].as_str()?.to_owned()))
        }
    };
    let sidecar_port = |service: &'static str| {
        let agent = agent.clone();
        async move {
            let services: Value = serde_json::from_slice(&agent.get("/v1/agent/services").await.ok()?.body).ok()?;
            services[format!("{service}-sidecar-proxy")]["Port"].as_u64().map(|p| p as u16)
        }
    };

    // The port the registration asks for is held by a plain listener: the
    // sidecar cannot bind it, and its check says so instead of passing.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held = squatter.local_addr().unwrap().port();
    let registration = json!({"Name": "held", "Port": free_port(), "Connect": {"SidecarService": {"Port": held}}});
    register(&cluster, 0, registration).await;
    let (status, output) = eventually("the held port's check to name the sidecar", Duration::from_secs(30), || async {
        sidecar_check("held").await.filter(|(_, output)| output.contains("held-sidecar-proxy"))
    })
    .await;
    println!("listening check with the port held by another listener: {status}: {output}");
    assert_eq!(status, "critical", "{output}");
    assert_eq!(sidecar_port("held").await, Some(held), "a port set in the registration stays");

    // A sidecar on a picked port: killed, and its port taken before the
    // agent starts it again. The agent moves it to another port.
    register(&cluster, 0, json!({"Name": "repicked", "Port": free_port(), "Connect": {"SidecarService": {}}})).await;
    let first = sidecar_port("repicked").await.expect("a picked port");
    eventually("the repicked sidecar's check to pass", Duration::from_secs(30), || async {
        sidecar_check("repicked").await.filter(|(status, _)| status == "passing")
    })
    .await;
    let pattern = format!("sidecar-for repicked --http-addr {}", agent.addr());
    match Command::new("pkill").args(["-9", "-f", &pattern]).status() {
        Ok(killed) => assert!(killed.success(), "no proxy process matched {pattern:?}"),
        Err(_) => {
            assert!(std::env::var_os("CI").is_none(), "pkill is required in CI (apt-get install procps)");
            eprintln!("skipping the port re-pick check: `pkill` is not installed");
            return;
        }
    }
    // The kill closes its listener; the agent restarts it a second later.
    // (Another test's sidecar may take the port first: taken all the same.)
    let mut taken = None;
    for _ in 0..100 {
        taken = std::net::TcpListener::bind(("127.0.0.1", first)).ok();
        if taken.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let moved = eventually("the sidecar to move to another port", Duration::from_secs(30), || async {
        sidecar_port("repicked").await.filter(|port| *port != first)
    })
    .await;
    println!("sidecar port {first} taken while its proxy was down: moved to {moved}");
    eventually("the moved sidecar's check to pass", Duration::from_secs(30), || async {
        sidecar_check("repicked")
            .await
            .filter(|(status, output)| status == "passing" && output.contains(&moved.to_string()))
    })
    .await;
    drop((squatter, taken));
}

//! Mesh gateways on loopback: two client agents in different networks
//! (`--network east`, `--network west`), `web` in east calling `api` in
//! west. Without a gateway, west's sidecars are out of reach; with one,
//! web's sidecar connects through it, the TLS passes through untouched and
//! api's sidecar still judges web by its own certificate. The gateway
//! relays only to the sidecars of its network.
//!
//! Loopback routes everywhere, so this shows the gateway is *used*; the
//! hybrid test (`tests/hybrid.rs`) shows it is *needed*, on networks that
//! do not route to each other.

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use support::http::{http_app, http_exchange};
use support::{eventually, free_port, metric_at, register, weft, Cluster, Process};
use tokio::net::TcpStream;

/// One request to web's upstream listener for api: (status, body).
async fn call_api(port: u16, path: &str) -> Option<(u16, String)> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    http_exchange(stream, "GET", "api", path, "curl").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_reach_another_network_only_through_its_mesh_gateway_and_intentions_still_apply() {
    let mut cluster = Cluster::servers(1).await;
    let east = cluster.add_client("east", &["--network", "east"]);
    let west = cluster.add_client("west", &["--network", "west"]);
    cluster.wait_ready(east).await;
    cluster.wait_ready(west).await;
    let west_http = cluster.specs[west].http_addr.clone();
    // Intentions and config entries are written through the server.
    let server = cluster.specs[0].http_addr.clone();

    let dir = tempfile::tempdir().unwrap();
    let defaults = dir.path().join("api-defaults.json");
    std::fs::write(&defaults, json!({"Kind": "service-defaults", "Name": "api", "Protocol": "http"}).to_string())
        .unwrap();
    let (code, _, err) = weft(&["config", "write", defaults.to_str().unwrap(), "--http-addr", &server]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = weft(&["intention", "create", "--allow", "web", "api", "--http-addr", &server]);
    assert_eq!(code, 0, "{err}");

    let api_port = http_app(|head| async move { ("200 OK", format!("api {} {}", head.method, head.path)) }).await;
    register(
        &cluster,
        west,
        json!({"Name": "api", "Port": api_port, "Connect": {"SidecarService": {"Port": free_port()}}}),
    )
    .await;
    let upstream = free_port();
    let web = json!({"Name": "web", "Port": free_port(), "Connect": {"SidecarService": {"Port": free_port(),
        "Proxy": {"Upstreams": [{"DestinationName": "api", "LocalBindPort": upstream}]}}}});
    register(&cluster, east, web).await;

    // No gateway in west: api's sidecar there, healthy, is out of reach from east.
    eventually("api's sidecar to be healthy", Duration::from_secs(30), || async {
        let healthy = cluster.client(east).get("/v1/health/service/api-sidecar-proxy?passing").await.ok()?;
        (healthy.text().contains("api-sidecar-proxy")).then_some(())
    })
    .await;
    let (status, body) = eventually("web's upstream listener to answer", Duration::from_secs(30), || async {
        call_api(upstream, "/x").await
    })
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no healthy instance"), "{body}");

    let (gateway_port, admin) = (free_port(), format!("127.0.0.1:{}", free_port()));
    let _gateway = Process(
        std::process::Command::new(support::weft_bin())
            .args(["connect", "gateway", "--kind", "mesh", "--register", "--address", "127.0.0.1"])
            .args(["--port", &gateway_port.to_string(), "--admin-bind", &admin, "--http-addr", &west_http])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("gateway.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let started = std::time::Instant::now();
    let (_, body) = eventually("web to reach api through west's gateway", Duration::from_secs(30), || async {
        call_api(upstream, "/x").await.filter(|(status, _)| *status == 200)
    })
    .await;
    println!("api callable through the gateway {} ms after it started", started.elapsed().as_millis());
    assert_eq!(body, "api GET /x");
    // Sidecars keep their connection alive: it is open in the gateway, or done.
    let relayed = metric_at(&admin, "weft_proxy_open_connections", "").await.unwrap_or(0.0)
        + metric_at(&admin, "weft_proxy_connections", r#"outcome="Served""#).await.unwrap_or(0.0);
    assert!(relayed >= 1.0, "the connection went through the gateway");
    let mut served = 0;
    for i in 0..20 {
        served += usize::from(call_api(upstream, &format!("/{i}")).await.is_some_and(|(status, _)| status == 200));
    }
    println!("{served}/20 requests through the gateway answered 200");
    assert_eq!(served, 20);

    // The gateway relays only to sidecars of its network: a ClientHello naming
    // west's agent API (not a sidecar) is refused without a byte reaching it.
    let west_api: std::net::SocketAddr = west_http.parse().unwrap();
    let refused_before = metric_at(&admin, "weft_proxy_connections", r#"outcome="Failed""#).await.unwrap_or(0.0);
    let config = tokio_rustls::rustls::ClientConfig::builder()
        .with_root_certificates(tokio_rustls::rustls::RootCertStore::empty())
        .with_no_client_auth();
    let tcp = TcpStream::connect(("127.0.0.1", gateway_port)).await.unwrap();
    let name = weft_proxy::tls::server_name(&"api".into(), west_api).unwrap();
    let handshake = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await;
    assert!(handshake.is_err(), "the gateway closes the connection");
    eventually("the gateway to count the refusal", Duration::from_secs(10), || async {
        let refused = metric_at(&admin, "weft_proxy_connections", r#"outcome="Failed""#).await?;
        (refused > refused_before).then_some(())
    })
    .await;

    // The gateway cannot read the traffic: api's sidecar judges web itself.
    let (code, _, err) = weft(&["intention", "create", "--deny", "--replace", "web", "api", "--http-addr", &server]);
    assert_eq!(code, 0, "{err}");
    let (status, body) = eventually("the deny to reach api's sidecar", Duration::from_secs(30), || async {
        call_api(upstream, "/x").await.filter(|(status, _)| *status == 403)
    })
    .await;
    assert_eq!(status, 403);
    assert!(body.contains("web"), "{body}");
}

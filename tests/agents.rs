//! Client agents end to end: 3 servers and client agents on loopback, all
//! real `weft` processes. Services from config files and from the agent API
//! reach every agent's HTTP and DNS answers; health checks decide who is
//! healthy; a killed agent turns critical within the liveness bound and comes
//! back with its services; anti-entropy repairs the catalog; bad
//! registrations change nothing.

mod support;

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use support::{dig, dig_available, eventually, weft, weft_bin, Cluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_api::client::HttpClient;

/// A tiny HTTP app whose health endpoint answers with a status the test sets.
struct App {
    port: u16,
    status: Arc<AtomicU16>,
}

impl App {
    async fn start() -> App {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let status = Arc::new(AtomicU16::new(200));
        let answer = status.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let code = answer.load(Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buffer = [0u8; 2048];
                    let _ = socket.read(&mut buffer).await;
                    let response =
                        format!("HTTP/1.1 {code} Status\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
                    let _ = socket.write_all(response.as_bytes()).await;
                });
            }
        });
        App { port, status }
    }

    fn answer(&self, code: u16) {
        self.status.store(code, Ordering::SeqCst);
    }
}

async fn get_json(client: &HttpClient, path: &str) -> Option<Value> {
    let response = client.get(path).await.ok()?;
    (response.status == 200).then(|| serde_json::from_slice(&response.body).ok())?
}

/// Node names of the passing instances of `service`, as agent `client` answers.
async fn passing_nodes(client: &HttpClient, service: &str) -> Option<Vec<String>> {
    let body = get_json(client, &format!("/v1/health/service/{service}?passing")).await?;
    let mut nodes: Vec<String> =
        body.as_array()?.iter().filter_map(|e| e["Node"]["Node"].as_str().map(str::to_owned)).collect();
    nodes.sort();
    Some(nodes)
}

fn dig_srv(dns_addr: &str, name: &str) -> Option<String> {
    Some(dig(dns_addr, &["+short", name, "SRV"]))
}

const LIVENESS: &str = "3s";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_from_config_and_api_reach_every_agent_and_checks_decide_health() {
    let app = App::start().await;
    let mut cluster = Cluster::servers_with(3, &["--liveness-timeout", LIVENESS]).await;
    let config_dir = tempfile::tempdir().unwrap();
    std::fs::write(
        config_dir.path().join("web.hcl"),
        format!(
            r#"
            service {{
              name = "web"
              port = {port}
              tags = ["v1"]
              meta {{
                version = "1"
              }}
              check {{
                http = "http://127.0.0.1:{port}/health"
                interval = "1s"
              }}
            }}
            "#,
            port = app.port
        ),
    )
    .unwrap();
    let dir = config_dir.path().to_str().unwrap().to_owned();
    let vm1 = cluster.add_client("vm1", &["--config-dir", &dir, "--anti-entropy-interval", "2s"]);
    let vm2 = cluster.add_client("vm2", &[]);
    cluster.wait_ready(vm1).await;
    cluster.wait_ready(vm2).await;
    let (vm1_http, vm2_http) = (cluster.client(vm1), cluster.client(vm2));

    // The config-file service is healthy once its HTTP check passes, seen from the other agent.
    let nodes = eventually("web on vm1 passing, seen from vm2", Duration::from_secs(20), || async {
        passing_nodes(&vm2_http, "web").await.filter(|n| !n.is_empty())
    })
    .await;
    assert_eq!(nodes, ["vm1"]);
    if dig_available() {
        let answer = eventually("web SRV from vm2's DNS", Duration::from_secs(10), || async {
            dig_srv(&cluster.specs[vm2].dns_addr, "web.service.weft").filter(|a| !a.trim().is_empty())
        })
        .await;
        assert!(answer.contains(&format!(" {} vm1.node.dc1.weft.", app.port)), "{answer}");
    }

    // An API registration on vm2, with a TTL check.
    let registration = json!({"Name": "api", "ID": "api-1", "Port": 9000, "Tags": ["v2"], "Meta": {"version": "2"},
                              "Check": {"CheckID": "api-ttl", "TTL": "2s"}});
    let response = vm2_http.put("/v1/agent/service/register", registration.to_string()).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    let services = get_json(&vm2_http, "/v1/agent/services").await.unwrap();
    assert_eq!(services["api-1"]["Service"], "api");
    assert_eq!(services["api-1"]["Port"], 9000);
    // A TTL check starts critical; passing it makes the instance healthy everywhere.
    assert_eq!(vm2_http.get("/v1/agent/health/service/id/api-1").await.unwrap().status, 503);
    assert_eq!(vm2_http.put("/v1/agent/check/pass/api-ttl?note=fine", Vec::new()).await.unwrap().status, 200);
    let health = vm2_http.get("/v1/agent/health/service/id/api-1?format=text").await.unwrap();
    assert_eq!((health.status, health.text()), (200, "passing".to_owned()));
    // The TTL is short (it expires below), so keep passing it while waiting:
    // a slow machine widens the wait, never the window.
    eventually("api passing, seen from vm1", Duration::from_secs(10), || async {
        vm2_http.put("/v1/agent/check/pass/api-ttl?note=fine", Vec::new()).await.ok()?;
        passing_nodes(&vm1_http, "api").await.filter(|n| n == &["vm2"])
    })
    .await;
    // The API registration made on vm2 answers `dig` on the other agent, vm1.
    if dig_available() {
        let answer = eventually("api SRV from vm1's DNS", Duration::from_secs(10), || async {
            vm2_http.put("/v1/agent/check/pass/api-ttl?note=fine", Vec::new()).await.ok()?;
            dig_srv(&cluster.specs[vm1].dns_addr, "api.service.weft").filter(|a| !a.trim().is_empty())
        })
        .await;
        assert!(answer.contains(" 9000 vm2.node.dc1.weft."), "{answer}");
    }
    // ?filter= over the health answer.
    let filtered =
        get_json(&vm1_http, "/v1/health/service/api?filter=Service.Meta.version%20%3D%3D%20%222%22").await.unwrap();
    assert_eq!(filtered.as_array().unwrap().len(), 1);
    let none = get_json(&vm1_http, "/v1/health/service/api?filter=Service.Tags%20contains%20%22v9%22").await.unwrap();
    assert_eq!(none, json!([]));
    let bad = vm1_http.get("/v1/health/service/api?filter=Service.Tags%20contains").await.unwrap();
    assert_eq!(bad.status, 400, "{}", bad.text());

    // Left alone, the TTL check expires.
    eventually("api's TTL check to expire", Duration::from_secs(10), || async {
        passing_nodes(&vm1_http, "api").await.filter(|n| n.is_empty())
    })
    .await;
    let checks = get_json(&vm2_http, "/v1/agent/checks").await.unwrap();
    assert_eq!(checks["api-ttl"]["Status"], "critical");
    assert_eq!(checks["api-ttl"]["Output"], "TTL expired");

    // A failing HTTP check takes web out of healthy answers within its interval.
    app.answer(500);
    eventually("web critical after its app fails", Duration::from_secs(10), || async {
        passing_nodes(&vm2_http, "web").await.filter(|n| n.is_empty())
    })
    .await;
    // The catalog's Output says why with the status change, not a
    // check_update_interval (5m) later.
    let checks = get_json(&vm2_http, "/v1/health/checks/web").await.unwrap();
    let critical = checks.as_array().unwrap().iter().find(|c| c["Status"] == "critical").cloned();
    let output = critical.as_ref().and_then(|c| c["Output"].as_str()).unwrap_or_default().to_owned();
    assert!(output.contains("500"), "the failing check's output in the catalog: {checks}");
    app.answer(200);
    eventually("web passing again", Duration::from_secs(10), || async {
        passing_nodes(&vm2_http, "web").await.filter(|n| n == &["vm1"])
    })
    .await;

    // Anti-entropy: a registration deleted behind the agent's back comes back.
    let deregister = json!({"Node": "vm1", "ServiceID": "web"});
    assert_eq!(cluster.client(0).put("/v1/catalog/deregister", deregister.to_string()).await.unwrap().status, 200);
    eventually("anti-entropy to restore web", Duration::from_secs(10), || async {
        let body = get_json(&vm2_http, "/v1/catalog/service/web").await?;
        (body.as_array()?.len() == 1).then_some(())
    })
    .await;

    // `weft members` from a client agent lists servers and clients, all alive.
    // (Waited for: on a loaded machine a heartbeat may be late for a moment.)
    eventually("weft members to list everyone alive", Duration::from_secs(10), || async {
        let (code, out, _) = weft(&["members", "--http-addr", &cluster.specs[vm2].http_addr]);
        let all_alive = ["s1", "s2", "s3", "vm1", "vm2"].iter().all(|name| {
            out.lines().find(|l| l.starts_with(name)).is_some_and(|line| {
                line.contains("alive") && line.contains(if name.starts_with('s') { "server" } else { "client" })
            })
        });
        (code == 0 && all_alive).then_some(())
    })
    .await;

    // Reload picks up a new service file without touching API registrations.
    std::fs::write(config_dir.path().join("cache.json"), r#"{"service": {"name": "cache", "port": 6379}}"#).unwrap();
    let (code, _, err) = weft(&["reload", "--http-addr", &cluster.specs[vm1].http_addr]);
    assert_eq!(code, 0, "{err}");
    eventually("cache registered after reload", Duration::from_secs(10), || async {
        let body = get_json(&vm2_http, "/v1/catalog/service/cache").await?;
        (body.as_array()?.len() == 1).then_some(())
    })
    .await;
    assert!(get_json(&vm2_http, "/v1/agent/services").await.unwrap()["api-1"].is_object());
}

/// 3 servers (short liveness timeout) and client agents vm1 and vm2, with
/// `web` registered through vm1's API and healthy as vm2 sees it.
async fn servers_and_two_clients_with_web_on_vm1() -> (Cluster, usize, usize) {
    let mut cluster = Cluster::servers_with(3, &["--liveness-timeout", LIVENESS]).await;
    let vm1 = cluster.add_client("vm1", &[]);
    let vm2 = cluster.add_client("vm2", &[]);
    cluster.wait_ready(vm1).await;
    cluster.wait_ready(vm2).await;
    let (vm1_http, vm2_http) = (cluster.client(vm1), cluster.client(vm2));
    let registration = json!({"Name": "web", "Port": 8080});
    assert_eq!(vm1_http.put("/v1/agent/service/register", registration.to_string()).await.unwrap().status, 200);
    eventually("web on vm1 healthy", Duration::from_secs(15), || async {
        passing_nodes(&vm2_http, "web").await.filter(|n| n == &["vm1"])
    })
    .await;
    (cluster, vm1, vm2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_turns_critical_and_comes_back_with_its_services() {
    let (mut cluster, vm1, vm2) = servers_and_two_clients_with_web_on_vm1().await;
    let vm2_http = cluster.client(vm2);

    // kill -9: no goodbye. The leader notices the silence within the liveness bound.
    cluster.kill(vm1);
    let killed_at = std::time::Instant::now();
    eventually("vm1's services to leave healthy answers", Duration::from_secs(15), || async {
        passing_nodes(&vm2_http, "web").await.filter(|n| n.is_empty())
    })
    .await;
    let detected = killed_at.elapsed();
    let members = get_json(&vm2_http, "/v1/agent/members").await.unwrap();
    let vm1_member = members.as_array().unwrap().iter().find(|m| m["Name"] == "vm1").cloned().unwrap();
    assert_eq!(vm1_member["StatusText"], "failed", "{members}");
    eprintln!("kill -9 to critical: {detected:?} (liveness timeout {LIVENESS})");

    // Restarted with its data dir: back with the API-registered service, nothing re-registered by hand.
    cluster.start_server(vm1);
    eventually("vm1 and web back", Duration::from_secs(20), || async {
        passing_nodes(&vm2_http, "web").await.filter(|n| n == &["vm1"])
    })
    .await;

    // SIGTERM is a graceful leave: the node is deregistered before vm1 exits
    // (a consistent read through vm2 sees it; a default one may lag by the
    // bounded staleness of a client agent's copy).
    assert!(cluster.stop(vm1), "vm1 did not stop on SIGTERM");
    assert!(!consistent_nodes(&vm2_http).await.contains(&"vm1".to_owned()));
    let web = get_json(&vm2_http, "/v1/health/service/web?passing&consistent").await.unwrap();
    assert_eq!(web, json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_agent_reads_its_own_writes_from_its_copy() {
    let mut cluster = Cluster::servers(3).await;
    let vm1 = cluster.add_client("vm1", &[]);
    cluster.wait_ready(vm1).await;
    let vm1_http = cluster.client(vm1);
    // Default reads are served from the agent's copy, which holds every write made through it.
    for i in 0..20 {
        let key = format!("/v1/kv/ryw/{i}");
        assert_eq!(vm1_http.put(&key, i.to_string()).await.unwrap().text(), "true");
        let read = vm1_http.get(&format!("{key}?raw")).await.unwrap();
        assert_eq!((read.status, read.text()), (200, i.to_string()), "write {i} read back through vm1");
        let last_contact = read.header("X-Consul-LastContact").expect("X-Consul-LastContact");
        assert!(last_contact.parse::<u64>().is_ok(), "{last_contact}");
        let listed = get_json(&vm1_http, "/v1/kv/ryw/?keys").await.unwrap();
        assert_eq!(listed.as_array().unwrap().len(), i + 1, "write {i} listed through vm1");
    }
    // ?consistent goes through the leader and agrees.
    let consistent = get_json(&vm1_http, "/v1/kv/ryw/?keys&consistent").await.unwrap();
    assert_eq!(consistent.as_array().unwrap().len(), 20);
    // A client agent writes only its own node's catalog entries: another
    // node (an external service) is registered through a server.
    let node = json!({"Node": "ext-1", "Address": "10.0.0.9", "Service": {"Service": "ext", "Port": 80}});
    let refused = vm1_http.put("/v1/catalog/register", node.to_string()).await.unwrap();
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert!(refused.text().contains("only its own node"), "{}", refused.text());
    assert_eq!(cluster.client(0).put("/v1/catalog/register", node.to_string()).await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_registrations_are_refused_and_change_nothing() {
    let cluster = Cluster::servers(1).await;
    let client = cluster.client(0);
    let good = json!({"Name": "web", "Port": 80});
    assert_eq!(client.put("/v1/agent/service/register", good.to_string()).await.unwrap().status, 200);
    let before = get_json(&client, "/v1/agent/services").await.unwrap();
    let cases: [(&str, &str); 11] = [
        ("{\"Name\": \"web\", ", "malformed JSON"),
        // A typo is named with the field meant, at any depth, whatever its case.
        (r#"{"Name": "web", "Port": 80, "Chek": {"TTL": "10s"}}"#, r#""chek" (did you mean "Check"?)"#),
        (r#"{"Name": "web", "Check": {"TTL": "10s", "Nots": "x"}}"#, r#""nots" (did you mean "Notes"?)"#),
        (r#"{"Port": 80}"#, "service name"),
        (r#"{"Name": "web", "Port": 70000}"#, "Port"),
        (r#"{"Name": "web", "Check": {"Interval": "10s"}}"#, "one of HTTP, TCP, GRPC, TTL"),
        (r#"{"Name": "web", "Check": {"HTTP": "http://x/", "Interval": "soon"}}"#, "Interval"),
        // An unknown check type is named, not ignored.
        (r#"{"Name": "web", "Check": {"UDP": "x", "Interval": "10s"}}"#, "UDP"),
        (r#"{"Name": "web", "Kind": "connect-proxy", "Port": 21000}"#, "DestinationServiceName"),
        (
            r#"{"Name": "web", "Connect": {"SidecarService": {"Proxy": {"Upstreams": [{"DestinationName": "db", "LocalBindPort": 9191, "LocalBindPrt": 1}]}}}}"#,
            r#""localbindprt" (did you mean "LocalBindPort"?)"#,
        ),
        (r#"{"Name": "web", "Connect": {"SidecarServce": {}}}"#, r#""sidecarservce" (did you mean "SidecarService"?)"#),
    ];
    for (body, expected) in cases {
        let response = client.put("/v1/agent/service/register", body).await.unwrap();
        assert_eq!(response.status, 400, "{body}: {}", response.text());
        assert!(response.text().contains(expected), "{body}: {}", response.text());
    }
    // Consul's fields Weft has no use for are accepted, as Consul's clients send them.
    let consul = json!({"Name": "web", "Port": 80, "SocketPath": "", "Namespace": "default"});
    assert_eq!(client.put("/v1/agent/service/register", consul.to_string()).await.unwrap().status, 200);
    let script = json!({"Name": "web", "Check": {"Args": ["/bin/true"], "Interval": "10s"}});
    let response = client.put("/v1/agent/service/register", script.to_string()).await.unwrap();
    assert_eq!(response.status, 400);
    assert!(response.text().contains("enable_script_checks"), "{}", response.text());
    assert_eq!(get_json(&client, "/v1/agent/services").await.unwrap(), before);
    // ... at every depth.
    let consul = json!({"Name": "native", "Port": 81,
                        "Connect": {"Native": false, "SidecarService": {"Tags": ["x"], "Proxy": {"Expose": {}}}}});
    let response = client.put("/v1/agent/service/register", consul.to_string()).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    let unknown = client.put("/v1/agent/check/pass/nope", Vec::new()).await.unwrap();
    assert_eq!(unknown.status, 404);

    // An Interval under 1s is raised to 1s, as Consul does, not refused.
    let fast = json!({"Name": "fast", "Check": {"TCP": "127.0.0.1:1", "Interval": "200ms"}});
    assert_eq!(client.put("/v1/agent/service/register", fast.to_string()).await.unwrap().status, 200);

    // A connect-proxy registered directly keeps its Proxy block, in Consul's shape.
    let proxy = json!({"Name": "web-proxy", "Kind": "connect-proxy", "Port": 21000, "Proxy": {
        "DestinationServiceName": "web", "DestinationServiceID": "web", "LocalServicePort": 80,
        "Config": {"envoy_prometheus_bind_addr": "0.0.0.0:9102"},
        "Upstreams": [{"DestinationName": "db", "LocalBindPort": 9191, "Datacenter": "dc1"}]}});
    let response = client.put("/v1/agent/service/register", proxy.to_string()).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    let shown = get_json(&client, "/v1/agent/service/web-proxy").await.unwrap();
    assert_eq!(shown["Kind"], "connect-proxy");
    assert_eq!(shown["Proxy"]["DestinationServiceName"], "web");
    assert_eq!(shown["Proxy"]["LocalServicePort"], 80);
    assert_eq!(shown["Proxy"]["Config"]["envoy_prometheus_bind_addr"], "0.0.0.0:9102", "user keys as written");
    assert_eq!(shown["Proxy"]["Upstreams"][0]["DestinationName"], "db");
    assert_eq!(shown["Proxy"]["Upstreams"][0]["LocalBindPort"], 9191);
    let all = get_json(&client, "/v1/agent/services").await.unwrap();
    assert_eq!(all["web-proxy"]["Proxy"], shown["Proxy"]);

    // Re-registering keeps the service's other checks, unless ?replace-existing-checks.
    let check_ids = || async {
        let checks = get_json(&client, "/v1/agent/checks").await.unwrap();
        let mut ids: Vec<String> =
            checks.as_object().unwrap().keys().filter(|k| k.starts_with("multi-")).cloned().collect();
        ids.sort();
        ids
    };
    let both =
        json!({"Name": "multi", "Checks": [{"CheckID": "multi-a", "TTL": "1m"}, {"CheckID": "multi-b", "TTL": "1m"}]});
    let only_a = json!({"Name": "multi", "Checks": [{"CheckID": "multi-a", "TTL": "1m"}]});
    client.put("/v1/agent/service/register", both.to_string()).await.unwrap();
    client.put("/v1/agent/service/register", only_a.to_string()).await.unwrap();
    assert_eq!(check_ids().await, ["multi-a", "multi-b"]);
    let replaced = client.put("/v1/agent/service/register?replace-existing-checks", only_a.to_string()).await.unwrap();
    assert_eq!(replaced.status, 200);
    assert_eq!(check_ids().await, ["multi-a"]);

    // `weft services register FILE` takes the config-file shape; deregister by ID.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("db.hcl");
    std::fs::write(&file, "service {\n  name = \"db\"\n  port = 5432\n  tags = [\"primary\"]\n}\n").unwrap();
    let http = &cluster.specs[0].http_addr;
    let (code, out, err) = weft(&["services", "register", file.to_str().unwrap(), "--http-addr", http]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Registered service: db"), "{out}");
    assert_eq!(get_json(&client, "/v1/agent/service/db").await.unwrap()["Tags"], json!(["primary"]));
    let (code, _, err) = weft(&["services", "deregister", "db", "--http-addr", http]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(client.get("/v1/agent/service/db").await.unwrap().status, 404);
    let (code, _, err) = weft(&["services", "register", "--port", "1", "--http-addr", http]);
    assert_eq!(code, 1, "no name and no file is an error");
    assert!(err.contains("--name"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_blocking_and_deregister_critical_service_after() {
    let cluster = Cluster::servers(1).await;
    let client = cluster.client(0);

    // `?hash=` blocks until the agent's own services change.
    let first = client.get("/v1/agent/services").await.unwrap();
    let hash = first.header("X-Consul-ContentHash").expect("a content hash").to_owned();
    let waiter = {
        let client = client.clone();
        let path = format!("/v1/agent/services?hash={hash}&wait=5m");
        tokio::spawn(async move { client.get(&path).await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "a blocking query with the current hash waits");
    let registration = json!({"Name": "flaky", "Check": {"CheckID": "flaky-ttl", "TTL": "1s",
                              "DeregisterCriticalServiceAfter": "2s"}});
    assert_eq!(client.put("/v1/agent/service/register", registration.to_string()).await.unwrap().status, 200);
    // It returns at all (long before its 5 minutes): the registration woke it.
    let woken = waiter.await.unwrap();
    assert_ne!(woken.header("X-Consul-ContentHash"), Some(hash.as_str()));
    assert!(serde_json::from_slice::<Value>(&woken.body).unwrap()["flaky"].is_object());

    // `/v1/agent/service/<id>`: the body's ContentHash is the header's, and blocks with `?hash=`.
    let web = json!({"Name": "web", "Port": 80, "Tags": ["v1"]});
    assert_eq!(client.put("/v1/agent/service/register", web.to_string()).await.unwrap().status, 200);
    let response = client.get("/v1/agent/service/web").await.unwrap();
    let body: Value = serde_json::from_slice(&response.body).unwrap();
    let hash = body["ContentHash"].as_str().expect("a ContentHash").to_owned();
    assert_eq!(response.header("X-Consul-ContentHash"), Some(hash.as_str()));
    let waiter = {
        let client = client.clone();
        let path = format!("/v1/agent/service/web?hash={hash}&wait=5m");
        tokio::spawn(async move { client.get(&path).await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "a blocking query with the body's hash waits");
    let web = json!({"Name": "web", "Port": 80, "Tags": ["v2"]});
    assert_eq!(client.put("/v1/agent/service/register", web.to_string()).await.unwrap().status, 200);
    let woken = waiter.await.unwrap();
    let body: Value = serde_json::from_slice(&woken.body).unwrap();
    assert_eq!(body["Tags"], json!(["v2"]), "woken by the change, not at once");
    assert_ne!(body["ContentHash"], json!(hash));
    assert_eq!(woken.header("X-Consul-ContentHash"), body["ContentHash"].as_str());

    // Never passed: critical from the start, so it is deregistered after 2s.
    eventually("flaky deregistered after being critical for 2s", Duration::from_secs(10), || async {
        let response = client.get("/v1/agent/service/flaky").await.ok()?;
        (response.status == 404).then_some(())
    })
    .await;
    eventually("flaky gone from the catalog too", Duration::from_secs(10), || async {
        let body = get_json(&client, "/v1/catalog/service/flaky").await?;
        body.as_array()?.is_empty().then_some(())
    })
    .await;
}

/// `StatusText` and role (`Tags.role`) of `node` in agent `client`'s members.
async fn member(client: &HttpClient, node: &str) -> Option<(String, String)> {
    let members = get_json(client, "/v1/agent/members").await?;
    let member = members.as_array()?.iter().find(|m| m["Name"] == node)?;
    Some((member["StatusText"].as_str()?.to_owned(), member["Tags"]["role"].as_str()?.to_owned()))
}

/// Node names in the catalog, read through the leader with `?consistent`.
async fn consistent_nodes(client: &HttpClient) -> Vec<String> {
    let nodes = get_json(client, "/v1/catalog/nodes?consistent").await.expect("a consistent node list");
    nodes.as_array().unwrap().iter().filter_map(|n| n["Node"].as_str().map(str::to_owned)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_leave_shows_left_until_the_node_joins_again() {
    let (mut cluster, vm1, vm2) = servers_and_two_clients_with_web_on_vm1().await;
    let vm2_http = cluster.client(vm2);

    // `weft leave` answers once the deregistration is applied: a consistent
    // read right after it no longer finds the node.
    let (code, out, err) = weft(&["leave", "--http-addr", &cluster.specs[vm1].http_addr]);
    assert_eq!(code, 0, "{out}{err}");
    let leader = cluster.wait_for_leader().await;
    assert!(!consistent_nodes(&cluster.client(leader)).await.contains(&"vm1".to_owned()));
    assert!(cluster.wait_exited(vm1), "vm1 exits after leaving");
    let left = eventually("vm1 listed as left", Duration::from_secs(10), || async {
        member(&vm2_http, "vm1").await.filter(|(status, _)| status == "left")
    })
    .await;
    assert_eq!(left.1, "node", "vm1 keeps its client role");
    let (code, out, _) = weft(&["members", "--http-addr", &cluster.specs[vm2].http_addr]);
    assert_eq!(code, 0);
    let line = out.lines().find(|l| l.starts_with("vm1")).unwrap_or_default().to_owned();
    assert!(line.contains("left") && line.contains("client"), "{out}");
    assert_eq!(passing_nodes(&vm2_http, "web").await.unwrap(), Vec::<String>::new());

    // Joining again clears it: alive, with its API registration back.
    cluster.start_server(vm1);
    eventually("vm1 alive again with web", Duration::from_secs(20), || async {
        let alive = member(&vm2_http, "vm1").await.is_some_and(|(status, _)| status == "alive");
        (alive && passing_nodes(&vm2_http, "web").await? == ["vm1"]).then_some(())
    })
    .await;

    // The leader leaves through the API: out of the catalog and of the Raft peers, shown as a left server.
    let leader_name = cluster.specs[leader].name.clone();
    let response = cluster.client(leader).put("/v1/agent/leave", Vec::new()).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(cluster.wait_exited(leader), "the leader exits after leaving");
    let new_leader = cluster.wait_for_leader().await;
    assert_ne!(new_leader, leader);
    assert!(!consistent_nodes(&cluster.client(new_leader)).await.contains(&leader_name));
    let voters = eventually("two voters left", Duration::from_secs(15), || async {
        cluster.voters_seen_by(new_leader).await.filter(|v| v.len() == 2)
    })
    .await;
    assert!(!voters.contains(&leader_name), "{voters:?}");
    let left = eventually("the old leader listed as left", Duration::from_secs(10), || async {
        member(&vm2_http, &leader_name).await.filter(|(status, _)| status == "left")
    })
    .await;
    assert_eq!(left.1, "consul", "a left server keeps its server role");
}

/// Tags of the passing instances of `service`, as agent `client` answers.
async fn passing_tags(client: &HttpClient, service: &str) -> Option<Vec<Value>> {
    let body = get_json(client, &format!("/v1/health/service/{service}?passing")).await?;
    Some(body.as_array()?.iter().map(|e| e["Service"]["Tags"].clone()).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_updates_services_in_place_and_a_restart_keeps_api_checks_on_them() {
    let app = App::start().await;
    let mut cluster = Cluster::servers(1).await;
    let config_dir = tempfile::tempdir().unwrap();
    let write_web = |tag: &str| {
        let file = format!(
            r#"service {{
                 name = "web"
                 port = {port}
                 tags = ["{tag}"]
                 check {{
                   http = "http://127.0.0.1:{port}/health"
                   interval = "1s"
                 }}
               }}"#,
            port = app.port
        );
        std::fs::write(config_dir.path().join("web.hcl"), file).unwrap();
    };
    write_web("v1");
    let vm1 = cluster.add_client("vm1", &["--config-dir", config_dir.path().to_str().unwrap()]);
    cluster.wait_ready(vm1).await;
    let vm1_http = cluster.client(vm1);
    eventually("web passing", Duration::from_secs(20), || async {
        passing_tags(&vm1_http, "web").await.filter(|t| t == &[json!(["v1"])])
    })
    .await;

    // Poll ?passing all through two reloads: web must never drop out.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let (client, stop) = (vm1_http.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut polls, mut missing) = (0, Vec::new());
            while !stop.load(Ordering::SeqCst) {
                if let Some(tags) = passing_tags(&client, "web").await {
                    polls += 1;
                    if tags.is_empty() {
                        missing.push(polls);
                    }
                }
            }
            (polls, missing)
        })
    };
    write_web("v2");
    let (code, _, err) = weft(&["reload", "--http-addr", &cluster.specs[vm1].http_addr]);
    assert_eq!(code, 0, "{err}");
    eventually("web with tag v2", Duration::from_secs(10), || async {
        passing_tags(&vm1_http, "web").await.filter(|t| t == &[json!(["v2"])])
    })
    .await;
    write_web("v3");
    cluster.signal(vm1, "HUP");
    eventually("web with tag v3 after SIGHUP", Duration::from_secs(10), || async {
        passing_tags(&vm1_http, "web").await.filter(|t| t == &[json!(["v3"])])
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let (polls, missing) = poller.await.unwrap();
    eprintln!("polled ?passing {polls} times during the reloads");
    assert!(polls > 0);
    assert!(missing.is_empty(), "web missing from ?passing in polls {missing:?} of {polls}");

    // An API check on the config-file service, with its TTL passed, survives kill -9 and a restart.
    let ttl = json!({"CheckID": "web-ttl", "ServiceID": "web", "TTL": "10m"});
    assert_eq!(vm1_http.put("/v1/agent/check/register", ttl.to_string()).await.unwrap().status, 200);
    assert_eq!(vm1_http.put("/v1/agent/check/pass/web-ttl?note=fed", Vec::new()).await.unwrap().status, 200);
    cluster.kill(vm1);
    cluster.start_server(vm1);
    cluster.wait_ready(vm1).await;
    let checks = get_json(&vm1_http, "/v1/agent/checks").await.unwrap();
    assert_eq!(checks["web-ttl"]["ServiceID"], "web", "{checks}");
    assert_eq!((&checks["web-ttl"]["Status"], &checks["web-ttl"]["Output"]), (&json!("passing"), &json!("fed")));
    eventually("web passing in the catalog with its TTL check", Duration::from_secs(20), || async {
        passing_tags(&cluster.client(0), "web").await.filter(|t| t == &[json!(["v3"])])
    })
    .await;
}

/// The maintenance check on `agent` with `id`: (status, notes).
async fn maintenance_check(client: &HttpClient, id: &str) -> Option<(String, String)> {
    let checks = get_json(client, "/v1/agent/checks").await?;
    let check = &checks[id];
    Some((check["Status"].as_str()?.to_owned(), check["Notes"].as_str()?.to_owned()))
}

/// Maintenance mode, as Consul's: a service's or the node's maintenance
/// check (status `maintenance`) takes its instances out of passing health
/// answers and DNS until it is lifted, outlives a restart of the agent, and
/// `weft maint` sets, lists and lifts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_mode_takes_instances_out_until_lifted() {
    let mut cluster = Cluster::servers(1).await;
    let vm1 = cluster.add_client("vm1", &[]);
    cluster.wait_ready(vm1).await;
    let vm1_http = cluster.client(vm1);
    let http_addr = cluster.specs[vm1].http_addr.clone();
    let registration = json!({"Name": "web", "Port": 8080});
    assert_eq!(vm1_http.put("/v1/agent/service/register", registration.to_string()).await.unwrap().status, 200);
    let server = cluster.client(0);
    let passing = |expected: Vec<String>| {
        let client = server.clone();
        async move { passing_nodes(&client, "web").await.filter(|nodes| *nodes == expected) }
    };
    eventually("web to pass on vm1", Duration::from_secs(20), || passing(vec!["vm1".into()])).await;

    // Bad requests: a 400 or a 404 that says why, and nothing changes.
    for (path, status, says) in [
        ("/v1/agent/service/maintenance/web", 400, "Missing value for enable"),
        ("/v1/agent/service/maintenance/web?enable=maybe", 400, "Invalid value for enable"),
        ("/v1/agent/service/maintenance/nope?enable=true", 404, "nope"),
        ("/v1/agent/maintenance?reason=x", 400, "Missing value for enable"),
    ] {
        let answer = vm1_http.put(path, Vec::new()).await.unwrap();
        assert_eq!(answer.status, status, "{path}: {}", answer.text());
        assert!(answer.text().contains(says), "{path}: {}", answer.text());
    }

    // The service, with weft maint.
    let maint = |args: &[&str]| {
        let mut all = vec!["maint", "--http-addr", &http_addr];
        all.extend_from_slice(args);
        weft(&all)
    };
    let (code, out, err) = maint(&["--enable", "--service", "web", "--reason", "upgrading web"]);
    assert_eq!((code, out.trim()), (0, "Service entered maintenance mode: web"), "{err}");
    let check = maintenance_check(&vm1_http, "_service_maintenance:web").await;
    assert_eq!(check, Some(("maintenance".into(), "upgrading web".into())));
    eventually("web to leave passing answers", Duration::from_secs(20), || passing(vec![])).await;
    if dig_available() {
        let dns = cluster.specs[0].dns_addr.clone();
        eventually("web to leave DNS", Duration::from_secs(20), || async {
            dig_srv(&dns, "web.service.weft").filter(|answer| answer.trim().is_empty())
        })
        .await;
    }
    let (code, listed, _) = maint(&[]);
    assert_eq!(code, 0);
    assert!(listed.contains("Service:\n  ID:     web\n  Reason: upgrading web"), "{listed}");

    // It outlives a restart of the agent.
    assert!(cluster.stop(vm1), "vm1 did not stop on SIGTERM");
    cluster.start_server(vm1);
    cluster.wait_ready(vm1).await;
    let check = maintenance_check(&vm1_http, "_service_maintenance:web").await;
    assert_eq!(check, Some(("maintenance".into(), "upgrading web".into())), "after a restart");

    // Lifted through the API: web passes again.
    let answer = vm1_http.put("/v1/agent/service/maintenance/web?enable=false", Vec::new()).await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());
    eventually("web to pass again", Duration::from_secs(20), || passing(vec!["vm1".into()])).await;

    // The node: every instance on it goes, with Consul's default reason.
    let (code, out, _) = maint(&["--enable"]);
    assert_eq!((code, out.trim()), (0, "Node entered maintenance mode"));
    let (status, notes) = maintenance_check(&vm1_http, "_node_maintenance").await.expect("the node's check");
    assert_eq!(status, "maintenance");
    assert!(notes.starts_with("Maintenance mode is enabled for this node"), "{notes}");
    eventually("vm1's instances to leave passing answers", Duration::from_secs(20), || passing(vec![])).await;
    let (code, out, _) = maint(&["--disable"]);
    assert_eq!((code, out.trim()), (0, "Node left maintenance mode"));
    eventually("web to pass once more", Duration::from_secs(20), || passing(vec!["vm1".into()])).await;
}

/// The names of the events `client`'s agent lists for `query`, and the
/// list's `X-Consul-Index`.
async fn events(client: &HttpClient, query: &str) -> (Vec<String>, String) {
    let response = client.get(&format!("/v1/event/list{query}")).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    let listed: Value = serde_json::from_slice(&response.body).unwrap();
    let names = listed.as_array().unwrap().iter().map(|e| e["Name"].as_str().unwrap().to_owned()).collect();
    let index = response.headers.get("x-consul-index").and_then(|i| i.to_str().ok()).unwrap_or_default();
    (names, index.to_owned())
}

/// Fires `name` on `client`'s agent; the event as answered.
async fn fire(client: &HttpClient, name_and_query: &str, payload: &str) -> Value {
    let response = client.put(&format!("/v1/event/fire/{name_and_query}"), payload.as_bytes().to_vec()).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    serde_json::from_slice(&response.body).unwrap()
}

/// User events (Consul's `/v1/event`): fired on one agent, listed by every
/// agent whose node and services the filters select, a blocking list woken
/// by the fire; an event Consul refuses is a 400 and reaches nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_events_reach_the_agents_their_filters_select() {
    let (cluster, vm1, vm2) = servers_and_two_clients_with_web_on_vm1().await;
    let (vm1_http, vm2_http) = (cluster.client(vm1), cluster.client(vm2));
    assert_eq!(events(&vm2_http, "").await, (vec![], "1".to_owned()), "none yet: Consul's index 1");

    // A blocking list on vm2, woken by an event fired on vm1.
    let waiting = tokio::spawn({
        let vm2_http = vm2_http.clone();
        async move { events(&vm2_http, "?index=1&wait=30s").await }
    });
    let fired = fire(&vm1_http, "deploy", "v1.2.3").await;
    assert_eq!(
        (&fired["Name"], &fired["Payload"], &fired["Version"]),
        (&"deploy".into(), &"djEuMi4z".into(), &1.into())
    );
    let id = fired["ID"].as_str().unwrap();
    let (names, index) = waiting.await.unwrap();
    assert_eq!(names, ["deploy"]);
    assert_eq!(index, weft_api::event::event_index(Some(id)).to_string(), "Consul's index: the ID's halves XORed");

    // Filters: web runs on vm1 only; the node filter names vm2.
    fire(&vm2_http, "web-only?service=%5Eweb%24", "").await;
    fire(&vm1_http, "for-vm2?node=%5Evm2%24", "").await;
    fire(&vm1_http, "marker", "").await;
    for (http, expected) in
        [(&vm1_http, ["deploy", "web-only", "marker"]), (&vm2_http, ["deploy", "for-vm2", "marker"])]
    {
        eventually("each agent to list what selects it", Duration::from_secs(10), || async {
            let (names, _) = events(http, "").await;
            (names.last().map(String::as_str) == Some("marker")).then_some(names)
        })
        .await;
        assert_eq!(events(http, "").await.0, expected);
    }
    assert_eq!(events(&vm1_http, "?name=deploy").await.0, ["deploy"]);

    // What Consul refuses is a 400, and is fired nowhere.
    let big = "x".repeat(600);
    for (path, payload) in [("_rexec", ""), ("tagged?tag=v1", ""), ("broken?node=%28", ""), ("big", big.as_str())] {
        let response = vm1_http.put(&format!("/v1/event/fire/{path}"), payload.as_bytes().to_vec()).await.unwrap();
        assert_eq!(response.status, 400, "{path}: {}", response.text());
    }
    fire(&vm1_http, "after", "").await;
    eventually("vm1 to list the next event", Duration::from_secs(10), || async {
        (events(&vm1_http, "").await.0.last().map(String::as_str) == Some("after")).then_some(())
    })
    .await;
    assert_eq!(events(&vm1_http, "").await.0, ["deploy", "web-only", "marker", "after"]);
}

/// `PUT /v1/txn` through `http`, its status and body.
async fn txn(http: &HttpClient, ops: Value) -> (u16, Value) {
    let response = http.put("/v1/txn", ops.to_string()).await.unwrap();
    (response.status, serde_json::from_slice(&response.body).unwrap_or(Value::Null))
}

fn kv_op(verb: &str, key: &str, value: &str, index: u64) -> Value {
    use base64::Engine;
    let value = base64::engine::general_purpose::STANDARD.encode(value);
    json!({"KV": {"Verb": verb, "Key": key, "Value": value, "Index": index}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_through_a_client_agent_apply_whole_or_not_at_all() {
    let mut cluster = Cluster::servers(3).await;
    let vm1 = cluster.add_client("vm1", &[]);
    cluster.wait_ready(vm1).await;
    let (vm1_http, server) = (cluster.client(vm1), cluster.client(0));

    // A write: one Raft entry, every result without its value.
    let (status, applied) = txn(
        &vm1_http,
        json!([kv_op("set", "t/a", "1", 0), kv_op("set", "t/b", "2", 0), kv_op("check-not-exists", "t/c", "", 0)]),
    )
    .await;
    assert_eq!(status, 200, "{applied}");
    let results = applied["Results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{applied}");
    assert_eq!((&results[0]["KV"]["Key"], &results[0]["KV"]["Value"]), (&json!("t/a"), &Value::Null));
    assert_eq!(applied["Errors"], Value::Null);
    let a_index = results[0]["KV"]["ModifyIndex"].as_u64().unwrap();
    assert_eq!(results[1]["KV"]["ModifyIndex"], a_index, "one entry, one index");

    // A stale cas rolls the whole transaction back: t/c is not written,
    // t/b not deleted, and each failure is named.
    let (status, refused) = txn(
        &vm1_http,
        json!([
            kv_op("set", "t/c", "3", 0),
            kv_op("cas", "t/a", "x", a_index + 100),
            kv_op("delete", "t/b", "", 0),
            kv_op("check-index", "t/a", "", a_index + 1),
        ]),
    )
    .await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["Results"], Value::Null);
    assert_eq!(
        refused["Errors"],
        json!([
            {"OpIndex": 1, "What": "failed to set key \"t/a\", index is stale"},
            {"OpIndex": 3, "What": format!("failed index check for key \"t/a\", current modify index {a_index} != {}", a_index + 1)},
        ])
    );
    for (key, status) in [("t/c", 404), ("t/b", 200), ("t/a", 200)] {
        assert_eq!(server.get(&format!("/v1/kv/{key}?consistent")).await.unwrap().status, status, "{key}");
    }

    // A read is served from the agent's copy, with its index headers.
    let (status, read) = txn(&vm1_http, json!([kv_op("get", "t/a", "", 0), kv_op("get-tree", "t/", "", 0)])).await;
    assert_eq!(status, 200, "{read}");
    let values: Vec<&Value> = read["Results"].as_array().unwrap().iter().map(|r| &r["KV"]["Value"]).collect();
    assert_eq!(values, [&json!("MQ=="), &json!("MQ=="), &json!("Mg==")]);
    let (status, missing) = txn(&vm1_http, json!([kv_op("get", "t/zz", "", 0)])).await;
    assert_eq!((status, &missing["Errors"][0]["What"]), (409, &json!("key \"t/zz\" doesn't exist")));

    // Only a session that exists can lock; delete-tree takes the prefix.
    let lock = json!([{"KV": {"Verb": "lock", "Key": "t/a", "Session": "b6a4a5d1-0000-4000-8000-000000000000"}}]);
    let (status, locked) = txn(&vm1_http, lock).await;
    assert_eq!(
        (status, &locked["Errors"][0]["What"]),
        (409, &json!("invalid session \"b6a4a5d1-0000-4000-8000-000000000000\""))
    );
    let (status, _) = txn(&vm1_http, json!([kv_op("delete-tree", "t/", "", 0)])).await;
    assert_eq!(status, 200);
    assert_eq!(server.get("/v1/kv/t/?recurse&consistent").await.unwrap().status, 404);

    // Refused before anything runs.
    let too_many: Vec<Value> = (0..129).map(|i| kv_op("set", &format!("many/{i}"), "x", 0)).collect();
    let (status, _) = txn(&vm1_http, Value::Array(too_many)).await;
    assert_eq!(status, 413);
    let (status, unknown) = txn(&vm1_http, json!([kv_op("frobnicate", "t/a", "", 0)])).await;
    assert_eq!((status, &unknown["Errors"][0]["What"]), (409, &json!("unknown KV verb \"frobnicate\"")));
    let node_op = json!([{"Node": {"Verb": "set", "Node": {"Node": "x", "Address": "10.0.0.9"}}}]);
    assert_eq!(vm1_http.put("/v1/txn", node_op.to_string()).await.unwrap().status, 400);
    assert_eq!(vm1_http.put("/v1/txn", "{").await.unwrap().status, 400);
    assert_eq!(server.get("/v1/kv/many/?keys&consistent").await.unwrap().status, 404);
}

/// Waits until `node`'s `serfHealth` check passes, as `http` answers: a
/// session bound to it may be made only then (an agent is ready before
/// the leader has registered its node).
async fn wait_node_alive(http: &HttpClient, node: &str) {
    eventually(&format!("{node}'s serfHealth to pass"), Duration::from_secs(30), || async {
        let checks = get_json(http, &format!("/v1/health/node/{node}")).await?;
        let alive = checks.as_array()?.iter().any(|c| c["CheckID"] == "serfHealth" && c["Status"] == "passing");
        alive.then_some(())
    })
    .await;
}

/// `PUT /v1/session/create` on `http` with `body`: the new session's ID.
async fn create_session(http: &HttpClient, body: Value) -> String {
    let response = http.put("/v1/session/create", body.to_string()).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    let created: Value = serde_json::from_slice(&response.body).unwrap();
    created["ID"].as_str().unwrap().to_owned()
}

async fn put_text(http: &HttpClient, path: &str, body: &str) -> String {
    http.put(path, body.to_owned()).await.unwrap().text()
}

async fn session_ids(http: &HttpClient) -> Vec<String> {
    let listed = get_json(http, "/v1/session/list").await.unwrap_or(Value::Null);
    listed.as_array().into_iter().flatten().filter_map(|s| s["ID"].as_str().map(str::to_owned)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_hold_locks_until_released_destroyed_expired_or_their_node_fails() {
    let (mut cluster, vm1, vm2) = servers_and_two_clients_with_web_on_vm1().await;
    let (vm1_http, vm2_http) = (cluster.client(vm1), cluster.client(vm2));

    // A session on vm1 (its node and serfHealth by default), in Consul's shape.
    wait_node_alive(&vm2_http, "vm1").await;
    wait_node_alive(&vm2_http, "vm2").await;
    let s1 = create_session(&vm1_http, json!({"Name": "leader-election"})).await;
    let info = get_json(&vm2_http, &format!("/v1/session/info/{s1}")).await.unwrap();
    let info = &info[0];
    assert_eq!((&info["Node"], &info["Behavior"], &info["TTL"]), (&json!("vm1"), &json!("release"), &json!("")));
    assert_eq!((&info["NodeChecks"], &info["LockDelay"]), (&json!(["serfHealth"]), &json!(15_000_000_000u64)));
    assert_eq!(get_json(&vm2_http, "/v1/session/node/vm1").await.unwrap()[0]["ID"], json!(s1));

    // One holder at a time, through any agent.
    let s2 = create_session(&vm2_http, json!({"LockDelay": "2s", "Behavior": "delete"})).await;
    assert_eq!(put_text(&vm2_http, &format!("/v1/kv/locks/leader?acquire={s1}"), "vm1").await, "true");
    assert_eq!(put_text(&vm1_http, &format!("/v1/kv/locks/leader?acquire={s2}"), "vm2").await, "false");
    let held = get_json(&vm2_http, "/v1/kv/locks/leader").await.unwrap();
    assert_eq!((&held[0]["Session"], &held[0]["LockIndex"]), (&json!(s1), &json!(1)));
    assert_eq!(put_text(&vm1_http, &format!("/v1/kv/locks/leader?release={s2}"), "").await, "false");
    assert_eq!(put_text(&vm1_http, &format!("/v1/kv/locks/leader?release={s1}"), "").await, "true");
    assert_eq!(put_text(&vm1_http, &format!("/v1/kv/locks/leader?acquire={s2}"), "vm2").await, "true");
    let txn = json!([{"KV": {"Verb": "check-session", "Key": "locks/leader", "Session": s2}}]);
    assert_eq!(vm1_http.put("/v1/txn", txn.to_string()).await.unwrap().status, 200);

    // Destroyed: s2's key goes with it (behavior delete), and for its 2 s
    // lock delay no session may take it.
    assert_eq!(put_text(&vm2_http, &format!("/v1/session/destroy/{s2}"), "").await, "true");
    assert_eq!(vm1_http.get("/v1/kv/locks/leader?consistent").await.unwrap().status, 404);
    let destroyed = std::time::Instant::now();
    assert_eq!(put_text(&vm1_http, &format!("/v1/kv/locks/leader?acquire={s1}"), "vm1").await, "false");
    eventually("the lock delay to pass", Duration::from_secs(10), || async {
        (put_text(&vm1_http, &format!("/v1/kv/locks/leader?acquire={s1}"), "vm1").await == "true").then_some(())
    })
    .await;
    assert!(destroyed.elapsed() >= Duration::from_millis(1500), "{:?}", destroyed.elapsed());

    // A TTL: renewed, it lives; left alone, it ends within twice its TTL.
    let s3 = create_session(&vm2_http, json!({"TTL": "10s", "Node": "vm2"})).await;
    let renewed = vm1_http.put(&format!("/v1/session/renew/{s3}"), "").await.unwrap();
    assert_eq!(renewed.status, 200, "{}", renewed.text());
    let missing = vm1_http.put("/v1/session/renew/00000000-0000-4000-8000-000000000000", "").await.unwrap();
    assert_eq!(missing.status, 404);
    let ttl_set = std::time::Instant::now();
    eventually("the TTL session to end", Duration::from_secs(40), || async {
        (!session_ids(&vm2_http).await.contains(&s3)).then_some(())
    })
    .await;
    let lived = ttl_set.elapsed();
    println!("a 10 s TTL session ended {lived:?} after its renewal");
    assert!(lived >= Duration::from_secs(19), "{lived:?}");

    // Refused: a TTL out of Consul's range, a check that does not exist.
    assert_eq!(vm1_http.put("/v1/session/create", r#"{"TTL": "1s"}"#).await.unwrap().status, 400);
    let no_check = json!({"NodeChecks": ["no-such-check"]}).to_string();
    assert_eq!(vm1_http.put("/v1/session/create", no_check).await.unwrap().status, 400);

    // vm1 is killed: its serfHealth turns critical, s1 ends, the lock is free.
    cluster.kill(vm1);
    eventually("vm1's session to end", Duration::from_secs(30), || async {
        (!session_ids(&vm2_http).await.contains(&s1)).then_some(())
    })
    .await;
    let released = get_json(&vm2_http, "/v1/kv/locks/leader").await.unwrap();
    assert_eq!((released[0].get("Session"), &released[0]["Value"]), (None, &json!("dm0x")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weft_lock_runs_one_holder_at_a_time_and_a_killed_holder_lets_go() {
    let mut cluster = Cluster::servers(3).await;
    let vm1 = cluster.add_client("vm1", &[]);
    cluster.wait_ready(vm1).await;
    let http = cluster.specs[vm1].http_addr.clone();
    wait_node_alive(&cluster.client(vm1), "vm1").await;
    let dir = tempfile::tempdir().unwrap();

    // Two holders race, 50 turns each. The command makes a directory only
    // one can make at a time (mkdir fails if it is there) and notes a clash.
    let section = format!(
        "mkdir {d}/held || echo clash >> {d}/clashes; sleep 0.01; rmdir {d}/held; echo turn >> {d}/turns",
        d = dir.path().display()
    );
    let racers: Vec<_> = (0..2)
        .map(|_| {
            let (http, section) = (http.clone(), section.clone());
            tokio::task::spawn_blocking(move || {
                for _ in 0..50 {
                    let status = std::process::Command::new(weft_bin())
                        .args(["lock", "--http-addr", &http, "race", &section])
                        .status()
                        .unwrap();
                    assert!(status.success(), "{status}");
                }
            })
        })
        .collect();
    let started = std::time::Instant::now();
    for racer in racers {
        racer.await.unwrap();
    }
    let turns = std::fs::read_to_string(dir.path().join("turns")).unwrap().lines().count();
    println!("100 turns of weft lock by two racers in {:?}", started.elapsed());
    assert_eq!(turns, 100);
    assert!(!dir.path().join("clashes").exists(), "two holders at once");

    // A holder killed outright: its session is no longer renewed, ends
    // within twice its TTL, and the key is free after the lock delay.
    let mut holder = std::process::Command::new(weft_bin())
        .args(["lock", "--http-addr", &http, "--session-ttl", "10s", "--lock-delay", "1s", "killed", "sleep 121"])
        .spawn()
        .unwrap();
    let vm1_http = cluster.client(vm1);
    eventually("the first holder to hold the lock", Duration::from_secs(30), || async {
        get_json(&vm1_http, "/v1/kv/killed/.lock").await?[0].get("Session").map(drop)
    })
    .await;
    holder.kill().unwrap();
    holder.wait().unwrap();
    let killed = std::time::Instant::now();
    let http2 = http.clone();
    let next = tokio::task::spawn_blocking(move || {
        std::process::Command::new(weft_bin())
            .args(["lock", "--http-addr", &http2, "--timeout", "60s", "killed", "true"])
            .status()
            .unwrap()
    })
    .await
    .unwrap();
    let waited = killed.elapsed();
    let _ = std::process::Command::new("pkill").args(["-f", "^sleep 121$"]).status();
    println!("after kill -9 of the holder, the next one ran {waited:?} later");
    assert!(next.success(), "{next}");
    assert!(waited >= Duration::from_secs(10) && waited <= Duration::from_secs(30), "{waited:?}");
}

//! The Consul-compatible HTTP API through a real server: KV and catalog
//! semantics, blocking queries, headers, and refusing bad input unharmed.

mod support;

use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};
use support::Cluster;
use weft_api::client::{HttpClient, Response};

fn body(response: &Response) -> Value {
    serde_json::from_slice(&response.body).unwrap_or_else(|_| panic!("not JSON: {}", response.text()))
}

/// Percent-encodes a query value.
fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// One server, once the leader has registered it as the `consul` service
/// (as Consul's does, so every catalog listing shows it).
async fn single_server() -> (Cluster, HttpClient) {
    let cluster = Cluster::servers(1).await;
    let client = cluster.client(0);
    let consul = support::eventually("the server's consul service", Duration::from_secs(20), || async {
        let listed = body(&client.get("/v1/catalog/service/consul").await.ok()?);
        (listed.as_array()?.len() == 1).then_some(listed)
    })
    .await;
    let rpc_port: u64 = cluster.specs[0].rpc_addr.rsplit_once(':').unwrap().1.parse().unwrap();
    assert_eq!((&consul[0]["Node"], &consul[0]["ServiceID"]), (&json!("s1"), &json!("consul")), "{consul}");
    assert_eq!(consul[0]["ServicePort"], rpc_port, "{consul}");
    (cluster, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_behaves_like_consul() {
    let (_cluster, client) = single_server().await;

    let missing = client.get("/v1/kv/nope").await.unwrap();
    assert_eq!(missing.status, 404);
    assert!(missing.body.is_empty(), "a missing key is a 404 with an empty body");
    assert!(missing.consul_index().unwrap() >= 1, "X-Consul-Index is always at least 1");

    assert_eq!(client.put("/v1/kv/app/config?flags=42", "hello").await.unwrap().text(), "true");
    assert_eq!(client.put("/v1/kv/app/empty", "").await.unwrap().text(), "true");
    assert_eq!(client.put("/v1/kv/app/sub/leaf", "x").await.unwrap().text(), "true");

    let got = client.get("/v1/kv/app/config").await.unwrap();
    let entry = &body(&got)[0];
    assert_eq!(entry["Key"], "app/config");
    assert_eq!(entry["Flags"], 42);
    assert_eq!(entry["Value"], base64::engine::general_purpose::STANDARD.encode("hello"));
    assert_eq!(got.consul_index(), entry["ModifyIndex"].as_u64());
    assert_eq!(body(&client.get("/v1/kv/app/empty").await.unwrap())[0]["Value"], Value::Null);
    assert_eq!(client.get("/v1/kv/app/config?raw").await.unwrap().body, b"hello");

    let all = body(&client.get("/v1/kv/app/?recurse").await.unwrap());
    assert_eq!(all.as_array().unwrap().len(), 3);
    // ?filter= over the entries, as Consul runs it; nothing left is a 404.
    let flagged = client.get(&format!("/v1/kv/app/?recurse&filter={}", url_encode("Flags == 42"))).await.unwrap();
    assert_eq!(body(&flagged).as_array().unwrap().iter().map(|e| e["Key"].clone()).collect::<Vec<_>>(), ["app/config"]);
    let none = client.get(&format!("/v1/kv/app/?recurse&filter={}", url_encode("Flags == 7"))).await.unwrap();
    assert_eq!(none.status, 404);
    assert_eq!(
        body(&client.get("/v1/kv/app/?keys&separator=/").await.unwrap()),
        json!(["app/config", "app/empty", "app/sub/"])
    );

    // Check-and-set: 0 means "only if absent"; otherwise the current ModifyIndex.
    let modify = entry["ModifyIndex"].as_u64().unwrap();
    assert_eq!(client.put("/v1/kv/app/config?cas=0", "x").await.unwrap().text(), "false");
    assert_eq!(client.put(&format!("/v1/kv/app/config?cas={}", modify + 100), "x").await.unwrap().text(), "false");
    assert_eq!(client.put(&format!("/v1/kv/app/config?cas={modify}"), "new").await.unwrap().text(), "true");
    assert_eq!(client.get("/v1/kv/app/config?raw").await.unwrap().body, b"new");

    // Percent-encoded keys are decoded.
    assert_eq!(client.put("/v1/kv/odd%20key%23x", "1").await.unwrap().text(), "true");
    assert_eq!(body(&client.get("/v1/kv/odd%20key%23x").await.unwrap())[0]["Key"], "odd key#x");

    assert_eq!(client.delete("/v1/kv/app/?recurse").await.unwrap().text(), "true");
    assert_eq!(client.get("/v1/kv/app/?recurse").await.unwrap().status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_query_wakes_on_its_key_and_not_on_other_writes() {
    let (_cluster, client) = single_server().await;
    client.put("/v1/kv/watched", "1").await.unwrap();
    let index = client.get("/v1/kv/watched").await.unwrap().consul_index().unwrap();

    let waiter = {
        let client = client.clone();
        tokio::spawn(async move {
            let response = client.get(&format!("/v1/kv/watched?index={index}&wait=5m")).await.unwrap();
            (Instant::now(), response)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Writes elsewhere: another table, and another key in the same table.
    let registration = r#"{"Node": "n1", "Address": "10.0.0.9"}"#;
    assert_eq!(client.put("/v1/catalog/register", registration).await.unwrap().status, 200);
    client.put("/v1/kv/unrelated", "x").await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!waiter.is_finished(), "the blocking query must not return on unrelated writes");

    let write_sent = Instant::now();
    client.put("/v1/kv/watched", "2").await.unwrap();
    let write_took = write_sent.elapsed();
    let (returned_at, response) = waiter.await.unwrap();
    let woke_after = returned_at.saturating_duration_since(write_sent);
    println!("blocking query returned {woke_after:?} after the write was sent (the write took {write_took:?})");
    // Returning at all (long before its 5 minutes) shows the write woke it.
    assert!(response.consul_index().unwrap() > index);
    assert_eq!(body(&response)[0]["Value"], base64::engine::general_purpose::STANDARD.encode("2"));

    // A catalog blocking query wakes on a catalog write.
    let index = client.get("/v1/catalog/nodes").await.unwrap().consul_index().unwrap();
    let waiter = {
        let client = client.clone();
        tokio::spawn(async move { client.get(&format!("/v1/catalog/nodes?index={index}&wait=5m")).await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    client.put("/v1/catalog/register", r#"{"Node": "n2", "Address": "10.0.0.10"}"#).await.unwrap();
    let nodes = body(&waiter.await.unwrap());
    let names: Vec<&str> = nodes.as_array().unwrap().iter().filter_map(|n| n["Node"].as_str()).collect();
    assert_eq!(names, ["n1", "n2", "s1"], "the nodes registered here, and the server's own");

    // Many identical blocking queries (they share one execution) all wake with the new value.
    let index = client.get("/v1/kv/shared").await.unwrap().consul_index().unwrap();
    let watchers: Vec<_> = (0..50)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.get(&format!("/v1/kv/shared?raw&index={index}&wait=5m")).await.unwrap() })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(watchers.iter().all(|w| !w.is_finished()), "they block until a change");
    client.put("/v1/kv/shared", "v").await.unwrap();
    for watcher in watchers {
        let response = watcher.await.unwrap();
        assert_eq!((response.status, response.text()), (200, "v".to_owned()));
        assert!(response.consul_index().unwrap() > index);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_registers_lists_and_deregisters() {
    let (_cluster, client) = single_server().await;
    let datacenters = client.get("/v1/catalog/datacenters").await.unwrap();
    assert_eq!((datacenters.status, body(&datacenters)), (200, json!(["dc1"])));
    // Field names in any case, and snake_case aliases, as Consul accepts them.
    let registration = json!({
        "node": "vm1", "ADDRESS": "10.0.0.1", "node_meta": {"Rack_ID": "r1"},
        "Service": {"ID": "web-1", "Service": "web", "Tags": ["v1", "blue"], "Port": 8080, "Meta": {"version": "1"}},
        "Check": {"CheckID": "service:web-1", "Name": "web alive", "Status": "passing", "ServiceID": "web-1"}
    });
    let response = client.put("/v1/catalog/register", registration.to_string()).await.unwrap();
    assert_eq!((response.status, response.text()), (200, "true".to_owned()));
    let second =
        json!({"Node": "vm2", "Address": "10.0.0.2", "Service": {"Service": "web", "Tags": ["v2"], "Port": 8080}});
    client.put("/v1/catalog/register", second.to_string()).await.unwrap();

    assert_eq!(
        body(&client.get("/v1/catalog/services").await.unwrap()),
        json!({"consul": [], "web": ["blue", "v1", "v2"]})
    );
    let web = body(&client.get("/v1/catalog/service/web").await.unwrap());
    assert_eq!(web.as_array().unwrap().len(), 2);
    let tagged = body(&client.get("/v1/catalog/service/web?tag=v1").await.unwrap());
    assert_eq!(tagged[0]["ServiceID"], "web-1");
    assert_eq!(tagged[0]["NodeMeta"]["Rack_ID"], "r1");
    assert_eq!(tagged[0]["ServiceMeta"]["version"], "1");
    let node = body(&client.get("/v1/catalog/node/vm1").await.unwrap());
    assert_eq!(node["Node"]["Address"], "10.0.0.1");
    assert_eq!(node["Services"]["web-1"]["Port"], 8080);
    assert_eq!(body(&client.get("/v1/catalog/node/ghost").await.unwrap()), Value::Null);

    // ?filter= on map answers, as Consul runs it: over the service instances
    // behind /v1/catalog/services, over the services of /v1/catalog/node/<node>.
    let api = json!({"Node": "vm1", "Address": "10.0.0.1", "Service": {"ID": "api-1", "Service": "api", "Port": 9000}});
    client.put("/v1/catalog/register", api.to_string()).await.unwrap();
    let filtered = |path: &str, filter: &str| {
        let separator = if path.contains('?') { '&' } else { '?' };
        let path = format!("{path}{separator}filter={}", url_encode(filter));
        let client = client.clone();
        async move { client.get(&path).await.unwrap() }
    };
    let by_tag = filtered("/v1/catalog/services", "ServiceTags contains \"v2\"").await;
    assert_eq!(body(&by_tag), json!({"web": ["v2"]}), "only vm2's instance has v2, so only its tags");
    let by_node = filtered("/v1/catalog/services", "Node == \"vm1\" and ServicePort == 9000").await;
    assert_eq!(body(&by_node), json!({"api": []}));
    let node_services = body(&filtered("/v1/catalog/node/vm1", "Service == \"api\"").await);
    assert_eq!(node_services["Services"].as_object().unwrap().keys().collect::<Vec<_>>(), ["api-1"]);
    assert_eq!(node_services["Node"]["Node"], "vm1");
    assert_eq!(filtered("/v1/catalog/services", "ServiceTags contains").await.status, 400, "a bad filter");
    // An endpoint whose answer is not filterable says so rather than ignoring the filter.
    let unsupported = filtered("/v1/connect/intentions/match?by=source&name=web", "Action == \"allow\"").await;
    assert_eq!(unsupported.status, 400, "{}", unsupported.text());
    client.put("/v1/catalog/deregister", r#"{"Node": "vm1", "ServiceID": "api-1"}"#).await.unwrap();

    let deregister = json!({"Node": "vm1", "ServiceID": "web-1"});
    assert_eq!(client.put("/v1/catalog/deregister", deregister.to_string()).await.unwrap().text(), "true");
    assert_eq!(body(&client.get("/v1/catalog/services").await.unwrap()), json!({"consul": [], "web": ["v2"]}));
    client.put("/v1/catalog/deregister", r#"{"Node": "vm2"}"#).await.unwrap();
    let nodes = body(&client.get("/v1/catalog/nodes").await.unwrap());
    let names: Vec<Value> = nodes.as_array().unwrap().iter().map(|n| n["Node"].clone()).collect();
    assert_eq!(names, vec![json!("s1"), json!("vm1")], "vm1, and the server's own node");
}

/// Method, path, body, the status expected, and what the message must mention.
type BadRequest = (&'static str, &'static str, Option<Vec<u8>>, u16, &'static str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_4xx_and_changes_nothing() {
    let (_cluster, client) = single_server().await;
    client.put("/v1/kv/keep", "me").await.unwrap();
    let before = client.get("/v1/snapshot").await.unwrap();
    assert_eq!(before.status, 200);
    let indexes = |client: HttpClient| async move {
        let mut found = Vec::new();
        for path in ["/v1/kv/keep", "/v1/catalog/nodes", "/v1/catalog/services"] {
            found.push(client.get(path).await.unwrap().consul_index());
        }
        found
    };
    let indexes_before = indexes(client.clone()).await;

    let too_big = vec![b'x'; 512 * 1024 + 1];
    let cases: Vec<BadRequest> = vec![
        ("PUT", "/v1/catalog/register", Some(b"{not json".to_vec()), 400, "malformed JSON"),
        ("PUT", "/v1/catalog/register", Some(br#"{"Node": 5, "Address": "x"}"#.to_vec()), 400, "invalid type"),
        ("PUT", "/v1/catalog/register", Some(br#"{"Address": "10.0.0.1"}"#.to_vec()), 400, "Must provide node"),
        ("PUT", "/v1/catalog/register", Some(br#"{"Node": "n"}"#.to_vec()), 400, "Must provide address"),
        (
            "PUT",
            "/v1/catalog/register",
            Some(br#"{"Node": "n", "Address": "a", "Check": {"Name": "c", "Status": "sideways"}}"#.to_vec()),
            400,
            "Invalid check status",
        ),
        (
            "PUT",
            "/v1/catalog/register",
            Some(br#"{"Node": "n", "Address": "a", "Check": {"Name": "c", "ServiceID": "ghost"}}"#.to_vec()),
            400,
            "not registered",
        ),
        ("PUT", "/v1/catalog/register", Some(Vec::new()), 400, "empty"),
        ("PUT", "/v1/kv/big", Some(too_big), 413, "too large"),
        ("PUT", "/v1/kv/x?cas=abc", Some(b"v".to_vec()), 400, "?cas"),
        ("PUT", "/v1/kv/x?flags=-1", Some(b"v".to_vec()), 400, "?flags"),
        ("PUT", "/v1/kv/", Some(b"v".to_vec()), 400, "Missing key"),
        // Not UTF-8: refused, never stored as U+FFFD (where %FF and %FE
        // would be one key).
        ("PUT", "/v1/kv/%FF", Some(b"v".to_vec()), 400, "must be valid UTF-8"),
        ("PUT", "/v1/kv/a%FEb", Some(b"v".to_vec()), 400, "must be valid UTF-8"),
        ("GET", "/v1/kv/%FF", None, 400, "must be valid UTF-8"),
        ("DELETE", "/v1/kv/%FF?recurse", None, 400, "must be valid UTF-8"),
        ("PUT", "/v1/kv/x?acquire=abc", Some(b"v".to_vec()), 400, "invalid session \"abc\""),
        ("GET", "/v1/kv/keep?index=xyz", None, 400, "?index"),
        ("GET", "/v1/kv/keep?wait=forever", None, 400, "wait"),
        ("GET", "/v1/kv/keep?stale&consistent", None, 400, "conflicting"),
        ("GET", "/v1/no/such/endpoint", None, 404, "unknown API path"),
        ("POST", "/v1/kv/keep", Some(b"v".to_vec()), 405, "not allowed"),
        ("GET", "/v1/catalog/register", None, 405, "not allowed"),
        ("DELETE", "/v1/operator/raft/peer", None, 400, "?id"),
        ("DELETE", "/v1/operator/raft/peer?id=ghost", None, 400, "ghost"),
        ("PUT", "/v1/snapshot", Some(b"garbage".to_vec()), 400, "cannot restore"),
        ("GET", "/v1/kv/keep?dc=mars", None, 500, "No path to datacenter"),
        // A filter that does not parse is a 400 on KV too, not ignored.
        ("GET", "/v1/kv/?recurse&filter=Key%20%3D%3D", None, 400, "boolean expression"),
        // Names and metadata within Consul's limits.
        (
            "PUT",
            "/v1/catalog/register",
            Some(format!(r#"{{"Node": "{}", "Address": "10.0.0.1"}}"#, "n".repeat(100_000)).into_bytes()),
            400,
            "exceeds maximum length 256",
        ),
        ("PUT", "/v1/catalog/register", Some(br#"{"Node": "a b", "Address": "10.0.0.1"}"#.to_vec()), 400, "no spaces"),
        (
            "PUT",
            "/v1/catalog/register",
            Some(
                format!(r#"{{"Node": "n", "Address": "10.0.0.1", "NodeMeta": {{"{}": "v"}}}}"#, "k".repeat(5000))
                    .into_bytes(),
            ),
            400,
            "exceeds maximum length 128",
        ),
        (
            "PUT",
            "/v1/catalog/register",
            Some(br#"{"Node": "n", "Address": "10.0.0.1", "Service": {"Service": "web\u202egnp"}}"#.to_vec()),
            400,
            "no spaces or control characters",
        ),
        (
            "PUT",
            "/v1/connect/intentions/exact?source=a%20b&destination=web",
            Some(br#"{"Action": "allow"}"#.to_vec()),
            400,
            "no spaces",
        ),
        (
            "PUT",
            "/v1/config",
            Some(br#"{"Kind": "service-defaults", "Name": " ", "Protocol": "http"}"#.to_vec()),
            400,
            "no spaces",
        ),
    ];
    for (method, path, payload, status, message) in cases {
        let method: hyper::Method = method.parse().unwrap();
        let response = client.request(method.clone(), path, payload).await.unwrap();
        assert_eq!(response.status, status, "{method} {path}: {}", response.text());
        assert!(response.text().contains(message), "{method} {path}: {:?} should mention {message:?}", response.text());
    }

    let after = client.get("/v1/snapshot").await.unwrap();
    assert_eq!(before.body, after.body, "no bad request changed the state");
    assert_eq!(indexes_before, indexes(client.clone()).await, "no table index moved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_saved_over_http_restores_the_state() {
    let (_cluster, client) = single_server().await;
    client.put("/v1/kv/a", "1").await.unwrap();
    let saved = client.get("/v1/snapshot").await.unwrap();
    assert_eq!(saved.status, 200);
    client.put("/v1/kv/a", "2").await.unwrap();
    client.put("/v1/kv/b", "3").await.unwrap();

    assert_eq!(client.put("/v1/snapshot", saved.body.clone()).await.unwrap().status, 200);
    assert_eq!(client.get("/v1/kv/a?raw").await.unwrap().body, b"1");
    assert_eq!(client.get("/v1/kv/b").await.unwrap().status, 404);
    // Indexes keep growing across a restore, so blocking clients see a change.
    assert!(client.get("/v1/kv/a").await.unwrap().consul_index() > saved.consul_index());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_handler_accepts_a_token_however_it_is_sent() {
    let (_cluster, client) = single_server().await;
    let with_token = HttpClient::new(client.addr(), Some("secret".into()));
    assert_eq!(with_token.put("/v1/kv/t", "v").await.unwrap().status, 200);
    assert_eq!(client.get("/v1/kv/t?token=secret").await.unwrap().status, 200);
    let self_info = body(&client.get("/v1/agent/self").await.unwrap());
    assert_eq!(self_info["Config"]["Datacenter"], "dc1");
    assert_eq!(self_info["Config"]["NodeName"], "s1");
    assert_eq!(self_info["Config"]["Version"], env!("CARGO_PKG_VERSION"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_metrics_time_each_stage_of_a_write() {
    let (_cluster, client) = single_server().await;
    for i in 0..5 {
        assert_eq!(client.put(&format!("/v1/kv/m{i}"), "v").await.unwrap().status, 200);
    }
    let metrics = body(&client.get("/v1/agent/metrics").await.unwrap());
    let samples = metrics["Samples"].as_array().unwrap();
    let sample =
        |name: &str| samples.iter().find(|s| s["Name"] == name).unwrap_or_else(|| panic!("{name} in {metrics}"));
    for name in ["consul.rpc.write", "consul.raft.commitTime", "consul.raft.log.flush", "consul.raft.fsm.apply"] {
        let timer = sample(name);
        assert!(timer["Count"].as_u64().unwrap() >= 5, "{timer}");
        assert!(timer["Mean"].as_f64().unwrap() > 0.0 && timer["Max"].as_f64() >= timer["Min"].as_f64(), "{timer}");
    }
    assert!(metrics["Timestamp"].as_str().unwrap().ends_with(" +0000 UTC"), "{metrics}");
    let text = client.get("/v1/agent/metrics?format=prometheus").await.unwrap();
    let text = String::from_utf8(text.body).unwrap();
    assert!(text.contains("# TYPE consul_raft_commitTime summary\nconsul_raft_commitTime_sum "), "{text}");
    assert_eq!(client.get("/v1/agent/metrics?format=xml").await.unwrap().status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_endpoints_show_instances_with_their_checks() {
    let (_cluster, client) = single_server().await;
    let healthy = json!({
        "Node": "vm1", "Address": "10.0.0.1",
        "Service": {"ID": "web-1", "Service": "web", "Tags": ["v1"], "Port": 80},
        "Checks": [
            {"CheckID": "serfHealth", "Name": "node alive", "Status": "passing"},
            {"CheckID": "service:web-1", "Name": "web", "Status": "passing", "ServiceID": "web-1"}
        ]
    });
    let sick = json!({
        "Node": "vm2", "Address": "10.0.0.2", "NodeMeta": {"rack": "r2"},
        "Service": {"ID": "web-2", "Service": "web", "Tags": ["v2"], "Port": 80},
        "Check": {"CheckID": "service:web-2", "Name": "web", "Status": "critical", "ServiceID": "web-2", "Output": "HTTP 503"}
    });
    for registration in [healthy, sick] {
        assert_eq!(client.put("/v1/catalog/register", registration.to_string()).await.unwrap().status, 200);
    }

    let all = body(&client.get("/v1/health/service/web").await.unwrap());
    assert_eq!(all.as_array().unwrap().len(), 2);
    let first = &all[0];
    assert_eq!(first["Node"]["Node"], "vm1");
    assert_eq!(first["Service"]["ID"], "web-1");
    assert_eq!(first["Checks"].as_array().unwrap().len(), 2, "node check and service check");

    let passing = body(&client.get("/v1/health/service/web?passing").await.unwrap());
    assert_eq!(passing.as_array().unwrap().len(), 1);
    assert_eq!(passing[0]["Service"]["ID"], "web-1");
    assert_eq!(body(&client.get("/v1/health/service/web?tag=v2").await.unwrap())[0]["Service"]["ID"], "web-2");
    let on_rack = body(&client.get("/v1/health/service/web?node-meta=rack:r2").await.unwrap());
    assert_eq!(on_rack.as_array().unwrap().len(), 1);
    assert_eq!(on_rack[0]["Service"]["ID"], "web-2");
    let near = body(&client.get("/v1/health/service/web?near=vm2").await.unwrap());
    assert_eq!(near[0]["Service"]["ID"], "web-2", "the instance on the node asked for comes first");

    let critical = body(&client.get("/v1/health/state/critical").await.unwrap());
    assert_eq!(critical.as_array().unwrap().len(), 1);
    assert_eq!(critical[0]["Output"], "HTTP 503");
    // The two checks registered here, vm1's node check, and the server's own liveness check.
    assert_eq!(body(&client.get("/v1/health/state/any").await.unwrap()).as_array().unwrap().len(), 4);
    assert_eq!(body(&client.get("/v1/health/node/vm1").await.unwrap()).as_array().unwrap().len(), 2);
    assert_eq!(body(&client.get("/v1/health/checks/web").await.unwrap()).as_array().unwrap().len(), 2);
    assert_eq!(client.get("/v1/health/state/sideways").await.unwrap().status, 400);

    // A blocking health query wakes when a check changes state.
    let index = client.get("/v1/health/service/web?passing").await.unwrap().consul_index().unwrap();
    let waiter = {
        let client = client.clone();
        tokio::spawn(async move {
            client.get(&format!("/v1/health/service/web?passing&index={index}&wait=5m")).await.unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let recovered = json!({"Node": "vm2", "SkipNodeUpdate": true,
        "Check": {"CheckID": "service:web-2", "Name": "web", "Status": "passing", "ServiceID": "web-2"}});
    assert_eq!(client.put("/v1/catalog/register", recovered.to_string()).await.unwrap().status, 200);
    assert_eq!(body(&waiter.await.unwrap()).as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_does_not_wait_out_open_blocking_queries() {
    let (mut cluster, client) = single_server().await;
    client.put("/v1/kv/w", "1").await.unwrap();
    let index = client.get("/v1/kv/w").await.unwrap().consul_index().unwrap();
    let waiter = tokio::spawn(async move { client.get(&format!("/v1/kv/w?index={index}&wait=5m")).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    assert!(cluster.stop(0), "the server exits on SIGTERM by itself");
    println!("stopped in {:?} with a blocking query open", started.elapsed());
    let answered = waiter.await.unwrap().expect("the blocking query gets an answer before the server exits");
    assert_eq!(answered.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_that_are_not_utf8_are_refused_and_overwrite_nothing() {
    let (_cluster, client) = single_server().await;
    // U+FFFD itself is a fine key; a lossy decoding would turn %FF into it.
    assert_eq!(client.put("/v1/kv/k%EF%BF%BD", "mine").await.unwrap().status, 200);
    for raw in ["k%FF", "k%FE", "k%C3%28"] {
        let refused = client.put(&format!("/v1/kv/{raw}"), "theirs").await.unwrap();
        assert_eq!(refused.status, 400, "{raw}: {}", refused.text());
    }
    assert_eq!(client.get("/v1/kv/k%EF%BF%BD?raw").await.unwrap().body, b"mine");
    let keys: Vec<String> = serde_json::from_slice(&client.get("/v1/kv/?keys").await.unwrap().body).unwrap();
    assert_eq!(keys, ["k\u{FFFD}"]);
}

/// An upload larger than its endpoint takes is refused before the rest of
/// it is read: with a Content-Length of 200 MB and a little more than the
/// endpoint's limit sent, the 413 comes back (the whole body was read, up
/// to 256 MiB, before its size was checked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_upload_is_refused_before_it_is_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (cluster, client) = single_server().await;
    for (path, sent) in [("/v1/kv/big", 1 << 20), ("/v1/catalog/register", 5 << 20)] {
        let stream = tokio::net::TcpStream::connect(&cluster.specs[0].http_addr).await.unwrap();
        let (mut reader, mut writer) = stream.into_split();
        let head = format!("PUT {path} HTTP/1.1\r\nHost: weft\r\nContent-Length: {}\r\n\r\n", 200 << 20);
        let sending = tokio::spawn(async move {
            writer.write_all(head.as_bytes()).await?;
            writer.write_all(&vec![b'x'; sent]).await?;
            // Hold the connection open: the rest of the body never comes.
            tokio::time::sleep(Duration::from_secs(30)).await;
            std::io::Result::Ok(())
        });
        let mut answer = Vec::new();
        let mut buffer = [0u8; 4096];
        let read = tokio::time::timeout(Duration::from_secs(20), async {
            while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
                match reader.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => answer.extend_from_slice(&buffer[..n]),
                }
            }
        })
        .await;
        sending.abort();
        let text = String::from_utf8_lossy(&answer);
        assert!(read.is_ok() && text.starts_with("HTTP/1.1 413"), "{path}: {text}");
        println!("{path}: 413 after {sent} of 209715200 bytes");
    }
    assert_eq!(client.get("/v1/kv/big").await.unwrap().status, 404);
}

/// Request headers are bounded while they are read: a header block larger
/// than hyper's read buffer limit (about 400 KiB; Go's, which Consul uses,
/// is 1 MiB), or with more than 100 fields, is answered 431 and closed
/// without the rest being read, and the agent keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_headers_are_refused_while_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (cluster, client) = single_server().await;
    let huge = format!("GET /v1/kv/a HTTP/1.1\r\nHost: weft\r\nX-Big: {}", "a".repeat(4 << 20));
    let many = format!(
        "GET /v1/kv/a HTTP/1.1\r\nHost: weft\r\n{}\r\n",
        (0..150).map(|i| format!("X-H{i}: v\r\n")).collect::<String>()
    );
    for (what, request) in [("a 4 MiB header", huge), ("150 headers", many)] {
        let stream = tokio::net::TcpStream::connect(&cluster.specs[0].http_addr).await.unwrap();
        let (mut reader, mut writer) = stream.into_split();
        let sending = tokio::spawn(async move {
            writer.write_all(request.as_bytes()).await?;
            tokio::time::sleep(Duration::from_secs(30)).await;
            std::io::Result::Ok(())
        });
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(20), reader.read_to_end(&mut answer)).await;
        sending.abort();
        let text = String::from_utf8_lossy(&answer);
        assert!(read.is_ok() && text.starts_with("HTTP/1.1 431"), "{what}: {text}");
    }
    assert_eq!(client.get("/v1/kv/a").await.unwrap().status, 404, "the agent still serves");
}

/// A request on a fresh connection from `source`, read to its end.
async fn request_from(source: std::net::IpAddr, addr: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(std::net::SocketAddr::new(source, 0))?;
    let mut stream = socket.connect(addr.parse().unwrap()).await?;
    stream.write_all(b"GET /v1/status/leader HTTP/1.1\r\nHost: weft\r\nConnection: close\r\n\r\n").await?;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut text))
        .await
        .map_err(|_| std::io::Error::other("no answer in 10 s"))??;
    Ok(text)
}

/// One address may hold at most `limits { http_max_conns_per_client }`
/// (Consul's default, 200) connections to the HTTP API at once: the next
/// is answered 429 and closed unread, another address is served, and a
/// place given back is taken again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holds_at_most_200_http_connections() {
    let (cluster, _) = single_server().await;
    let addr = cluster.specs[0].http_addr.clone();
    let localhost: std::net::IpAddr = [127, 0, 0, 1].into();
    let mut held = Vec::new();
    for _ in 0..200 {
        held.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    let refused = request_from(localhost, &addr).await.unwrap_or_else(|e| format!("({e})"));
    println!("connection 201 from 127.0.0.1: {}", refused.lines().next().unwrap_or_default());
    assert!(refused.starts_with("HTTP/1.1 429 Too Many Requests"), "{refused}");
    assert!(refused.contains("too many concurrent connections"), "{refused}");
    let other = request_from([127, 0, 0, 2].into(), &addr).await.unwrap();
    assert!(other.starts_with("HTTP/1.1 200"), "another address is served: {other}");
    drop(held.pop());
    support::eventually("a freed place to be taken again", Duration::from_secs(10), || async {
        request_from(localhost, &addr).await.ok().filter(|answer| answer.starts_with("HTTP/1.1 200"))
    })
    .await;
}

/// An idle HTTP connection costs the agent a few KiB, not a copy of its
/// route table: serving the router itself cloned every route and its
/// layers for each connection (about 680 KiB each in a debug build, 95 KiB
/// once the node record in the state was shared).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http_connection_costs_kilobytes() {
    let (cluster, _) = single_server().await;
    let addr = cluster.specs[0].http_addr.clone();
    let pid = cluster.pid(0);
    let before = support::rss_kib(pid);
    let mut held = Vec::new();
    for _ in 0..180 {
        held.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    // Every connection accepted and its task started: the 181st is served.
    let answer = request_from([127, 0, 0, 1].into(), &addr).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let added = support::rss_kib(pid).saturating_sub(before);
    println!("180 idle HTTP connections added {added} KiB to the server's RSS ({} KiB each)", added / 180);
    assert!(added < 6 * 1024, "180 idle connections cost {added} KiB");
}

/// Memory a burst of blocking queries took comes back once they end: glibc
/// keeps freed heap for reuse, and weft hands it back to the kernel every
/// 10 s (`malloc_trim`), so an agent's RSS does not stay at its peak.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_a_burst_took_is_given_back() {
    use tokio::io::AsyncWriteExt;
    let (cluster, _) = single_server().await;
    let addr = cluster.specs[0].http_addr.clone();
    let pid = cluster.pid(0);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = support::rss_kib(pid);
    // 760 blocking queries, from four addresses (each may hold 200).
    let mut held = Vec::new();
    for source in 1..=4u8 {
        for i in 0..190 {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(std::net::SocketAddr::new([127, 0, 0, source].into(), 0)).unwrap();
            let mut stream = socket.connect(addr.parse().unwrap()).await.unwrap();
            let request = format!("GET /v1/kv/burst-{i}?index=99999999&wait=60s HTTP/1.1\r\nHost: weft\r\n\r\n");
            stream.write_all(request.as_bytes()).await.unwrap();
            held.push(stream);
        }
    }
    let peak = support::eventually("the queries to be parked", Duration::from_secs(20), || async {
        let rss = support::rss_kib(pid);
        (rss > before + 4 * 1024).then_some(rss)
    })
    .await;
    drop(held);
    let after = support::eventually("the burst's memory to come back", Duration::from_secs(30), || async {
        let rss = support::rss_kib(pid);
        (rss < before + 3 * 1024).then_some(rss)
    })
    .await;
    println!("760 blocking queries: RSS {before} KiB before, {peak} KiB with them, {after} KiB once they closed");
}

/// `limits { http_max_conns }` caps the HTTP API's connections in all,
/// whatever addresses they come from: the next gets the 429, a freed place
/// is taken again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_holds_at_most_http_max_conns_connections() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("limits.hcl");
    std::fs::write(&config, "limits {\n  http_max_conns = 20\n}\n").unwrap();
    let cluster = Cluster::servers_with(1, &["--config-file", config.to_str().unwrap()]).await;
    let addr = cluster.specs[0].http_addr.clone();
    // The cluster's own readiness checks are done: 20 places, from 20 addresses.
    let mut held = Vec::new();
    for source in 0..20u8 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(std::net::SocketAddr::new([127, 0, 1, source + 1].into(), 0)).unwrap();
        held.push(socket.connect(addr.parse().unwrap()).await.unwrap());
    }
    let refused = request_from([127, 0, 2, 1].into(), &addr).await.unwrap_or_else(|e| format!("({e})"));
    assert!(refused.starts_with("HTTP/1.1 429 Too Many Requests"), "{refused}");
    drop(held.pop());
    support::eventually("a freed place to be taken again", Duration::from_secs(10), || async {
        request_from([127, 0, 2, 1].into(), &addr).await.ok().filter(|answer| answer.starts_with("HTTP/1.1 200"))
    })
    .await;
}

/// `limits { rpc_rate rpc_max_burst }` (Consul's): the writes an agent takes
/// through its HTTP API. Past the burst, a write is a 429 `RPC rate limit
/// exceeded` and changes nothing; tokens come back at the rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_past_rpc_rate_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("limits.hcl");
    std::fs::write(&config, "limits {\n  rpc_rate = 2\n  rpc_max_burst = 5\n}\n").unwrap();
    let cluster = Cluster::servers_with(1, &["--config-file", config.to_str().unwrap()]).await;
    let client = cluster.client(0);
    let mut refused = Vec::new();
    let started = Instant::now();
    for i in 0..20 {
        let answer = client.put(&format!("/v1/kv/rate/{i}"), "v").await.unwrap();
        match answer.status {
            200 => {}
            429 => {
                assert_eq!(answer.text(), "RPC rate limit exceeded");
                refused.push(i);
            }
            other => panic!("write {i}: {other} {}", answer.text()),
        }
    }
    // The burst, and what came back at 2 a second while the 20 were sent.
    let allowed = 5 + (2.0 * started.elapsed().as_secs_f64()).ceil() as usize;
    println!("20 writes at once with rpc_rate = 2, rpc_max_burst = 5: {} refused", refused.len());
    assert!(20 - refused.len() <= allowed, "{} taken, at most {allowed} allowed", 20 - refused.len());
    assert!(!refused.is_empty());
    for i in &refused {
        let read = client.get(&format!("/v1/kv/rate/{i}")).await.unwrap();
        assert_eq!(read.status, 404, "refused write {i} changed nothing");
    }
    // Reads are not limited; a write goes through again once a token is back.
    assert_eq!(client.get("/v1/kv/rate/0").await.unwrap().status, 200);
    support::eventually("a token to come back", Duration::from_secs(5), || async {
        (client.put("/v1/kv/rate/later", "v").await.ok()?.status == 200).then_some(())
    })
    .await;
}

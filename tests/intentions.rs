//! Intentions end to end: `weft intention` against a follower of a real
//! cluster, Consul's precedence and default deny, the HTTP API's shapes and
//! legacy endpoints, blocking lists, bad input refused unharmed, and the
//! agent's `authorize` endpoint.

mod support;

use serde_json::{json, Value};
use support::{weft, Cluster};
use weft_api::client::{HttpClient, Response};

fn body(response: &Response) -> Value {
    serde_json::from_slice(&response.body).unwrap_or_else(|_| panic!("not JSON: {}", response.text()))
}

/// Runs `weft intention ARGS --http-addr ADDR`: (exit code, stdout, stderr).
fn intention(addr: &str, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["intention"];
    all.extend(args);
    all.extend(["--http-addr", addr]);
    weft(&all)
}

/// The (source, destination) pairs of a JSON list of intentions, in order.
fn pairs(list: &Value) -> Vec<(String, String)> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|i| (i["SourceName"].as_str().unwrap().to_owned(), i["DestinationName"].as_str().unwrap().to_owned()))
        .collect()
}

fn pair(source: &str, destination: &str) -> (String, String) {
    (source.to_owned(), destination.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_manages_intentions_through_a_follower_with_consuls_precedence() {
    let cluster = Cluster::servers(3).await;
    let follower = cluster.follower().await;
    let addr = cluster.specs[follower].http_addr.clone();
    let run = |args: &[&str]| intention(&addr, args);

    // Nothing matches yet: the default is deny.
    let (code, stdout, _) = run(&["check", "web", "api"]);
    assert_eq!((code, stdout.trim()), (2, "Denied"));

    let (code, stdout, stderr) = run(&["create", "--deny", "*", "api"]);
    assert_eq!((code, stdout.trim()), (0, "Created: * => api (deny)"), "{stderr}");
    let (code, stdout, stderr) = run(&["create", "--description", "the front end", "web", "api"]);
    assert_eq!((code, stdout.trim()), (0, "Created: web => api (allow)"), "{stderr}");

    // Exact beats a wildcard source: web is allowed, everyone else denied.
    let (code, stdout, _) = run(&["check", "web", "api"]);
    assert_eq!((code, stdout.trim()), (0, "Allowed"));
    let (code, stdout, _) = run(&["check", "other", "api"]);
    assert_eq!((code, stdout.trim()), (2, "Denied"));
    let (code, stdout, _) = run(&["check", "web", "db"]);
    assert_eq!((code, stdout.trim()), (2, "Denied"), "no intention for db: the default deny");
    let (code, stdout, _) = run(&["check", "web", "api", "--format", "json"]);
    assert_eq!((code, serde_json::from_str::<Value>(&stdout).unwrap()), (0, json!({"Allowed": true})));

    // A second create for the pair is an error; --replace replaces it, keeping its ID.
    let (_, stdout, _) = run(&["get", "web", "api", "--format", "json"]);
    let original: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!((original["Action"].as_str(), original["Precedence"].as_u64()), (Some("allow"), Some(9)));
    assert_eq!(original["Description"], "the front end");
    let (code, _, stderr) = run(&["create", "--deny", "web", "api"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("already exists") && stderr.contains("--replace"), "{stderr}");
    let (code, stdout, _) = run(&["check", "web", "api"]);
    assert_eq!((code, stdout.trim()), (0, "Allowed"), "the refused create changed nothing");
    let (code, _, stderr) = run(&["create", "--replace", "--deny", "--meta", "team=edge", "web", "api"]);
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, _) = run(&["check", "web", "api"]);
    assert_eq!((code, stdout.trim()), (2, "Denied"));
    let (_, stdout, _) = run(&["get", "web", "api", "--format", "json"]);
    let replaced: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(replaced["ID"], original["ID"], "a replaced intention keeps its ID");
    assert_eq!((replaced["Action"].as_str(), &replaced["Meta"]), (Some("deny"), &json!({"team": "edge"})));
    assert_eq!(replaced["CreateIndex"], original["CreateIndex"]);
    let (code, stdout, _) = run(&["get", "web", "api"]);
    assert_eq!(code, 0);
    for line in ["Source:", "Action:        deny", "Meta[team]:    edge"] {
        assert!(stdout.contains(line), "{stdout} should show {line:?}");
    }
    run(&["create", "--replace", "web", "api"]);

    // Every server sees the same intentions, listed in evaluation order.
    let (code, _, stderr) = run(&["create", "web", "*"]);
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = run(&["create", "--deny", "*", "*"]);
    assert_eq!(code, 0, "{stderr}");
    for i in 0..cluster.len() {
        let list = body(&cluster.client(i).get("/v1/connect/intentions").await.unwrap());
        let expected = [pair("web", "api"), pair("*", "api"), pair("web", "*"), pair("*", "*")];
        assert_eq!(pairs(&list), expected, "server {i}");
    }
    let (code, stdout, _) = run(&["list"]);
    assert_eq!(code, 0);
    let lines: Vec<Vec<&str>> = stdout.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(lines[0], ["ID", "Source", "Action", "Destination", "Precedence"]);
    let rows: Vec<&[&str]> = lines[1..].iter().map(|l| &l[1..]).collect();
    let expected: [&[&str]; 4] = [
        &["web", "allow", "api", "9"],
        &["*", "deny", "api", "8"],
        &["web", "allow", "*", "6"],
        &["*", "deny", "*", "5"],
    ];
    assert_eq!(rows, expected);

    // match: the intentions a connection is checked against, most specific first.
    let (code, stdout, _) = run(&["match", "--destination", "api", "--format", "json"]);
    assert_eq!(code, 0);
    let matched: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(pairs(&matched["api"]), [pair("web", "api"), pair("*", "api"), pair("web", "*"), pair("*", "*")]);
    let (_, stdout, _) = run(&["match", "--source", "other", "--format", "json"]);
    let matched: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(pairs(&matched["other"]), [pair("*", "api"), pair("*", "*")]);
    let (code, stdout, _) = run(&["match", "--source", "web"]);
    assert_eq!(code, 0);
    let sources: Vec<&str> = stdout.lines().skip(1).filter_map(|l| l.split_whitespace().nth(3)).collect();
    assert_eq!(sources, ["api", "api", "*", "*"], "{stdout}");
    let (code, _, _) = run(&["match"]);
    assert_eq!(code, 2, "match needs --source or --destination");

    // web -> * (6) lets web reach db; others still fall to * -> * (5).
    assert_eq!(run(&["check", "web", "db"]).0, 0);
    assert_eq!(run(&["check", "other", "db"]).0, 2);

    // Deleting web -> api leaves * -> api (8), which outranks web -> * (6).
    let (code, stdout, _) = run(&["delete", "web", "api"]);
    assert_eq!((code, stdout.trim()), (0, "Intention deleted."));
    let (code, _, stderr) = run(&["get", "web", "api"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("Intention not found"), "{stderr}");
    assert_eq!(run(&["check", "web", "api"]).0, 2);
    let (code, _, stderr) = run(&["delete", "web", "api"]);
    assert_eq!(code, 0, "deleting by name is idempotent, as in Consul: {stderr}");

    // check exits 1 (not 2) when it cannot answer.
    let (code, _, stderr) = intention("127.0.0.1:1", &["check", "web", "api"]);
    assert_eq!(code, 1, "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_intention_list_on_a_follower_wakes_on_a_write_to_the_leader() {
    let cluster = Cluster::servers(3).await;
    let leader = cluster.client(cluster.wait_for_leader().await);
    let follower = cluster.client(cluster.follower().await);
    let response = support::blocking_read_wakes_only_on_its_write(
        &follower,
        &leader,
        "/v1/connect/intentions",
        "/v1/connect/intentions/exact?source=web&destination=api",
        r#"{"Action": "allow"}"#,
    )
    .await;
    assert_eq!(pairs(&body(&response)), [pair("web", "api")]);

    // ?filter= selects from the list.
    leader.put("/v1/connect/intentions/exact?source=*&destination=api", r#"{"Action": "deny"}"#).await.unwrap();
    let filtered = follower.get("/v1/connect/intentions?filter=Action%20%3D%3D%20%22deny%22").await.unwrap();
    assert_eq!(pairs(&body(&filtered)), [pair("*", "api")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_of_one_pair_through_every_server_leave_one_intention() {
    let cluster = Cluster::servers(3).await;
    let clients: Vec<HttpClient> = (0..cluster.len()).map(|i| cluster.client(i)).collect();

    // Upserts by name race to create the pair: all succeed, under one ID.
    let upserts = clients.iter().cycle().take(9).enumerate().map(|(n, client)| {
        let action = if n % 2 == 0 { "allow" } else { "deny" };
        let body = json!({"Action": action, "Description": format!("writer {n}")}).to_string();
        async move { client.put("/v1/connect/intentions/exact?source=web&destination=api", body).await.unwrap() }
    });
    for response in futures::future::join_all(upserts).await {
        assert_eq!((response.status, response.text()), (200, "true".to_owned()));
    }
    let list = body(&clients[0].get("/v1/connect/intentions").await.unwrap());
    assert_eq!(pairs(&list), [pair("web", "api")]);

    // Legacy creates race too: exactly one wins, the others get a 409.
    let creates = clients.iter().cycle().take(9).map(|client| async move {
        let body = r#"{"SourceName": "*", "DestinationName": "api", "Action": "deny"}"#;
        client.post("/v1/connect/intentions", body).await.unwrap()
    });
    let statuses: Vec<u16> = futures::future::join_all(creates).await.iter().map(|r| r.status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 409), "{statuses:?}");
    let list = body(&clients[2].get("/v1/connect/intentions").await.unwrap());
    assert_eq!(pairs(&list), [pair("web", "api"), pair("*", "api")]);

    // An intention and a service-intentions entry for one pair race: the
    // leader checks each against its tables and `apply` takes one only if
    // those tables did not change since, so exactly one wins each round.
    for round in 0..8 {
        let source = format!("cache{round}");
        let intention = json!({"Action": "allow"}).to_string();
        let entry =
            json!({"Kind": "service-intentions", "Name": "db", "Sources": [{"Name": source, "Action": "deny"}]});
        let writes = clients.iter().enumerate().map(|(i, client)| {
            let (path, body) = match i {
                1 => ("/v1/config".to_owned(), entry.to_string()),
                _ => (format!("/v1/connect/intentions/exact?source={source}&destination=db"), intention.clone()),
            };
            async move { client.put(&path, body).await.unwrap() }
        });
        let answers: Vec<(u16, String)> =
            futures::future::join_all(writes).await.iter().map(|r| (r.status, r.text())).collect();
        let intention_won = answers[0].0 == 200 || answers[2].0 == 200;
        let entry_won = answers[1].0 == 200;
        assert!(intention_won != entry_won, "round {round}: {answers:?}");
        assert!(answers.iter().all(|(status, _)| [200, 400].contains(status)), "round {round}: {answers:?}");
        let entry = clients[0].get("/v1/config/service-intentions/db").await.unwrap();
        let sources = match entry.status {
            200 => body(&entry)["Sources"].as_array().unwrap().len(),
            _ => 0,
        };
        assert_eq!(sources == 1, entry_won, "round {round}: {answers:?}");
        // The list holds both kinds: the pair once.
        let list = body(&clients[0].get("/v1/connect/intentions").await.unwrap());
        let listed = pairs(&list).iter().filter(|p| **p == pair(&source, "db")).count();
        assert_eq!(listed, 1, "round {round}: {answers:?}");
        // Clear the pair for the next round.
        if entry_won {
            assert_eq!(clients[0].delete("/v1/config/service-intentions/db").await.unwrap().status, 200);
        } else {
            let path = format!("/v1/connect/intentions/exact?source={source}&destination=db");
            assert_eq!(clients[0].delete(&path).await.unwrap().status, 200);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_speaks_consuls_shapes_and_legacy_endpoints() {
    let cluster = Cluster::servers(1).await;
    let client = cluster.client(0);

    // Upsert by name: any case in the body; Meta keys kept as sent.
    let body_text = r#"{"action": "allow", "DESCRIPTION": "d", "meta": {"Team_Name": "x"}}"#;
    let put = client.put("/v1/connect/intentions/exact?source=web&destination=api", body_text).await.unwrap();
    assert_eq!((put.status, put.text()), (200, "true".to_owned()));
    let got = client.get("/v1/connect/intentions/exact?source=web&destination=api").await.unwrap();
    let intention = body(&got);
    let id = intention["ID"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let expected = json!({
        "ID": id, "Description": "d", "SourceNS": "default", "SourceName": "web",
        "DestinationNS": "default", "DestinationName": "api", "SourceType": "consul",
        "Action": "allow", "Meta": {"Team_Name": "x"}, "Precedence": 9,
        "CreateIndex": intention["CreateIndex"], "ModifyIndex": intention["ModifyIndex"],
    });
    assert_eq!(intention, expected);
    assert!(got.consul_index().unwrap() >= intention["ModifyIndex"].as_u64().unwrap());

    // Legacy endpoints: by ID.
    assert_eq!(body(&client.get(&format!("/v1/connect/intentions/{id}")).await.unwrap()), expected);
    let created = client
        .post("/v1/connect/intentions", r#"{"SourceName": "*", "DestinationName": "api", "Action": "deny"}"#)
        .await
        .unwrap();
    assert_eq!(created.status, 200, "{}", created.text());
    let wildcard_id = body(&created)["ID"].as_str().unwrap().to_owned();
    let duplicate = client
        .post("/v1/connect/intentions", r#"{"SourceName": "web", "DestinationName": "api", "Action": "deny"}"#)
        .await
        .unwrap();
    assert_eq!(duplicate.status, 409, "{}", duplicate.text());
    assert!(duplicate.text().contains(&id), "the conflict names the existing ID: {}", duplicate.text());
    let update = r#"{"SourceName": "*", "DestinationName": "api", "Action": "allow", "Description": "open"}"#;
    let updated = client.put(&format!("/v1/connect/intentions/{wildcard_id}"), update).await.unwrap();
    assert_eq!(body(&updated), json!({"ID": wildcard_id}));
    let wildcard = body(&client.get(&format!("/v1/connect/intentions/{wildcard_id}")).await.unwrap());
    assert_eq!((wildcard["Action"].as_str(), wildcard["Precedence"].as_u64()), (Some("allow"), Some(8)));

    // match and check.
    let matched = body(&client.get("/v1/connect/intentions/match?by=destination&name=api").await.unwrap());
    assert_eq!(pairs(&matched["api"]), [pair("web", "api"), pair("*", "api")]);
    let matched = body(&client.get("/v1/connect/intentions/match?by=source&name=db&name=web").await.unwrap());
    assert_eq!(pairs(&matched["db"]), [pair("*", "api")]);
    assert_eq!(pairs(&matched["web"]), [pair("web", "api"), pair("*", "api")]);
    let check = client.get("/v1/connect/intentions/check?source=other&destination=api").await.unwrap();
    assert_eq!(body(&check), json!({"Allowed": true}));
    let check = client.get("/v1/connect/intentions/check?source=other&destination=db").await.unwrap();
    assert_eq!(body(&check), json!({"Allowed": false}));

    // The agent's authorize endpoint: the service comes from the SPIFFE ID.
    let authorize = |target: &str, service: &str| {
        json!({"Target": target, "ClientCertURI": format!("spiffe://11111111-2222-3333-4444-555555555555.weft/ns/default/dc/dc1/svc/{service}"), "ClientCertSerial": "01"})
            .to_string()
    };
    let answer = body(&client.post("/v1/agent/connect/authorize", authorize("api", "web")).await.unwrap());
    assert_eq!(answer["Authorized"], true);
    assert!(answer["Reason"].as_str().unwrap().contains(&id), "names the intention: {answer}");
    let answer = body(&client.post("/v1/agent/connect/authorize", authorize("db", "web")).await.unwrap());
    assert_eq!(answer["Authorized"], false);
    assert!(answer["Reason"].as_str().unwrap().contains("default is to deny"), "{answer}");
    client.put("/v1/connect/intentions/exact?source=web&destination=api", r#"{"Action": "deny"}"#).await.unwrap();
    let lower_case = r#"{"target": "api", "clientCertURI": "spiffe://x/ns/default/dc/dc1/svc/web"}"#;
    let answer = body(&client.post("/v1/agent/connect/authorize", lower_case).await.unwrap());
    assert_eq!(answer["Authorized"], false);
    assert!(answer["Reason"].as_str().unwrap().contains("DENY web => api"), "{answer}");
    assert_eq!(body(&client.get(&format!("/v1/connect/intentions/{id}")).await.unwrap())["ID"], id, "ID kept");

    // Deletes: by ID (404 when absent), by name (always true).
    let deleted = client.delete(&format!("/v1/connect/intentions/{wildcard_id}")).await.unwrap();
    assert_eq!(deleted.text(), "true");
    assert_eq!(client.get(&format!("/v1/connect/intentions/{wildcard_id}")).await.unwrap().status, 404);
    assert_eq!(client.delete(&format!("/v1/connect/intentions/{wildcard_id}")).await.unwrap().status, 404);
    let deleted = client.delete("/v1/connect/intentions/exact?source=web&destination=api").await.unwrap();
    assert_eq!(deleted.text(), "true");
    assert_eq!(body(&client.get("/v1/connect/intentions").await.unwrap()), json!([]));
}

/// Method, path, body, the status expected, and what the message must mention.
type BadRequest = (&'static str, &'static str, Option<String>, u16, &'static str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_intention_requests_get_a_clear_4xx_and_change_nothing() {
    let cluster = Cluster::servers(1).await;
    let client: HttpClient = cluster.client(0);
    let put = client.put("/v1/connect/intentions/exact?source=web&destination=api", r#"{"Action": "allow"}"#);
    assert_eq!(put.await.unwrap().text(), "true");
    let before = client.get("/v1/snapshot").await.unwrap();
    assert_eq!(before.status, 200);
    let index_before = client.get("/v1/connect/intentions").await.unwrap().consul_index();

    let some = |text: &str| Some(text.to_owned());
    let long_description = format!(r#"{{"Action": "allow", "Description": "{}"}}"#, "x".repeat(600));
    let exact = "/v1/connect/intentions/exact?source=web&destination=db";
    let cases: Vec<BadRequest> = vec![
        ("PUT", "/v1/connect/intentions/exact?source=web", some(r#"{"Action": "allow"}"#), 400, "'destination'"),
        ("PUT", "/v1/connect/intentions/exact?destination=db", some(r#"{"Action": "allow"}"#), 400, "'source'"),
        ("PUT", exact, some(r#"{"Action": "maybe"}"#), 400, "Action must be set to 'allow' or 'deny'"),
        ("PUT", exact, some(r#"{"Description": "no action"}"#), 400, "Action must be set"),
        ("PUT", exact, some("{not json"), 400, "malformed JSON"),
        ("PUT", exact, some(""), 400, "empty"),
        ("PUT", exact, some(r#"{"Action": "allow", "Meta": {"k": 5}}"#), 400, "invalid type"),
        ("PUT", exact, Some(long_description), 400, "Description exceeds maximum length"),
        (
            "PUT",
            "/v1/connect/intentions/exact?source=we*&destination=db",
            some(r#"{"Action": "allow"}"#),
            400,
            "wildcard",
        ),
        (
            "PUT",
            "/v1/connect/intentions/exact?source=ns%2Fweb&destination=db",
            some(r#"{"Action": "allow"}"#),
            400,
            "namespaces",
        ),
        (
            "PUT",
            "/v1/connect/intentions/exact?source=web&destination=db&dc=mars",
            some(r#"{"Action": "allow"}"#),
            500,
            "No path to datacenter",
        ),
        ("DELETE", "/v1/connect/intentions/exact?source=web", None, 400, "'destination'"),
        (
            "POST",
            "/v1/connect/intentions",
            some(r#"{"DestinationName": "db", "Action": "allow"}"#),
            400,
            "SourceName must be set",
        ),
        (
            "POST",
            "/v1/connect/intentions",
            some(r#"{"SourceName": "web", "Action": "allow"}"#),
            400,
            "DestinationName must be set",
        ),
        (
            "POST",
            "/v1/connect/intentions",
            some(r#"{"ID": "x", "SourceName": "web", "DestinationName": "db", "Action": "allow"}"#),
            400,
            "ID must be empty",
        ),
        (
            "POST",
            "/v1/connect/intentions",
            some(r#"{"SourceName": "web", "DestinationName": "db", "SourceType": "external", "Action": "allow"}"#),
            400,
            "SourceType",
        ),
        (
            "POST",
            "/v1/connect/intentions",
            some(r#"{"SourceName": "web", "SourceNS": "team", "DestinationName": "db", "Action": "allow"}"#),
            400,
            "SourceNS",
        ),
        (
            "POST",
            "/v1/connect/intentions",
            some(r#"{"SourceName": "web", "DestinationName": "api", "Action": "deny"}"#),
            409,
            "already exists",
        ),
        (
            "PUT",
            "/v1/connect/intentions/no-such-id",
            some(r#"{"SourceName": "web", "DestinationName": "db", "Action": "deny"}"#),
            404,
            "non-existent",
        ),
        ("DELETE", "/v1/connect/intentions/no-such-id", None, 404, "non-existent"),
        ("GET", "/v1/connect/intentions/no-such-id", None, 404, "Intention not found"),
        ("GET", "/v1/connect/intentions/exact?source=web&destination=db", None, 404, "Intention not found"),
        ("GET", "/v1/connect/intentions/match?name=web", None, 400, "'by'"),
        ("GET", "/v1/connect/intentions/match?by=sideways&name=web", None, 400, "'source' or 'destination'"),
        ("GET", "/v1/connect/intentions/match?by=source", None, 400, "'name'"),
        ("GET", "/v1/connect/intentions/check?destination=api", None, 400, "'source'"),
        ("GET", "/v1/connect/intentions?filter=%28%28%28", None, 400, "boolean expression"),
        ("GET", "/v1/connect/intentions?index=abc", None, 400, "?index"),
        ("PATCH", "/v1/connect/intentions/exact", None, 405, "not allowed"),
        (
            "POST",
            "/v1/agent/connect/authorize",
            some(r#"{"ClientCertURI": "spiffe://x/ns/default/dc/dc1/svc/web"}"#),
            400,
            "Target",
        ),
        ("POST", "/v1/agent/connect/authorize", some(r#"{"Target": "api"}"#), 400, "ClientCertURI must be given"),
        (
            "POST",
            "/v1/agent/connect/authorize",
            some(r#"{"Target": "api", "ClientCertURI": "https://web.example"}"#),
            400,
            "not a valid Connect service identifier",
        ),
        (
            "POST",
            "/v1/agent/connect/authorize",
            some(r#"{"Target": "api", "ClientCertURI": "spiffe://x/agent/client/dc/dc1/id/n1"}"#),
            400,
            "not a valid Connect service identifier",
        ),
        (
            "POST",
            "/v1/agent/connect/authorize",
            some(r#"{"Target": "api", "ClientCertURI": "spiffe://x/ns/team/dc/dc1/svc/web"}"#),
            400,
            "namespace",
        ),
    ];
    for (method, path, payload, status, message) in cases {
        let method: hyper::Method = method.parse().unwrap();
        let response = client.request(method.clone(), path, payload.map(String::into_bytes)).await.unwrap();
        assert_eq!(response.status, status, "{method} {path}: {}", response.text());
        assert!(response.text().contains(message), "{method} {path}: {:?} should mention {message:?}", response.text());
    }

    let after = client.get("/v1/snapshot").await.unwrap();
    assert_eq!(before.body, after.body, "no bad request changed the state");
    assert_eq!(index_before, client.get("/v1/connect/intentions").await.unwrap().consul_index());
}

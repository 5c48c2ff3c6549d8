//! ACLs end to end, through the real binary, with `default_policy = "deny"`:
//! - every route of the HTTP API (read from the router's own source, so a
//!   new route cannot be missed) refuses or filters a caller without a
//!   token, and no route answers without having asked the ACL;
//! - bootstrap works once, and again only with the reset index written on
//!   a server (not on a client agent's host); tokens, policies and roles
//!   follow Consul's API;
//!   a token with `service:write` on `web` registers `web` (and its sidecar
//!   runs with that token) but not `payments`, gets a leaf for `web` only;
//!   KV listings keep what a partial `key_prefix` allows; a deleted or
//!   expired token is refused at once; a policy edit that takes web's
//!   `service:write` away stops web's sidecar, and the connections
//!   through it end;
//! - a client agent forwards its caller's token, and the servers check it
//!   again: a write over RPC with the agent's own certificate but a token
//!   that lacks the right is refused, and nothing changes;
//! - a blocking query ends with a 403 as soon as its token is deleted or
//!   expires, rather than at the end of its wait;
//! - DNS answers what the agent's default token may read (services, and
//!   instances on nodes it may read);
//! - with ACLs off, `/v1/acl/*` answers 401 `ACL support disabled`.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{eventually, Cluster, MANAGEMENT_TOKEN};
use weft_api::client::HttpClient;
use weft_api::proto::cluster::ApplyRequest;

/// Every `(method, path template)` the router serves, read from its source.
fn routes() -> Vec<(&'static str, String)> {
    let source = include_str!("../agent/src/http/mod.rs");
    let mut routes = Vec::new();
    for chunk in source.split(".route(").skip(1) {
        let Some(path) = chunk.strip_prefix('"').and_then(|rest| rest.split('"').next()) else { continue };
        // The route's handlers end at the next `.route(` or the router's end.
        let handlers = chunk.split(".fallback").next().unwrap_or(chunk);
        for (marker, methods) in [
            ("get(", &["GET"][..]),
            ("put(", &["PUT"]),
            ("post(", &["POST"]),
            ("delete(", &["DELETE"]),
            ("any(", &["GET", "PUT", "DELETE"]),
        ] {
            if handlers.contains(marker) {
                routes.extend(methods.iter().map(|m| (*m, path.to_owned())));
            }
        }
    }
    routes
}

/// A concrete path for a template: each parameter becomes a plain name.
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|segment| match segment {
            "{*key}" => "app/x".to_owned(),
            "{verb}" => "pass".to_owned(),
            s if s.starts_with('{') => "x".to_owned(),
            s => s.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Routes that answer anyone, as Consul's do (a token may always read itself).
const PUBLIC: [&str; 6] = [
    "/v1/catalog/datacenters",
    "/v1/status/leader",
    "/v1/status/peers",
    "/v1/connect/ca/roots",
    "/v1/agent/connect/ca/roots",
    "/v1/acl/token/self",
];

fn method(name: &str) -> hyper::Method {
    name.parse().unwrap()
}

/// Waits until the leader has written the built-ins (the management token resolves).
async fn acl_ready(cluster: &Cluster) {
    eventually("the ACL built-ins", Duration::from_secs(30), || async {
        let response = cluster.client(0).get("/v1/acl/token/self").await.ok()?;
        (response.status == 200).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_or_filters_a_caller_without_a_token() {
    let cluster = Cluster::with_acl(1).await;
    acl_ready(&cluster).await;
    let http = cluster.specs[0].http_addr.clone();
    let management = cluster.client(0);
    // Something to hide: a service and a key.
    management.put("/v1/agent/service/register", json!({"Name": "x", "Port": 80}).to_string()).await.unwrap();
    management.put("/v1/kv/app/x", "secret").await.unwrap();
    let anonymous = HttpClient::new(&http, None).with_timeout(Duration::from_secs(10));
    let routes = routes();
    assert!(routes.len() > 60, "{} routes read from the router", routes.len());
    let (mut refused, mut filtered, mut public) = (0, 0, 0);
    for (verb, template) in &routes {
        // A management token may make the agent leave; bootstrap has its own test.
        if template.contains("/leave") || template.contains("/bootstrap") {
            continue;
        }
        let path = concrete(template);
        let body = (*verb != "GET").then(|| b"{}".to_vec());
        let response = anonymous.request(method(verb), &path, body.clone()).await.unwrap();
        let text = response.text();
        let what = format!("{verb} {path} without a token: {} {text}", response.status);
        assert_ne!(response.status, 500, "{what}");
        match response.status {
            200..=299 if PUBLIC.contains(&template.as_str()) => public += 1,
            200..=299 => {
                assert_eq!(*verb, "GET", "a write succeeded: {what}");
                let empty = ["", "[]", "{}", "null"].contains(&text.trim());
                assert!(empty, "an answer with data: {what}");
                filtered += 1;
            }
            400 | 403 | 404 | 405 => refused += 1,
            other => panic!("unexpected {other}: {what}"),
        }
        // With the management token, nothing is refused for lack of a right.
        let response = management.request(method(verb), &path, body).await.unwrap();
        let (status, text) = (response.status, response.text());
        let lacks = status == 403 && text.contains("lacks permission");
        assert!(status != 500 && !lacks, "{verb} {path} as management: {status} {text}");
    }
    println!("{} routes without a token: {refused} refused, {filtered} answered empty, {public} public", routes.len());
}

/// A token made with `body` by the management token: (AccessorID, SecretID).
async fn token(management: &HttpClient, body: Value) -> (String, String) {
    let response = management.put("/v1/acl/token", body.to_string()).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    let token: Value = serde_json::from_slice(&response.body).unwrap();
    (token["AccessorID"].as_str().unwrap().to_owned(), token["SecretID"].as_str().unwrap().to_owned())
}

async fn policy(management: &HttpClient, name: &str, rules: &str) -> String {
    let response = management.put("/v1/acl/policy", json!({"Name": name, "Rules": rules}).to_string()).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    let policy: Value = serde_json::from_slice(&response.body).unwrap();
    policy["ID"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_policies_and_roles_decide_what_each_caller_may_do() {
    let cluster = Cluster::with_acl(1).await;
    acl_ready(&cluster).await;
    let http = cluster.specs[0].http_addr.clone();
    let as_token = |secret: &str| HttpClient::new(&http, Some(secret.to_owned())).with_timeout(Duration::from_secs(30));
    let anonymous = HttpClient::new(&http, None);

    // Bootstrap, once.
    let first = anonymous.put("/v1/acl/bootstrap", "").await.unwrap();
    assert_eq!(first.status, 200, "{}", first.text());
    let bootstrap: Value = serde_json::from_slice(&first.body).unwrap();
    assert_eq!(bootstrap["Policies"][0]["Name"], "global-management");
    let again = anonymous.put("/v1/acl/bootstrap", "").await.unwrap();
    assert_eq!(again.status, 403);
    assert!(again.text().contains("ACL bootstrap no longer allowed (reset index:"), "{}", again.text());
    let management = as_token(bootstrap["SecretID"].as_str().unwrap());

    // The built-in templated policies: listed, read, and previewed with a name.
    let listed: Value =
        serde_json::from_slice(&management.get("/v1/acl/templated-policies").await.unwrap().body).unwrap();
    assert_eq!(listed["builtin/service"]["TemplateName"], "builtin/service", "{listed}");
    let read = management.get("/v1/acl/templated-policy/name/builtin/dns").await.unwrap();
    let read: Value = serde_json::from_slice(&read.body).unwrap();
    assert!(read["Template"].as_str().unwrap().contains("query_prefix"), "{read}");
    let preview = |name: &str, body: Value| {
        let path = format!("/v1/acl/templated-policy/preview/{name}");
        let management = &management;
        async move { management.post(&path, body.to_string()).await.unwrap() }
    };
    let rendered = preview("builtin/service", json!({"Name": "api"})).await;
    let rendered: Value = serde_json::from_slice(&rendered.body).unwrap();
    assert!(rendered["Name"].as_str().unwrap().starts_with("synthetic-policy-"), "{rendered}");
    assert!(rendered["Rules"].as_str().unwrap().contains("service \"api-sidecar-proxy\""), "{rendered}");
    let unnamed = preview("builtin/service", json!({})).await;
    assert_eq!(unnamed.status, 400, "{}", unnamed.text());
    let injected = preview("builtin/node", json!({"Name": "x\" {}\nkey_prefix \""})).await;
    assert_eq!(injected.status, 400, "a name cannot add rules: {}", injected.text());
    assert_eq!(preview("builtin/nope", json!({})).await.status, 404);
    assert_eq!(anonymous.get("/v1/acl/templated-policies").await.unwrap().status, 403);
    let templated =
        json!({"TemplatedPolicies": [{"TemplateName": "builtin/service", "TemplateVariables": {"Name": "api"}}]});
    let refused = management.put("/v1/acl/token", templated.to_string()).await.unwrap();
    assert_eq!(refused.status, 400, "refused, not a token without the rules: {}", refused.text());

    // An unknown token is "ACL not found"; anonymous sees nothing.
    let unknown = as_token("00000000-aaaa-bbbb-cccc-000000000000").get("/v1/catalog/services").await.unwrap();
    assert_eq!((unknown.status, unknown.text().as_str()), (403, "ACL not found"));

    // A token for web: write on web, read on the rest (HCL rules).
    let web_policy = policy(
        &management,
        "web-write",
        r#"service "web" { policy = "write" }
           service "web-sidecar-proxy" { policy = "write" }
           service_prefix "" { policy = "read" }
           node_prefix "" { policy = "read" }"#,
    )
    .await;
    let bad =
        management.put("/v1/acl/policy", json!({"Name": "bad", "Rules": "servce \"x\" {}"}).to_string()).await.unwrap();
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("Failed to parse ACL rules"), "{}", bad.text());
    let (web_accessor, web_secret) =
        token(&management, json!({"Description": "web", "Policies": [{"Name": "web-write"}]})).await;
    let web = as_token(&web_secret);
    let own = web.get("/v1/acl/token/self").await.unwrap();
    let own: Value = serde_json::from_slice(&own.body).unwrap();
    assert_eq!(
        (own["AccessorID"].as_str(), own["SecretID"].as_str()),
        (Some(web_accessor.as_str()), Some(web_secret.as_str()))
    );
    let read = management.get(&format!("/v1/acl/token/{web_accessor}")).await.unwrap();
    let read: Value = serde_json::from_slice(&read.body).unwrap();
    assert_eq!(read["SecretID"], "<hidden>", "a secret is shown once");
    assert_eq!(read["Policies"][0]["ID"], web_policy.as_str());

    // web registers web, and its sidecar runs with web's token; not payments.
    let register = |name: &str| json!({"Name": name, "Port": 8080, "Connect": {"SidecarService": {}}}).to_string();
    let ok = web.put("/v1/agent/service/register", register("web")).await.unwrap();
    assert_eq!(ok.status, 200, "{}", ok.text());
    let refused = web.put("/v1/agent/service/register", register("payments")).await.unwrap();
    assert_eq!(refused.status, 403);
    assert_eq!(
        refused.text(),
        format!("Permission denied: token with AccessorID '{web_accessor}' lacks permission 'service:write' on \"payments\"")
    );
    println!("web registering payments: {}", refused.text());
    eventually("web's sidecar to run on web's token and pass its check", Duration::from_secs(60), || async {
        let checks = management.get("/v1/health/checks/web-sidecar-proxy").await.ok()?;
        let checks: Value = serde_json::from_slice(&checks.body).ok()?;
        checks.as_array()?.iter().all(|c| c["Status"] == "passing").then_some(())?;
        (!checks.as_array()?.is_empty()).then_some(())
    })
    .await;
    assert_eq!(web.get("/v1/agent/connect/ca/leaf/web").await.unwrap().status, 200);
    assert_eq!(web.get("/v1/agent/connect/ca/leaf/payments").await.unwrap().status, 403);
    // Reads: web's token sees the catalog; anonymous sees it filtered.
    let services = anonymous.get("/v1/catalog/services").await.unwrap();
    assert_eq!(services.text(), "{}");
    assert_eq!(services.header("X-Consul-Results-Filtered-By-ACLs"), Some("true"));
    let services: Value = serde_json::from_slice(&web.get("/v1/catalog/services").await.unwrap().body).unwrap();
    assert!(services.get("web").is_some(), "{services}");

    // KV under a partial key_prefix policy: the listing keeps what it may read.
    for key in ["app/a", "app/b", "secret/c"] {
        assert_eq!(management.put(&format!("/v1/kv/{key}"), "v").await.unwrap().text(), "true");
    }
    policy(&management, "app-read", r#"key_prefix "app/" { policy = "read" }"#).await;
    let role = management
        .put("/v1/acl/role", json!({"Name": "app-reader", "Policies": [{"Name": "app-read"}]}).to_string())
        .await
        .unwrap();
    assert_eq!(role.status, 200, "{}", role.text());
    let (_, reader_secret) = token(&management, json!({"Roles": [{"Name": "app-reader"}]})).await;
    let reader = as_token(&reader_secret);
    let listed = reader.get("/v1/kv/?recurse").await.unwrap();
    let keys: Vec<String> = serde_json::from_slice::<Vec<Value>>(&listed.body)
        .unwrap()
        .iter()
        .map(|e| e["Key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys, ["app/a", "app/b"]);
    assert_eq!(listed.header("X-Consul-Results-Filtered-By-ACLs"), Some("true"));
    assert_eq!(reader.get("/v1/kv/secret/c").await.unwrap().status, 403);
    // A transaction needs key:read on each key it reads, key:write on each it writes.
    let txn = |verb: &str, key: &str| json!([{"KV": {"Verb": verb, "Key": key, "Value": "eA=="}}]).to_string();
    for (body, status) in [(txn("get", "app/a"), 200), (txn("get", "secret/c"), 403), (txn("set", "app/a"), 403)] {
        let response = reader.put("/v1/txn", body.clone()).await.unwrap();
        assert_eq!(response.status, status, "{body}: {}", response.text());
    }
    assert_eq!(management.get("/v1/kv/app/a?raw").await.unwrap().text(), "v");
    assert_eq!(reader.put("/v1/kv/app/a", "w").await.unwrap().status, 403, "read is not write");

    // Deleted: refused at once. Expired: refused once its time has passed.
    let (accessor, secret) = token(&management, json!({"Policies": [{"ID": web_policy}]})).await;
    assert_eq!(as_token(&secret).get("/v1/catalog/services").await.unwrap().status, 200);
    assert_eq!(management.delete(&format!("/v1/acl/token/{accessor}")).await.unwrap().text(), "true");
    let deleted_at = Instant::now();
    assert_eq!(as_token(&secret).get("/v1/catalog/services").await.unwrap().status, 403);
    println!("a deleted token was refused {:?} after its deletion", deleted_at.elapsed());
    let (_, short) = token(&management, json!({"Policies": [{"ID": web_policy}], "ExpirationTTL": "2s"})).await;
    assert_eq!(as_token(&short).get("/v1/catalog/services").await.unwrap().status, 200);
    eventually("the token to expire", Duration::from_secs(10), || async {
        (as_token(&short).get("/v1/catalog/services").await.ok()?.status == 403).then_some(())
    })
    .await;

    // A policy edit takes effect on the next request, and on web's sidecar,
    // whose configuration (a blocking query) needs `service:write` on web:
    // it stops, and a connection held open to its public port ends.
    let sidecar: Value =
        serde_json::from_slice(&management.get("/v1/agent/service/web-sidecar-proxy").await.unwrap().body).unwrap();
    let public = format!("127.0.0.1:{}", sidecar["Port"]);
    let mut held = tokio::net::TcpStream::connect(&public).await.expect("web's sidecar listens");
    let narrowed = json!({"Name": "web-write", "Rules": "service \"web\" { policy = \"read\" }"});
    let updated = management.put(&format!("/v1/acl/policy/{web_policy}"), narrowed.to_string()).await.unwrap();
    assert_eq!(updated.status, 200, "{}", updated.text());
    let narrowed_at = Instant::now();
    assert_eq!(web.get("/v1/agent/connect/ca/leaf/web").await.unwrap().status, 403);
    let mut byte = [0u8; 1];
    let ended = tokio::time::timeout(Duration::from_secs(8), tokio::io::AsyncReadExt::read(&mut held, &mut byte)).await;
    assert!(matches!(ended, Ok(Ok(0) | Err(_))), "the held connection must end with the sidecar: {ended:?}");
    println!("web's sidecar closed a held connection {:?} after its policy lost service:write", narrowed_at.elapsed());
    // Restarted, it is refused again before it listens.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(tokio::net::TcpStream::connect(&public).await.is_err(), "web's sidecar must not listen again");
    let listed: Vec<Value> = serde_json::from_slice(&management.get("/v1/acl/tokens").await.unwrap().body).unwrap();
    assert!(listed.iter().any(|t| t["AccessorID"] == web_accessor.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_agents_forward_their_callers_tokens_and_the_servers_check_them_again() {
    let mut cluster = Cluster::with_acl(1).await;
    acl_ready(&cluster).await;
    let vm1 = cluster.add_client("vm1", &[]);
    cluster.wait_ready(vm1).await;
    let management = cluster.client(0);
    policy(&management, "api-read", r#"service "api" { policy = "read" }"#).await;
    let (reader_accessor, reader_secret) = token(&management, json!({"Policies": [{"Name": "api-read"}]})).await;
    let vm1_http = cluster.specs[vm1].http_addr.clone();
    // Through vm1, with the management token: the intention is written.
    let vm1_management = cluster.client(vm1);
    let intention = json!({"SourceName": "web", "DestinationName": "api", "Action": "allow"}).to_string();
    let written = eventually("vm1 to know the management token", Duration::from_secs(30), || async {
        let response = vm1_management
            .put("/v1/connect/intentions/exact?source=web&destination=api", intention.clone())
            .await
            .ok()?;
        (response.status == 200).then_some(response)
    })
    .await;
    assert_eq!(written.text(), "true");
    // With a token that may only read api: refused by vm1.
    let reader = HttpClient::new(&vm1_http, Some(reader_secret.clone()));
    let refused =
        reader.put("/v1/connect/intentions/exact?source=db&destination=api", intention.clone()).await.unwrap();
    assert_eq!(refused.status, 403, "{}", refused.text());
    // A rogue on vm1's host, with vm1's own certificate, sends the write
    // straight to the server with that token, and with none: the server
    // checks the token itself.
    let read = |file: &str| std::fs::read_to_string(cluster.data_dir(vm1).join(file)).unwrap();
    let (cert, key) = (read("agent-cert.pem"), read("agent-key.pem"));
    let mut as_vm1 = cluster.rpc_client(0, Some((&cert, &key)));
    let upsert = weft_api::command::Command::IntentionUpsert(weft_api::mesh::Intention {
        id: "6b2d2a2e-0d2a-4c1b-9a53-2b6c4c3a9f01".into(),
        source: "db".into(),
        destination: "api".into(),
        action: weft_api::mesh::IntentionAction::Allow,
        ..Default::default()
    });
    let kv = weft_api::command::Command::KvSet { key: "forged".into(), value: b"x".to_vec(), flags: 0, cas: None };
    let txn = weft_api::command::Command::Txn(vec![weft_api::txn::KvOp {
        verb: weft_api::txn::KvVerb::Set,
        key: "forged".into(),
        value: b"x".to_vec(),
        flags: 0,
        index: 0,
        session: String::new(),
    }]);
    // Only a leader makes a checked write: one sent in skips no check.
    let checked =
        weft_api::command::Command::Checked { mesh_index: Default::default(), command: Box::new(upsert.clone()) };
    for (what, command, acl_token) in [
        ("an intention with a read-only token", &upsert, reader_secret.as_str()),
        ("an intention with no token", &upsert, ""),
        ("a checked intention with a read-only token", &checked, reader_secret.as_str()),
        ("a transaction with a read-only token", &txn, reader_secret.as_str()),
        ("a KV write with no token", &kv, ""),
        ("a KV write with a made-up token", &kv, "00000000-0000-0000-0000-00000000dead"),
    ] {
        let request = ApplyRequest { command: postcard::to_allocvec(command).unwrap(), acl_token: acl_token.into() };
        let refused = as_vm1.apply(request).await.expect_err(what);
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{what}: {refused:?}");
        println!("vm1's certificate, {what}: {}", refused.message());
    }
    // Even with the management token, a checked write made outside the
    // leader is refused: one at the current index would skip the rule that
    // a pair has one intention (web → api has one).
    let listed = management.get("/v1/connect/intentions").await.unwrap();
    let mesh_index: u64 = listed.header("X-Consul-Index").unwrap().parse().unwrap();
    let second = weft_api::command::Command::IntentionUpsert(weft_api::mesh::Intention {
        id: "6b2d2a2e-0d2a-4c1b-9a53-2b6c4c3a9f02".into(),
        source: "web".into(),
        destination: "api".into(),
        action: weft_api::mesh::IntentionAction::Deny,
        ..Default::default()
    });
    let forged = weft_api::command::Command::Checked {
        mesh_index: weft_api::ids::RaftIndex(mesh_index),
        command: Box::new(second),
    };
    let request = ApplyRequest { command: postcard::to_allocvec(&forged).unwrap(), acl_token: MANAGEMENT_TOKEN.into() };
    let refused = as_vm1.apply(request).await.expect_err("a checked write from outside the leader");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    let intentions: Vec<Value> =
        serde_json::from_slice(&management.get("/v1/connect/intentions").await.unwrap().body).unwrap();
    assert_eq!(intentions.len(), 1, "{intentions:?}");
    assert_eq!(management.get("/v1/kv/forged").await.unwrap().status, 404);
    assert!(!reader_accessor.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrapping_again_needs_the_reset_index_written_on_a_server() {
    let mut cluster = Cluster::with_acl(1).await;
    acl_ready(&cluster).await;
    let vm1 = cluster.add_client("vm1", &[]);
    cluster.wait_ready(vm1).await;
    let anonymous = |i: usize| HttpClient::new(&cluster.specs[i].http_addr, None);
    assert_eq!(anonymous(0).put("/v1/acl/bootstrap", "").await.unwrap().status, 200);
    let refused = anonymous(0).put("/v1/acl/bootstrap", "").await.unwrap();
    assert_eq!(refused.status, 403);
    let text = refused.text();
    let reset: u64 = text.rsplit("reset index: ").next().unwrap().trim_end_matches(')').parse().unwrap();
    // Root on a client agent's host cannot take the ACLs over.
    std::fs::write(cluster.data_dir(vm1).join("acl-bootstrap-reset"), reset.to_string()).unwrap();
    assert_eq!(anonymous(vm1).put("/v1/acl/bootstrap", "").await.unwrap().status, 403);
    // On a server, it may.
    let file = cluster.data_dir(0).join("acl-bootstrap-reset");
    std::fs::write(&file, format!("{reset}\n")).unwrap();
    let again = anonymous(0).put("/v1/acl/bootstrap", "").await.unwrap();
    assert_eq!(again.status, 200, "{}", again.text());
    assert!(!file.exists(), "the reset file is used once");
    let token: Value = serde_json::from_slice(&again.body).unwrap();
    let management = HttpClient::new(&cluster.specs[0].http_addr, Some(token["SecretID"].as_str().unwrap().to_owned()));
    assert_eq!(management.get("/v1/acl/tokens").await.unwrap().status, 200);
    assert_eq!(anonymous(0).put("/v1/acl/bootstrap", "").await.unwrap().status, 403, "and once only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_query_ends_when_its_token_is_revoked() {
    let mut cluster = Cluster::with_acl(1).await;
    acl_ready(&cluster).await;
    let vm1 = cluster.add_client("vm1", &[]);
    cluster.wait_ready(vm1).await;
    let management = cluster.client(0);
    policy(&management, "read-all", r#"key_prefix "" { policy = "read" }"#).await;
    // A key nothing else writes: only the token can end the wait early.
    assert_eq!(management.put("/v1/kv/quiet", "x").await.unwrap().status, 200);
    let index = eventually("vm1 to have the key", Duration::from_secs(30), || async {
        let response = cluster.client(vm1).get("/v1/kv/quiet").await.ok()?;
        (response.status == 200).then(|| response.consul_index()).flatten()
    })
    .await;
    let long_poll = |secret: String| {
        let http = cluster.specs[vm1].http_addr.clone();
        tokio::spawn(async move {
            let client = HttpClient::new(&http, Some(secret)).with_timeout(Duration::from_secs(60));
            let started = Instant::now();
            let response = client.get(&format!("/v1/kv/quiet?index={index}&wait=30s")).await.unwrap();
            (response.status, response.text(), started.elapsed())
        })
    };
    // Deleted while it waits (through the server; vm1 hears of it by its stream).
    let (accessor, secret) = token(&management, json!({"Policies": [{"Name": "read-all"}]})).await;
    let deleted = long_poll(secret);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let at = Instant::now();
    assert_eq!(management.delete(&format!("/v1/acl/token/{accessor}")).await.unwrap().status, 200);
    let (status, text, _) = deleted.await.unwrap();
    let after = at.elapsed();
    assert_eq!((status, text.as_str()), (403, "ACL not found"));
    assert!(after < Duration::from_secs(10), "ended {after:?} after the deletion, not at the end of its 30 s wait");
    // Expiring while it waits.
    let (_, secret) = token(&management, json!({"Policies": [{"Name": "read-all"}], "ExpirationTTL": "2s"})).await;
    let (status, text, took) = long_poll(secret).await.unwrap();
    assert_eq!((status, text.as_str()), (403, "ACL not found"));
    assert!(took < Duration::from_secs(10), "ended after {took:?}, not at the end of its 30 s wait");
    println!("a long-poll ended {after:?} after its token's deletion, and {took:?} into a 2 s token's life");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_answers_what_the_default_token_may_read() {
    if !support::dig_available() {
        return;
    }
    let cluster = Cluster::with_acl(1).await;
    acl_ready(&cluster).await;
    let management = cluster.client(0);
    let registered =
        management.put("/v1/agent/service/register", json!({"Name": "web", "Port": 80}).to_string()).await.unwrap();
    assert_eq!(registered.status, 200, "{}", registered.text());
    let dns = cluster.specs[0].dns_addr.clone();
    let status = |answer: &str| answer.lines().find(|l| l.contains("status:")).unwrap_or_default().to_owned();
    let hidden = eventually("web in the catalog", Duration::from_secs(30), || async {
        let services: Value = serde_json::from_slice(&management.get("/v1/catalog/services").await.ok()?.body).ok()?;
        services.get("web").map(|_| support::dig(&dns, &["web.service.weft"]))
    })
    .await;
    assert!(status(&hidden).contains("NXDOMAIN"), "the anonymous token reads nothing: {hidden}");
    // The service, but not the node its one instance is on: no instance.
    let services_only = "service_prefix \"\" {\n  policy = \"read\"\n}\nnode \"elsewhere\" {\n  policy = \"read\"\n}\n";
    policy(&management, "services-only", services_only).await;
    let (_, secret) = token(&management, json!({"Policies": [{"Name": "services-only"}]})).await;
    let set = management.put("/v1/agent/token/default", json!({"Token": secret}).to_string()).await.unwrap();
    assert_eq!(set.status, 200, "{}", set.text());
    let unseen = support::dig(&dns, &["web.service.weft"]);
    assert!(status(&unseen).contains("NXDOMAIN") && unseen.contains("ANSWER: 0,"), "{unseen}");
    let rules = "service_prefix \"\" {\n  policy = \"read\"\n}\nnode_prefix \"\" {\n  policy = \"read\"\n}\n";
    policy(&management, "dns-read", rules).await;
    let (_, secret) = token(&management, json!({"Policies": [{"Name": "dns-read"}]})).await;
    let set = management.put("/v1/agent/token/default", json!({"Token": secret}).to_string()).await.unwrap();
    assert_eq!(set.status, 200, "{}", set.text());
    let shown = support::dig(&dns, &["web.service.weft"]);
    assert!(status(&shown).contains("NOERROR") && shown.contains("127.0.0.1"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_acls_the_acl_api_says_so() {
    let cluster = Cluster::servers(1).await;
    let response = cluster.client(0).get("/v1/acl/policies").await.unwrap();
    assert_eq!((response.status, response.text().as_str()), (401, "ACL support disabled"));
    // ... and every other route still works without a token.
    assert_eq!(cluster.client(0).put("/v1/kv/k", "v").await.unwrap().text(), "true");
    assert_eq!(MANAGEMENT_TOKEN.len(), 36);
}

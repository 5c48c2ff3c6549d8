//! Config entries end to end: `weft config` against a follower of a real
//! cluster with HCL and JSON files, refusals that name the problem and
//! change nothing, check-and-set, blocking lists, and the `mesh` entry's
//! default for traffic no intention matches.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use support::{weft, Cluster};
use weft_api::client::{HttpClient, Response};

fn body(response: &Response) -> Value {
    serde_json::from_slice(&response.body).unwrap_or_else(|_| panic!("not JSON: {}", response.text()))
}

/// Runs `weft config ARGS --http-addr ADDR`: (exit code, stdout, stderr).
fn config(addr: &str, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["config"];
    all.extend(args);
    all.extend(["--http-addr", addr]);
    weft(&all)
}

/// Writes `text` to `dir/name` and returns the path as a string.
fn file(dir: &Path, name: &str, text: &str) -> String {
    let path: PathBuf = dir.join(name);
    std::fs::write(&path, text).expect("write the entry file");
    path.to_str().expect("a UTF-8 path").to_owned()
}

/// The names in a JSON list of entries.
fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|e| e["Name"].as_str().unwrap())
        .collect()
}

const WEB_DEFAULTS_HCL: &str = r#"
Kind     = "service-defaults"
Name     = "web"
Protocol = "http"
"#;

const WEB_RESOLVER_HCL: &str = r#"
Kind          = "service-resolver"
Name          = "web"
DefaultSubset = "v1"
Subsets = {
  "v1" = { Filter = "Service.Meta.version == 1" }
  "v2" = { Filter = "Service.Meta.version == 2" }
}
"#;

/// A router in the HCL of Consul's docs (blocks inside the list's objects).
const WEB_ROUTER_HCL: &str = r#"
Kind = "service-router"
Name = "web"
Routes = [
  {
    Match {
      HTTP {
        PathRegex = "^/canary/.*$"
        Header = [{ Name = "x-debug", Regex = "^(1|true)$" }]
      }
    }
    Destination {
      Service       = "web"
      ServiceSubset = "v2"
    }
  },
]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_writes_reads_lists_and_deletes_entries_through_a_follower() {
    let cluster = Cluster::servers(3).await;
    let follower = cluster.follower().await;
    let addr = cluster.specs[follower].http_addr.clone();
    let run = |args: &[&str]| config(&addr, args);
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();

    // HCL and JSON files, any key case; Consul's one-dash flags work too.
    let (code, stdout, stderr) = run(&["write", &file(dir, "web.hcl", WEB_DEFAULTS_HCL)]);
    assert_eq!((code, stdout.trim()), (0, "Config entry written: service-defaults/web"), "{stderr}");
    let api = file(dir, "api.json", r#"{"kind": "service-defaults", "name": "api", "Protocol": "grpc"}"#);
    let (code, stdout, stderr) = run(&["write", &api]);
    assert_eq!((code, stdout.trim()), (0, "Config entry written: service-defaults/api"), "{stderr}");
    for (name, text) in [("resolver.hcl", WEB_RESOLVER_HCL), ("router.hcl", WEB_ROUTER_HCL)] {
        let (code, _, stderr) = run(&["write", &file(dir, name, text)]);
        assert_eq!(code, 0, "{name}: {stderr}");
    }
    let splitter = json!({"Kind": "service-splitter", "Name": "web", "Splits": [
        {"Weight": 90, "ServiceSubset": "v1"}, {"Weight": 10, "ServiceSubset": "v2"},
    ]});
    let (code, _, stderr) = run(&["write", &file(dir, "splitter.json", &splitter.to_string())]);
    assert_eq!(code, 0, "{stderr}");

    // read: JSON, Kind/Name/indexes from the record, the rest as written.
    let (code, stdout, stderr) = run(&["read", "-kind", "service-defaults", "-name", "web"]);
    assert_eq!(code, 0, "{stderr}");
    let web: Value = serde_json::from_str(&stdout).unwrap();
    let expected = json!({
        "Kind": "service-defaults", "Name": "web", "Protocol": "http",
        "CreateIndex": web["CreateIndex"], "ModifyIndex": web["ModifyIndex"],
    });
    assert_eq!(web, expected);
    assert!(web["ModifyIndex"].as_u64().unwrap() > 0);
    let (_, stdout, _) = run(&["read", "--kind", "service-defaults", "--name", "api"]);
    let api: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (&api["Kind"], &api["Name"], &api["Protocol"]),
        (&json!("service-defaults"), &json!("api"), &json!("grpc"))
    );
    let (_, stdout, _) = run(&["read", "-kind", "service-router", "-name", "web"]);
    let router: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(router["Routes"][0]["Destination"], json!({"Service": "web", "ServiceSubset": "v2"}));
    assert_eq!(router["Routes"][0]["Match"]["HTTP"]["PathRegex"], "^/canary/.*$");

    // Every server has the same entries.
    for i in 0..cluster.len() {
        let response = cluster.client(i).get("/v1/config/service-defaults/web").await.unwrap();
        assert_eq!(body(&response), expected, "server {i}");
    }

    // list: names by default, JSON on request, ?filter=.
    let (code, stdout, _) = run(&["list", "-kind", "service-defaults"]);
    assert_eq!((code, stdout.lines().collect::<Vec<_>>()), (0, vec!["api", "web"]));
    let (code, stdout, _) =
        run(&["list", "-kind", "service-defaults", "-filter", "Protocol == \"grpc\"", "-format", "json"]);
    assert_eq!(code, 0);
    assert_eq!(names(&serde_json::from_str(&stdout).unwrap()), ["api"]);
    let (code, stdout, _) = run(&["list", "-kind", "ingress-gateway"]);
    assert_eq!((code, stdout.as_str()), (0, ""));

    // Check-and-set: 0 only creates; the current ModifyIndex replaces.
    let web_file = file(dir, "web2.hcl", &WEB_DEFAULTS_HCL.replace("\"http\"", "\"http2\""));
    let (code, _, stderr) = run(&["write", "-cas", "-modify-index", "0", &web_file]);
    assert_eq!(code, 1);
    assert!(stderr.contains("Config entry not updated: service-defaults/web"), "{stderr}");
    let modify = web["ModifyIndex"].as_u64().unwrap().to_string();
    let (code, stdout, stderr) = run(&["write", "-cas", "-modify-index", &modify, &web_file]);
    assert_eq!((code, stdout.trim()), (0, "Config entry written: service-defaults/web"), "{stderr}");
    let (code, _, stderr) = run(&["write", "--cas", &web_file]);
    assert_eq!(code, 1, "--cas needs --modify-index: {stderr}");

    // delete: a stale --modify-index deletes nothing; a plain delete does, and is idempotent.
    let (code, _, stderr) = run(&["delete", "-kind", "service-splitter", "-name", "web", "-cas", "-modify-index", "1"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("Config entry not deleted: service-splitter/web"), "{stderr}");
    let (code, stdout, _) = run(&["delete", "-kind", "service-splitter", "-name", "web"]);
    assert_eq!((code, stdout.trim()), (0, "Config entry deleted: service-splitter/web"));
    let (code, _, stderr) = run(&["read", "-kind", "service-splitter", "-name", "web"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("Config entry not found for \"service-splitter\" / \"web\""), "{stderr}");
    let (code, _, stderr) = run(&["delete", "-kind", "service-splitter", "-name", "web"]);
    assert_eq!(code, 0, "{stderr}");

    // Deleting the service-defaults a router depends on is allowed (as in Consul); the router stays.
    let (code, _, stderr) = run(&["delete", "-kind", "service-defaults", "-name", "web"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(run(&["read", "-kind", "service-router", "-name", "web"]).0, 0);

    // The mesh entry decides traffic no intention matches.
    let intention_check = || weft(&["intention", "check", "a", "b", "--http-addr", &addr]).0;
    assert_eq!(intention_check(), 2, "a new cluster denies unmatched traffic");
    let allow = file(dir, "mesh.hcl", "Kind = \"mesh\"\nName = \"mesh\"\nDefaultIntentionAction = \"allow\"\n");
    let (code, stdout, stderr) = run(&["write", &allow]);
    assert_eq!((code, stdout.trim()), (0, "Config entry written: mesh/mesh"), "{stderr}");
    assert_eq!(intention_check(), 0, "the mesh entry allows it");
    let deny = file(dir, "mesh.json", r#"{"kind": "mesh", "name": "mesh", "default_intention_action": "deny"}"#);
    assert_eq!(run(&["write", &deny]).0, 0);
    assert_eq!(intention_check(), 2);

    // Nothing listening: exit 1.
    assert_eq!(config("127.0.0.1:1", &["list", "-kind", "mesh"]).0, 1);
}

/// A refused write: the file to write and what the refusal must say.
type Refusal = (&'static str, String, &'static str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_entries_exit_1_or_get_a_400_naming_the_problem_and_change_nothing() {
    let cluster = Cluster::servers(3).await;
    let follower = cluster.follower().await;
    let addr = cluster.specs[follower].http_addr.clone();
    let client: HttpClient = cluster.client(follower);
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    for (name, text) in [("web.hcl", WEB_DEFAULTS_HCL), ("resolver.hcl", WEB_RESOLVER_HCL)] {
        let (code, _, stderr) = config(&addr, &["write", &file(dir, name, text)]);
        assert_eq!(code, 0, "{stderr}");
    }
    let listed = || async {
        let mut all = Vec::new();
        for kind in
            ["service-defaults", "proxy-defaults", "service-resolver", "service-splitter", "service-router", "mesh"]
        {
            let response = client.get(&format!("/v1/config/{kind}")).await.unwrap();
            all.push((response.consul_index(), body(&response)));
        }
        all
    };
    let before = listed().await;

    let router = |service: &str, route: Value| {
        json!({"Kind": "service-router", "Name": service, "Routes": [{"Match": {"HTTP": {"PathPrefix": "/"}}}, route]})
            .to_string()
    };
    let splitter = |splits: Value| json!({"Kind": "service-splitter", "Name": "web", "Splits": splits}).to_string();
    let cases: Vec<Refusal> = vec![
        (
            "kind.hcl",
            "Kind = \"service-default\"\nName = \"web\"\n".into(),
            "Kind \"service-default\" is not a config entry kind",
        ),
        (
            "nokind.json",
            r#"{"Name": "web", "Protocol": "http"}"#.into(),
            "Kind must be set to one of: service-defaults",
        ),
        ("noname.hcl", "Kind = \"service-defaults\"\nProtocol = \"http\"\n".into(), "Name must be set"),
        ("proxy.hcl", "Kind = \"proxy-defaults\"\nName = \"web\"\n".into(), "must be \"global\""),
        ("mesh-name.json", r#"{"Kind": "mesh", "Name": "global"}"#.into(), "must be \"mesh\""),
        ("protocol.hcl", WEB_DEFAULTS_HCL.replace("\"http\"", "\"udp\""), "Protocol \"udp\" is not supported"),
        (
            "proxy-protocol.hcl",
            "Kind = \"proxy-defaults\"\nName = \"global\"\nConfig {\n  protocol = \"quic\"\n}\n".into(),
            "Config.protocol \"quic\" is not supported",
        ),
        (
            "mesh.json",
            r#"{"Kind": "mesh", "Name": "mesh", "DefaultIntentionAction": "maybe"}"#.into(),
            "DefaultIntentionAction must be \"allow\" or \"deny\"",
        ),
        (
            "sum.json",
            splitter(json!([{"Weight": 90, "ServiceSubset": "v1"}, {"Weight": 5, "ServiceSubset": "v2"}])),
            "Splits: the weights must add up to 100, not 95",
        ),
        (
            "weight.json",
            splitter(json!([{"Weight": 150, "ServiceSubset": "v1"}, {"Weight": -50}])),
            "Splits[0].Weight 150 must be between 0 and 100",
        ),
        (
            "tcp.json",
            router("api", json!({"Destination": {"Service": "web"}})),
            "service-router for api requires protocol http, http2 or grpc (set it in service-defaults)",
        ),
        (
            "tcp-split.json",
            json!({"Kind": "service-splitter", "Name": "api", "Splits": [{"Weight": 100}]}).to_string(),
            "service-splitter for api requires protocol http, http2 or grpc",
        ),
        (
            "regex.json",
            router("web", json!({"Match": {"HTTP": {"PathRegex": "/(unclosed"}}})),
            "Routes[1].Match.HTTP.PathRegex \"/(unclosed\" is not a valid regular expression",
        ),
        (
            "header.json",
            router("web", json!({"Match": {"HTTP": {"Header": [{"Name": "x", "Regex": "[z-a]"}]}}})),
            "Routes[1].Match.HTTP.Header[0].Regex \"[z-a]\" is not a valid regular expression",
        ),
        (
            "subset.json",
            router("web", json!({"Destination": {"ServiceSubset": "v9"}})),
            "Routes[1].Destination.ServiceSubset \"v9\": the service-resolver for web has no such subset",
        ),
        (
            "no-resolver.json",
            router("web", json!({"Destination": {"Service": "api", "ServiceSubset": "v1"}})),
            "there is no service-resolver for api",
        ),
    ];
    for (name, text, message) in &cases {
        // Through the CLI: exit 1 and the agent's message.
        let (code, stdout, stderr) = config(&addr, &["write", &file(dir, name, text)]);
        assert_eq!(code, 1, "{name}: {stdout}");
        assert!(stderr.contains(message), "{name}: {stderr:?} should mention {message:?}");
        // Through the API: a 400 with the same message (an HCL case sent as JSON).
        let json = match name.ends_with(".hcl") {
            true => hcl::from_str::<Value>(text).unwrap().to_string(),
            false => text.clone(),
        };
        let response = client.put("/v1/config", json).await.unwrap();
        assert_eq!(response.status, 400, "{name}: {}", response.text());
        assert!(response.text().contains(message), "{name}: {:?} should mention {message:?}", response.text());
    }

    // Other bad requests.
    let bad: [(&str, &str, Option<&str>, u16, &str); 8] = [
        ("GET", "/v1/config/bogus", None, 400, "Kind \"bogus\" is not a config entry kind"),
        ("GET", "/v1/config/bogus/web", None, 400, "use one of: service-defaults, proxy-defaults"),
        ("DELETE", "/v1/config/bogus/web", None, 400, "is not a config entry kind"),
        (
            "GET",
            "/v1/config/service-defaults/nope",
            None,
            404,
            "Config entry not found for \"service-defaults\" / \"nope\"",
        ),
        ("PUT", "/v1/config", Some(""), 400, "empty"),
        ("PUT", "/v1/config", Some("{nope"), 400, "malformed JSON"),
        ("PUT", "/v1/config?cas=abc", Some(r#"{"Kind": "mesh", "Name": "mesh"}"#), 400, "?cas"),
        ("DELETE", "/v1/config/mesh/mesh?cas=-1", None, 400, "?cas"),
    ];
    for (method, path, payload, status, message) in bad {
        let method: hyper::Method = method.parse().unwrap();
        let response = client.request(method.clone(), path, payload.map(|p| p.as_bytes().to_vec())).await.unwrap();
        assert_eq!(response.status, status, "{method} {path}: {}", response.text());
        assert!(response.text().contains(message), "{method} {path}: {:?} should mention {message:?}", response.text());
    }

    assert_eq!(listed().await, before, "no refused write changed an entry or an index");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_list_wakes_on_a_write_and_cas_is_check_and_set() {
    let cluster = Cluster::servers(3).await;
    let leader = cluster.client(cluster.wait_for_leader().await);
    let follower = cluster.client(cluster.follower().await);
    let write = r#"{"kind": "service-defaults", "name": "web", "protocol": "http"}"#;
    let response = support::blocking_read_wakes_only_on_its_write(
        &follower,
        &leader,
        "/v1/config/service-defaults",
        "/v1/config",
        write,
    )
    .await;
    let list = body(&response);
    assert_eq!(names(&list), ["web"]);
    assert_eq!((&list[0]["Kind"], &list[0]["protocol"]), (&json!("service-defaults"), &json!("http")));

    // ?cas=0 creates only; ?cas=<ModifyIndex> replaces only that version.
    let db = |protocol: &str| json!({"Kind": "service-defaults", "Name": "db", "Protocol": protocol}).to_string();
    assert_eq!(follower.put("/v1/config?cas=0", db("tcp")).await.unwrap().text(), "true");
    assert_eq!(follower.put("/v1/config?cas=0", db("http")).await.unwrap().text(), "false");
    let stored = body(&follower.get("/v1/config/service-defaults/db").await.unwrap());
    assert_eq!(stored["Protocol"], "tcp", "a missed CAS changes nothing");
    let modify = stored["ModifyIndex"].as_u64().unwrap();
    assert_eq!(stored["CreateIndex"].as_u64(), Some(modify));
    assert_eq!(follower.put(&format!("/v1/config?cas={}", modify + 1), db("http")).await.unwrap().text(), "false");
    assert_eq!(follower.put(&format!("/v1/config?cas={modify}"), db("grpc")).await.unwrap().text(), "true");
    let replaced = body(&follower.get("/v1/config/service-defaults/db").await.unwrap());
    assert_eq!((replaced["Protocol"].as_str(), replaced["CreateIndex"].as_u64()), (Some("grpc"), Some(modify)));
    let new_modify = replaced["ModifyIndex"].as_u64().unwrap();
    assert!(new_modify > modify);
    // An invalid entry is a 400 even with a matching ?cas.
    let invalid = follower.put(&format!("/v1/config?cas={new_modify}"), db("udp")).await.unwrap();
    assert_eq!(invalid.status, 400, "{}", invalid.text());

    let deleted = follower.delete(&format!("/v1/config/service-defaults/db?cas={modify}")).await.unwrap();
    assert_eq!(deleted.text(), "false");
    assert_eq!(follower.get("/v1/config/service-defaults/db").await.unwrap().status, 200);
    let deleted = follower.delete(&format!("/v1/config/service-defaults/db?cas={new_modify}")).await.unwrap();
    assert_eq!(deleted.text(), "true");
    assert_eq!(follower.get("/v1/config/service-defaults/db").await.unwrap().status, 404);
    assert_eq!(follower.delete("/v1/config/service-defaults/db").await.unwrap().text(), "true", "idempotent");

    // A blocking read of one entry wakes when it is written.
    let index = follower.get("/v1/config/service-defaults/web").await.unwrap().consul_index().unwrap();
    let waiter = {
        let follower = follower.clone();
        tokio::spawn(
            async move { follower.get(&format!("/v1/config/service-defaults/web?index={index}&wait=5m")).await },
        )
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let put = leader.put("/v1/config", r#"{"Kind": "service-defaults", "Name": "web", "Protocol": "http2"}"#);
    assert_eq!(put.await.unwrap().text(), "true");
    // Returning at all (long before its 5 minutes) shows the write woke it.
    let response = waiter.await.unwrap().unwrap();
    assert_eq!(body(&response)["Protocol"], "http2");
}

/// An entry that breaks a rule of its own (a regex that does not compile),
/// sent straight to the leader's RPC with a server's certificate (so past
/// the HTTP API's check), is refused before it is proposed, and is not
/// stored. `apply` compiles no regex (its
/// outcome must not depend on the build), so without the check on the
/// proposal the entry would be logged and stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_that_fails_its_own_rules_never_reaches_the_log_even_past_the_http_api() {
    let cluster = Cluster::servers(1).await;
    let client = cluster.client(0);
    let defaults = json!({"Kind": "service-defaults", "Name": "web", "Protocol": "http"});
    assert_eq!(client.put("/v1/config", defaults.to_string()).await.unwrap().status, 200);

    let tls_dir = cluster.tls_dir.clone().expect("a cluster with TLS");
    let read = |file: &str| std::fs::read_to_string(tls_dir.join(file)).unwrap();
    let (cert, key) = (read("dc1-server-weft-0.pem"), read("dc1-server-weft-0-key.pem"));
    let mut rpc = cluster.rpc_client(0, Some((&cert, &key)));
    let router = weft_api::mesh::ConfigEntry {
        kind: "service-router".into(),
        name: "web".into(),
        body: json!({"Routes": [{"Match": {"HTTP": {"PathRegex": "/api/(v1"}}}]}).to_string(),
        indexes: Default::default(),
    };
    let command = weft_api::command::Command::ConfigEntryUpsert(router);
    let request = weft_api::proto::cluster::ApplyRequest {
        command: postcard::to_allocvec(&command).unwrap(),
        acl_token: String::new(),
    };
    let refused = rpc.apply(request).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("PathRegex \"/api/(v1\" is not a valid regular expression"), "{refused:?}");
    println!("refused before it was proposed: {}", refused.message());
    assert_eq!(client.get("/v1/config/service-router/web").await.unwrap().status, 404, "nothing was stored");
}

//! Traffic management end to end: `web` calls `api` through its sidecar,
//! and the config entries for `api` (service-defaults, -resolver,
//! -splitter, -router) decide where each request goes. Two instances of
//! `api` (v1 and v2, told apart by `Meta.version`) answer with their name,
//! so the test sees which one each request reached.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use support::http::{http_app, http_exchange};
use support::{eventually, free_port, metric, register, weft, Cluster, Process};
use tokio::net::TcpStream;

/// Releases the requests an app holds at `/hold`.
static HOLD: tokio::sync::Notify = tokio::sync::Notify::const_new();
/// How many requests the apps hold at `/hold` now.
static HOLDING: AtomicUsize = AtomicUsize::new(0);

/// An HTTP/1.1 app answering `<name> <method> <path>`; `/slow` answers
/// after 3 s; `/hold` when the test releases it (`HOLD`); `/flaky` fails
/// with 503 twice, then succeeds; an app named `bad` answers everything
/// with a 500.
async fn app(name: &'static str) -> u16 {
    let flaky = Arc::new(AtomicUsize::new(0));
    http_app(move |head| {
        let flaky = flaky.clone();
        async move {
            let status = match head.path.as_str() {
                _ if name == "bad" => "500 Internal Server Error",
                "/slow" => {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    "200 OK"
                }
                "/hold" => {
                    HOLDING.fetch_add(1, Ordering::SeqCst);
                    HOLD.notified().await;
                    HOLDING.fetch_sub(1, Ordering::SeqCst);
                    "200 OK"
                }
                "/flaky" if flaky.fetch_add(1, Ordering::SeqCst) % 3 < 2 => "503 Service Unavailable",
                _ => "200 OK",
            };
            let canary = if head.has_line("x-canary: 1") { " canary" } else { "" };
            (status, format!("{name} {} {}{canary}", head.method, head.path))
        }
    })
    .await
}

/// One request to `port`: (status, body).
async fn request(port: u16, path: &str, user_agent: &str) -> Option<(u16, String)> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    http_exchange(stream, "GET", "api", path, user_agent).await
}

/// One server and client agents `vm1` and `vm2`, answering; and vm1's HTTP address.
async fn two_client_agents() -> (Cluster, usize, usize, String) {
    let mut cluster = Cluster::servers(1).await;
    let vm1 = cluster.add_client("vm1", &[]);
    let vm2 = cluster.add_client("vm2", &[]);
    cluster.wait_ready(vm1).await;
    cluster.wait_ready(vm2).await;
    let http = cluster.specs[vm1].http_addr.clone();
    (cluster, vm1, vm2, http)
}

fn write_entry(http: &str, dir: &std::path::Path, name: &str, entry: Value) {
    let file = dir.join(format!("{name}.json"));
    std::fs::write(&file, entry.to_string()).unwrap();
    let (code, out, err) = weft(&["config", "write", file.to_str().unwrap(), "--http-addr", http]);
    assert_eq!(code, 0, "{name}: {out}{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_splits_subsets_retries_timeouts_faults_and_failover() {
    let (cluster, vm1, vm2, http) = two_client_agents().await;
    // Intentions and config entries are written through a server: a client
    // agent's RPC may write only its own node's entries and KV.
    let server = cluster.specs[0].http_addr.clone();
    let dir = tempfile::tempdir().unwrap();

    write_entry(
        &server,
        dir.path(),
        "defaults",
        json!({"Kind": "service-defaults", "Name": "api", "Protocol": "http"}),
    );
    write_entry(
        &server,
        dir.path(),
        "resolver",
        json!({"Kind": "service-resolver", "Name": "api", "DefaultSubset": "v1",
               "Subsets": {"v1": {"Filter": "Service.Meta.version == v1"}, "v2": {"Filter": "Service.Meta.version == v2"}},
               "Failover": {"v2": {"ServiceSubset": "v1"}}}),
    );
    let (code, _, err) = weft(&["intention", "create", "--allow", "web", "api", "--http-addr", &server]);
    assert_eq!(code, 0, "{err}");

    let (v1, v2) = (app("v1").await, app("v2").await);
    for (id, port, version) in [("api-v1", v1, "v1"), ("api-v2", v2, "v2")] {
        let registration = json!({"ID": id, "Name": "api", "Port": port, "Meta": {"version": version},
            "Check": {"CheckID": format!("{id}-ttl"), "TTL": "10m", "Status": "passing"},
            "Connect": {"SidecarService": {"Port": free_port()}}});
        register(&cluster, vm2, registration).await;
    }
    let upstream = free_port();
    let web = json!({"Name": "web", "Port": 8080, "Connect": {"SidecarService": {"Port": free_port(),
        "Proxy": {"Upstreams": [{"DestinationName": "api", "LocalBindPort": upstream}]}}}});
    register(&cluster, vm1, web).await;

    // The resolver's default subset: v1.
    eventually("web to reach api v1", Duration::from_secs(30), || async {
        request(upstream, "/", "curl").await.filter(|(_, body)| body == "v1 GET /")
    })
    .await;

    // The router: a mobile user agent goes to v2; /v2/... to v2 with its prefix rewritten;
    // /flaky is retried on 503; /slow times out; /teapot gets an injected 418.
    write_entry(
        &server,
        dir.path(),
        "router",
        json!({"Kind": "service-router", "Name": "api", "Routes": [
            {"Match": {"HTTP": {"Header": [{"Name": "User-Agent", "Regex": ".*Mobile.*"}]}},
             "Destination": {"ServiceSubset": "v2"}},
            {"Match": {"HTTP": {"PathPrefix": "/v2/"}}, "Destination": {"ServiceSubset": "v2", "PrefixRewrite": "/"}},
            {"Match": {"HTTP": {"PathExact": "/flaky"}},
             "Destination": {"NumRetries": 3, "RetryOnStatusCodes": [503]}},
            {"Match": {"HTTP": {"PathExact": "/slow"}}, "Destination": {"RequestTimeout": "500ms"}},
            {"Match": {"HTTP": {"PathExact": "/teapot"}}, "Fault": {"Abort": {"HttpStatus": 418, "Percentage": 100}}}
        ]}),
    );
    eventually("the router to apply", Duration::from_secs(30), || async {
        request(upstream, "/", "Foo Mobile Safari").await.filter(|(_, body)| body == "v2 GET /")
    })
    .await;
    assert_eq!(request(upstream, "/", "curl").await.unwrap().1, "v1 GET /");
    assert_eq!(request(upstream, "/v2/things", "curl").await.unwrap().1, "v2 GET /things");
    assert_eq!(request(upstream, "/flaky", "curl").await.unwrap(), (200, "v1 GET /flaky".to_owned()));
    let started = std::time::Instant::now();
    let (status, body) = request(upstream, "/slow", "curl").await.unwrap();
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("500 ms request timeout"), "{body}");
    println!("/slow answered 504 after {:?} (route timeout 500 ms)", started.elapsed());
    assert_eq!(request(upstream, "/teapot", "curl").await.unwrap().0, 418);

    // The splitter: 90/10 between the subsets, the canary marked by a header edit.
    write_entry(
        &server,
        dir.path(),
        "splitter",
        json!({"Kind": "service-splitter", "Name": "api", "Splits": [
            {"Weight": 90, "ServiceSubset": "v1"},
            {"Weight": 10, "ServiceSubset": "v2", "RequestHeaders": {"Set": {"x-canary": "1"}}}]}),
    );
    eventually("the splitter to apply", Duration::from_secs(30), || async {
        let mut canary = false;
        for _ in 0..100 {
            canary |= request(upstream, "/", "curl").await?.1 == "v2 GET / canary";
        }
        canary.then_some(())
    })
    .await;
    let total = 2000;
    let mut v2_count = 0;
    for _ in 0..total {
        let (status, body) = request(upstream, "/", "curl").await.unwrap();
        assert_eq!(status, 200, "{body}");
        if body == "v2 GET / canary" {
            v2_count += 1;
        } else {
            assert_eq!(body, "v1 GET /");
        }
    }
    let share = f64::from(v2_count) * 100.0 / f64::from(total);
    println!("90/10 split: {v2_count} of {total} requests went to v2 ({share:.1}%)");
    assert!((7.0..=13.0).contains(&share), "v2 got {share:.1}% of {total} requests, not 10 ± 3");

    // The chain, and an explanation of where a request would go, from the CLI.
    let chain = cluster.client(vm1).get("/v1/discovery-chain/api").await.unwrap();
    let chain: Value = serde_json::from_slice(&chain.body).unwrap();
    assert_eq!(chain["Chain"]["routes"].as_array().unwrap().len(), 6, "5 router routes and the default: {chain}");
    let troubleshoot = |args: &[&str]| {
        let mut all = vec!["troubleshoot", "route", "--source", "web", "--destination", "api", "--http-addr", &http];
        all.extend_from_slice(args);
        let (code, out, err) = weft(&all);
        assert_eq!(code, 0, "{err}");
        out
    };
    let mobile = troubleshoot(&["--header", "User-Agent=Foo Mobile Safari"]);
    assert!(mobile.contains("service-router api, route 1"), "{mobile}");
    assert!(mobile.contains("100% to v2.api.default.dc1"), "{mobile}");
    assert!(mobile.contains("Intention: allowed"), "{mobile}");
    let plain = troubleshoot(&[]);
    assert!(plain.contains("default route") && plain.contains("90% to v1.api.default.dc1"), "{plain}");
    assert!(plain.contains("10% to v2.api.default.dc1"), "{plain}");
    let (code, denied, _) =
        weft(&["troubleshoot", "route", "--source", "db", "--destination", "api", "--http-addr", &http]);
    assert_eq!(code, 0);
    assert!(denied.contains("Intention: DENIED"), "{denied}");

    // Failover: with v2's instance critical, v2's traffic goes to v1.
    let response = cluster.client(vm2).put("/v1/agent/check/fail/api-v2-ttl", Vec::new()).await.unwrap();
    assert_eq!(response.status, 200);
    eventually("mobile requests to fail over to v1", Duration::from_secs(30), || async {
        request(upstream, "/", "Foo Mobile Safari").await.filter(|(_, body)| body == "v1 GET /")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_detection_ejects_a_failing_instance_and_limits_refuse_beyond_them() {
    let (cluster, vm1, vm2, _) = two_client_agents().await;
    // Intentions and config entries are written through a server: a client
    // agent's RPC may write only its own node's entries and KV.
    let server = cluster.specs[0].http_addr.clone();
    let dir = tempfile::tempdir().unwrap();
    write_entry(&server, dir.path(), "db", json!({"Kind": "service-defaults", "Name": "db", "Protocol": "http"}));
    // web's settings for its upstream db: eject after 3 failures; one request at a time.
    write_entry(
        &server,
        dir.path(),
        "web",
        json!({"Kind": "service-defaults", "Name": "web", "UpstreamConfig": {"Overrides": [{"Name": "db",
            "PassiveHealthCheck": {"MaxFailures": 3, "BaseEjectionTime": "60s", "MaxEjectionPercent": 50},
            "Limits": {"MaxConcurrentRequests": 1, "MaxPendingRequests": 0}}]}}),
    );
    let (code, _, err) = weft(&["intention", "create", "--allow", "web", "db", "--http-addr", &server]);
    assert_eq!(code, 0, "{err}");
    let (good, bad) = (app("good").await, app("bad").await);
    for (id, port) in [("db-good", good), ("db-bad", bad)] {
        let registration =
            json!({"ID": id, "Name": "db", "Port": port, "Connect": {"SidecarService": {"Port": free_port()}}});
        register(&cluster, vm2, registration).await;
    }
    let upstream = free_port();
    let web = json!({"Name": "web", "Port": 8080, "Connect": {"SidecarService": {"Port": free_port(),
        "Proxy": {"Upstreams": [{"DestinationName": "db", "LocalBindPort": upstream}]}}}});
    register(&cluster, vm1, web).await;
    // Both instances known to web's sidecar: each answers at some point.
    let seen = std::sync::Mutex::new(std::collections::BTreeSet::new());
    eventually("web's sidecar to reach both db instances", Duration::from_secs(30), || async {
        let (status, _) = request(upstream, "/", "curl").await?;
        let mut seen = seen.lock().unwrap();
        seen.insert(status);
        (seen.contains(&200) && seen.contains(&500)).then_some(())
    })
    .await;

    // Three failures in a row eject the bad instance: from then on, only the good one answers.
    let mut failures = 0;
    for _ in 0..10 {
        if request(upstream, "/", "curl").await.unwrap().0 == 500 {
            failures += 1;
        }
    }
    for i in 0..30 {
        let (status, body) = request(upstream, "/", "curl").await.unwrap();
        assert_eq!((status, body.as_str()), (200, "good GET /"), "request {i} after the ejection");
    }
    println!("outlier detection: {failures} of the first 10 requests failed before the bad instance was ejected");
    assert!(failures <= 3, "at most MaxFailures failures before the ejection: {failures}");

    // One request at a time, none waiting: while one is held, another is
    // refused with a 503 that says why.
    let held = tokio::spawn(request(upstream, "/hold", "curl"));
    eventually("the app to hold a request", Duration::from_secs(20), || async {
        (HOLDING.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    let (status, body) = request(upstream, "/", "curl").await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("MaxConcurrentRequests"), "{body}");
    HOLD.notify_one();
    assert_eq!(held.await.unwrap().unwrap(), (200, "good GET /hold".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissive_mode_rate_limits_access_logs_and_consistent_hashing() {
    let (cluster, vm1, vm2, _) = two_client_agents().await;
    // Intentions and config entries are written through a server: a client
    // agent's RPC may write only its own node's entries and KV.
    let server = cluster.specs[0].http_addr.clone();
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("access.log");
    write_entry(
        &server,
        dir.path(),
        "proxy-defaults",
        json!({"Kind": "proxy-defaults", "Name": "global",
               "AccessLogs": {"Enabled": true, "Type": "file", "Path": log_path.to_str().unwrap()}}),
    );
    // /limited: one request a second, at most 3 at once; everything else unlimited.
    let api_defaults = |mode: &str| {
        json!({"Kind": "service-defaults", "Name": "api", "Protocol": "http", "MutualTLSMode": mode,
               "RateLimits": {"InstanceLevel": {"Routes": [
                   {"PathPrefix": "/limited", "RequestsPerSecond": 1, "RequestsMaxBurst": 3}]}}})
    };
    write_entry(&server, dir.path(), "api", api_defaults("strict"));
    let (code, _, err) = weft(&["intention", "create", "--allow", "web", "api", "--http-addr", &server]);
    assert_eq!(code, 0, "{err}");

    let api_public = free_port();
    let registration = json!({"Name": "api", "Port": app("api").await,
        "Connect": {"SidecarService": {"Port": api_public}}});
    register(&cluster, vm2, registration).await;
    let upstream = free_port();
    let web = json!({"Name": "web", "Port": 8080, "Connect": {"SidecarService": {"Port": free_port(),
        "Proxy": {"Upstreams": [{"DestinationName": "api", "LocalBindPort": upstream}]}}}});
    register(&cluster, vm1, web).await;
    eventually("web to reach api", Duration::from_secs(30), || async {
        (request(upstream, "/logged", "probe").await? == (200, "api GET /logged".to_owned())).then_some(())
    })
    .await;

    // The route's bucket holds 3: the first 3 pass, and a 429 that says why follows.
    let mut statuses = Vec::new();
    for _ in 0..50 {
        let (status, body) = request(upstream, "/limited", "curl").await.unwrap();
        statuses.push(status);
        if status == 429 {
            assert!(body.contains("RateLimits"), "{body}");
            break;
        }
    }
    println!("rate limit: statuses until the first 429: {statuses:?}");
    assert_eq!(&statuses[..3], [200, 200, 200], "the burst passes");
    assert_eq!(statuses.last(), Some(&429), "a request over the limit is refused");
    assert_eq!(request(upstream, "/other", "curl").await.unwrap().0, 200, "other paths are not limited");

    // Strict: plaintext straight to api's sidecar gets nothing.
    assert_eq!(request(api_public, "/plain", "curl").await, None, "strict mode refuses plaintext");
    // Permissive needs the mesh entry's consent first.
    let file = dir.path().join("permissive.json");
    std::fs::write(&file, api_defaults("permissive").to_string()).unwrap();
    let (code, _, err) = weft(&["config", "write", file.to_str().unwrap(), "--http-addr", &server]);
    assert_ne!(code, 0);
    assert!(err.contains("AllowEnablingPermissiveMutualTLS"), "{err}");
    write_entry(
        &server,
        dir.path(),
        "mesh",
        json!({"Kind": "mesh", "Name": "mesh", "DefaultIntentionAction": "deny", "AllowEnablingPermissiveMutualTLS": true}),
    );
    write_entry(&server, dir.path(), "api", api_defaults("permissive"));
    let answer = eventually("api's sidecar to take plaintext", Duration::from_secs(30), || async {
        request(api_public, "/plain", "curl").await
    })
    .await;
    assert_eq!(answer, (200, "api GET /plain".to_owned()));
    let plaintext =
        metric(&cluster.specs[vm2].http_addr, "api", "weft_proxy_inbound_plaintext_connections", "").await.unwrap();
    assert!(plaintext >= 1.0, "plaintext connections are counted: {plaintext}");
    write_entry(&server, dir.path(), "api", api_defaults("strict"));
    eventually("api's sidecar to refuse plaintext again", Duration::from_secs(30), || async {
        request(api_public, "/plain", "curl").await.is_none().then_some(())
    })
    .await;

    // Both sidecars logged the request to /logged: web's going out, api's coming in.
    let lines = eventually("both sidecars to log /logged", Duration::from_secs(30), || async {
        let text = std::fs::read_to_string(&log_path).ok()?;
        let lines: Vec<Value> = text
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| line["path"] == "/logged" && line["response_code"] == 200)
            .collect();
        let clusters: std::collections::BTreeSet<String> =
            lines.iter().filter_map(|l| l["upstream_cluster"].as_str().map(str::to_owned)).collect();
        (clusters.contains("api") && clusters.contains("local_app")).then_some(lines)
    })
    .await;
    println!("access log lines for /logged: {lines:?}");
    for line in &lines {
        assert_eq!(line["method"], "GET");
        assert!(line["bytes_sent"].as_u64().unwrap() > 0, "{line}");
        assert!(line["duration"].is_u64(), "{line}");
    }
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(text.contains("\"response_code\":429"), "the rate-limited request is logged too");

    // ring_hash on the user agent: a second instance, and each client's
    // requests stay on one instance while different clients use both.
    write_entry(
        &server,
        dir.path(),
        "resolver",
        json!({"Kind": "service-resolver", "Name": "api", "LoadBalancer": {"Policy": "ring_hash",
               "HashPolicies": [{"Field": "header", "FieldValue": "user-agent"}]}}),
    );
    let second = json!({"ID": "api-b", "Name": "api", "Port": app("api-b").await,
        "Connect": {"SidecarService": {"Port": free_port()}}});
    register(&cluster, vm2, second).await;
    eventually("web to reach the second api instance", Duration::from_secs(30), || async {
        let probes = (0..20).map(|i| async move { request(upstream, "/", &format!("probe-{i}")).await });
        let answers = futures::future::join_all(probes).await;
        answers.iter().flatten().any(|(_, body)| body.starts_with("api-b ")).then_some(())
    })
    .await;
    let mut instances_used = std::collections::BTreeSet::new();
    for client in 0..12 {
        let agent = format!("client-{client}");
        let mut answered_by = std::collections::BTreeSet::new();
        for _ in 0..5 {
            let (status, body) = request(upstream, "/", &agent).await.unwrap();
            assert_eq!(status, 200, "{body}");
            answered_by.insert(body.split(' ').next().unwrap().to_owned());
        }
        assert_eq!(answered_by.len(), 1, "{agent}'s requests all go to one instance: {answered_by:?}");
        instances_used.extend(answered_by);
    }
    println!("ring hash: 12 clients x 5 requests, instances used: {instances_used:?}");
    assert_eq!(instances_used.len(), 2, "different clients land on both instances");
}

/// A `GET` to the ingress gateway's `port` for `host`.
async fn ingress(port: u16, host: &str, path: &str) -> Option<(u16, String)> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    http_exchange(stream, "GET", host, path, "curl").await
}

/// The same over TLS, trusting only `ca_pem`, with `host` as the SNI name.
async fn ingress_tls(port: u16, host: &str, path: &str, ca_pem: &str) -> Option<(u16, String)> {
    use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).ok()?).ok()?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let name = ServerName::try_from(host.to_owned()).ok()?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.ok()?;
    http_exchange(tls, "GET", host, path, "curl").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingress_gateway_routes_by_host_and_path_terminates_tls_and_is_judged_by_intentions() {
    let mut cluster = Cluster::servers(1).await;
    let vm1 = cluster.add_client("vm1", &[]);
    cluster.wait_ready(vm1).await;
    let http = cluster.specs[vm1].http_addr.clone();
    // Intentions and config entries are written through a server: a client
    // agent's RPC may write only its own node's entries and KV.
    let server = cluster.specs[0].http_addr.clone();
    let dir = tempfile::tempdir().unwrap();
    for service in ["api", "web"] {
        write_entry(
            &server,
            dir.path(),
            service,
            json!({"Kind": "service-defaults", "Name": service, "Protocol": "http"}),
        );
        let registration = json!({"Name": service, "Port": app(service).await,
            "Connect": {"SidecarService": {"Port": free_port()}}});
        register(&cluster, vm1, registration).await;
    }
    // Paths under /web on api's host go to web (api's router).
    write_entry(
        &server,
        dir.path(),
        "router",
        json!({"Kind": "service-router", "Name": "api", "Routes": [
            {"Match": {"HTTP": {"PathPrefix": "/web"}}, "Destination": {"Service": "web"}}]}),
    );
    let (plain, secure) = (free_port(), free_port());
    let gateway_entry = json!({"Kind": "ingress-gateway", "Name": "edge", "Listeners": [
        {"Port": plain, "Protocol": "http",
         "Services": [{"Name": "api", "Hosts": ["api.example.com"]}, {"Name": "web"}]},
        {"Port": secure, "Protocol": "http", "TLS": {"Enabled": true}, "Services": [{"Name": "api", "Hosts": ["*"]}]}]});
    // Listeners the gateway could not serve are refused, saying why.
    for (bad, message) in [
        (
            json!({"Kind": "ingress-gateway", "Name": "edge", "Listeners": [{"Port": plain, "Services": [{"Name": "api"}]}]}),
            "tcp listeners",
        ),
        (
            json!({"Kind": "ingress-gateway", "Name": "edge", "Listeners": [{"Port": plain, "Protocol": "http", "Services": [{"Name": "db"}]}]}),
            "db has protocol tcp",
        ),
    ] {
        let file = dir.path().join("bad.json");
        std::fs::write(&file, bad.to_string()).unwrap();
        let (code, _, err) = weft(&["config", "write", file.to_str().unwrap(), "--http-addr", &server]);
        assert_ne!(code, 0);
        assert!(err.contains(message), "{err}");
    }
    write_entry(&server, dir.path(), "edge", gateway_entry);
    let (code, _, err) = weft(&["intention", "create", "--allow", "edge", "api", "--http-addr", &server]);
    assert_eq!(code, 0, "{err}");

    let certificate = rcgen::generate_simple_self_signed(vec!["api.example.com".to_owned()]).unwrap();
    let (cert_file, key_file) = (dir.path().join("edge.crt"), dir.path().join("edge.key"));
    std::fs::write(&cert_file, certificate.cert.pem()).unwrap();
    std::fs::write(&key_file, certificate.signing_key.serialize_pem()).unwrap();
    let _gateway = Process(
        std::process::Command::new(support::weft_bin())
            .args(["connect", "gateway", "--kind", "ingress", "--service", "edge", "--register", "--http-addr", &http])
            .arg("--tls-cert-file")
            .arg(&cert_file)
            .arg("--tls-key-file")
            .arg(&key_file)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("gateway.log")).unwrap())
            .spawn()
            .unwrap(),
    );

    let answer = eventually("the gateway to route api.example.com to api", Duration::from_secs(30), || async {
        ingress(plain, "api.example.com:8080", "/x").await.filter(|(status, _)| *status == 200)
    })
    .await;
    assert_eq!(answer.1, "api GET /x");
    // Intentions judge the gateway like any source: edge -> web is not allowed yet.
    let (status, body) = eventually("web's sidecar to be healthy", Duration::from_secs(30), || async {
        ingress(plain, "web.ingress.weft", "/y").await.filter(|(status, _)| *status != 503)
    })
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("edge"), "{body}");
    assert_eq!(ingress(plain, "api.example.com", "/web/z").await.unwrap().0, 403, "api's route to web, judged too");
    let (code, _, err) = weft(&["intention", "create", "--allow", "edge", "web", "--http-addr", &server]);
    assert_eq!(code, 0, "{err}");
    let answer = eventually("edge -> web to be allowed", Duration::from_secs(30), || async {
        ingress(plain, "web.ingress.weft", "/y").await.filter(|(status, _)| *status == 200)
    })
    .await;
    assert_eq!(answer.1, "web GET /y", "Consul's default host, <service>.ingress.*");
    assert_eq!(ingress(plain, "api.example.com", "/web/z").await.unwrap(), (200, "web GET /web/z".to_owned()));
    let (status, body) = ingress(plain, "nobody.example.com", "/").await.unwrap();
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("nobody.example.com"), "{body}");

    // The TLS listener terminates with the gateway's own certificate.
    let answer = eventually("the TLS listener to answer", Duration::from_secs(30), || async {
        ingress_tls(secure, "api.example.com", "/tls", &certificate.cert.pem()).await
    })
    .await;
    assert_eq!(answer, (200, "api GET /tls".to_owned()));

    // DNS: <service>.ingress.<domain> answers with the gateways exposing it.
    if support::dig_available() {
        let dns = cluster.specs[vm1].dns_addr.clone();
        assert_eq!(support::dig(&dns, &["+short", "api.ingress.weft"]).trim(), "127.0.0.1");
        assert_eq!(support::dig(&dns, &["+short", "web.ingress.weft"]).trim(), "127.0.0.1");
        assert!(support::dig(&dns, &["db.ingress.weft"]).contains("NXDOMAIN"), "db is not exposed");
        // SRV gives the port of each listener that exposes the service.
        let srv = support::dig(&dns, &["+short", "api.ingress.weft", "SRV"]);
        let mut ports: Vec<u16> = srv.lines().filter_map(|l| l.split_whitespace().nth(2)?.parse().ok()).collect();
        ports.sort();
        let mut expected = vec![plain, secure];
        expected.sort();
        assert_eq!(ports, expected, "{srv}");
    }
    // The HTTP API: the gateway's services, one per listener and service,
    // and the gateway's instances behind each service it exposes.
    let json = |path: &'static str| {
        let client = cluster.client(vm1);
        async move { serde_json::from_slice::<serde_json::Value>(&client.get(path).await.unwrap().body).unwrap() }
    };
    let linked = json("/v1/catalog/gateway-services/edge").await;
    let mut linked: Vec<(String, u64, String)> = linked
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (l["Service"]["Name"].as_str().unwrap().to_owned(), l["Port"].as_u64().unwrap(), l["Hosts"].to_string())
        })
        .collect();
    linked.sort();
    let mut expected = vec![
        ("api".to_owned(), u64::from(plain), r#"["api.example.com"]"#.to_owned()),
        ("api".to_owned(), u64::from(secure), r#"["*"]"#.to_owned()),
        ("web".to_owned(), u64::from(plain), "null".to_owned()),
    ];
    expected.sort();
    assert_eq!(linked, expected);
    let gateways = json("/v1/health/ingress/api").await;
    let gateways = gateways.as_array().unwrap();
    assert_eq!(gateways.len(), 1, "{gateways:?}");
    assert_eq!(
        (&gateways[0]["Service"]["Service"], &gateways[0]["Service"]["Kind"]),
        (&"edge".into(), &"ingress-gateway".into())
    );
    assert_eq!(json("/v1/health/ingress/db").await, serde_json::json!([]), "db is not exposed");
}

//! The DNS interface through real `dig` queries against a real server:
//! Consul's names, only healthy instances, SRV with additionals, TCP, and
//! refusing what is not ours.

mod support;

use std::process::Command;

use serde_json::json;
use support::Cluster;

/// `dig` is a real client; CI installs it (dnsutils), so there it is required.
fn dig_available() -> bool {
    let found = Command::new("dig").arg("-v").output().is_ok();
    if !found {
        assert!(std::env::var_os("CI").is_none(), "dig is required in CI (apt-get install dnsutils)");
        eprintln!("skipping: `dig` is not installed (apt-get install dnsutils)");
    }
    found
}

fn dig(dns_addr: &str, args: &[&str]) -> String {
    let (ip, port) = dns_addr.rsplit_once(':').unwrap();
    let output = Command::new("dig")
        .args([&format!("@{ip}"), "-p", port, "+time=2", "+tries=2"])
        .args(args)
        .output()
        .expect("run dig");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn lines(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    lines.sort();
    lines
}

async fn register(cluster: &Cluster, registrations: &[serde_json::Value]) {
    let client = cluster.client(0);
    for registration in registrations {
        let response = client.put("/v1/catalog/register", registration.to_string()).await.unwrap();
        assert_eq!(response.status, 200, "{}", response.text());
    }
}

fn web_fleet() -> Vec<serde_json::Value> {
    vec![
        json!({"Node": "vm1", "Address": "10.0.0.1", "NodeMeta": {"rack": "r1"},
               "Service": {"Service": "web", "Tags": ["v1"], "Port": 8080}}),
        json!({"Node": "vm2", "Address": "10.0.0.2",
               "Service": {"Service": "web", "Tags": ["v2"], "Port": 8081, "Address": "10.9.9.2"}}),
        json!({"Node": "vm3", "Address": "10.0.0.3", "Service": {"Service": "web", "Tags": ["v1"], "Port": 8082},
               "Check": {"CheckID": "service:web", "Name": "web", "Status": "critical", "ServiceID": "web"}}),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_finds_healthy_instances_by_consul_names() {
    if !dig_available() {
        return;
    }
    let cluster = Cluster::servers(1).await;
    register(&cluster, &web_fleet()).await;
    let dns = cluster.specs[0].dns_addr.clone();

    // Healthy instances only; the service address wins over the node's.
    assert_eq!(lines(&dig(&dns, &["web.service.weft", "+short"])), vec!["10.0.0.1", "10.9.9.2"]);
    assert_eq!(lines(&dig(&dns, &["web.service.dc1.weft", "+short"])), vec!["10.0.0.1", "10.9.9.2"]);
    assert_eq!(lines(&dig(&dns, &["v2.web.service.weft", "+short"])), vec!["10.9.9.2"]);
    assert_eq!(lines(&dig(&dns, &["+tcp", "v1.web.service.weft", "+short"])), vec!["10.0.0.1"]);
    assert_eq!(lines(&dig(&dns, &["vm3.node.weft", "+short"])), vec!["10.0.0.3"]);

    // RFC 2782 SRV: port and node target, with the target's address as an additional record.
    let srv = dig(&dns, &["_web._tcp.service.weft", "SRV"]);
    assert!(srv.contains("flags: qr aa"), "authoritative: {srv}");
    assert!(srv.contains("1 1 8080 vm1.node.dc1.weft."), "{srv}");
    assert!(srv.contains("1 1 8081 vm2.node.dc1.weft."), "{srv}");
    assert!(!srv.contains("8082"), "the critical instance is left out: {srv}");
    let additional = &srv[srv.find("ADDITIONAL SECTION").expect("an additional section")..];
    assert!(additional.contains("vm2.node.dc1.weft.") && additional.contains("10.9.9.2"), "{srv}");
    assert!(dig(&dns, &["_web._v2.service.weft", "SRV", "+short"]).contains("8081 vm2.node.dc1.weft."));

    let missing = dig(&dns, &["nope.service.weft"]);
    assert!(missing.contains("status: NXDOMAIN"), "{missing}");
    assert!(missing.contains("SOA") && missing.contains("ns.weft."), "negative answers carry the SOA: {missing}");

    // Node meta as TXT, and reverse lookups of node addresses.
    assert_eq!(dig(&dns, &["vm1.node.weft", "TXT", "+short"]).trim(), "\"rack=r1\"");
    assert_eq!(dig(&dns, &["-x", "10.0.0.2", "+short"]).trim(), "vm2.node.dc1.weft.");

    // Garbage packets are dropped or refused, and the server keeps answering.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for garbage in [&b"\x00"[..], b"not a dns message at all", &[0xff; 600]] {
        socket.send_to(garbage, &dns).unwrap();
    }
    assert_eq!(lines(&dig(&dns, &["web.service.weft", "+short"])), vec!["10.0.0.1", "10.9.9.2"]);
    assert!(dig(&dns, &["web.service.weft.example.com"]).contains("status: REFUSED"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domain_consul_makes_weft_a_drop_in() {
    if !dig_available() {
        return;
    }
    let cluster = Cluster::servers_with(1, &["--domain", "consul"]).await;
    register(&cluster, &web_fleet()[..1]).await;
    let dns = cluster.specs[0].dns_addr.clone();
    assert_eq!(lines(&dig(&dns, &["web.service.consul", "+short"])), vec!["10.0.0.1"]);
    assert!(dig(&dns, &["web.service.weft"]).contains("status: REFUSED"));
}

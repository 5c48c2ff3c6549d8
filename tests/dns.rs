//! The DNS interface through real `dig` queries against a real server:
//! Consul's names, only healthy instances, SRV with additionals, TCP, and
//! refusing what is not ours.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use support::{dig, dig_available, Cluster};

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
    // A query over TCP is not an event for the log (hickory logs each at INFO).
    assert!(!cluster.log(0).contains("hickory_server"), "{}", cluster.log(0));
    assert_eq!(lines(&dig(&dns, &["vm3.node.weft", "+short"])), vec!["10.0.0.3"]);

    // RFC 2782 SRV: port and node target, with the target's address as an additional record.
    let srv = dig(&dns, &["_web._tcp.service.weft", "SRV"]);
    assert!(srv.contains("flags: qr aa"), "authoritative: {srv}");
    assert!(srv.contains("1 1 8080 vm1.node.dc1.weft."), "{srv}");
    // An instance with an address of its own gets an `addr` target, which resolves to that address.
    assert!(srv.contains("1 1 8081 0a090902.addr.dc1.weft."), "{srv}");
    assert!(!srv.contains("8082"), "the critical instance is left out: {srv}");
    let additional = &srv[srv.find("ADDITIONAL SECTION").expect("an additional section")..];
    assert!(additional.contains("0a090902.addr.dc1.weft.") && additional.contains("10.9.9.2"), "{srv}");
    assert_eq!(dig(&dns, &["0a090902.addr.dc1.weft", "+short"]).trim(), "10.9.9.2");
    assert!(dig(&dns, &["_web._v2.service.weft", "SRV", "+short"]).contains("8081 0a090902.addr.dc1.weft."));

    // NXDOMAIN with the SOA for an unknown service, a tag no instance has, and
    // (as in Consul) a known service with no healthy instance.
    register(
        &cluster,
        &[json!({"Node": "vm4", "Address": "10.0.0.4", "Service": {"Service": "down", "Port": 1},
        "Check": {"CheckID": "down", "Name": "down", "Status": "critical", "ServiceID": "down"}})],
    )
    .await;
    for name in ["nope.service.weft", "v9.web.service.weft", "down.service.weft"] {
        let missing = dig(&dns, &[name]);
        assert!(missing.contains("status: NXDOMAIN"), "{name}: {missing}");
        assert!(missing.contains("SOA") && missing.contains("ns.weft."), "negative answers carry the SOA: {missing}");
    }

    // Names match whatever their case.
    register(&cluster, &[json!({"Node": "VM7", "Address": "10.0.0.7", "Service": {"Service": "Api", "Port": 7000}})])
        .await;
    for name in ["api.service.weft", "API.service.DC1.weft", "vm7.node.weft", "Vm7.NODE.weft"] {
        assert_eq!(lines(&dig(&dns, &[name, "+short"])), vec!["10.0.0.7"], "{name}");
    }
    assert!(dig(&dns, &["_api._tcp.service.weft", "SRV", "+short"]).contains("7000 VM7.node.dc1.weft."));

    // SRV weights: Weights.Warning for an instance in warning.
    register(
        &cluster,
        &[
            json!({"Node": "vm5", "Address": "10.0.0.5",
                   "Service": {"Service": "weighted", "Port": 5000, "Weights": {"Passing": 10, "Warning": 3}}}),
            json!({"Node": "vm6", "Address": "10.0.0.6",
                   "Service": {"Service": "weighted", "Port": 6000, "Weights": {"Passing": 10, "Warning": 3}},
                   "Check": {"CheckID": "w", "Name": "w", "Status": "warning", "ServiceID": "weighted"}}),
        ],
    )
    .await;
    let weighted = dig(&dns, &["weighted.service.weft", "SRV", "+short"]);
    assert!(
        weighted.contains("1 10 5000 vm5.node.dc1.weft.") && weighted.contains("1 3 6000 vm6.node.dc1.weft."),
        "{weighted}"
    );

    // Node meta as TXT, and reverse lookups of node addresses.
    assert_eq!(dig(&dns, &["vm1.node.weft", "TXT", "+short"]).trim(), "\"rack=r1\"");
    assert_eq!(dig(&dns, &["-x", "10.0.0.2", "+short"]).trim(), "vm2.node.dc1.weft.");
    assert_eq!(dig(&dns, &["-x", "10.9.9.2", "+short"]).trim(), "web.service.dc1.weft.", "a service address");

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

/// `dnsmasq` serves as the upstream for the recursor test; CI installs it (dnsmasq-base).
fn dnsmasq_available() -> bool {
    let found = Command::new("dnsmasq").arg("--version").output().is_ok();
    if !found {
        assert!(std::env::var_os("CI").is_none(), "dnsmasq is required in CI (apt-get install dnsmasq-base)");
        eprintln!("skipping: `dnsmasq` is not installed (apt-get install dnsmasq-base)");
    }
    found
}

/// A local dnsmasq answering `*.example.test` with 192.0.2.7; killed on drop.
struct Dnsmasq(std::process::Child);

impl Dnsmasq {
    fn start(port: u16) -> Dnsmasq {
        let child = Command::new("dnsmasq")
            .args(["--no-daemon", "--no-resolv", "--no-hosts", "--bind-interfaces", "--listen-address=127.0.0.1"])
            .arg(format!("--port={port}"))
            .args(["--address=/example.test/192.0.2.7", "--ptr-record=7.2.0.192.in-addr.arpa,host.example.test"])
            .args(["--user=root", "--pid-file="])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start dnsmasq");
        Dnsmasq(child)
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_outside_the_domain_go_to_the_recursor() {
    if !dig_available() || !dnsmasq_available() {
        return;
    }
    let upstream_port = support::free_port();
    let _dnsmasq = Dnsmasq::start(upstream_port);
    let recursor = format!("127.0.0.1:{upstream_port}");
    let cluster = Cluster::servers_with(1, &["--recursor", &recursor]).await;
    register(&cluster, &web_fleet()[..1]).await;
    let dns = cluster.specs[0].dns_addr.clone();
    let forwarded = support::eventually("dnsmasq to answer through weft", Duration::from_secs(10), || async {
        let answer = dig(&dns, &["www.example.test", "+short"]);
        (answer.trim() == "192.0.2.7").then_some(answer)
    })
    .await;
    assert_eq!(forwarded.trim(), "192.0.2.7");
    let full = dig(&dns, &["www.example.test"]);
    assert!(full.contains(" ra") && !full.contains("flags: qr aa"), "recursive, not authoritative: {full}");
    // Our own names are still ours.
    assert_eq!(lines(&dig(&dns, &["web.service.weft", "+short"])), vec!["10.0.0.1"]);
    // A reverse name the catalog does not know goes to the recursor; a known one stays ours.
    assert_eq!(dig(&dns, &["-x", "192.0.2.7", "+short"]).trim(), "host.example.test.");
    assert_eq!(dig(&dns, &["-x", "10.0.0.1", "+short"]).trim(), "vm1.node.dc1.weft.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_answers_that_do_not_fit_keep_what_fits_set_tc_and_tcp_carries_them_all() {
    if !dig_available() {
        return;
    }
    let cluster = Cluster::servers(1).await;
    let fleet: Vec<serde_json::Value> = (0..100)
        .map(|i| {
            json!({"Node": format!("big-{i:03}"), "Address": format!("10.1.{}.{}", i / 250, i % 250 + 1),
                   "Service": {"Service": "big", "Port": 9000 + i}})
        })
        .collect();
    register(&cluster, &fleet).await;
    let dns = cluster.specs[0].dns_addr.clone();
    let count = |text: &str, kind: &str| text.lines().filter(|l| l.contains(&format!("\tIN\t{kind}\t"))).count();

    // No EDNS: 512 bytes, so 100 A records do not fit: as many as fit come,
    // and TC tells the client that TCP has the rest.
    let plain = dig(&dns, &["+noedns", "+ignore", "big.service.weft", "A"]);
    assert!(plain.contains(" tc"), "truncated over UDP without EDNS: {plain}");
    let partial = count(&plain, "A");
    assert!((20..100).contains(&partial), "{partial} A records in 512 bytes: {plain}");
    // EDNS0 with a 4096-byte buffer: all 100 A records fit, no TC.
    let edns = dig(&dns, &["+bufsize=4096", "+ignore", "big.service.weft", "A"]);
    assert!(!edns.contains(" tc"), "{edns}");
    assert_eq!(count(&edns, "A"), 100, "{edns}");
    // SRV with 100 additionals does not fit 4096 bytes: the additionals go
    // first, then the last few SRV records (TC); over TCP everything arrives.
    let srv_udp = dig(&dns, &["+bufsize=4096", "+ignore", "big.service.weft", "SRV"]);
    assert!(srv_udp.contains(" tc") && (90..100).contains(&count(&srv_udp, "SRV")), "{srv_udp}");
    assert_eq!(count(&srv_udp, "A"), 0, "the additionals go first: {srv_udp}");
    // A 1232-byte buffer still gets as many as fit, never an empty answer.
    let srv_small = dig(&dns, &["+bufsize=1232", "+ignore", "big.service.weft", "SRV"]);
    assert!(srv_small.contains(" tc") && count(&srv_small, "SRV") > 10, "{srv_small}");
    let srv_tcp = dig(&dns, &["+tcp", "big.service.weft", "SRV"]);
    assert_eq!(count(&srv_tcp, "SRV"), 100, "{srv_tcp}");
    // Answers are shuffled: over a few queries the first record changes.
    let firsts: std::collections::BTreeSet<String> = (0..8)
        .map(|_| dig(&dns, &["+tcp", "+short", "big.service.weft", "A"]).lines().next().unwrap_or_default().to_owned())
        .collect();
    assert!(firsts.len() > 1, "the same first answer 8 times: {firsts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alt_domain_ttls_and_only_passing_come_from_the_config() {
    if !dig_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dns.hcl");
    std::fs::write(
        &config,
        r#"
        alt_domain = "consul"
        dns_config {
          node_ttl = "7s"
          only_passing = true
          service_ttl = {
            "*" = "5s"
            "db" = "30s"
            "w*" = "9s"
          }
        }
        "#,
    )
    .unwrap();
    let cluster = Cluster::servers_with(1, &["--config-file", config.to_str().unwrap()]).await;
    let warning = json!({"Node": "vm9", "Address": "10.0.0.9", "Service": {"Service": "web", "Port": 80},
                         "Check": {"CheckID": "w", "Name": "w", "Status": "warning", "ServiceID": "web"}});
    let db = json!({"Node": "vm8", "Address": "10.0.0.8", "Service": {"Service": "db", "Port": 5432}});
    let cache = json!({"Node": "vm7", "Address": "10.0.0.7", "Service": {"Service": "cache", "Port": 6379}});
    register(&cluster, &[web_fleet()[0].clone(), warning, db, cache]).await;
    let dns = cluster.specs[0].dns_addr.clone();
    // only_passing leaves out the instance whose check warns.
    assert_eq!(lines(&dig(&dns, &["web.service.weft", "+short"])), vec!["10.0.0.1"]);
    assert_eq!(lines(&dig(&dns, &["web.service.consul", "+short"])), vec!["10.0.0.1"]);
    let ttl = |name: &str| {
        let answer = dig(&dns, &[name, "+noall", "+answer"]);
        answer.split_whitespace().nth(1).and_then(|t| t.parse::<u32>().ok())
    };
    // The exact name, else the longest `prefix*`.
    assert_eq!(ttl("web.service.weft"), Some(9));
    assert_eq!(ttl("db.service.weft"), Some(30));
    assert_eq!(ttl("cache.service.weft"), Some(5));
    assert_eq!(ttl("vm1.node.consul"), Some(7));
}

/// unbound with Weft's domain as a stub zone that it primes (`stub-prime`:
/// it asks the zone's apex for its NS first, then asks the addresses
/// those name, on port 53) and with strict query-name minimisation (it
/// asks `service.weft` before `web.service.weft`, and gives up on
/// NXDOMAIN): both need the apex's SOA and NS and NODATA for the names in
/// between, and failed for every name when those were NXDOMAIN. Weft
/// answers DNS on port 53 for it (as a stub zone that is primed needs), in
/// a network namespace of the test's own. The SOA's minimum comes from
/// `dns_config { soa { min_ttl } }`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbound_priming_the_zone_and_minimising_strictly_resolves_service_names() {
    use support::netns::{exec_in, spawn_in, Network};
    let unbound = ["unbound", "/usr/sbin/unbound"].into_iter().find(|p| Command::new(p).arg("-V").output().is_ok());
    if support::netns::skip("the unbound test", &[("dig", "-v"), ("curl", "--version")]) {
        return;
    }
    let Some(unbound) = unbound else {
        assert!(std::env::var_os("CI").is_none(), "unbound is required in CI (apt-get install unbound)");
        eprintln!("skipping: `unbound` is not installed (apt-get install unbound)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut net = Network::new("wdn");
    let host = net.lone_host("dns");
    let config = dir.path().join("soa.hcl");
    std::fs::write(&config, "dns_config {\n  soa {\n    min_ttl = 30\n  }\n}\n").unwrap();
    let args = ["dev", "--dns-addr", "127.0.0.1:53", "--config-file", config.to_str().unwrap()];
    let _weft = spawn_in(&host, support::weft_bin(), &args, &[], &dir.path().join("weft.log"));
    let registration = r#"{"Node": "vm1", "Address": "10.0.0.1", "Service": {"Service": "web", "Port": 80}}"#;
    support::eventually("weft dev to take a registration", Duration::from_secs(20), || async {
        let (ok, _) = exec_in(
            &host,
            "curl",
            &["-sf", "-X", "PUT", "--data", registration, "http://127.0.0.1:8500/v1/catalog/register"],
        );
        ok.then_some(())
    })
    .await;
    let dig = |args: &[&str]| exec_in(&host, "dig", &[&["@127.0.0.1", "+time=2", "+tries=1"], args].concat()).1;

    // The apex and the names between it and the records.
    assert_eq!(lines(&dig(&["weft", "NS", "+short"])), vec!["ns.weft."]);
    assert_eq!(lines(&dig(&["ns.weft", "+short"])), vec!["127.0.0.1"]);
    let soa = dig(&["weft", "SOA", "+short"]);
    assert!(soa.starts_with("ns.weft. hostmaster.weft. ") && soa.trim().ends_with(" 30"), "{soa}");
    for name in ["service.weft", "node.weft", "dc1.weft", "service.dc1.weft"] {
        let answer = dig(&[name, "A"]);
        assert!(answer.contains("status: NOERROR") && answer.contains("ANSWER: 0"), "{name}: {answer}");
    }
    let missing = dig(&["nothing.service.weft"]);
    assert!(missing.contains("status: NXDOMAIN") && missing.contains("30\tIN\tSOA"), "{missing}");

    let unbound_config = dir.path().join("unbound.conf");
    std::fs::write(
        &unbound_config,
        format!(
            "server:\n  interface: 127.0.0.1\n  port: 5353\n  do-daemonize: no\n  username: \"\"\n  chroot: \"\"\n  \
             directory: \"{dir}\"\n  pidfile: \"\"\n  use-syslog: no\n  logfile: \"\"\n  do-not-query-localhost: no\n  \
             module-config: \"iterator\"\n  qname-minimisation: yes\n  qname-minimisation-strict: yes\n  \
             do-ip6: no\n\nstub-zone:\n  name: \"weft.\"\n  stub-addr: 127.0.0.1@53\n  stub-prime: yes\n",
            dir = dir.path().display(),
        ),
    )
    .unwrap();
    let _unbound =
        spawn_in(&host, unbound, &["-d", "-c", unbound_config.to_str().unwrap()], &[], &dir.path().join("unbound.log"));
    let resolved = support::eventually("unbound to resolve web.service.weft", Duration::from_secs(20), || async {
        let (_, answer) =
            exec_in(&host, "dig", &["@127.0.0.1", "-p", "5353", "+time=2", "+tries=1", "+short", "web.service.weft"]);
        (answer.trim() == "10.0.0.1").then_some(answer)
    })
    .await;
    assert_eq!(resolved.trim(), "10.0.0.1");
}

/// A DNS query for `name` (type A, recursion desired) with `id`, as bytes.
fn query_bytes(id: u16, name: &str) -> Vec<u8> {
    let mut bytes = id.to_be_bytes().to_vec();
    bytes.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        bytes.push(label.len() as u8);
        bytes.extend_from_slice(label.as_bytes());
    }
    bytes.extend_from_slice(&[0, 0, 1, 0, 1]);
    bytes
}

/// Forwarded queries in flight are bounded: with an upstream that never
/// answers (and a 30 s recursor timeout), queries outside the domain, sent
/// one by one, are forwarded until 256 are in flight; the next is answered
/// SERVFAIL at once, instead of a task and a socket of its own. (Sent one
/// by one, so none is lost to a full socket buffer; a lost one only means
/// more are sent before the first SERVFAIL.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_queries_in_flight_are_bounded() {
    let black_hole = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let recursor = black_hole.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("recursor.hcl");
    std::fs::write(&config, "dns_config {\n  recursor_timeout = \"30s\"\n}\n").unwrap();
    let cluster = Cluster::servers_with(1, &["--recursor", &recursor, "--config-file", config.to_str().unwrap()]).await;
    let dns: std::net::SocketAddr = cluster.specs[0].dns_addr.parse().unwrap();
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut buffer = [0u8; 512];
    let mut first_servfail = None;
    for id in 0..400u16 {
        client.send_to(&query_bytes(id, &format!("q{id}.example.test")), dns).await.unwrap();
        if let Ok(Ok((len, _))) = tokio::time::timeout(Duration::from_millis(5), client.recv_from(&mut buffer)).await {
            assert!(len >= 12 && buffer[3] & 0x0f == 2, "an answer that is not SERVFAIL: {:?}", &buffer[..len]);
            first_servfail = Some(id + 1);
            break;
        }
    }
    let sent = first_servfail.expect("a SERVFAIL once 256 forwarded queries are in flight");
    println!("queries to an upstream that never answers: the first SERVFAIL came for query {sent}");
    assert!(sent > 256, "only {} queries were forwarded before the first SERVFAIL", sent - 1);
    drop(black_hole);
}

fn haproxy_available() -> bool {
    let found = Command::new("haproxy").arg("-v").output().is_ok();
    if !found {
        assert!(
            std::env::var_os("CI").is_none() && std::env::var_os("WEFT_CI").is_none(),
            "haproxy is required in CI (apt-get install haproxy)"
        );
        eprintln!("skipping: `haproxy` is not installed (apt-get install haproxy)");
    }
    found
}

/// HAProxy killed on drop.
struct Haproxy(std::process::Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `show servers state <backend>` on HAProxy's stats socket: each server's
/// (address, port, SRV target) once DNS gave it one.
fn haproxy_servers(socket: &std::path::Path, backend: &str) -> Vec<(String, u16, String)> {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::os::unix::net::UnixStream::connect(socket) else { return Vec::new() };
    let mut text = String::new();
    if stream.write_all(format!("show servers state {backend}\n").as_bytes()).is_err()
        || stream.read_to_string(&mut text).is_err()
    {
        return Vec::new();
    }
    // Columns: be_id be_name srv_id srv_name srv_addr ... srv_fqdn(17) srv_port(18).
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (address, fqdn, port) = (*fields.get(4)?, *fields.get(17)?, fields.get(18)?.parse().ok()?);
            (address != "-" && address != "0.0.0.0").then(|| (address.to_owned(), port, fqdn.to_owned()))
        })
        .collect()
}

/// HAProxy's `server-template` on an SRV name with 200 instances fills its
/// servers from Weft's DNS: the answer does not fit in a UDP message, and
/// Weft sends as many as fit with TC (before, it sent none, and HAProxy
/// had no servers at all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_server_template_fills_from_a_200_instance_srv_name() {
    if !dig_available() || !haproxy_available() {
        return;
    }
    let cluster = Cluster::servers(1).await;
    let fleet: Vec<serde_json::Value> = (0..200)
        .map(|i| {
            json!({"Node": format!("big-{i}"), "Address": format!("10.1.{}.{}", i / 250, i % 250 + 1),
                   "Service": {"Service": "big", "Port": 9000 + i}})
        })
        .collect();
    register(&cluster, &fleet).await;
    let dns = cluster.specs[0].dns_addr.clone();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("stats.sock");
    let config = dir.path().join("haproxy.cfg");
    std::fs::write(
        &config,
        format!(
            "global\n  stats socket {socket} mode 600 level admin\n\
             resolvers weft\n  nameserver weft {dns}\n  accepted_payload_size 8192\n  hold valid 1s\n\
             defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 5s\n  timeout server 5s\n\
             backend big\n  server-template big 200 _big._tcp.service.weft resolvers weft init-addr none\n",
            socket = socket.display()
        ),
    )
    .unwrap();
    let child = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start haproxy");
    let _haproxy = Haproxy(child);
    let servers = support::eventually("HAProxy to fill servers from SRV", Duration::from_secs(30), || async {
        let servers = haproxy_servers(&socket, "big");
        (servers.len() >= 50).then_some(servers)
    })
    .await;
    println!("HAProxy server-template: {} of 200 servers filled from one SRV answer", servers.len());
    // Each server is one registered instance: its node's address and its port.
    for (address, port, target) in &servers {
        let i: u16 = target.strip_prefix("big-").and_then(|t| t.split('.').next()?.parse().ok()).expect(target);
        assert_eq!((address.as_str(), *port), (format!("10.1.{}.{}", i / 250, i % 250 + 1).as_str(), 9000 + i));
    }
}

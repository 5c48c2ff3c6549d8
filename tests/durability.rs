//! Storage faults, through the real binary: a server whose Raft storage was
//! damaged while it was stopped either refuses to start, naming the damage
//! and what to do, or comes back with every acknowledged write; it never
//! serves a shorter history. Each file of a stopped server's store (and its
//! witness) is in turn flipped, overwritten, halved, zeroed and deleted; a
//! lost `node-id` is refused too. In a three-server cluster, a server with
//! a halved log cannot join a lagging one to elect a leader over what they
//! lost: reads wait for the healthy third, and then see every write.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::future::join_all;
use support::{put, stale_keys, Cluster};

/// How a file is damaged.
#[derive(Clone, Copy, Debug)]
enum Damage {
    FlipByte,
    Overwrite64K,
    Halve,
    Zero,
    Delete,
}

const DAMAGES: [Damage; 5] = [Damage::FlipByte, Damage::Overwrite64K, Damage::Halve, Damage::Zero, Damage::Delete];

fn damage(path: &Path, how: Damage) {
    let mut bytes = std::fs::read(path).unwrap();
    match how {
        Damage::FlipByte => {
            let middle = bytes.len() / 2;
            if let Some(byte) = bytes.get_mut(middle) {
                *byte ^= 0x5a;
            }
            std::fs::write(path, bytes).unwrap();
        }
        Damage::Overwrite64K => {
            let start = bytes.len() / 3;
            let end = (start + 64 * 1024).min(bytes.len());
            for (n, byte) in bytes[start..end].iter_mut().enumerate() {
                *byte = (n * 31 % 251) as u8;
            }
            std::fs::write(path, bytes).unwrap();
        }
        Damage::Halve => std::fs::write(path, &bytes[..bytes.len() / 2]).unwrap(),
        Damage::Zero => std::fs::write(path, []).unwrap(),
        Damage::Delete => std::fs::remove_file(path).unwrap(),
    }
}

/// Every file of the store under `data_dir` (and the witness beside it).
fn store_files(data_dir: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            match path.is_dir() {
                true => walk(&path, out),
                false => out.push(path),
            }
        }
    }
    let mut files = vec![data_dir.join("raft.witness")];
    walk(&data_dir.join("raft"), &mut files);
    files.retain(|f| std::fs::metadata(f).is_ok_and(|m| m.len() > 0));
    files.sort();
    files
}

fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    let status = std::process::Command::new("cp").arg("-a").arg(from).arg(to).status().unwrap();
    assert!(status.success(), "cp -a {} {}", from.display(), to.display());
}

/// Writes `count` keys under `prefix` through `client`, 16 at a time.
async fn write_keys(client: &weft_api::client::HttpClient, prefix: &str, count: usize) -> BTreeSet<String> {
    let keys: Vec<String> = (0..count).map(|n| format!("{prefix}{n:05}")).collect();
    for chunk in keys.chunks(16) {
        let acks = join_all(chunk.iter().map(|key| put(client, key, "acknowledged"))).await;
        assert!(acks.iter().all(|ack| *ack), "every write is acknowledged");
    }
    keys.into_iter().collect()
}

/// How a start on a damaged store ended.
enum Outcome {
    Refused(String),
    Served(usize),
}

/// Starts server `i` and waits until it exits (refused) or serves; then
/// counts its keys under `prefix`.
async fn start_and_see(cluster: &mut Cluster, i: usize, prefix: &str, expected: usize) -> Outcome {
    let log_before = cluster.log(i).len();
    cluster.start_server(i);
    let deadline = Instant::now() + Duration::from_secs(30) * support::patience();
    let client = cluster.client(i).with_timeout(Duration::from_secs(2));
    while Instant::now() < deadline {
        if cluster.has_exited(i) {
            return Outcome::Refused(cluster.log(i)[log_before..].to_owned());
        }
        let leader = client.get("/v1/status/leader").await.ok().filter(|r| r.status == 200 && r.text() != "\"\"");
        if leader.is_some() {
            // Served: give a replay a moment, then count what it holds.
            let mut count = 0;
            let until = Instant::now() + Duration::from_secs(10);
            while count < expected && Instant::now() < until {
                count = stale_keys(&client, prefix).await.map_or(count, |keys| keys.len());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            cluster.stop(i);
            return Outcome::Served(count);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("server {i} neither refused to start nor served: {}", &cluster.log(i)[log_before..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_store_is_refused_or_whole_never_shorter() {
    let mut cluster = Cluster::servers(1).await;
    let written = write_keys(&cluster.client(0), "durable/", 2000).await;
    assert!(cluster.stop(0), "a clean stop");
    let data_dir = cluster.data_dir(0).to_path_buf();
    let pristine = data_dir.with_extension("pristine");
    copy_dir(&data_dir, &pristine);
    let files: Vec<PathBuf> =
        store_files(&data_dir).into_iter().map(|f| f.strip_prefix(&data_dir).unwrap().to_path_buf()).collect();
    assert!(files.iter().any(|f| f.ends_with("db")), "{files:?}");

    let (mut refused, mut whole) = (0, 0);
    for file in &files {
        for how in DAMAGES {
            copy_dir(&pristine, &data_dir);
            damage(&data_dir.join(file), how);
            let case = format!("{} {how:?}", file.display());
            match start_and_see(&mut cluster, 0, "durable/", written.len()).await {
                Outcome::Refused(log) => {
                    assert!(
                        log.contains("damaged") && log.contains("remove-peer"),
                        "{case}: refused without saying why and what to do:\n{log}"
                    );
                    assert!(!log.contains("panicked"), "{case}: a panic is not a refusal:\n{log}");
                    refused += 1;
                }
                Outcome::Served(count) => {
                    assert_eq!(count, written.len(), "{case}: served a shorter history");
                    whole += 1;
                }
            }
        }
    }
    println!("{} damaged stores: {refused} refused to start, {whole} came back whole", refused + whole);
    let refusal = {
        copy_dir(&pristine, &data_dir);
        damage(&data_dir.join("raft/db"), Damage::Halve);
        match start_and_see(&mut cluster, 0, "durable/", written.len()).await {
            Outcome::Refused(log) => log,
            Outcome::Served(count) => panic!("a halved db served {count} keys"),
        }
    };
    println!("a halved raft/db: {}", refusal.lines().find(|l| l.contains("damaged")).unwrap_or_default());

    // A lost node-id beside Raft data: refused, not a new server.
    copy_dir(&pristine, &data_dir);
    std::fs::remove_file(data_dir.join("node-id")).unwrap();
    match start_and_see(&mut cluster, 0, "durable/", written.len()).await {
        Outcome::Refused(log) => assert!(log.contains("node-id"), "{log}"),
        Outcome::Served(count) => panic!("started as a new server without its node-id ({count} keys)"),
    }

    // And the undamaged store still holds everything.
    copy_dir(&pristine, &data_dir);
    match start_and_see(&mut cluster, 0, "durable/", written.len()).await {
        Outcome::Served(count) => assert_eq!(count, written.len()),
        Outcome::Refused(log) => panic!("an undamaged store was refused:\n{log}"),
    }
    let _ = std::fs::remove_dir_all(&pristine);
}

fn run(program: &str, args: &[&str]) -> bool {
    std::process::Command::new(program).args(args).status().is_ok_and(|s| s.success())
}

/// Unmounts the tmpfs when the test ends, however it ends.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_the_server_and_a_restart_with_space_keeps_every_write() {
    let root = std::process::Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    if !root {
        assert!(std::env::var_os("WEFT_CI").is_none(), "the disk-full test must run in CI (as root, for tmpfs)");
        eprintln!("skipping: mounting a tmpfs needs root");
        return;
    }
    let mut cluster = Cluster::servers(1).await;
    let mut written = write_keys(&cluster.client(0), "before/", 100).await;
    assert!(cluster.stop(0));
    // The same data directory, moved onto a 24 MiB tmpfs.
    let data_dir = cluster.data_dir(0).to_path_buf();
    let moved = data_dir.with_extension("moved");
    std::fs::rename(&data_dir, &moved).unwrap();
    std::fs::create_dir(&data_dir).unwrap();
    assert!(run("mount", &["-t", "tmpfs", "-o", "size=24m", "tmpfs", data_dir.to_str().unwrap()]));
    let _mounted = Mounted(data_dir.clone());
    assert!(run("sh", &["-c", &format!("cp -a {}/. {}/", moved.display(), data_dir.display())]));
    // Fill it but for 3 MiB.
    let filler = data_dir.join("filler");
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", &format!("of={}", filler.display()), "bs=1M"])
        .stderr(std::process::Stdio::null())
        .status();
    let full = std::fs::metadata(&filler).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&filler).unwrap().set_len(full.saturating_sub(3 << 20)).unwrap();

    cluster.start_server(0);
    cluster.wait_for_leader().await;
    let client = cluster.client(0).with_timeout(Duration::from_secs(5));
    let value = "x".repeat(64 * 1024);
    let mut refused = 0;
    for n in 0..400 {
        if cluster.has_exited(0) {
            break;
        }
        let key = format!("filling/{n:04}");
        match client.put(&format!("/v1/kv/{key}"), value.clone()).await {
            Ok(response) if response.status == 200 && response.body == b"true" => {
                written.insert(key);
            }
            _ => refused += 1,
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cluster.has_exited(0) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = cluster.log(0);
    assert!(!cluster.is_running(0), "a server whose disk is full must stop, not stay up without Raft:\n{log}");
    assert!(log.contains("Raft stopped"), "{log}");
    let reason = log.lines().rev().find(|l| l.contains("Raft stopped")).unwrap_or_default().to_owned();
    println!("disk full after {} acknowledged writes ({refused} refused): {reason}", written.len());

    // Space again: a restart (systemd's, here the test's) serves every acknowledged write.
    std::fs::remove_file(&filler).unwrap();
    cluster.start_server(0);
    cluster.wait_for_leader().await;
    let client = cluster.client(0);
    let keys: BTreeSet<String> =
        [stale_keys(&client, "before/").await.unwrap(), stale_keys(&client, "filling/").await.unwrap()]
            .concat()
            .into_iter()
            .collect();
    assert!(written.is_subset(&keys), "lost {:?}", written.difference(&keys).take(5).collect::<Vec<_>>());
    assert!(put(&client, "after/0", "v").await, "writes resume");
    assert!(cluster.stop(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halved_log_and_a_lagging_one_elect_nothing_and_the_damaged_server_rejoins_whole() {
    let mut cluster = Cluster::servers(3).await;
    let leader = cluster.wait_for_leader().await;
    let (lagging, halved) = {
        let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
        (others[0], others[1])
    };
    let healthy = leader;
    // One server misses the writes; the two others acknowledge them.
    assert!(cluster.stop(lagging));
    let written = write_keys(&cluster.client(leader), "acked/", 600).await;
    for i in 0..3 {
        cluster.stop(i);
    }
    damage(&cluster.data_dir(halved).join("raft/db"), Damage::Halve);

    // The halved one refuses to start; the lagging one alone has no quorum:
    // no leader, and `?consistent` reads are refused, not served stale.
    cluster.start_server(halved);
    cluster.start_server(lagging);
    let deadline = Instant::now() + Duration::from_secs(30) * support::patience();
    while !cluster.has_exited(halved) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!cluster.is_running(halved), "a halved log must not start:\n{}", cluster.log(halved));
    assert!(cluster.log(halved).contains("damaged"), "{}", cluster.log(halved));
    let client = cluster.client(lagging).with_timeout(Duration::from_secs(5));
    for _ in 0..3 {
        let read = client.get("/v1/kv/acked/00599?consistent").await;
        assert!(read.as_ref().map_or(true, |r| r.status != 200), "a lone lagging server served a consistent read");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // The healthy third comes back: every acknowledged write is there, on both.
    cluster.start_server(healthy);
    cluster.wait_for_leader().await;
    for i in [healthy, lagging] {
        let client = cluster.client(i);
        let what = format!("{} to hold every acknowledged write", cluster.specs[i].name);
        support::eventually(&what, Duration::from_secs(30), || async {
            let keys: BTreeSet<String> = stale_keys(&client, "acked/").await?.into_iter().collect();
            written.is_subset(&keys).then_some(())
        })
        .await;
    }

    // The documented recovery: remove it, move its Raft data aside, start it.
    let name = cluster.specs[halved].name.clone();
    let http = cluster.specs[healthy].http_addr.clone();
    let (code, out, err) = support::weft(&["operator", "raft", "remove-peer", "--id", &name, "--http-addr", &http]);
    assert_eq!(code, 0, "{out}{err}");
    let data_dir = cluster.data_dir(halved).to_path_buf();
    std::fs::rename(data_dir.join("raft"), data_dir.join("raft.damaged")).unwrap();
    std::fs::rename(data_dir.join("raft.witness"), data_dir.join("raft.witness.damaged")).unwrap();
    cluster.start_server(halved);
    let client = cluster.client(halved);
    support::eventually("the rejoined server to hold every write", Duration::from_secs(60), || async {
        let keys: BTreeSet<String> = stale_keys(&client, "acked/").await?.into_iter().collect();
        written.is_subset(&keys).then_some(())
    })
    .await;
    support::eventually("three voters again", Duration::from_secs(30), || async {
        (cluster.voters_seen_by(healthy).await?.len() == 3).then_some(())
    })
    .await;
    for i in 0..3 {
        assert!(!cluster.log(i).contains("panicked"), "{}:\n{}", cluster.specs[i].name, cluster.log(i));
    }
}

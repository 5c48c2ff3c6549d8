//! `weft lock PREFIX COMMAND...`: runs a command while holding a lock, as
//! `consul lock` does. It makes a session (a TTL, renewed at half of it,
//! and bound to the local agent's node), acquires `PREFIX/.lock` with it
//! (waiting on blocking queries while another session holds the key),
//! runs the command with `sh -c`, and kills it if the lock is lost (the key
//! no longer held by the session). When the command ends, the lock is
//! released and the session destroyed, and `weft lock` exits with the
//! command's code.
//!
//! A holder killed outright stops renewing: its session ends within twice
//! its TTL (Consul's grace) and the key then stays free of a new holder for
//! the session's lock delay.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use serde_json::json;
use weft_api::client::{path_segment, HttpClient};

use super::{expect_success, json_body, ApiArgs};

/// How long one wait for the key to change may block.
const WAIT: &str = "15s";
/// How often a key refused while free (in its lock delay) is tried again.
const LOCK_DELAY_POLL: Duration = Duration::from_millis(250);
/// How long a killed command gets to exit before it is killed outright.
const KILL_GRACE: Duration = Duration::from_secs(5);

#[derive(Args, Debug)]
pub struct LockArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// The session's name.
    #[arg(long, default_value = "Weft lock")]
    name: String,
    /// The session's TTL (10s to 24h).
    #[arg(long, default_value = "15s")]
    session_ttl: String,
    /// How long the key stays free after a holder's session ends.
    #[arg(long, default_value = "15s")]
    lock_delay: String,
    /// Give up if the lock is not held within this long (0s: wait forever).
    #[arg(long, default_value = "0s")]
    timeout: String,
    /// The key prefix; the lock is `PREFIX/.lock`.
    prefix: String,
    /// The command to run while holding the lock (run with `sh -c`).
    #[arg(trailing_var_arg = true, required = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// A session and the key it may hold.
struct Lock {
    client: HttpClient,
    session: String,
    key: String,
}

impl Lock {
    fn kv_path(&self) -> String {
        let key: Vec<String> = self.key.split('/').map(path_segment).collect();
        format!("/v1/kv/{}", key.join("/"))
    }

    /// Waits until the session holds the key (`Ok(false)`: the deadline passed).
    async fn acquire(&self, deadline: Option<tokio::time::Instant>) -> anyhow::Result<bool> {
        let mut index = 0u64;
        loop {
            let path = format!("{}?acquire={}", self.kv_path(), self.session);
            let acquired = expect_success(self.client.put(&path, Vec::new()).await?, "acquiring the lock")?;
            if acquired.text().trim() == "true" {
                return Ok(true);
            }
            if deadline.is_some_and(|deadline| tokio::time::Instant::now() >= deadline) {
                return Ok(false);
            }
            // Refused: wait for the key to change while another session
            // holds it (the first look does not wait).
            let watched = self.client.get(&format!("{}?index={index}&wait={WAIT}", self.kv_path())).await?;
            let free = watched.status == 404 || watched.status == 200 && held_by(&watched).is_none();
            if free {
                // Free, yet refused: in its lock delay, which no change ends.
                tokio::time::sleep(LOCK_DELAY_POLL).await;
                index = 0;
            } else {
                index = watched.header("X-Consul-Index").and_then(|i| i.parse().ok()).unwrap_or(0);
            }
        }
    }

    /// Resolves when the session no longer holds the key.
    async fn lost(&self) -> String {
        let mut index = 0u64;
        loop {
            let path = format!("{}?index={index}&wait={WAIT}", self.kv_path());
            match self.client.get(&path).await {
                Ok(response) if response.status == 404 => return "the lock's key was deleted".into(),
                Ok(response) if response.status == 200 => {
                    if held_by(&response).as_deref() != Some(self.session.as_str()) {
                        return "the lock is held by another session, or none".into();
                    }
                    index = response.header("X-Consul-Index").and_then(|i| i.parse().ok()).unwrap_or(0);
                }
                // The agent is unreachable or refuses: keep asking.
                _ => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    }

    /// Renews the session every `period`; resolves when it is gone.
    async fn renew(&self, period: Duration) -> String {
        loop {
            tokio::time::sleep(period).await;
            let path = format!("/v1/session/renew/{}", self.session);
            match self.client.put(&path, Vec::new()).await {
                Ok(response) if response.status == 404 => return "the session ended".into(),
                Ok(_) => {}
                Err(error) => eprintln!("weft lock: could not renew the session: {error}"),
            }
        }
    }

    async fn release(&self) {
        let path = format!("{}?release={}", self.kv_path(), self.session);
        let _ = self.client.put(&path, Vec::new()).await;
        let _ = self.client.put(&format!("/v1/session/destroy/{}", self.session), Vec::new()).await;
    }
}

/// The session holding the key a KV GET answered, if any.
fn held_by(response: &weft_api::client::Response) -> Option<String> {
    let entries = json_body(response).ok()?;
    entries.get(0)?.get("Session")?.as_str().map(str::to_owned)
}

fn duration(text: &str, what: &str) -> anyhow::Result<Duration> {
    weft_api::duration::parse(text).with_context(|| format!("--{what} {text:?}"))
}

impl LockArgs {
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        let ttl = duration(&self.session_ttl, "session-ttl")?;
        let timeout = duration(&self.timeout, "timeout")?;
        duration(&self.lock_delay, "lock-delay")?;
        let client = self.api.client();
        let body =
            json!({"Name": self.name, "TTL": self.session_ttl, "LockDelay": self.lock_delay, "Behavior": "release"});
        let created = expect_success(client.put("/v1/session/create", body.to_string()).await?, "creating a session")?;
        let session = json_body(&created)?["ID"].as_str().context("the agent answered no session ID")?.to_owned();
        let lock = Lock { client, session, key: format!("{}/.lock", self.prefix.trim_end_matches('/')) };
        let deadline = (!timeout.is_zero()).then(|| tokio::time::Instant::now() + timeout);
        let acquired = tokio::select! {
            acquired = lock.acquire(deadline) => acquired,
            reason = lock.renew(ttl / 2) => Err(anyhow::anyhow!(reason)),
        };
        match acquired {
            Ok(true) => {}
            Ok(false) => {
                lock.release().await;
                bail!("the lock {} was not acquired within {}", lock.key, self.timeout);
            }
            Err(error) => {
                lock.release().await;
                return Err(error);
            }
        }
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(self.command.join(" "))
            .spawn()
            .context("starting the command")?;
        let outcome = tokio::select! {
            status = child.wait() => Ok(status?),
            reason = lock.lost() => Err(reason),
            reason = lock.renew(ttl / 2) => Err(reason),
        };
        let code = match outcome {
            Ok(status) => status.code().unwrap_or(1),
            Err(reason) => {
                eprintln!("weft lock: lock lost ({reason}); stopping the command");
                stop(&mut child).await;
                1
            }
        };
        lock.release().await;
        Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
    }
}

/// SIGTERM, then SIGKILL if the command has not exited within the grace.
async fn stop(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
    }
    if tokio::time::timeout(KILL_GRACE, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

//! Keeps the services and checks registered through the agent API in the
//! data dir (`local/services.json`, `local/checks.json`), so an agent that
//! restarts brings them back with no re-registration by hand; and the state
//! of TTL checks (`local/ttl-state.json`), so a restart does not turn a
//! freshly passed TTL check critical; and maintenance mode
//! (`local/maintenance.json`), which lasts until lifted.
//!
//! Files are replaced atomically (write, fsync, rename). A file that cannot be
//! read is logged and set aside, never fatal: the registrations can be made
//! again, an agent that will not start cannot serve.

use std::path::{Path, PathBuf};

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use weft_api::catalog::{Check, HealthStatus};
use weft_api::ids::CheckId;

use super::definition::{CheckDefinition, ServiceDefinition};

const SERVICES_FILE: &str = "services.json";
const CHECKS_FILE: &str = "checks.json";
const TTL_STATE_FILE: &str = "ttl-state.json";
const MAINTENANCE_FILE: &str = "maintenance.json";

/// Maintenance mode on the node (`service` `None`) or a service, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Maintenance {
    pub service: Option<String>,
    pub reason: String,
}

/// The maintenance saved by the last run.
pub fn load_maintenance(dir: &Path) -> Vec<Maintenance> {
    read(&dir.join(MAINTENANCE_FILE))
}

/// Replaces the saved maintenance.
pub fn save_maintenance(dir: &Path, records: &[Maintenance]) {
    if let Err(error) = std::fs::create_dir_all(dir).and_then(|_| write(&dir.join(MAINTENANCE_FILE), &records)) {
        tracing::error!(dir = %dir.display(), %error, "could not save maintenance mode; a restart lifts it");
    }
}

/// A TTL check's last update: its status and output, and when it expires
/// (wall-clock milliseconds since the Unix epoch, since it must mean the
/// same after a restart).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtlState {
    pub status: HealthStatus,
    pub output: String,
    pub expires_unix_ms: u64,
}

impl TtlState {
    /// `check` as it is now, expiring at `deadline`.
    pub fn new(check: &Check, deadline: Instant) -> Self {
        let expires = SystemTime::now() + deadline.saturating_duration_since(Instant::now());
        let expires_unix_ms = expires.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        Self { status: check.status, output: check.output.clone(), expires_unix_ms }
    }

    /// When it expires on this run's clock; `None` if it already has.
    pub fn deadline(&self) -> Option<Instant> {
        let expires = UNIX_EPOCH + Duration::from_millis(self.expires_unix_ms);
        let left = expires.duration_since(SystemTime::now()).ok().filter(|left| !left.is_zero())?;
        Some(Instant::now() + left)
    }
}

/// The saved TTL check states, or none.
pub fn load_ttl_states(dir: &Path) -> BTreeMap<CheckId, TtlState> {
    read::<(CheckId, TtlState)>(&dir.join(TTL_STATE_FILE)).into_iter().collect()
}

/// Replaces the saved TTL check states.
pub fn save_ttl_states(dir: &Path, states: &BTreeMap<CheckId, TtlState>) {
    let states: Vec<(&CheckId, &TtlState)> = states.iter().collect();
    if let Err(error) = std::fs::create_dir_all(dir).and_then(|_| write(&dir.join(TTL_STATE_FILE), &states)) {
        tracing::warn!(dir = %dir.display(), %error, "could not save TTL check states; a restart starts them anew");
    }
}

/// The persisted definitions, or none.
pub fn load(dir: &Path) -> (Vec<ServiceDefinition>, Vec<CheckDefinition>) {
    (read(&dir.join(SERVICES_FILE)), read(&dir.join(CHECKS_FILE)))
}

/// Replaces the persisted definitions.
pub fn save<'a>(
    dir: &Path,
    services: impl Iterator<Item = &'a ServiceDefinition>,
    checks: impl Iterator<Item = &'a CheckDefinition>,
) {
    let services: Vec<_> = services.collect();
    let checks: Vec<_> = checks.collect();
    if let Err(error) = std::fs::create_dir_all(dir)
        .and_then(|_| write(&dir.join(SERVICES_FILE), &services))
        .and_then(|_| write(&dir.join(CHECKS_FILE), &checks))
    {
        tracing::error!(dir = %dir.display(), %error, "could not persist agent registrations; they will not survive a restart");
    }
}

fn read<T: DeserializeOwned>(path: &Path) -> Vec<T> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(error) => {
            tracing::error!(path = %path.display(), %error, "cannot read persisted registrations");
            return Vec::new();
        }
    };
    match serde_json::from_slice(&text) {
        Ok(items) => items,
        Err(error) => {
            let aside = PathBuf::from(format!("{}.corrupt", path.display()));
            tracing::error!(path = %path.display(), %error, aside = %aside.display(), "persisted registrations are corrupt; setting the file aside");
            let _ = std::fs::rename(path, aside);
            Vec::new()
        }
    }
}

/// Written readable by this user only: registrations may hold ACL tokens.
fn write<T: Serialize>(path: &Path, items: &T) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let temp = path.with_extension("json.tmp");
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temp)?;
    file.write_all(&serde_json::to_vec_pretty(items).map_err(std::io::Error::other)?)?;
    file.sync_all()?;
    std::fs::rename(&temp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_states_round_trip_and_expired_ones_have_no_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let check = Check { status: HealthStatus::Passing, output: "fine".into(), ..Check::default() };
        let live = TtlState::new(&check, Instant::now() + Duration::from_secs(60));
        let expired = TtlState { expires_unix_ms: 1, ..live.clone() };
        let states = BTreeMap::from([(CheckId::new("a"), live.clone()), (CheckId::new("b"), expired)]);
        save_ttl_states(dir.path(), &states);
        let loaded = load_ttl_states(dir.path());
        assert_eq!(loaded, states);
        assert!(loaded[&CheckId::new("a")].deadline().is_some());
        assert!(loaded[&CheckId::new("b")].deadline().is_none());
    }
}

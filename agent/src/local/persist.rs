//! Keeps the services and checks registered through the agent API in the
//! data dir (`local/services.json`, `local/checks.json`), so an agent that
//! restarts brings them back with no re-registration by hand.
//!
//! Files are replaced atomically (write, fsync, rename). A file that cannot be
//! read is logged and set aside, never fatal: the registrations can be made
//! again, an agent that will not start cannot serve.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::definition::{CheckDefinition, ServiceDefinition};

const SERVICES_FILE: &str = "services.json";
const CHECKS_FILE: &str = "checks.json";

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

fn write<T: Serialize>(path: &Path, items: &T) -> std::io::Result<()> {
    use std::io::Write;
    let temp = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&temp)?;
    file.write_all(&serde_json::to_vec_pretty(items).map_err(std::io::Error::other)?)?;
    file.sync_all()?;
    std::fs::rename(&temp, path)
}

//! `weft tls ca create` and `weft tls cert create`: certificate files in
//! the working directory, named as Consul names them
//! (`weft-agent-ca.pem`, `dc1-server-weft-0.pem`, each with a `-key.pem`).
//! A file is never overwritten; keys are written readable by their owner only.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::issue::{Authority, IssueError};

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{} already exists; remove it first or work in another directory", .0.display())]
    Exists(PathBuf),
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Issue(#[from] IssueError),
}

/// The CA's file names for `domain`: (certificate, key).
pub fn ca_paths(dir: &Path, domain: &str) -> (PathBuf, PathBuf) {
    (dir.join(format!("{domain}-agent-ca.pem")), dir.join(format!("{domain}-agent-ca-key.pem")))
}

/// Makes a new RPC CA in `dir`; the paths of its certificate and key.
pub fn create_ca(dir: &Path, domain: &str, ttl: Duration) -> Result<(PathBuf, PathBuf), FileError> {
    let (cert, key) = ca_paths(dir, domain);
    refuse_existing(&[&cert, &key])?;
    let ca = Authority::create(&format!("Weft RPC CA ({domain})"), ttl)?;
    write(&cert, &ca.cert_pem, 0o644)?;
    write(&key, &ca.key_pem, 0o600)?;
    Ok((cert, key))
}

/// What a server certificate names.
#[derive(Clone, Debug, Default)]
pub struct ServerCertRequest {
    pub datacenter: String,
    pub domain: String,
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub ttl: Duration,
}

/// Signs a server certificate with the CA in `ca_cert`/`ca_key`, written to
/// `dir` under the first free `<dc>-server-<domain>-<n>` name; its paths.
pub fn create_server_cert(
    dir: &Path,
    ca_cert: &Path,
    ca_key: &Path,
    request: &ServerCertRequest,
) -> Result<(PathBuf, PathBuf), FileError> {
    let ca = Authority { cert_pem: read(ca_cert)?, key_pem: read(ca_key)? };
    let name = crate::names::server_name(&request.datacenter.as_str().into(), &request.domain);
    let issued = ca.issue_server(&name, &request.dns_names, &request.ips, request.ttl)?;
    let prefix = format!("{}-server-{}", request.datacenter, request.domain);
    let (cert, key) = (0..)
        .map(|n| (dir.join(format!("{prefix}-{n}.pem")), dir.join(format!("{prefix}-{n}-key.pem"))))
        .find(|(cert, key)| !cert.exists() && !key.exists())
        .expect("some index is free");
    write(&cert, &issued.cert_pem, 0o644)?;
    write(&key, &issued.key_pem, 0o600)?;
    Ok((cert, key))
}

fn refuse_existing(paths: &[&Path]) -> Result<(), FileError> {
    match paths.iter().find(|path| path.exists()) {
        Some(path) => Err(FileError::Exists(path.to_path_buf())),
        None => Ok(()),
    }
}

pub(crate) fn read(path: &Path) -> Result<String, FileError> {
    std::fs::read_to_string(path).map_err(|source| FileError::Read { path: path.to_owned(), source })
}

/// Writes `text` to a new file `path` with `mode`, failing if it exists.
pub fn write(path: &Path, text: &str, mode: u32) -> Result<(), FileError> {
    let failed = |source: std::io::Error| match source.kind() {
        std::io::ErrorKind::AlreadyExists => FileError::Exists(path.to_owned()),
        _ => FileError::Write { path: path.to_owned(), source },
    };
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(failed)?;
    file.write_all(text.as_bytes()).and_then(|_| file.sync_all()).map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_named_like_consuls_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let (ca_cert, ca_key) = create_ca(dir.path(), "weft", Duration::from_secs(3600)).unwrap();
        assert!(ca_cert.ends_with("weft-agent-ca.pem") && ca_key.ends_with("weft-agent-ca-key.pem"));
        assert!(matches!(create_ca(dir.path(), "weft", Duration::from_secs(3600)), Err(FileError::Exists(_))));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&ca_key).unwrap().permissions().mode() & 0o777, 0o600);
        let request = ServerCertRequest {
            datacenter: "dc1".into(),
            domain: "weft".into(),
            ttl: Duration::from_secs(60),
            ..Default::default()
        };
        let first = create_server_cert(dir.path(), &ca_cert, &ca_key, &request).unwrap();
        let second = create_server_cert(dir.path(), &ca_cert, &ca_key, &request).unwrap();
        assert!(first.0.ends_with("dc1-server-weft-0.pem") && first.1.ends_with("dc1-server-weft-0-key.pem"));
        assert!(second.0.ends_with("dc1-server-weft-1.pem"));
    }
}

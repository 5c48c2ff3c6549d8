//! This agent's ACL state: its settings, its tokens (configured, or set
//! through `PUT /v1/agent/token/<kind>`), and tokens resolved against its
//! copy of the ACL tables, cached until those change. The HTTP
//! authorization point and DNS (with the default token) ask it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use weft_acl::{Authorizer, ResolveError, Resolved, TokenCache};
use weft_api::acl::{ANONYMOUS_TOKEN_ACCESSOR_ID, ANONYMOUS_TOKEN_SECRET};
use weft_server::store::{StateStore, Table, Tables};

use crate::backend::Backend;
use crate::config::{AclConfig, AclLogin, AclTokens};

/// This agent's ACL settings, its tokens and its cache of resolved tokens.
pub struct AclState {
    config: AclConfig,
    datacenter: String,
    cache: TokenCache,
    /// The tokens it was configured with, and those set through
    /// `PUT /v1/agent/token/<kind>` since.
    tokens: RwLock<AclTokens>,
    /// What a request without a token is (the default token, else the
    /// anonymous one), hashed once rather than on every request and DNS
    /// query: kept in step with `tokens`.
    default: RwLock<Arc<DefaultToken>>,
    /// Bumped whenever the default token changes, so what was decided
    /// with it (DNS's cached answers) is decided again.
    default_generation: std::sync::atomic::AtomicU64,
    /// When the default token, as last resolved, expires (`i64::MAX`: never).
    default_expires: std::sync::atomic::AtomicI64,
    /// Where tokens set through the API are kept (`enable_token_persistence`).
    persist: Option<PathBuf>,
}

/// The token requests without one use, with its secret's hash.
struct DefaultToken {
    secret: String,
    hash: String,
}

impl DefaultToken {
    fn of(tokens: &AclTokens) -> Arc<DefaultToken> {
        let secret = tokens.default.clone().filter(|t| !t.is_empty()).unwrap_or_else(|| ANONYMOUS_TOKEN_SECRET.into());
        Arc::new(DefaultToken { hash: weft_server::join::secret_hash(&secret), secret })
    }
}

/// The file tokens set through the API are kept in.
const PERSISTED_TOKENS: &str = "acl-tokens.json";

impl AclState {
    pub fn new(config: &AclConfig, datacenter: &str, data_dir: &std::path::Path) -> AclState {
        let persist = config.enable_token_persistence.then(|| data_dir.join(PERSISTED_TOKENS));
        let mut tokens = config.tokens.clone();
        if let Some(saved) = persist.as_deref().and_then(|path| std::fs::read(path).ok()) {
            let saved: HashMap<String, String> = serde_json::from_slice(&saved).unwrap_or_default();
            tokens.default = saved.get("default").cloned().or(tokens.default);
            tokens.agent = saved.get("agent").cloned().or(tokens.agent);
        }
        AclState {
            config: config.clone(),
            datacenter: datacenter.to_owned(),
            cache: TokenCache::default(),
            default: RwLock::new(DefaultToken::of(&tokens)),
            default_generation: std::sync::atomic::AtomicU64::new(0),
            default_expires: std::sync::atomic::AtomicI64::new(i64::MAX),
            tokens: RwLock::new(tokens),
            persist,
        }
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// The token a login at start made (`acl { login }`) becomes the
    /// `default` and `agent` token where none is configured; it is never
    /// persisted (the agent logs in again when it starts).
    pub fn use_login_token(&self, secret: &str) {
        let mut tokens = self.tokens.write().unwrap_or_else(|p| p.into_inner());
        tokens.default.get_or_insert_with(|| secret.to_owned());
        tokens.agent.get_or_insert_with(|| secret.to_owned());
        self.replace_default(&tokens);
    }

    fn replace_default(&self, tokens: &AclTokens) {
        *self.default.write().unwrap_or_else(|p| p.into_inner()) = DefaultToken::of(tokens);
        self.default_generation.fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    /// Changes whenever the default token does, and when it expires (the
    /// flag: past the expiry it resolved with last).
    pub fn default_generation(&self) -> (u64, bool) {
        let expires = self.default_expires.load(std::sync::atomic::Ordering::Acquire);
        (self.default_generation.load(std::sync::atomic::Ordering::Acquire), unix_now() > expires)
    }

    /// Sets the `default` or `agent` token; kept across restarts with
    /// `enable_token_persistence`.
    pub fn set_token(&self, kind: TokenKind, secret: String) -> std::io::Result<()> {
        let mut tokens = self.tokens.write().unwrap_or_else(|p| p.into_inner());
        match kind {
            TokenKind::Default => tokens.default = Some(secret),
            TokenKind::Agent => tokens.agent = Some(secret),
        }
        self.replace_default(&tokens);
        let Some(path) = &self.persist else { return Ok(()) };
        let saved: HashMap<&str, &String> = [("default", &tokens.default), ("agent", &tokens.agent)]
            .into_iter()
            .filter_map(|(k, v)| Some((k, v.as_ref()?)))
            .collect();
        write_private(path, &serde_json::to_vec(&saved).unwrap_or_default())
    }
}

/// A resolved token: who the caller is and what it may do.
#[derive(Clone, Debug)]
pub struct Caller {
    /// ACLs are on (off: everything is allowed).
    pub enabled: bool,
    /// The SecretID as presented (or the default token's).
    pub secret: String,
    pub accessor_id: String,
    pub authorizer: Arc<Authorizer>,
    /// Seconds since the Unix epoch after which the token no longer resolves.
    pub expiration_time: Option<i64>,
}

pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

impl AclState {
    /// Resolves `secret` (empty: the default token, else the anonymous one)
    /// against `store`'s ACL tables.
    pub fn resolve(&self, store: &StateStore, secret: &str) -> Result<Caller, ResolveError> {
        if !self.enabled() {
            return Ok(Caller {
                enabled: false,
                secret: secret.to_owned(),
                accessor_id: String::new(),
                authorizer: Arc::new(Authorizer::allow_all()),
                expiration_time: None,
            });
        }
        let (secret, resolved) = match secret.is_empty() {
            true => {
                let default = self.default.read().unwrap_or_else(|p| p.into_inner()).clone();
                let resolved = self.resolve_hash(&store.read(), &default.hash, &default.secret);
                (default.secret.clone(), resolved)
            }
            false => {
                let hash = weft_server::join::secret_hash(secret);
                (secret.to_owned(), self.resolve_hash(&store.read(), &hash, secret))
            }
        };
        let resolved = resolved?;
        Ok(Caller {
            enabled: true,
            secret,
            accessor_id: resolved.accessor_id.clone(),
            authorizer: resolved.authorizer.clone(),
            expiration_time: resolved.expiration_time,
        })
    }

    /// What the default token (else the anonymous one) may do, for DNS,
    /// over `tables` (a read of the store the caller holds): from the cache
    /// of resolved tokens, with no hashing or copying.
    pub fn default_authorizer(&self, tables: &Tables) -> Result<Arc<Authorizer>, ResolveError> {
        if !self.enabled() {
            return Ok(Arc::new(Authorizer::allow_all()));
        }
        let default = self.default.read().unwrap_or_else(|p| p.into_inner()).clone();
        let resolved = self.resolve_hash(tables, &default.hash, &default.secret)?;
        let expires = resolved.expiration_time.unwrap_or(i64::MAX);
        self.default_expires.store(expires, std::sync::atomic::Ordering::Release);
        Ok(resolved.authorizer.clone())
    }

    /// The token whose secret (`secret`) hashes to `hash`, from the cache.
    fn resolve_hash(&self, tables: &Tables, hash: &str, secret: &str) -> Result<Arc<Resolved>, ResolveError> {
        let index = tables.index(Table::Acl).get();
        let resolved = self.cache.get(index, hash, unix_now(), || {
            weft_acl::resolve(tables.acl(), hash, &self.datacenter, self.config.default_policy)
        });
        match resolved {
            // Before the leader has written the anonymous token, anonymous
            // requests get the default policy, as they will after.
            Err(ResolveError::NotFound) if secret == ANONYMOUS_TOKEN_SECRET => Ok(Arc::new(Resolved {
                accessor_id: ANONYMOUS_TOKEN_ACCESSOR_ID.into(),
                management: false,
                expiration_time: None,
                authorizer: Arc::new(Authorizer::new(self.config.default_policy, [])),
            })),
            other => other,
        }
    }
}

/// How long an agent keeps trying to log in at start while the cluster
/// cannot take it (no leader yet, the method's keys not fetched).
const LOGIN_PATIENCE: std::time::Duration = std::time::Duration::from_secs(120);

/// Why the login an agent makes at start failed.
#[derive(Debug, thiserror::Error)]
pub enum StartLoginError {
    #[error("cannot read the bearer token {path}: {source}")]
    BearerToken { path: PathBuf, source: std::io::Error },
    #[error("ACL login with auth method {method:?} failed: {source}")]
    Refused { method: String, source: weft_server::login::LoginFailure },
}

/// Logs in with `login`'s auth method (`acl { login { ... } }`): the JWT
/// is read from its file, and the login retried while the cluster cannot
/// take it, for up to [`LOGIN_PATIENCE`]. A refusal is final.
pub async fn login_at_start(
    backend: &Backend,
    login: &AclLogin,
) -> Result<weft_server::login::LoginOutcome, StartLoginError> {
    let bearer = std::fs::read_to_string(&login.bearer_token_file)
        .map_err(|source| StartLoginError::BearerToken { path: login.bearer_token_file.clone(), source })?;
    let params = weft_server::login::LoginParams {
        auth_method: login.auth_method.clone(),
        bearer_token: bearer.trim().to_owned(),
        meta: login.meta.clone(),
    };
    let deadline = tokio::time::Instant::now() + LOGIN_PATIENCE;
    loop {
        let failure = match backend.login(&params).await {
            Ok(outcome) => {
                tracing::info!(method = %login.auth_method, accessor = %outcome.token.accessor_id, "logged in");
                return Ok(outcome);
            }
            Err(failure) => failure,
        };
        // At start, a method not made yet may be on its way (a Helm
        // chart's job makes it after the pods start).
        let retry = match &failure {
            weft_server::login::LoginFailure::Cluster(error) => error.is_transient(),
            weft_server::login::LoginFailure::Refused(weft_acl::login::LoginError::MethodNotFound(_)) => true,
            weft_server::login::LoginFailure::Refused(error) => error.is_transient(),
        };
        if !retry || tokio::time::Instant::now() >= deadline {
            return Err(StartLoginError::Refused { method: login.auth_method.clone(), source: failure });
        }
        tracing::warn!(error = %failure, "ACL login not possible yet; will retry");
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// The tokens `PUT /v1/agent/token/<kind>` sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    Default,
    Agent,
}

impl TokenKind {
    /// Consul's names, old and new.
    pub fn parse(kind: &str) -> Option<TokenKind> {
        match kind {
            "default" | "acl_token" => Some(TokenKind::Default),
            "agent" | "acl_agent_token" | "agent_recovery" | "acl_agent_master_token" | "agent_master" => {
                Some(TokenKind::Agent)
            }
            _ => None,
        }
    }
}

fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_kinds_take_consuls_old_and_new_names() {
        assert_eq!(TokenKind::parse("default"), Some(TokenKind::Default));
        assert_eq!(TokenKind::parse("acl_token"), Some(TokenKind::Default));
        assert_eq!(TokenKind::parse("agent_recovery"), Some(TokenKind::Agent));
        assert_eq!(TokenKind::parse("replication"), None);
    }
}

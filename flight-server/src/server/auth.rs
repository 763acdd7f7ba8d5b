//! Who is calling: Flight `Handshake` with `authorization: Basic ...`
//! answers a bearer token, and every other call must carry a valid,
//! unexpired one.
//!
//! Tokens are 256 random bits, held in memory only: a restart logs everyone
//! out, which is the safe failure. The map is keyed by the token's SHA-256,
//! so that looking a token up does not compare secrets byte by byte.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use seuil_engine::User;
use sha2::{Digest, Sha256};
use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::config::UserEntry;
use crate::passwords::hash_password;

use super::logins::Logins;
use crate::server::status::ServerError;

/// Standard base64, with or without padding: Go's Flight client (under ADBC)
/// sends Basic credentials unpadded, most others padded.
const BASIC: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The header Flight uses for both Basic credentials and bearer tokens.
pub const AUTHORIZATION: &str = "authorization";

/// An authenticated caller: the engine's user (name and role).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The user, with the role the configuration gives them.
    pub user: User,
}

struct TokenEntry {
    session: Session,
    expires: Instant,
}

/// Checks credentials and tokens. Cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    users: Arc<BTreeMap<String, UserEntry>>,
    tokens: Arc<Mutex<HashMap<[u8; 32], TokenEntry>>>,
    lifetime: Duration,
    /// Checked against for unknown users, so that an unknown name costs as
    /// long as a wrong password and names cannot be probed by timing.
    decoy_hash: Arc<str>,
    /// The bounded password checker.
    logins: Arc<Logins>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

fn token_key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// `Basic base64(user:password)` into its two parts.
fn parse_basic(value: &str) -> Result<(String, String), Status> {
    let malformed = || {
        Status::from(ServerError::Unauthenticated(
            "the authorization header is not `Basic <base64 of user:password>`".into(),
        ))
    };
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))
        .ok_or_else(malformed)?;
    let decoded = BASIC.decode(encoded.trim()).map_err(|_| malformed())?;
    let text = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (user, password) = text.split_once(':').ok_or_else(malformed)?;
    Ok((user.to_string(), password.to_string()))
}

impl Authenticator {
    /// An authenticator over the configured users; tokens live `lifetime`;
    /// passwords are checked on `login_threads` threads of their own
    /// ([`super::logins`]).
    pub fn new(
        users: BTreeMap<String, UserEntry>,
        lifetime: Duration,
        login_threads: usize,
    ) -> anyhow::Result<Self> {
        let decoy = hash_password(&hex::encode(rand::random::<[u8; 16]>()))?;
        let hashes = users
            .values()
            .map(|u| u.password_hash.as_str())
            .chain(std::iter::once(decoy.as_str()));
        let logins = Logins::new(login_threads, hashes)?;
        Ok(Self {
            users: Arc::new(users),
            tokens: Arc::new(Mutex::new(HashMap::new())),
            lifetime,
            decoy_hash: decoy.into(),
            logins: Arc::new(logins),
        })
    }

    /// Checks `Basic` credentials from `peer` and opens a session: returns a
    /// new bearer token. Addresses and names that failed too often wait
    /// out a backoff first, without a password check.
    pub async fn login(
        &self,
        authorization: Option<&str>,
        peer: Option<std::net::IpAddr>,
    ) -> Result<(String, Session), Status> {
        let header = authorization.ok_or_else(|| {
            Status::from(ServerError::Unauthenticated(
                "the Handshake needs an `authorization: Basic <base64 of user:password>` header"
                    .into(),
            ))
        })?;
        let (name, password) = parse_basic(header)?;
        self.logins.admit(peer, &name)?;
        let entry = self.users.get(&name).cloned();
        let hash: Arc<str> = entry.as_ref().map_or_else(
            || Arc::clone(&self.decoy_hash),
            |e| e.password_hash.as_str().into(),
        );
        let matches = self.logins.check(password, hash).await?;
        self.logins.record(peer, &name, matches && entry.is_some());
        let entry = match entry {
            Some(entry) if matches => entry,
            _ => {
                tracing::info!(user = %name, "authentication failed");
                return Err(Status::from(ServerError::Unauthenticated(
                    "invalid user name or password".into(),
                )));
            }
        };
        let token = hex::encode(rand::random::<[u8; 32]>());
        let session = Session {
            user: User::new(&name, &entry.role),
        };
        let now = Instant::now();
        let mut tokens = self.tokens.lock().map_err(|_| {
            Status::from(ServerError::Unavailable("the token store is unavailable"))
        })?;
        tokens.retain(|_, t| t.expires > now);
        tokens.insert(
            token_key(&token),
            TokenEntry {
                session: session.clone(),
                // A lifetime too large to represent never expires in practice.
                expires: now
                    .checked_add(self.lifetime)
                    .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 24 * 3600)),
            },
        );
        tracing::info!(user = %name, role = %entry.role, "authenticated");
        Ok((token, session))
    }

    /// The session of a call's bearer token.
    pub fn authenticate(&self, metadata: &MetadataMap) -> Result<Session, Status> {
        let Some(value) = metadata.get(AUTHORIZATION) else {
            return Err(Status::from(ServerError::Unauthenticated("authentication required: send a Flight Handshake with `authorization: Basic <base64 of user:password>`, then the bearer token it returns".into())));
        };
        let value = value.to_str().map_err(|_| {
            Status::from(ServerError::Unauthenticated(
                "the authorization header is not text".into(),
            ))
        })?;
        let Some(token) = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
        else {
            return Err(Status::from(ServerError::Unauthenticated("calls other than Handshake need `authorization: Bearer <token>`; get a token with a Handshake".into())));
        };
        let tokens = self.tokens.lock().map_err(|_| {
            Status::from(ServerError::Unavailable("the token store is unavailable"))
        })?;
        match tokens.get(&token_key(token.trim())) {
            None => Err(Status::from(ServerError::Unauthenticated(
                "invalid bearer token: authenticate again with a Handshake".into(),
            ))),
            Some(entry) if entry.expires <= Instant::now() => {
                Err(Status::from(ServerError::Unauthenticated(
                    "the bearer token has expired: authenticate again with a Handshake".into(),
                )))
            }
            Some(entry) => Ok(entry.session.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authenticator(lifetime: Duration) -> Authenticator {
        let users = BTreeMap::from([(
            "alice".to_string(),
            UserEntry {
                role: "researcher".into(),
                password_hash: hash_password("demo").unwrap(),
            },
        )]);
        Authenticator::new(users, lifetime, 1).unwrap()
    }

    fn basic(credentials: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        )
    }

    fn bearer(token: &str) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        metadata.insert(AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        metadata
    }

    #[tokio::test]
    async fn a_good_password_gives_a_token_that_authenticates() {
        let auth = authenticator(Duration::from_secs(60));
        let (token, session) = auth.login(Some(&basic("alice:demo")), None).await.unwrap();
        assert_eq!(token.len(), 64);
        assert_eq!(session.user, User::new("alice", "researcher"));
        assert_eq!(auth.authenticate(&bearer(&token)).unwrap(), session);
    }

    #[tokio::test]
    async fn unpadded_base64_is_accepted() {
        let auth = authenticator(Duration::from_secs(60));
        let unpadded = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode("alice:demo")
        );
        assert!(auth.login(Some(&unpadded), None).await.is_ok());
    }

    #[tokio::test]
    async fn bad_credentials_are_unauthenticated() {
        let auth = authenticator(Duration::from_secs(60));
        for header in [
            Some(basic("alice:wrong")),
            Some(basic("mallory:demo")),
            Some(basic("no colon")),
            Some("Basic !!!".to_string()),
            Some("Bearer abc".to_string()),
            None,
        ] {
            let status = auth.login(header.as_deref(), None).await.unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{header:?}");
        }
    }

    #[tokio::test]
    async fn expired_garbage_and_missing_tokens_are_unauthenticated() {
        let auth = authenticator(Duration::ZERO);
        let (token, _) = auth.login(Some(&basic("alice:demo")), None).await.unwrap();
        let expired = auth.authenticate(&bearer(&token)).unwrap_err();
        assert!(expired.message().contains("expired"));
        let garbage = auth.authenticate(&bearer("garbage")).unwrap_err();
        assert_eq!(garbage.code(), tonic::Code::Unauthenticated);
        let missing = auth.authenticate(&MetadataMap::new()).unwrap_err();
        assert_eq!(missing.code(), tonic::Code::Unauthenticated);
    }
}

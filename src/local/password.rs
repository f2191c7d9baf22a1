//! Passwords: argon2id hashes with OWASP's parameters, verified off the Tokio workers on a
//! bounded pool, and the strength rules a new password must meet.
//!
//! A hash is a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`): its parameters travel with it,
//! so raising them later rehashes each password at its owner's next sign-in
//! ([`Verified::needs_rehash`]).

use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

/// OWASP Password Storage Cheat Sheet (2025): argon2id, 19 MiB, 2 iterations, 1 lane.
const MEMORY_KIB: u32 = 19 * 1024;
const ITERATIONS: u32 = 2;
const LANES: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("the password pool is gone")]
    Pool,
}

fn argon2() -> Argon2<'static> {
    // The constants are valid parameters; `default()` is the fallback the type system wants.
    let params = Params::new(MEMORY_KIB, ITERATIONS, LANES, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// A verification's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub matches: bool,
    /// The stored hash uses other parameters than today's: store a new one.
    pub needs_rehash: bool,
}

/// Hashes and verifies on blocking threads, at most one fewer at a time than there are cores
/// (one on two cores): argon2 costs tens of milliseconds of CPU and must never stall the
/// workers that answer checks, so a core is always left to them. Sign-ins beyond that wait
/// their turn (asynchronously).
#[derive(Clone)]
pub struct PasswordPool {
    permits: Arc<Semaphore>,
    /// A real hash of a random password, verified when the account has none, so an unknown
    /// address costs the same as a known one.
    dummy: Arc<str>,
}

impl PasswordPool {
    pub fn new() -> Result<Self, PasswordError> {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        let permits = cores.saturating_sub(1).max(1);
        let mut random = [0u8; 32];
        getrandom::fill(&mut random).map_err(|e| PasswordError::Hash(e.to_string()))?;
        let dummy = hash_now(&SecretString::from(hex(&random)))?;
        Ok(Self {
            permits: Arc::new(Semaphore::new(permits)),
            dummy: dummy.into(),
        })
    }

    pub async fn hash(&self, password: SecretString) -> Result<String, PasswordError> {
        self.run(move || hash_now(&password)).await?
    }

    /// Verifies `password` against `stored`, or against the dummy hash when there is none
    /// (then it never matches).
    pub async fn verify(
        &self,
        password: SecretString,
        stored: Option<String>,
    ) -> Result<Verified, PasswordError> {
        let real = stored.is_some();
        let stored = stored.unwrap_or_else(|| self.dummy.to_string());
        let verified = self.run(move || verify_now(&password, &stored)).await?;
        Ok(Verified {
            matches: real && verified.matches,
            needs_rehash: real && verified.needs_rehash,
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| PasswordError::Pool)?;
        tokio::task::spawn_blocking(job)
            .await
            .map_err(|_| PasswordError::Pool)
    }
}

fn hash_now(password: &SecretString) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(password.expose_secret().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

fn verify_now(password: &SecretString, stored: &str) -> Verified {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return Verified {
            matches: false,
            needs_rehash: false,
        };
    };
    let matches = argon2()
        .verify_password(password.expose_secret().as_bytes(), &parsed)
        .is_ok();
    let current = Params::try_from(&parsed).ok().is_some_and(|p| {
        p.m_cost() == MEMORY_KIB && p.t_cost() == ITERATIONS && p.p_cost() == LANES
    }) && parsed.algorithm.as_str() == "argon2id";
    Verified {
        matches,
        needs_rehash: matches && !current,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a new password is refused (the page shows it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Weak {
    #[error("use at least {0} characters")]
    TooShort(usize),
    #[error("use at most 256 characters")]
    TooLong,
    #[error("do not use your email address or the product's name in your password")]
    Personal,
    #[error("this password is too easy to guess{0}")]
    Guessable(String),
}

/// Checks a new password: `min_length` characters, not the email (or its local part) or the
/// product's name, and a zxcvbn score of at least 3 ("safely unguessable").
pub fn check_strength(
    password: &str,
    email: &str,
    product: &str,
    min_length: usize,
) -> Result<(), Weak> {
    let length = password.chars().count();
    if length < min_length {
        return Err(Weak::TooShort(min_length));
    }
    if length > 256 {
        return Err(Weak::TooLong);
    }
    let lower = password.to_lowercase();
    let local_part = email.split('@').next().unwrap_or(email);
    let personal = [email, local_part, product]
        .iter()
        .map(|s| s.to_lowercase())
        .filter(|s| s.chars().count() >= 3)
        .any(|s| lower.contains(&s));
    if personal {
        return Err(Weak::Personal);
    }
    let entropy = zxcvbn::zxcvbn(password, &[email, local_part, product]);
    if u8::from(entropy.score()) < 3 {
        let hint = entropy
            .feedback()
            .and_then(|f| f.warning())
            .map(|w| format!(": {w}"))
            .unwrap_or_default();
        return Err(Weak::Guessable(hint));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strength_rules() {
        let email = "alice@acme.test";
        let cases: &[(&str, Result<(), ()>)] = &[
            ("short", Err(())),
            ("password1234", Err(())),
            ("aaaaaaaaaaaaaaaa", Err(())),
            ("alice@acme.test!!X9", Err(())),
            ("my-alice-secret-9Q", Err(())),
            ("gatehouse-is-great-71", Err(())),
            ("correct horse battery staple", Ok(())),
            ("vXq7-Lp2m!Rt9wZe", Ok(())),
        ];
        for (password, want) in cases {
            let got = check_strength(password, email, "gatehouse", 12).map_err(|_| ());
            assert_eq!(got, *want, "{password:?}");
        }
        assert_eq!(
            check_strength("short", email, "gatehouse", 12),
            Err(Weak::TooShort(12))
        );
        assert_eq!(
            check_strength(&"x".repeat(300), email, "gatehouse", 12),
            Err(Weak::TooLong)
        );
    }

    #[tokio::test]
    async fn hashes_verify_and_carry_their_parameters() {
        let pool = PasswordPool::new().unwrap();
        let hash = pool
            .hash(SecretString::from("correct horse battery staple"))
            .await
            .unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        let ok = pool
            .verify(
                SecretString::from("correct horse battery staple"),
                Some(hash.clone()),
            )
            .await
            .unwrap();
        assert_eq!(
            ok,
            Verified {
                matches: true,
                needs_rehash: false
            }
        );
        let wrong = pool
            .verify(SecretString::from("wrong"), Some(hash))
            .await
            .unwrap();
        assert!(!wrong.matches);
        // No stored hash: never matches, whatever is typed (the dummy's password included).
        let none = pool
            .verify(SecretString::from("anything"), None)
            .await
            .unwrap();
        assert!(!none.matches);
        // Weaker parameters than today's: matches, and asks for a rehash.
        let old = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8 * 1024, 1, 1, None).unwrap(),
        )
        .hash_password(b"pw-from-2024", &SaltString::generate(&mut OsRng))
        .unwrap()
        .to_string();
        let verified = pool
            .verify(SecretString::from("pw-from-2024"), Some(old))
            .await
            .unwrap();
        assert_eq!(
            verified,
            Verified {
                matches: true,
                needs_rehash: true
            }
        );
    }
}

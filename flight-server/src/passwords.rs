//! Password hashes: argon2id, in the PHC string format. They are verified
//! by the server's bounded checker ([`crate::server::logins`]).

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, SaltString};

/// Hashes a password with a random salt.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes)
        .map_err(|e| anyhow::anyhow!("cannot encode a salt: {e}"))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let hash = hash_password("demo").unwrap();
        let mut memory = vec![argon2::Block::default(); 19 * 1024];
        assert!(crate::server::logins::check_with_memory(
            "demo",
            &hash,
            &mut memory
        ));
        assert!(!crate::server::logins::check_with_memory(
            "Demo",
            &hash,
            &mut memory
        ));
    }
}

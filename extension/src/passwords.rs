//! Account passwords (`smsbus.set_password`, `smsbus._verify_password` in
//! sql/accounts.sql): salted argon2id hashes in PHC strings
//! (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`). The plain password is
//! hashed here and never stored; errors never quote it.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2};
use pgrx::prelude::*;

use crate::refuse;

/// The longest password accepted: a bound on what hashing costs.
const MAX_PASSWORD_CHARACTERS: usize = 1024;

/// What `set_password` stores for `password`: a new salted argon2id hash
/// of it, or, when it already is an argon2id PHC string (hashed by a
/// client so the plain text never reaches the server), that string.
#[pg_extern(volatile, parallel_safe)]
fn _password_hash(password: &str) -> String {
    if password.starts_with("$argon2") {
        return match PasswordHash::new(password) {
            Ok(hash) if hash.algorithm == Algorithm::Argon2id.ident() && hash.hash.is_some() => {
                hash.to_string()
            }
            _ => refuse(
                "a password starting with $argon2 must be a whole argon2id hash in PHC form".into(),
            ),
        };
    }
    if password.is_empty() {
        refuse("a password must not be empty".into());
    }
    if password.chars().count() > MAX_PASSWORD_CHARACTERS {
        refuse(format!(
            "a password must have at most {MAX_PASSWORD_CHARACTERS} characters"
        ));
    }
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .unwrap_or_else(|e| crate::internal(format!("hashing the password: {e}")))
        .to_string()
}

/// Whether `password` matches the stored `hash` (false for a hash that is
/// not a PHC string: no account logs in with a broken hash).
#[pg_extern(immutable, parallel_safe)]
fn _password_matches(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|hash| {
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    })
}

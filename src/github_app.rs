//! GitHub App authentication, the parts that need no network: the App's
//! private key, the JWT that proves to GitHub that a request comes from the
//! App (RS256), and when an installation token must be renewed. The adapter
//! (`github.rs`) sends the requests; everything here takes `now`.
//!
//! The JWT is signed with ring, which the TLS stack already builds: octocrab's
//! own App support would bring some forty crates more (jsonwebtoken and a
//! second RSA stack), and it reads the system clock, where funnelfix runs on
//! its own [`crate::clock::Clock`] so that tests and the demo can move time.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};

/// How far `iat` is set in the past, as GitHub advises, so that a clock a
/// little ahead of GitHub's does not make the JWT "issued in the future".
pub const JWT_BACKDATE: Duration = Duration::from_secs(60);
/// How long after signing the JWT expires. GitHub refuses `exp` more than ten
/// minutes after `iat`; with the backdate this is exactly ten.
pub const JWT_LIFETIME: Duration = Duration::from_secs(9 * 60);
/// An installation token (valid one hour) is renewed when less than this is
/// left: enough for a request and its retries to finish on a valid token.
pub const RENEW_BEFORE: Duration = Duration::from_secs(5 * 60);

/// The App's RSA private key. Its `Debug` shows the size only.
#[derive(Clone)]
pub struct AppKey {
    pair: Arc<RsaKeyPair>,
}

impl fmt::Debug for AppKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "AppKey(RSA {} bits)",
            self.pair.public().modulus_len() * 8
        )
    }
}

impl AppKey {
    /// Reads the `.pem` file GitHub gives when a private key is generated
    /// (PKCS#1, `BEGIN RSA PRIVATE KEY`), or a PKCS#8 one (`BEGIN PRIVATE KEY`).
    /// A PEM pasted into one line with `\n` escapes is read too. The error is
    /// one line and never quotes the key.
    pub fn from_pem(text: &str) -> Result<AppKey, String> {
        let unescaped;
        let text = if !text.trim().contains('\n') && text.contains("\\n") {
            unescaped = text.replace("\\n", "\n");
            unescaped.as_str()
        } else {
            text
        };
        let Some(start) = text.find("-----BEGIN ") else {
            return Err("is not a PEM private key (no -----BEGIN line)".into());
        };
        let after = &text[start + "-----BEGIN ".len()..];
        let Some((label, rest)) = after.split_once("-----") else {
            return Err("is not a PEM private key (a broken -----BEGIN line)".into());
        };
        let end = format!("-----END {label}-----");
        let Some((body, _)) = rest.split_once(&end) else {
            return Err(format!("is cut short: its {end} line is missing"));
        };
        let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map_err(|_| "is not a PEM private key (its body is not base64)".to_string())?;
        let pair = match label {
            "RSA PRIVATE KEY" => RsaKeyPair::from_der(&der),
            "PRIVATE KEY" => RsaKeyPair::from_pkcs8(&der),
            "ENCRYPTED PRIVATE KEY" => {
                return Err("is encrypted: use the unencrypted .pem GitHub gave you".into());
            }
            other => return Err(format!("is a {other}, not an RSA private key")),
        };
        pair.map(|pair| AppKey {
            pair: Arc::new(pair),
        })
        .map_err(|e| format!("is not a usable RSA private key ({e})"))
    }

    /// The public half, DER (PKCS#1 RSAPublicKey), as GitHub keeps it for the App.
    pub fn public_key_der(&self) -> Vec<u8> {
        self.pair.public().as_ref().to_vec()
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        let mut signature = vec![0; self.pair.public().modulus_len()];
        // PKCS#1 v1.5 is deterministic; the generator only blinds the key.
        let rng = ring::rand::SystemRandom::new();
        if self
            .pair
            .sign(&RSA_PKCS1_SHA256, &rng, message, &mut signature)
            .is_err()
        {
            // Only a buffer of the wrong length fails, and it is sized above.
            signature.clear();
        }
        signature
    }
}

/// The JWT that authenticates as App `app_id` at `now`: RS256, `iss` the
/// App's id, `iat` backdated, `exp` ten minutes after `iat`.
pub fn jwt(app_id: u64, key: &AppKey, now: DateTime<Utc>) -> String {
    let iat = now.timestamp() - JWT_BACKDATE.as_secs() as i64;
    let exp = now.timestamp() + JWT_LIFETIME.as_secs() as i64;
    sign_jwt(
        key,
        &serde_json::json!({"iat": iat, "exp": exp, "iss": app_id}),
    )
}

/// A JWT with these claims, RS256-signed with `key` (the tests make ones
/// GitHub refuses with it).
pub fn sign_jwt(key: &AppKey, claims: &serde_json::Value) -> String {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let header = b64(br#"{"alg":"RS256","typ":"JWT"}"#);
    let signed = format!("{header}.{}", b64(claims.to_string().as_bytes()));
    let signature = b64(&key.sign(signed.as_bytes()));
    format!("{signed}.{signature}")
}

/// Whether a token expiring at `expires_at` must be replaced before use at `now`.
pub fn needs_renewal(expires_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    let left = expires_at - now;
    left <= chrono::Duration::from_std(RENEW_BEFORE).unwrap_or_default()
}

/// A GitHub App's credentials, as the config and the environment give them.
#[derive(Debug, Clone)]
pub struct AppCredentials {
    pub app_id: u64,
    pub key: AppKey,
    /// Looked up from the repository when not configured.
    pub installation_id: Option<u64>,
    /// Where the key came from (`$VAR` or a path), for messages.
    pub key_source: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = include_str!("../tests/fixtures/github_app_key.pem");

    fn claims(token: &str) -> serde_json::Value {
        let part = token.split('.').nth(1).expect("three parts");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .expect("base64url");
        serde_json::from_slice(&bytes).expect("JSON claims")
    }

    #[test]
    fn the_jwt_is_rs256_with_githubs_lifetime() {
        let key = AppKey::from_pem(KEY).expect("the fixture is a key");
        let now: DateTime<Utc> = "2026-03-02T08:00:00Z".parse().expect("time");
        let token = jwt(1042, &key, now);
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[0])
            .expect("header");
        assert_eq!(header, br#"{"alg":"RS256","typ":"JWT"}"#);
        let c = claims(&token);
        assert_eq!(c["iss"], 1042);
        assert_eq!(c["iat"], now.timestamp() - 60);
        assert_eq!(
            c["exp"].as_i64().expect("exp") - c["iat"].as_i64().expect("iat"),
            600
        );
        let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[2])
            .expect("signature");
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            key.public_key_der(),
        );
        let signed = format!("{}.{}", parts[0], parts[1]);
        assert!(public.verify(signed.as_bytes(), &signature).is_ok());
    }

    #[test]
    fn a_key_pasted_on_one_line_reads_like_the_file() {
        let escaped = KEY.trim().replace('\n', "\\n");
        let a = AppKey::from_pem(&escaped).expect("escaped PEM");
        let b = AppKey::from_pem(KEY).expect("PEM");
        assert_eq!(a.public_key_der(), b.public_key_der());
    }

    #[test]
    fn bad_keys_are_named_without_quoting_them() {
        let cases = [
            (
                "ghp_not_a_key",
                "is not a PEM private key (no -----BEGIN line)",
            ),
            (
                "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
                "is a EC PRIVATE KEY, not an RSA private key",
            ),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nMIIE",
                "is cut short: its -----END RSA PRIVATE KEY----- line is missing",
            ),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
                "is not a usable RSA private key (InvalidEncoding)",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(AppKey::from_pem(text).expect_err(text), expected);
        }
        let key = AppKey::from_pem(KEY).expect("key");
        assert_eq!(format!("{key:?}"), "AppKey(RSA 2048 bits)");
    }

    #[test]
    fn tokens_are_renewed_five_minutes_before_they_expire() {
        let expires: DateTime<Utc> = "2026-03-02T09:00:00Z".parse().expect("time");
        let at = |t: &str| t.parse::<DateTime<Utc>>().expect("time");
        assert!(!needs_renewal(expires, at("2026-03-02T08:00:00Z")));
        assert!(!needs_renewal(expires, at("2026-03-02T08:54:59Z")));
        assert!(needs_renewal(expires, at("2026-03-02T08:55:00Z")));
        assert!(needs_renewal(expires, at("2026-03-02T09:30:00Z")));
    }
}

//! The GitHub twin's side of GitHub App authentication: the App registered
//! with its public key, the JWT checks GitHub makes (with its error texts),
//! and the installation tokens it hands out, valid one hour on the twin's
//! clock.

use base64::Engine;
use chrono::{DateTime, Utc};
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use serde_json::Value;

/// An App as registered on GitHub: what the twin knows of it.
#[derive(Debug, Clone)]
pub struct TwinApp {
    pub id: u64,
    /// The App's URL name; its commits and PRs come from `<slug>[bot]`.
    pub slug: String,
    /// DER (PKCS#1 RSAPublicKey) of the key pair the App's owner generated.
    pub public_key_der: Vec<u8>,
    /// Its installation on the twin's repository, if installed.
    pub installation_id: Option<u64>,
}

impl TwinApp {
    /// The login GitHub shows for what the App does.
    pub fn bot_login(&self) -> String {
        format!("{}[bot]", self.slug)
    }
}

/// GitHub's 401 texts for a JWT it will not take.
pub const UNDECODABLE: &str = "A JSON web token could not be decoded";
pub const EXP_TOO_FAR: &str = "'Expiration time' claim ('exp') is too far in the future";
pub const EXPIRED: &str = "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires";
pub const IAT_INVALID: &str = "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued";
pub const ISS_INVALID: &str = "'Issuer' claim ('iss') must be an Integer";

/// GitHub's longest JWT lifetime, `exp` − `iat`, and how far ahead of its
/// clock `exp` may be.
const MAX_LIFETIME_SECS: i64 = 600;

/// An installation token as handed out.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

/// Checks `jwt` as GitHub does for `app` at `now`: RS256 signed by the App's
/// key, issued by it, not yet expired, and living at most ten minutes.
/// The error is GitHub's message.
pub fn verify_jwt(jwt: &str, app: &TwinApp, now: DateTime<Utc>) -> Result<(), &'static str> {
    let parts: Vec<&str> = jwt.split('.').collect();
    let [header, claims, signature] = parts.as_slice() else {
        return Err(UNDECODABLE);
    };
    let decode = |part: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part.trim_end_matches('='))
            .ok()
    };
    let json = |part: &str| decode(part).and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    let (Some(header), Some(claims), Some(signature)) =
        (json(header), json(claims), decode(signature))
    else {
        return Err(UNDECODABLE);
    };
    if header["alg"] != "RS256" {
        return Err(UNDECODABLE);
    }
    let iss = match &claims["iss"] {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse::<u64>().ok(),
        _ => None,
    };
    let Some(iss) = iss else {
        return Err(ISS_INVALID);
    };
    let signed = &jwt[..jwt.len() - parts[2].len() - 1];
    let key = UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &app.public_key_der);
    if iss != app.id || key.verify(signed.as_bytes(), &signature).is_err() {
        return Err(UNDECODABLE);
    }
    let now = now.timestamp();
    let Some(iat) = claims["iat"].as_i64().filter(|iat| *iat <= now) else {
        return Err(IAT_INVALID);
    };
    let Some(exp) = claims["exp"].as_i64().filter(|exp| *exp > now) else {
        return Err(EXPIRED);
    };
    if exp - iat > MAX_LIFETIME_SECS || exp - now > MAX_LIFETIME_SECS {
        return Err(EXP_TOO_FAR);
    }
    Ok(())
}

/// A new `ghs_` token (40 characters, like GitHub's), numbered `n`.
pub fn new_token(app: &TwinApp, n: u64, now: DateTime<Utc>) -> IssuedToken {
    let seed = format!("{}:{n}:{}", app.id, now.timestamp_millis());
    let digest = super::github::hash(&[seed.as_bytes()]);
    IssuedToken {
        token: format!("ghs_{}", &digest[..36]),
        expires_at: now + chrono::Duration::hours(1),
    }
}

/// What an installation token may do, as the mint answer lists it.
pub fn permissions() -> Value {
    serde_json::json!({
        "contents": "write", "pull_requests": "write",
        "checks": "read", "statuses": "read", "metadata": "read",
    })
}

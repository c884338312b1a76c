//! The dashboard's login: a person gives the read token once in a form,
//! and gets a cookie that proves it for a while. The cookie holds its
//! expiry and an HMAC of it keyed with the token's digest, so that any
//! server given the same token file accepts it (servers keep no state),
//! and a new token ends every session. A token is never taken from a URL,
//! where it would end up in logs and browser histories.

use hmac::{KeyInit as _, Mac as _};

pub const COOKIE: &str = "kiln_session";
/// How long a login lasts.
pub const LIFETIME_SECS: u64 = 12 * 3600;
/// Binds the MAC to this use of the token digest.
const CONTEXT: &[u8] = b"kiln dashboard session v1\n";

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

fn mac(key: &[u8; 32], expires: u64) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(key).expect("any key length");
    m.update(CONTEXT);
    m.update(expires.to_string().as_bytes());
    m
}

/// A cookie value valid until `now` + [`LIFETIME_SECS`].
pub fn issue(key: &[u8; 32], now: u64) -> String {
    let expires = now + LIFETIME_SECS;
    let tag = mac(key, expires).finalize().into_bytes();
    format!("{expires}.{}", hex::encode(tag))
}

/// Whether `value` is a cookie [`issue`] made with `key` that has not
/// expired. The tag is compared in constant time.
pub fn valid(key: &[u8; 32], value: &str, now: u64) -> bool {
    let Some((expires, tag)) = value.split_once('.') else {
        return false;
    };
    let (Ok(expires), Ok(tag)) = (expires.parse::<u64>(), hex::decode(tag)) else {
        return false;
    };
    expires > now
        && expires <= now.saturating_add(LIFETIME_SECS)
        && mac(key, expires).verify_slice(&tag).is_ok()
}

/// The value of cookie `name` in a `Cookie:` header.
pub fn find<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// The `Set-Cookie` value that logs in; `secure` over HTTPS.
pub fn set_cookie(value: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={value}; Path=/; Max-Age={LIFETIME_SECS}; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that logs out.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

/// Where to go after logging in: only a path of this server, never
/// another site (`//host` or a scheme would leave it).
pub fn safe_next(next: &str) -> &str {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\')
        && !next.chars().any(char::is_control)
        && !next.starts_with("/login");
    if ok { next } else { "/fleet" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_holds_until_it_expires_and_only_under_its_key() {
        let key = [7u8; 32];
        let c = issue(&key, 1000);
        assert!(valid(&key, &c, 1000));
        assert!(valid(&key, &c, 1000 + LIFETIME_SECS - 1));
        assert!(!valid(&key, &c, 1000 + LIFETIME_SECS));
        assert!(!valid(&[8u8; 32], &c, 1000), "another token's key");
        let (exp, tag) = c.split_once('.').unwrap();
        let later = format!("{}.{tag}", exp.parse::<u64>().unwrap() + 3600);
        assert!(!valid(&key, &later, 1000), "an expiry moved by hand");
        for bad in ["", ".", "x.y", "1000", &format!("{exp}.00")] {
            assert!(!valid(&key, bad, 1000), "{bad:?}");
        }
    }

    #[test]
    fn cookies_are_found_by_name_and_next_stays_on_this_server() {
        assert_eq!(find("a=1; kiln_session=v.x; b=2", COOKIE), Some("v.x"));
        assert_eq!(find("xkiln_session=v", COOKIE), None);
        assert_eq!(safe_next("/host?name=a"), "/host?name=a");
        for bad in [
            "//evil.example/",
            "https://evil.example/",
            "/\\evil",
            "fleet",
            "/login",
        ] {
            assert_eq!(safe_next(bad), "/fleet", "{bad}");
        }
        assert!(set_cookie("v", true).ends_with("; Secure"));
        assert!(set_cookie("v", false).contains("HttpOnly; SameSite=Strict"));
    }
}

//! Signatures on REST providers' webhooks, checked before a report or an
//! inbound message is stored (docs/provider-apis.md has the sources).
//!
//! - Twilio: `X-Twilio-Signature`, Base64 of HMAC-SHA1 keyed with the
//!   account's auth token over the full URL followed by the form
//!   parameters sorted by name, each name then its value. Twilio's own
//!   validator accepts the URL with and without the scheme's default
//!   port, since Twilio signs either.
//! - Vonage's SMS API: a `sig` parameter over the other parameters sorted
//!   by name as `&name=value...` (`&` and `=` in values replaced by `_`),
//!   either MD5 of that string followed by the signature secret ("MD5
//!   hash", the default) or an HMAC of it with the secret, hex.
//!
//! Every comparison runs in constant time.

use std::fmt;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use subtle::ConstantTimeEq;

/// Form parameters as they arrived (decoded), in any order; a name may
/// come more than once.
pub type Params<'a> = [(&'a str, &'a str)];

/// Whether `signature` (the `X-Twilio-Signature` header) signs a request
/// to `url` with form parameters `params`, under `auth_token`.
pub fn twilio_valid(auth_token: &str, url: &str, params: &Params<'_>, signature: &str) -> bool {
    url_variants(url).iter().any(|url| {
        bool::from(
            twilio_signature(auth_token, url, params)
                .as_bytes()
                .ct_eq(signature.as_bytes()),
        )
    })
}

/// The `X-Twilio-Signature` of a request (for the provider simulator).
pub fn twilio_signature(auth_token: &str, url: &str, params: &Params<'_>) -> String {
    let mut sorted: Vec<(&str, &str)> = params.to_vec();
    // By name, then by value for a name that repeats, as Twilio's SDKs do.
    sorted.sort();
    let mut signed = url.to_owned();
    for (name, value) in sorted {
        signed.push_str(name);
        signed.push_str(value);
    }
    let mut mac = <Hmac<sha1::Sha1>>::new_from_slice(auth_token.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(signed.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// `url` as given, and with the scheme's default port added or taken
/// away.
fn url_variants(url: &str) -> Vec<String> {
    let mut variants = vec![url.to_owned()];
    let Some((scheme, rest)) = url.split_once("://") else {
        return variants;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" => "443",
        "http" => "80",
        _ => return variants,
    };
    let (authority, path) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let with_port = format!(":{default_port}");
    match authority.strip_suffix(&with_port) {
        Some(host) => variants.push(format!("{scheme}://{host}{path}")),
        None if !authority.contains(':') => {
            variants.push(format!("{scheme}://{authority}{with_port}{path}"))
        }
        None => {}
    }
    variants
}

/// How a Vonage account signs (its dashboard's choice).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VonageMethod {
    /// MD5 of the string followed by the secret: "MD5 hash".
    Md5Hash,
    /// HMAC-MD5.
    Md5,
    Sha1,
    Sha256,
    Sha512,
}

impl fmt::Display for VonageMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VonageMethod::Md5Hash => "md5hash",
            VonageMethod::Md5 => "md5",
            VonageMethod::Sha1 => "sha1",
            VonageMethod::Sha256 => "sha256",
            VonageMethod::Sha512 => "sha512",
        })
    }
}

/// Whether the `sig` among `params` signs the others under `secret`.
/// Hex either case, as Vonage's examples use upper case and its SDK lower.
pub fn vonage_valid(secret: &str, method: VonageMethod, params: &Params<'_>) -> bool {
    let mut sigs = params.iter().filter(|(name, _)| *name == "sig");
    let (Some((_, sig)), None) = (sigs.next(), sigs.next()) else {
        return false;
    };
    let expected = vonage_signature(secret, method, params);
    bool::from(
        expected
            .as_bytes()
            .ct_eq(sig.to_ascii_lowercase().as_bytes()),
    )
}

/// The `sig` of `params` (those named `sig` left out), lower-case hex.
pub fn vonage_signature(secret: &str, method: VonageMethod, params: &Params<'_>) -> String {
    let mut sorted: Vec<(&str, &str)> = params
        .iter()
        .copied()
        .filter(|(name, _)| *name != "sig")
        .collect();
    sorted.sort();
    let mut signed = String::new();
    for (name, value) in sorted {
        signed.push('&');
        signed.push_str(name);
        signed.push('=');
        signed.extend(
            value
                .chars()
                .map(|c| if c == '&' || c == '=' { '_' } else { c }),
        );
    }
    fn hmac<D: hmac::EagerHash>(secret: &str, signed: &str) -> Vec<u8> {
        let mut mac =
            <Hmac<D>>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
        mac.update(signed.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
    let digest = match method {
        VonageMethod::Md5Hash => {
            use md5::Digest;
            md5::Md5::digest(format!("{signed}{secret}").as_bytes()).to_vec()
        }
        VonageMethod::Md5 => hmac::<md5::Md5>(secret, &signed),
        VonageMethod::Sha1 => hmac::<sha1::Sha1>(secret, &signed),
        VonageMethod::Sha256 => hmac::<sha2::Sha256>(secret, &signed),
        VonageMethod::Sha512 => hmac::<sha2::Sha512>(secret, &signed),
    };
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Twilio's documented example (twilio.com/docs/usage/security, and
    /// twilio-python's tests/unit/test_request_validator.py).
    const TWILIO_URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
    const TWILIO_PARAMS: [(&str, &str); 5] = [
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+14158675309"),
        ("Digits", "1234"),
        ("From", "+14158675309"),
        ("To", "+18005551212"),
    ];

    #[test]
    fn twilio_documented_example() {
        assert_eq!(
            twilio_signature("12345", TWILIO_URL, &TWILIO_PARAMS),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
        assert!(twilio_valid(
            "12345",
            TWILIO_URL,
            &TWILIO_PARAMS,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
    }

    #[test]
    fn twilio_ports_as_its_sdk_validates_them() {
        // twilio-python's vectors for the same request with ports.
        let with_443 = "https://mycompany.com:443/myapp.php?foo=1&bar=2";
        assert_eq!(
            twilio_signature("12345", with_443, &TWILIO_PARAMS),
            "kvajT1Ptam85bY51eRf/AJRuM3w="
        );
        assert_eq!(
            twilio_signature(
                "12345",
                "http://mycompany.com:80/myapp.php?foo=1&bar=2",
                &TWILIO_PARAMS
            ),
            "0ZXoZLH/DfblKGATFgpif+LLRf4="
        );
        assert_eq!(
            twilio_signature(
                "12345",
                "http://mycompany.com:1234/myapp.php?foo=1&bar=2",
                &TWILIO_PARAMS
            ),
            "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="
        );
        // Signed with the default port, checked without it, and the other
        // way round.
        assert!(twilio_valid(
            "12345",
            TWILIO_URL,
            &TWILIO_PARAMS,
            "kvajT1Ptam85bY51eRf/AJRuM3w="
        ));
        assert!(twilio_valid(
            "12345",
            with_443,
            &TWILIO_PARAMS,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
    }

    #[test]
    fn twilio_refuses_what_was_changed() {
        let good = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";
        assert!(!twilio_valid("12346", TWILIO_URL, &TWILIO_PARAMS, good));
        assert!(!twilio_valid(
            "12345",
            "https://mycompany.com/myapp.php?foo=1&bar=3",
            &TWILIO_PARAMS,
            good
        ));
        let mut changed = TWILIO_PARAMS;
        changed[2].1 = "1235";
        assert!(!twilio_valid("12345", TWILIO_URL, &changed, good));
        assert!(!twilio_valid("12345", TWILIO_URL, &TWILIO_PARAMS, ""));
        assert!(!twilio_valid(
            "12345",
            TWILIO_URL,
            &TWILIO_PARAMS,
            "rsoydt4t1cutdk1pdd93/vvr8b8="
        ));
        // Order of arrival does not matter; the sort does.
        let mut shuffled = TWILIO_PARAMS;
        shuffled.reverse();
        assert!(twilio_valid("12345", TWILIO_URL, &shuffled, good));
    }

    #[test]
    fn url_variants_add_or_drop_only_the_default_port() {
        assert_eq!(
            url_variants("https://a.example/x?y=1"),
            ["https://a.example/x?y=1", "https://a.example:443/x?y=1"]
        );
        assert_eq!(
            url_variants("http://a.example:80"),
            ["http://a.example:80", "http://a.example"]
        );
        assert_eq!(
            url_variants("https://a.example:8443/x"),
            ["https://a.example:8443/x"]
        );
        assert_eq!(url_variants("not a url"), ["not a url"]);
    }

    /// vonage-python-sdk's http_client/tests/test_auth.py (secret
    /// "signature_secret").
    const VONAGE_SECRET: &str = "signature_secret";

    #[test]
    fn vonage_sdk_vectors() {
        let params = [
            ("param1", "value1"),
            ("param2", "value2"),
            ("timestamp", "1234567890"),
        ];
        assert_eq!(
            vonage_signature(VONAGE_SECRET, VonageMethod::Sha256, &params),
            "280c4320703dbc98bfa22db676655ed2acfbfe8792b062ff7622e67f1183c287"
        );
        assert_eq!(
            vonage_signature(VONAGE_SECRET, VonageMethod::Md5, &params),
            "724c2bf6ca423c36e20631b11d1c5753"
        );
        let escaped = [
            ("param1", "value&1"),
            ("param2", "value=2"),
            ("timestamp", "1234567890"),
        ];
        assert_eq!(
            vonage_signature(VONAGE_SECRET, VonageMethod::Md5, &escaped),
            "2bbf0abafb2c55e5af6231513896a2ac"
        );
        assert_eq!(
            vonage_signature(
                VONAGE_SECRET,
                VonageMethod::Md5,
                &[("param", "value"), ("timestamp", "1234567890")]
            ),
            "655a4d0b7f064dff438defc52b012cf5"
        );
        // The documented "MD5 hash": md5 of the string then the secret.
        assert_eq!(
            vonage_signature(VONAGE_SECRET, VonageMethod::Md5Hash, &params),
            "d72f75ac8cda9bbce891c4fa62bee6cd"
        );
    }

    #[test]
    fn vonage_checks_sig_in_either_case_and_only_one() {
        let signed = [("a", "1"), ("timestamp", "1234567890")];
        let sig = vonage_signature(VONAGE_SECRET, VonageMethod::Md5Hash, &signed);
        let upper = sig.to_ascii_uppercase();
        for sig in [sig.as_str(), upper.as_str()] {
            let params = [("a", "1"), ("sig", sig), ("timestamp", "1234567890")];
            assert!(vonage_valid(VONAGE_SECRET, VonageMethod::Md5Hash, &params));
            assert!(!vonage_valid("other", VonageMethod::Md5Hash, &params));
            assert!(!vonage_valid(VONAGE_SECRET, VonageMethod::Sha256, &params));
        }
        assert!(
            !vonage_valid(VONAGE_SECRET, VonageMethod::Md5Hash, &signed),
            "no sig"
        );
        let twice = [
            ("a", "1"),
            ("sig", sig_of(&signed)),
            ("sig", sig_of(&signed)),
            ("timestamp", "1234567890"),
        ];
        assert!(
            !vonage_valid(VONAGE_SECRET, VonageMethod::Md5Hash, &twice),
            "two sigs"
        );
        let tampered = [
            ("a", "2"),
            ("sig", sig_of(&signed)),
            ("timestamp", "1234567890"),
        ];
        assert!(!vonage_valid(
            VONAGE_SECRET,
            VonageMethod::Md5Hash,
            &tampered
        ));
    }

    fn sig_of(params: &Params<'_>) -> &'static str {
        Box::leak(vonage_signature(VONAGE_SECRET, VonageMethod::Md5Hash, params).into_boxed_str())
    }
}

//! Identifier rules of the spec and libcni (pkg/utils). cnichain applies them on every
//! verb, not only ADD, because they become file names (cache, IPAM store).

use super::error::{CniError, INVALID_CONFIG, INVALID_ENV, UNKNOWN_CONTAINER};

/// `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`
fn matches_id_regex(s: &str) -> bool {
    let mut bytes = s.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

pub fn validate_container_id(id: &str) -> Result<(), CniError> {
    if id.is_empty() {
        return Err(CniError::new(
            UNKNOWN_CONTAINER,
            "missing containerID (CNI_CONTAINERID)",
        ));
    }
    if !matches_id_regex(id) {
        return Err(CniError::new(
            INVALID_ENV,
            format!(
                "invalid characters in containerID (CNI_CONTAINERID) {id:?}: must match ^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$"
            ),
        ));
    }
    Ok(())
}

pub fn validate_network_name(name: &str) -> Result<(), CniError> {
    if name.is_empty() {
        return Err(CniError::new(INVALID_CONFIG, "missing network name (\"name\")"));
    }
    if !matches_id_regex(name) {
        return Err(CniError::new(
            INVALID_CONFIG,
            format!(
                "invalid characters in network name (\"name\") {name:?}: must match ^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$"
            ),
        ));
    }
    Ok(())
}

/// Linux interface name rules as libcni checks them: 1-15 bytes, not "." or "..",
/// no '/', ':' or whitespace.
pub fn validate_ifname(name: &str) -> Result<(), CniError> {
    let bad = |why: &str| {
        Err(CniError::new(
            INVALID_ENV,
            format!("interface name (CNI_IFNAME) {name:?} {why}"),
        ))
    };
    if name.is_empty() {
        return bad("is empty");
    }
    if name.len() > 15 {
        return bad("is longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return bad("is not a valid name");
    }
    for c in name.chars() {
        if c == '/' || c == ':' || c.is_whitespace() || c == '\0' {
            return bad(&format!("contains an invalid character {c:?}"));
        }
    }
    Ok(())
}

/// A plugin `type` or `ipam.type` is a file name in CNI_PATH, never a path
/// (CVE-2021-20206). `field` names the key in messages.
pub fn validate_plugin_type(t: &str, field: &str) -> Result<(), CniError> {
    let bad = |why: &str| {
        Err(CniError::new(
            INVALID_CONFIG,
            format!("invalid plugin {field} {t:?}: {why}"),
        ))
    };
    if t.is_empty() {
        return bad("must not be empty");
    }
    if t == "." || t == ".." {
        return bad("must not be . or ..");
    }
    if t.contains('/') || t.contains('\\') || t.contains('\0') {
        return bad("must not contain path separators or NUL");
    }
    if t.len() > 255 {
        return bad("is longer than 255 bytes");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids() {
        let table: &[(&str, Option<u32>)] = &[
            ("abc", None),
            ("a1_b.c-d", None),
            ("0", None),
            ("", Some(3)),
            ("-a", Some(4)),
            ("_a", Some(4)),
            ("a/b", Some(4)),
            ("a b", Some(4)),
            ("a;b", Some(4)),
            ("ä", Some(4)),
        ];
        for (id, code) in table {
            assert_eq!(validate_container_id(id).err().map(|e| e.code), *code, "{id:?}");
        }
    }

    #[test]
    fn network_names() {
        assert!(validate_network_name("net-1.a_b").is_ok());
        for bad in ["", ".hidden", "a/b", "../x", "a b", "a\nb"] {
            let e = validate_network_name(bad).unwrap_err();
            assert_eq!(e.code, 7, "{bad:?}");
            assert!(e.msg.contains("name"));
        }
    }

    #[test]
    fn ifnames() {
        let table: &[(&str, bool)] = &[
            ("eth0", true),
            ("123456789012345", true),
            ("1234567890123456", false),
            ("", false),
            (".", false),
            ("..", false),
            ("a/b", false),
            ("a:b", false),
            ("a b", false),
            ("a\tb", false),
            ("a\u{a0}b", false),
            ("ééééééééé", false), // 18 bytes
        ];
        for (n, ok) in table {
            let r = validate_ifname(n);
            assert_eq!(r.is_ok(), *ok, "{n:?}");
            if let Err(e) = r {
                assert_eq!(e.code, 4);
                assert!(e.msg.contains("CNI_IFNAME"));
            }
        }
    }

    #[test]
    fn plugin_types() {
        assert!(validate_plugin_type("bridge", "type").is_ok());
        for bad in ["", ".", "..", "../../sbin/reboot", "a\\b", "/bin/sh", "a\0b"] {
            let e = validate_plugin_type(bad, "type").unwrap_err();
            assert_eq!(e.code, 7);
            assert!(e.msg.contains("type"), "{}", e.msg);
        }
    }
}

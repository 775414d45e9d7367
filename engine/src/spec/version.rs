//! Spec versions: parsing, comparison, the supported set, and which result family a
//! version belongs to.

use super::error::CniError;
use std::cmp::Ordering;

/// Every spec version cnichain speaks, oldest first.
pub const SUPPORTED: &[&str] = &["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// The newest spec version implemented.
pub const CURRENT: &str = "1.1.0";

/// (major, minor, micro). "" means 0.1.0, as in libcni; at most three numeric parts.
pub fn parse(v: &str) -> Result<(u64, u64, u64), CniError> {
    if v.is_empty() {
        return Ok((0, 1, 0));
    }
    let parts: Vec<&str> = v.split('.').collect();
    if parts.len() > 3 {
        return Err(CniError::version(format!("invalid version {v:?}: too many parts")));
    }
    let num = |s: &str| -> Result<u64, CniError> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || s.len() > 9 {
            return Err(CniError::version(format!(
                "invalid version {v:?}: part {s:?} is not a number"
            )));
        }
        s.parse::<u64>()
            .map_err(|_| CniError::version(format!("invalid version {v:?}")))
    };
    let major = num(parts[0])?;
    let minor = if parts.len() > 1 { num(parts[1])? } else { 0 };
    let micro = if parts.len() > 2 { num(parts[2])? } else { 0 };
    Ok((major, minor, micro))
}

pub fn compare(a: &str, b: &str) -> Result<Ordering, CniError> {
    Ok(parse(a)?.cmp(&parse(b)?))
}

/// a >= b
pub fn at_least(a: &str, b: &str) -> Result<bool, CniError> {
    Ok(compare(a, b)? != Ordering::Less)
}

pub fn is_supported(v: &str) -> bool {
    SUPPORTED.contains(&v)
}

/// The three result layouts of the spec's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// 0.1.0, 0.2.0: ip4 / ip6 objects
    V02,
    /// 0.3.0, 0.3.1, 0.4.0: interfaces, ips with "version"
    V04,
    /// 1.0.0, 1.1.0
    V1,
}

/// Exact-string match like libcni's result factories: "1.0" is not "1.0.0".
pub fn family(v: &str) -> Result<Family, CniError> {
    match v {
        "0.1.0" | "0.2.0" | "" => Ok(Family::V02),
        "0.3.0" | "0.3.1" | "0.4.0" => Ok(Family::V04),
        "1.0.0" | "1.1.0" => Ok(Family::V1),
        other => Err(CniError::version(format!("unsupported CNI result version {other:?}"))),
    }
}

/// Version selection of a conflist (spec 1.1 / libcni NetworkConfFromBytes): the highest
/// of `cniVersion` and those `cniVersions` entries that are not newer than CURRENT.
/// An unparsable entry is an error; an empty list falls back to `cniVersion`.
pub fn select(cni_version: &str, cni_versions: &[String]) -> Result<String, CniError> {
    let mut best = cni_version.to_string();
    for v in cni_versions {
        parse(v).map_err(|e| CniError::invalid_config(format!("cniVersions: {}", e.msg)))?;
        if compare(v, CURRENT)? == Ordering::Greater {
            continue;
        }
        if compare(v, &best).unwrap_or(Ordering::Greater) == Ordering::Greater {
            best = v.clone();
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_libcni() {
        assert_eq!(parse("").unwrap(), (0, 1, 0));
        assert_eq!(parse("1").unwrap(), (1, 0, 0));
        assert_eq!(parse("0.4.0").unwrap(), (0, 4, 0));
        assert!(parse("1.0.0.0").is_err());
        assert!(parse("a.b").is_err());
        assert!(parse("1..0").is_err());
        assert!(parse("-1.0.0").is_err());
    }

    #[test]
    fn compares() {
        assert!(at_least("1.0.0", "0.4.0").unwrap());
        assert!(at_least("0.4.0", "0.4.0").unwrap());
        assert!(!at_least("0.3.1", "0.4.0").unwrap());
        assert!(at_least("0.10.0", "0.4.0").unwrap());
    }

    #[test]
    fn selects_highest_supported() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(select("1.0.0", &v(&["0.4.0", "1.1.0"])).unwrap(), "1.1.0");
        assert_eq!(select("1.0.0", &v(&["1.1.0", "2.0.0"])).unwrap(), "1.1.0");
        assert_eq!(select("0.4.0", &[]).unwrap(), "0.4.0");
        // libcni keeps an unsupported cniVersion when cniVersions is empty
        assert_eq!(select("9.9.9", &[]).unwrap(), "9.9.9");
        assert_eq!(select("", &v(&["0.3.1"])).unwrap(), "0.3.1");
        assert!(select("1.0.0", &v(&["x"])).is_err());
    }

    #[test]
    fn families() {
        assert_eq!(family("0.2.0").unwrap(), Family::V02);
        assert_eq!(family("0.3.1").unwrap(), Family::V04);
        assert_eq!(family("1.1.0").unwrap(), Family::V1);
        assert!(family("1.0").is_err());
    }
}

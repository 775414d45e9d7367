//! DNS settings from a resolv.conf file (host-local's `resolvConf`), read as the
//! reference reads it: `nameserver` (first value), `domain` (last one wins), `search` and
//! `options` (all values, accumulated); comments (`#`, `;`) and short lines skipped.

use cnichain_engine::spec::error::{CniError, IO_FAILURE};
use cnichain_engine::spec::result::Dns;

pub fn parse_file(path: &str, field: &str) -> Result<Dns, CniError> {
    let bytes = std::fs::read(path).map_err(|e| CniError::new(IO_FAILURE, format!("{field}: open {path}: {e}")))?;
    Ok(parse(&String::from_utf8_lossy(&bytes)))
}

pub fn parse(text: &str) -> Dns {
    let mut dns = Dns::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 2 {
            continue;
        }
        match fields[0] {
            "nameserver" => dns.nameservers.push(fields[1].to_string()),
            "domain" => dns.domain = fields[1].to_string(),
            "search" => dns.search.extend(fields[1..].iter().map(|s| s.to_string())),
            "options" => dns.options.extend(fields[1..].iter().map(|s| s.to_string())),
            _ => {}
        }
    }
    dns
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipam_resolv_conf_like_the_reference() {
        let d = parse(
            "# comment\n; other\nnameserver 1.1.1.1\nnameserver   8.8.8.8 extra\r\n\tdomain a.example\n\
             domain b.example\nsearch x y\nsearch z\noptions ndots:5 rotate\nnameserver\nbogus 1\n",
        );
        assert_eq!(d.nameservers, vec!["1.1.1.1", "8.8.8.8"]);
        assert_eq!(d.domain, "b.example");
        assert_eq!(d.search, vec!["x", "y", "z"]);
        assert_eq!(d.options, vec!["ndots:5", "rotate"]);
        assert!(parse("").is_empty());
        let e = parse_file("/nonexistent/resolv.conf", "ipam.resolvConf").unwrap_err();
        assert_eq!(e.code, IO_FAILURE);
        assert!(
            e.msg.starts_with("ipam.resolvConf: open /nonexistent/resolv.conf:"),
            "{}",
            e.msg
        );
    }
}

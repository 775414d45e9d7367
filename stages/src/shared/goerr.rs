//! The reference plugins' error texts. They print a kernel error as Go's errno string,
//! the C library's text with a lowercase first letter ("file exists"); cnichain puts
//! that in `msg`, so it reads as the reference's, and its own fuller account (operation,
//! netns, the kernel's extended ack) in `details`.

use crate::kernel::netlink::errno_of;
use cnichain_engine::spec::error::{CniError, INTERNAL};

/// Go's text for the errno behind `e`, or `e`'s own outermost message when it has none.
pub fn errno_text(e: &anyhow::Error) -> String {
    match errno_of(e) {
        Some(n) => {
            let s = std::io::Error::from_raw_os_error(n).to_string();
            let s = s.split(" (os error").next().unwrap_or_default();
            let mut c = s.chars();
            match c.next() {
                Some(f) => f.to_lowercase().chain(c).collect(),
                None => format!("errno {n}"),
            }
        }
        None => e.to_string(),
    }
}

/// An error with the reference's `msg` and cnichain's account of `e` in `details`.
pub fn with_details(msg: impl Into<String>, e: &anyhow::Error) -> CniError {
    CniError::new(INTERNAL, msg).with_details(format!("{e:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_errno_strings() {
        let e = |n: i32| errno_text(&anyhow::Error::from(std::io::Error::from_raw_os_error(n)));
        assert_eq!(e(libc::EEXIST), "file exists");
        assert_eq!(e(libc::EINVAL), "invalid argument");
        assert_eq!(e(libc::ERANGE), "numerical result out of range");
        assert_eq!(e(libc::EOPNOTSUPP), "operation not supported");
        assert_eq!(errno_text(&anyhow::anyhow!("plain")), "plain");
    }
}

//! Kernel snapshots that ignore what the kernel finishes on its own after links appear:
//! IPv6 duplicate address detection clears `tentative` and adds a local route a moment
//! after a link comes up, which is no change of the command under test.

use super::kstate::KState;
use std::process::Command;
use std::time::Duration;

/// Wait (up to 5 s) until no address of netns `netns` is tentative, then snapshot it.
pub fn kernel_settled(netns: &str) -> KState {
    for _ in 0..50 {
        let o = Command::new("ip")
            .args(["-n", netns, "-6", "addr", "show", "tentative"])
            .output()
            .expect("ip addr");
        if o.stdout.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    KState::take(netns)
}

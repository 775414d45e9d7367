//! The rule table. Adding a rule is adding an entry: an ID, the spec section it comes
//! from, what it requires (one line), the kinds of plugin it applies to, the versions
//! (from `min`, below `max`; each tested version or only the newest), and its check.
//! Sections name SPEC.md (https://github.com/containernetworking/cni/blob/main/SPEC.md)
//! and CONVENTIONS.md.

use super::checks_add as add;
use super::checks_chain as chain;
use super::checks_del as del;
use super::checks_env as env;
use super::checks_env::EnvMod::{Set, Unset};
use super::runner::{Ctx, Step};
use super::Kind::{self, Chain, Ipam, Main, Meta};

pub struct Rule {
    pub id: &'static str,
    pub section: &'static str,
    pub title: &'static str,
    pub kinds: &'static [Kind],
    pub min: &'static str,
    pub max: Option<&'static str>,
    /// Run at every tested version (a failure names the first failing one), or only at
    /// the newest eligible one.
    pub each_version: bool,
    pub check: fn(&mut Ctx) -> Step,
}

const ALL: &[Kind] = &[Main, Ipam, Meta];
const ATTACHING: &[Kind] = &[Main, Meta];
/// Also the whole list (`--conflist`), run as one.
const ALL_AND_LIST: &[Kind] = &[Main, Ipam, Meta, Chain];
const ATTACHING_AND_LIST: &[Kind] = &[Main, Meta, Chain];
const MAIN_AND_LIST: &[Kind] = &[Main, Chain];
const LIST: &[Kind] = &[Chain];

macro_rules! rule {
    ($id:literal, $sec:literal, $title:literal, $kinds:expr, $min:literal, $each:literal, $check:expr) => {
        Rule {
            id: $id,
            section: $sec,
            title: $title,
            kinds: $kinds,
            min: $min,
            max: None,
            each_version: $each,
            check: $check,
        }
    };
}

pub static RULES: &[Rule] = &[
    // VERSION
    rule!(
        "VER-01",
        "§2 VERSION",
        "VERSION prints cniVersion and supportedVersions, exit 0",
        ALL,
        "0.1.0",
        false,
        env::version_answers
    ),
    rule!(
        "VER-02",
        "§2 VERSION",
        "VERSION answers, the same list, for every version it claims",
        ALL,
        "0.1.0",
        false,
        env::version_each_claimed
    ),
    rule!(
        "VER-03",
        "§2 Parameters",
        "VERSION needs only CNI_COMMAND",
        ALL,
        "0.1.0",
        false,
        env::version_only_command
    ),
    rule!(
        "VER-04",
        "§2 VERSION",
        "supportedVersions are MAJOR.MINOR.PATCH, none twice",
        ALL,
        "0.1.0",
        false,
        env::version_list_wellformed
    ),
    // Environment: each missing or malformed required variable, per command
    rule!(
        "ENV-01",
        "§2 Parameters",
        "unknown CNI_COMMAND: error code 4",
        ALL,
        "0.1.0",
        false,
        env::unknown_command
    ),
    rule!(
        "ENV-02",
        "§2 Parameters",
        "ADD without CNI_CONTAINERID: code 4 naming it",
        ALL,
        "0.1.0",
        false,
        |c| env::env_rule(c, "ADD", Unset("CNI_CONTAINERID"))
    ),
    rule!(
        "ENV-03",
        "§2 Parameters",
        "ADD without CNI_NETNS: code 4 naming it",
        ALL,
        "0.1.0",
        false,
        |c| env::env_rule(c, "ADD", Unset("CNI_NETNS"))
    ),
    rule!(
        "ENV-04",
        "§2 Parameters",
        "ADD without CNI_IFNAME: code 4 naming it",
        ALL,
        "0.1.0",
        false,
        |c| env::env_rule(c, "ADD", Unset("CNI_IFNAME"))
    ),
    rule!(
        "ENV-05",
        "§2 Parameters",
        "CHECK without CNI_CONTAINERID: code 4 naming it",
        ALL,
        "0.4.0",
        false,
        |c| env::env_rule(c, "CHECK", Unset("CNI_CONTAINERID"))
    ),
    rule!(
        "ENV-06",
        "§2 Parameters",
        "CHECK without CNI_NETNS: code 4 naming it",
        ALL,
        "0.4.0",
        false,
        |c| env::env_rule(c, "CHECK", Unset("CNI_NETNS"))
    ),
    rule!(
        "ENV-07",
        "§2 Parameters",
        "CHECK without CNI_IFNAME: code 4 naming it",
        ALL,
        "0.4.0",
        false,
        |c| env::env_rule(c, "CHECK", Unset("CNI_IFNAME"))
    ),
    rule!(
        "ENV-08",
        "§2 Parameters",
        "DEL without CNI_CONTAINERID: code 4 naming it",
        ALL,
        "0.1.0",
        false,
        |c| env::env_rule(c, "DEL", Unset("CNI_CONTAINERID"))
    ),
    rule!(
        "ENV-09",
        "§2 Parameters",
        "DEL without CNI_IFNAME: code 4 naming it",
        ALL,
        "0.1.0",
        false,
        |c| env::env_rule(c, "DEL", Unset("CNI_IFNAME"))
    ),
    rule!(
        "ENV-10",
        "§2 Parameters",
        "ADD with CNI_CONTAINERID not [a-zA-Z0-9][a-zA-Z0-9_.-]*: code 4",
        ALL,
        "0.1.0",
        false,
        |c| env::env_rule(c, "ADD", Set("CNI_CONTAINERID", "-bad/id!"))
    ),
    rule!(
        "ENV-11",
        "§2 Parameters",
        "ADD with CNI_IFNAME containing '/': code 4",
        ATTACHING,
        "0.1.0",
        false,
        |c| env::env_rule(c, "ADD", Set("CNI_IFNAME", "eth/0"))
    ),
    rule!(
        "ENV-12",
        "§2 Parameters",
        "ADD with a 16-byte CNI_IFNAME: code 4",
        ATTACHING,
        "0.1.0",
        false,
        |c| env::env_rule(c, "ADD", Set("CNI_IFNAME", "eth0123456789abc"))
    ),
    rule!(
        "ENV-13",
        "§2 Parameters",
        "CHECK with CNI_CONTAINERID malformed: code 4",
        ALL,
        "0.4.0",
        false,
        |c| env::env_rule(c, "CHECK", Set("CNI_CONTAINERID", ".dot-first"))
    ),
    // ADD result
    rule!(
        "ADD-01",
        "§2 ADD",
        "ADD exits 0 with a result on stdout",
        ALL_AND_LIST,
        "0.1.0",
        true,
        add::add_succeeds
    ),
    rule!(
        "ADD-02",
        "§5 Result",
        "the result's cniVersion is the config's",
        ALL_AND_LIST,
        "0.1.0",
        true,
        add::result_version
    ),
    rule!(
        "ADD-03",
        "§5 Result",
        "the result has the version's keys, types and address syntax",
        ALL_AND_LIST,
        "0.1.0",
        true,
        add::result_schema
    ),
    rule!(
        "ADD-04",
        "§5 Result",
        "ips[].interface indexes are in range",
        ALL_AND_LIST,
        "0.3.0",
        true,
        add::interface_indexes
    ),
    rule!(
        "ADD-05",
        "§5 Result",
        "CNI_IFNAME is listed with sandbox = CNI_NETNS",
        MAIN_AND_LIST,
        "0.3.0",
        true,
        add::pod_interface_listed
    ),
    rule!(
        "ADD-06",
        "§5 Result",
        "interfaces in the container netns have sandbox set, and only that one",
        ATTACHING_AND_LIST,
        "0.3.0",
        true,
        add::sandbox_set
    ),
    rule!(
        "ADD-07",
        "§5 Result",
        "kernel: every interface exists where the result says, with its MAC",
        ATTACHING_AND_LIST,
        "0.3.0",
        true,
        add::kernel_links
    ),
    rule!(
        "ADD-08",
        "§5 Result",
        "kernel: every address is on the interface it names",
        ATTACHING_AND_LIST,
        "0.1.0",
        true,
        add::kernel_addrs
    ),
    rule!(
        "ADD-09",
        "§5 Result",
        "kernel: every route is in the container's netns",
        ATTACHING_AND_LIST,
        "0.1.0",
        true,
        add::kernel_routes
    ),
    rule!(
        "ADD-10",
        "§2 ADD",
        "ADD when CNI_IFNAME already exists in the netns fails",
        MAIN_AND_LIST,
        "0.1.0",
        false,
        add::existing_ifname_errors
    ),
    rule!(
        "ADD-11",
        "§5 Delegated plugins (IPAM)",
        "an IPAM result holds the allocated ips",
        &[Ipam],
        "0.1.0",
        true,
        add::ipam_has_ips
    ),
    rule!(
        "ADD-12",
        "§2 Errors",
        "a successful ADD prints only the result JSON on stdout",
        ALL_AND_LIST,
        "0.1.0",
        false,
        env::stdout_only_json
    ),
    rule!(
        "ADD-13",
        "§2 Parameters",
        "the container interface is named CNI_IFNAME (an ADD for net1 makes net1)",
        &[Main],
        "0.1.0",
        false,
        add::ifname_honored
    ),
    // prevResult (meta plugins)
    rule!(
        "PREV-01",
        "§2 ADD",
        "prevResult interfaces passed through",
        &[Meta],
        "0.3.0",
        true,
        add::prev_interfaces
    ),
    rule!(
        "PREV-02",
        "§2 ADD",
        "prevResult ips passed through (same interface)",
        &[Meta],
        "0.3.0",
        true,
        add::prev_ips
    ),
    rule!(
        "PREV-03",
        "§2 ADD",
        "prevResult routes passed through",
        &[Meta],
        "0.3.0",
        true,
        add::prev_routes
    ),
    rule!(
        "PREV-04",
        "§2 ADD",
        "prevResult dns passed through",
        &[Meta],
        "0.3.0",
        true,
        add::prev_dns
    ),
    // CHECK
    rule!(
        "CHK-01",
        "§2 CHECK",
        "CHECK right after ADD succeeds",
        ALL_AND_LIST,
        "0.4.0",
        false,
        del::check_ok
    ),
    rule!(
        "CHK-02",
        "§2 CHECK",
        "a successful CHECK prints nothing on stdout",
        ALL_AND_LIST,
        "0.4.0",
        false,
        del::check_quiet
    ),
    Rule {
        id: "CHK-03",
        section: "§2 CHECK",
        title: "CHECK with a config below 0.4.0 is refused",
        kinds: ALL,
        min: "0.1.0",
        max: Some("0.4.0"),
        each_version: false,
        check: del::check_refused_old,
    },
    rule!(
        "CHK-04",
        "§2 CHECK",
        "CHECK fails once the container interface is gone",
        MAIN_AND_LIST,
        "0.4.0",
        false,
        del::check_after_ifname_gone
    ),
    rule!(
        "CHK-05",
        "§2 CHECK",
        "CHECK fails once an address of the result is gone from the container",
        MAIN_AND_LIST,
        "0.4.0",
        false,
        add::check_after_addr_gone
    ),
    rule!(
        "CHK-06",
        "§2 CHECK",
        "CHECK fails once a route of the result is gone from the container",
        MAIN_AND_LIST,
        "0.4.0",
        false,
        add::check_after_route_gone
    ),
    // DEL
    rule!(
        "DEL-01",
        "§2 DEL",
        "DEL after ADD succeeds",
        ALL_AND_LIST,
        "0.1.0",
        false,
        del::del_ok
    ),
    rule!(
        "DEL-02",
        "§2 DEL",
        "a successful DEL prints nothing on stdout",
        ALL_AND_LIST,
        "0.1.0",
        false,
        del::del_quiet
    ),
    rule!(
        "DEL-03",
        "§2 DEL",
        "a second DEL succeeds",
        ALL_AND_LIST,
        "0.1.0",
        false,
        del::del_twice
    ),
    rule!(
        "DEL-04",
        "§2 DEL",
        "DEL succeeds with the netns gone",
        ALL_AND_LIST,
        "0.1.0",
        false,
        del::del_netns_gone
    ),
    rule!(
        "DEL-05",
        "§2 Parameters",
        "DEL succeeds without CNI_NETNS",
        ALL_AND_LIST,
        "0.1.0",
        false,
        del::del_no_netns
    ),
    rule!(
        "DEL-06",
        "§2 DEL",
        "DEL succeeds without prevResult",
        ALL_AND_LIST,
        "0.4.0",
        false,
        del::del_no_prev
    ),
    rule!(
        "DEL-07",
        "§3 Deriving runtimeConfig",
        "DEL succeeds without the ADD's runtimeConfig",
        ALL_AND_LIST,
        "0.1.0",
        false,
        del::del_no_runtime_config
    ),
    rule!(
        "DEL-08",
        "§2 DEL",
        "DEL of an attachment never added succeeds",
        ALL_AND_LIST,
        "0.1.0",
        false,
        del::del_unknown
    ),
    rule!(
        "DEL-09",
        "§2 DEL",
        "DEL removes CNI_IFNAME from the container",
        MAIN_AND_LIST,
        "0.1.0",
        false,
        del::del_removes_ifname
    ),
    rule!(
        "DEL-10",
        "§2 DEL",
        "DEL leaves no host-side link",
        ATTACHING_AND_LIST,
        "0.1.0",
        false,
        del::no_host_links
    ),
    rule!(
        "DEL-11",
        "§2 DEL",
        "DEL leaves no host-side address or route",
        ATTACHING_AND_LIST,
        "0.1.0",
        false,
        del::no_host_addrs
    ),
    rule!(
        "DEL-12",
        "§2 DEL",
        "DEL leaves no reservation/record file in its dataDir",
        ALL_AND_LIST,
        "0.1.0",
        false,
        del::no_data_files
    ),
    rule!(
        "DEL-13",
        "§2 DEL",
        "DEL leaves no nftables/iptables rule, chain or set element it made",
        ATTACHING_AND_LIST,
        "0.1.0",
        false,
        del::no_fw_rules
    ),
    rule!(
        "DEL-14",
        "§2 DEL",
        "DEL leaves no file under /var/lib/cni or /run naming the container",
        ALL_AND_LIST,
        "0.1.0",
        false,
        del::no_shared_files
    ),
    rule!(
        "DEL-15",
        "§2 DEL",
        "DEL with the netns gone leaves no host-side link",
        ATTACHING_AND_LIST,
        "0.1.0",
        false,
        del::netns_gone_no_links
    ),
    rule!(
        "DEL-16",
        "§2 DEL",
        "DEL with the netns gone leaves no file in its dataDir",
        ALL_AND_LIST,
        "0.1.0",
        false,
        del::netns_gone_no_data
    ),
    rule!(
        "DEL-17",
        "§2 DEL",
        "DEL of one pod's attachment leaves another pod's whole",
        ATTACHING_AND_LIST,
        "0.1.0",
        false,
        chain::del_leaves_other
    ),
    // Errors
    rule!(
        "ERR-01",
        "§5 Error",
        "a failure prints the error object {code, msg, details?} on stdout",
        ALL,
        "0.1.0",
        false,
        env::error_shape
    ),
    rule!(
        "ERR-02",
        "§2 Errors",
        "a failure exits with status 1",
        ALL,
        "0.1.0",
        false,
        env::error_exit_one
    ),
    rule!(
        "ERR-03",
        "§5 Error",
        "a config that is not JSON: code 6 (failed to decode content)",
        ALL,
        "1.0.0",
        false,
        env::error_decode_code
    ),
    rule!(
        "ERR-04",
        "§5 Error",
        "error codes 0-99 are the spec's",
        ALL,
        "0.1.0",
        false,
        env::error_reserved_codes
    ),
    rule!(
        "ERR-05",
        "§5 Error",
        "DEL with a config that is not JSON fails with an error object",
        ALL,
        "0.1.0",
        false,
        env::del_bad_config
    ),
    // GC and STATUS (1.1.0)
    rule!(
        "GC-01",
        "§2 GC",
        "GC exits 0 and prints nothing",
        ALL_AND_LIST,
        "1.1.0",
        false,
        del::gc_quiet
    ),
    rule!(
        "GC-02",
        "§2 GC",
        "GC keeps valid attachments",
        ALL_AND_LIST,
        "1.1.0",
        false,
        del::gc_keeps_valid
    ),
    rule!(
        "GC-03",
        "§2 GC",
        "GC removes a stale attachment's state",
        ALL_AND_LIST,
        "1.1.0",
        false,
        del::gc_removes_stale
    ),
    rule!(
        "STA-01",
        "§2 STATUS",
        "STATUS exits 0 and prints nothing when ADD can be served",
        ALL_AND_LIST,
        "1.1.0",
        false,
        del::status_ok
    ),
    // Robustness
    rule!(
        "ROB-01",
        "§1 Configuration",
        "an unknown top-level config key is ignored",
        ALL,
        "0.1.0",
        false,
        env::unknown_key
    ),
    rule!(
        "ROB-02",
        "§1 Configuration",
        "an unknown key in ipam is ignored",
        &[Main, Ipam],
        "0.1.0",
        false,
        env::unknown_ipam_key
    ),
    rule!(
        "ROB-03",
        "CONVENTIONS args",
        "unknown args.cni keys are ignored",
        ALL,
        "0.1.0",
        false,
        env::unknown_args
    ),
    rule!(
        "ROB-04",
        "§3 Deriving runtimeConfig",
        "an unknown runtimeConfig key is ignored",
        ALL,
        "0.1.0",
        false,
        env::unknown_runtime_config
    ),
    rule!(
        "ROB-05",
        "CONVENTIONS CNI_ARGS",
        "CNI_ARGS with IgnoreUnknown=1 and an unknown key",
        ALL,
        "0.1.0",
        false,
        env::cni_args_ignore_unknown
    ),
    rule!(
        "ROB-06",
        "§2 VERSION / §5 Error",
        "a config of version 99.99.99 is refused with code 1",
        ALL,
        "0.1.0",
        false,
        env::unsupported_version
    ),
    rule!(
        "ROB-07",
        "§2 VERSION / §5 Error",
        "a spec version above those it claims is refused with code 1",
        ALL,
        "0.1.0",
        false,
        env::unclaimed_version
    ),
    // The whole list (--conflist): what holds between its plugins
    rule!(
        "CHN-01",
        "§4 (libcni ValidateNetworkList)",
        "every plugin's VERSION claims the list's cniVersion",
        LIST,
        "0.1.0",
        true,
        chain::versions_claimed
    ),
    rule!(
        "CHN-02",
        "§4 Add: prevResult",
        "each plugin keeps its prevResult's interfaces",
        LIST,
        "0.3.0",
        true,
        chain::stages_keep_interfaces
    ),
    rule!(
        "CHN-03",
        "§4 Add: prevResult",
        "each plugin keeps its prevResult's ips (same interface)",
        LIST,
        "0.3.0",
        true,
        chain::stages_keep_ips
    ),
    rule!(
        "CHN-04",
        "§4 Add: prevResult",
        "each plugin keeps its prevResult's routes",
        LIST,
        "0.3.0",
        true,
        chain::stages_keep_routes
    ),
    rule!(
        "CHN-05",
        "§4 Add: prevResult",
        "each plugin keeps its prevResult's dns",
        LIST,
        "0.3.0",
        true,
        chain::stages_keep_dns
    ),
    rule!(
        "CHN-06",
        "§4 Add / §2 DEL",
        "DEL after an ADD that failed in a later plugin leaves nothing",
        LIST,
        "0.1.0",
        false,
        chain::failed_add_cleaned
    ),
    rule!(
        "CHN-07",
        "§2 VERSION / §5 Error",
        "every plugin refuses cniVersion 99.99.99: code 1 on stdout, exit 1",
        LIST,
        "0.1.0",
        false,
        chain::each_refuses_version
    ),
];

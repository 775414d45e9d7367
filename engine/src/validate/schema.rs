//! The types of a config schema: the keys a stage reads, each with the JSON type Go's
//! `encoding/json` and the plugin's own parsing accept. Each stage declares its own
//! [`Schema`] next to its loader (the stages crate) and hands it out through
//! `Stage::schema`; `cnichain validate` checks every plugin object of a type against it.
//! What is not any one stage's lives here: the keys every plugin object may carry, what
//! libcni reads, and the spec's shared shapes (dns, routes, host-local ranges).
//!
//! Go matches keys case-insensitively and ignores unknown ones; a key that matches no
//! field is reported as a warning, since the stage silently ignores it. `null` is accepted
//! everywhere: Go leaves the field at its default.

/// What a stage is in a chain, which decides where its schema applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A plugin object's `type` (bridge, tuning, ...): its keys are the object's.
    Plugin,
    /// An `ipam` object's `type` (host-local, static): its keys are that object's.
    Ipam,
}

/// One stage's config keys.
#[derive(Debug, Clone, Copy)]
pub struct Schema {
    pub role: Role,
    /// The keys it reads, besides [`COMMON`] (for a plugin).
    pub fields: &'static [F],
}

/// A JSON type as a Go field declares it.
#[derive(Debug, Clone, Copy)]
pub enum Ty {
    Any,
    Str,
    Bool,
    /// libcni's readBool: a boolean or the strings "true"/"false" in any case.
    BoolStr,
    /// Go `int`, with the range the plugin accepts.
    Int(i64, i64),
    /// Go `uint64`
    U64,
    /// A string Go parses with net.ParseCIDR.
    Cidr,
    /// A string Go parses with net.ParseIP ("" is no address).
    Ip,
    /// A string Go parses with net.ParseMAC.
    Mac,
    /// A string with a fixed set of values.
    Enum(&'static [&'static str]),
    List(&'static Ty),
    /// An object whose keys are all known: others are warned about.
    Obj(&'static [F]),
    /// An object whose known keys are typed and other keys allowed (runtimeConfig, args:
    /// shared with the IPAM and other consumers).
    Open(&'static [F]),
    /// An object with any keys, every value of one type.
    MapOf(&'static Ty),
}

/// A field: its JSON key and type.
#[derive(Debug, Clone, Copy)]
pub struct F(pub &'static str, pub Ty);

pub const INT: Ty = Ty::Int(i64::MIN, i64::MAX);
pub const MTU: Ty = Ty::Int(0, 65535);
pub const STRS: Ty = Ty::List(&Ty::Str);

pub const DNS: &[F] = &[
    F("nameservers", STRS),
    F("domain", Ty::Str),
    F("search", STRS),
    F("options", STRS),
];

/// types.Route (with the spec 1.1 fields).
pub const ROUTE: &[F] = &[
    F("dst", Ty::Cidr),
    F("gw", Ty::Ip),
    F("mtu", INT),
    F("advmss", INT),
    F("priority", INT),
    F("table", INT),
    F("scope", INT),
];

/// host-local's Range.
pub const RANGE: &[F] = &[
    F("subnet", Ty::Cidr),
    F("rangeStart", Ty::Ip),
    F("rangeEnd", Ty::Ip),
    F("gateway", Ty::Ip),
];

/// Keys every plugin object may carry (types.PluginConf, plus the conventions' `args` and
/// `runtimeConfig`, typed per stage in its own schema).
pub const COMMON: &[F] = &[
    F("cniVersion", Ty::Str),
    F("name", Ty::Str),
    F("type", Ty::Str),
    F("capabilities", Ty::MapOf(&Ty::Bool)),
    F("dns", Ty::Obj(DNS)),
    F("prevResult", Ty::Open(&[])),
    F("cni.dev/valid-attachments", Ty::Any),
    F("cni.dev/attachments", Ty::Any),
    F("args", Ty::Open(&[])),
    F("runtimeConfig", Ty::Open(&[])),
];

/// What libcni itself reads of any plugin, in-process or not.
pub const LIBCNI: &[F] = &[
    F("cniVersion", Ty::Str),
    F("name", Ty::Str),
    F("type", Ty::Str),
    F("capabilities", Ty::MapOf(&Ty::Bool)),
];

/// runtimeConfig / args keys an IPAM reads from the enclosing plugin's object.
pub const IPAM_RC: &[F] = &[F("ips", STRS), F("ipRanges", Ty::List(&Ty::List(&Ty::Obj(RANGE))))];
pub const IPAM_ARGS: &[F] = &[F("cni", Ty::Open(&[F("ips", Ty::List(&Ty::Ip))]))];

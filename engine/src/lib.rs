//! cnichain-engine: the CNI protocol, with no kernel code. Loads conflists, selects the
//! version, derives each plugin's request exactly as libcni does, runs the chain over
//! in-process stages or the exec fallback, and keeps libcni's result cache.
//!
//! # Embedding
//!
//! A runtime loads a conflist ([`load`]), builds one [`settings::Settings`] and an
//! [`chain::Engine`] with the in-process stages it wants registered (the
//! `cnichain-stages` crate's `register_all`, or its own [`stage::Stage`]s; every other
//! plugin type is exec'd from CNI_PATH), then calls [`chain::Engine::add`],
//! [`chain::Engine::check`], [`chain::Engine::del`], [`chain::Engine::gc`] and
//! [`chain::Engine::status`] with a [`spec::args::RuntimeConf`] per attachment. See
//! `examples/embed.rs`.
//!
//! A binary that a runtime executes as a plugin hands its environment and stdin to
//! [`skel::run`] and writes what it returns.
//!
//! # Layout
//!
//! - [`spec`]: the wire types (config, results, errors, versions, CNI_ARGS).
//! - [`load`], [`request`], [`cache`], [`lock`]: loading, per-plugin requests, libcni's
//!   result cache, the node's locks.
//! - [`stage`]: the `Stage` trait, delegation, the registry, deferred kernel waits.
//! - [`exec`]: the exec fallback (a plugin binary from CNI_PATH).
//! - [`chain`]: the executor, one file per verb.
//! - [`settings`]: the one value an entry point builds.
//! - [`skel`]: the plugin side of the protocol.
//! - [`validate`]: `cnichain validate`.

pub mod cache;
pub mod chain;
pub mod exec;
pub mod fault;
pub mod load;
pub mod lock;
pub mod nodefs;
pub mod reconcile;
pub mod request;
pub mod settings;
pub mod skel;
pub mod spec;
pub mod stage;
pub mod validate;

pub use spec::CniError;
pub mod trace;

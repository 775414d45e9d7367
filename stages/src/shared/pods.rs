//! Whether pods hold addresses on a network, for a main stage's STATUS (51 when what
//! they depend on is gone). The answer lives with the IPAM (host-local's store); the
//! crate root hands that query to the stages that need it, so no stage imports another.

use cnichain_engine::spec::error::CniError;
use serde_json::{Map, Value};

/// The IPAM's query: does the store of the network in `config` (a request config
/// carrying the IPAM's `ipam`, at CNI version `version`) hold any reservation.
pub type Reservations = fn(config: &Map<String, Value>, version: &str) -> Result<bool, CniError>;

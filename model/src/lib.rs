//! rdmaq's domain model, one shape for each idea every crate shares: amounts of the held
//! resources ([`Amounts`], one per [`Dim`]), caps on them ([`Caps`]), a tenant's [`Limits`]
//! at each scope (cluster, node, process, QP), the kinds of object admitted
//! ([`Resource`]), the work-request policy ([`WrPolicy`]) and the rule for names
//! ([`check_name`]), with their conversions to and
//! from the wire types of `rdmaq-proto`. No I/O, no clocks, no locks: the coordinator's
//! state machine, the agent's ledger, the intercept library and the CLI all compute with
//! these (what time it is, where it matters, is the caller's to say).
#![forbid(unsafe_code)]

mod amounts;
mod limits;
mod name;
#[cfg(feature = "pb")]
mod pb;
mod qp_types;
mod rate;
#[cfg(feature = "pb")]
pub use pb::qp_types_from_pb;
mod resource;

pub use amounts::{Amounts, Caps, Dim};
pub use limits::{Limits, QpShape, ShapeDenial, WrPolicy};
pub use name::{MAX_NAME_LEN, MAX_TENANTS_PER_NODE, check_name};
pub use qp_types::{QpTypes, qpt};
pub use rate::RateBucket;
pub use resource::Resource;

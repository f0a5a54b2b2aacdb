//! librdmaq_intercept.so: admission of RDMA resources inside unmodified programs, loaded with
//! LD_PRELOAD. The interposed verbs arrive with the intercept issue; this crate already links
//! the agent<->intercept messages so the protocol builds for the cdylib.

/// The protocol version this library speaks to the agent.
pub const PROTOCOL_VERSION: u32 = rdmaq_proto::intercept::PROTOCOL_VERSION;

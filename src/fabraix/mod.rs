//! The Fabraix API: its documented bodies and a typed client.

mod bodies;
mod client;

pub(crate) use bodies::httpdate_to_rfc3339;
pub use bodies::{
    ActionCheck, AgentRun, CheckVerdict, Event, EventAck, EventType, RegisterAgentRun,
};
pub use client::{ClientError, FabraixClient};

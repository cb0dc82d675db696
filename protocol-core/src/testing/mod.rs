//! An in-memory world for tests, the simulator and the model checker: agent
//! engines and central's hub and sessions wired through a simulated network
//! whose clock jumps to the next deadline. The world plays both drivers with
//! stand-ins for crypto, processes and storage, so every behaviour of the
//! engines can be driven deterministically from a seed.

pub mod central;
pub mod crypto;
pub mod fuzz;
#[cfg(feature = "model")]
pub mod model;
mod network;
pub mod tokens;
pub(crate) mod world;

pub use central::{CentralEffect, CentralHost};
pub use network::{NetConfig, NetFaults};
pub use world::{AgentNode, Behaviour, Ingest, Store, TelemetryRows, World, rollout_plan, sample};

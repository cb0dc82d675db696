//! Several central processes as one (DESIGN.md §5): presence and the bus in
//! Redis. Decides nothing: the hub does, from the answers.

mod bus;
mod presence;

pub use bus::listen;
pub use presence::{Cluster, Dispatch, Holder, Lease, Notice, PRESENCE_TTL};

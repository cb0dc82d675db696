//! Central's engines: one [`CentralSession`] per connection and one
//! [`CentralHub`] for what spans connections (the quinn split of endpoint
//! and connection). Authentication is decided in [`auth`] on injected
//! wall-clock time; signature verification is the driver's.

pub mod auth;
mod hub;
mod session;

pub use auth::{Audience, AuthPolicy, AuthRejection, Claims, NodeLookup, TokenCheck};
pub use hub::{
    Admission, CentralHub, CommandState, HubConfig, HubOutput, ResultOutcome, TrackedCommand,
};
pub use session::{
    CentralSession, SessionConfig, SessionEvent, SessionInput, SessionOutput, SessionTimer,
};

//! Central's engines: one [`CentralSession`] per connection and one
//! [`CentralHub`] for what spans connections (the quinn split of endpoint
//! and connection). They talk only through the opaque [`ToHub`] and
//! [`ToSession`] events, which drivers forward unread. Authentication is
//! decided in [`auth`] on injected wall-clock time; signature verification
//! is the driver's.

mod alarm;
pub mod approval;
pub mod auth;
mod capacity;
mod command;
mod events;
mod hub;
mod pacing;
mod rate;
pub mod rollout;
mod session;

pub use alarm::{Alarm, ApprovalEvent};
pub use auth::{Audience, AuthPolicy, AuthRejection, Claims, NodeLookup, SpentRecord, TokenCheck};
pub use capacity::ListenGate;
pub use command::{CommandState, ResultRecord, Submission, TrackedCommand};
pub use events::{ToHub, ToSession};
pub use hub::{
    Admission, AdmissionConfig, Admit, CentralHub, ControlRefusal, HubConfig, HubInput, HubOutput,
    HubTimer, NeedsApproval, NewRollout, Presence, Refusal, RefusalKind, Restored, RolloutControl,
    RolloutWatch, Upgrade,
};
pub use rate::TokenBucket;
pub use session::{
    CentralSession, RecordKey, SessionConfig, SessionEvent, SessionInput, SessionOutput,
    SessionTimer,
};

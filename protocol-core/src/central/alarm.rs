//! What central tells an administrator about (spec/protocol.md §3, §7): the
//! engines decide what is worth it, the driver stores and delivers it.

use core::net::IpAddr;

use crate::NodeId;
use crate::wire::Alert;

/// Something for an administrator.
#[derive(Debug, Clone, PartialEq)]
pub enum Alarm {
    /// Node tokens (upgrade or artifact download) were refused: `count`
    /// of them from `peer` for `reason` (spec §3: the first of a window is
    /// told at once with a count of 1, the rest as one notice when the
    /// window ends). `peer` is `None` when unknown, or for the addresses
    /// past the bound of those told about separately.
    AuthRefused {
        reason: &'static str,
        peer: Option<IpAddr>,
        count: u32,
    },
    /// A node raised a critical alert.
    CriticalAlert { node_id: NodeId, alert: Box<Alert> },
}

impl Alarm {
    /// The stable name of the kind (stored events, webhook `kind`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::AuthRefused { .. } => "auth_failure",
            Self::CriticalAlert { .. } => "critical_alert",
        }
    }
}

//! What central tells an administrator about (spec/protocol.md §3, §7): the
//! engines decide what is worth it, the driver stores and delivers it.

use core::net::IpAddr;

use crate::NodeId;
use crate::wire::Alert;

/// Something for an administrator.
#[derive(Debug, Clone, PartialEq)]
pub enum Alarm {
    /// A node token (upgrade or artifact download) was refused.
    AuthRefused {
        reason: &'static str,
        peer: Option<IpAddr>,
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

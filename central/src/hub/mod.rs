//! The driver side of the core's hub: the one lock around it, the routes to
//! the sessions, the performing of its outputs, and the links that turn the
//! store's and the cluster's news into hub inputs.

mod approvals;
mod cluster_link;
mod cluster_tasks;
mod dispatch;
mod handle;
mod rollout_lease;
mod rollouts;
mod watch;

pub use approvals::DecideError;
pub use cluster_link::ClusterLink;
pub use cluster_tasks::start as start_cluster_work;
pub use handle::{HubHandle, inbox};

//! Command results: the store is the arbiter of whose command a result
//! answers and of which result was first.

use nap_core::NodeId;
use nap_core::central::ResultRecord;
use nap_core::wire::CommandResult;

use super::{Effects, RetryPolicy, retry};
use crate::events::AppEvent;
use crate::store::Storage;

pub(super) async fn record(
    effects: &Effects,
    node_id: NodeId,
    result: &CommandResult,
) -> ResultRecord {
    // A burst of results (a fan-out's answers) queues here rather than in
    // the pool, whose waits time out: the pool stays free for the others.
    let Ok(_slot) = effects.results.acquire().await else {
        return ResultRecord::Failed;
    };
    match effects.store.get_command(result.request_id).await {
        Ok(Some(command)) if command.node_id != node_id => {
            tracing::warn!(request = %result.request_id, node = %node_id, "result for another node's command refused");
            return ResultRecord::WrongNode;
        }
        Ok(_) => {}
        // The hub has already refused what it tracks for another node; a
        // lookup that fails does not hold the result back.
        Err(e) => {
            effects.metrics.db_error("get_command");
            tracing::warn!(error = %e, request = %result.request_id, "cannot look the command up; recording the result");
        }
    }
    let at = effects.clock.wall();
    let stored = retry(
        RetryPolicy::A_FEW_TIMES,
        "record_result",
        &effects.metrics,
        || effects.store.record_result(result, at),
    )
    .await;
    match stored {
        Some(first) => {
            effects.events.emit(AppEvent::ResultStored {
                request_id: result.request_id,
            });
            ResultRecord::Stored { first }
        }
        None => {
            tracing::error!(request = %result.request_id, "result not recorded; it stays unacked and the agent will send it again");
            ResultRecord::Failed
        }
    }
}

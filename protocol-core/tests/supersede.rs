//! One live session per node: a newer connection supersedes the older with
//! 4002; the superseded agent backs off at the cap and never fights back.

mod common;

use common::*;
use nap_core::agent::{AgentEvent, Disconnect};
use nap_core::testing::World;
use nap_core::wire::NodeStatus;

#[test]
fn a_second_connection_supersedes_the_first() {
    let mut world = World::new(91);
    let first = world.add_agent(NODE, config(91));
    let second = world.add_agent(NODE, config(92));
    world.start(first);
    assert!(world.run_until_true(secs(5), |w| established(w, first)));
    let old_session = world.central.hub.live_session(NODE).expect("live");
    world.start(second);
    assert!(world.run_until_true(secs(5), |w| established(w, second)));
    world.run_for(secs(1));

    let new_session = world.central.hub.live_session(NODE).expect("live");
    assert_ne!(old_session, new_session);
    assert_eq!(
        world.central.hub.live_count(),
        1,
        "never two live sessions for one node"
    );
    assert!(!established(&world, first));
    let superseded = world.agents[first].events.iter().any(|(_, e)| {
        matches!(
            e,
            AgentEvent::Disconnected {
                reason: Disconnect::Closed(Some(nap_core::transport::CloseCode::Superseded)),
                ..
            }
        )
    });
    assert!(superseded);
    // The end of the superseded session does not make the node offline.
    assert_eq!(world.central.hub.status(NODE), Some(NodeStatus::Online));
    assert_eq!(world.store.statuses[&NODE], vec![NodeStatus::Online]);
}

#[test]
fn the_superseded_agent_waits_at_the_cap() {
    let mut world = World::new(93);
    let first = world.add_agent(NODE, config(93));
    let second = world.add_agent(NODE, config(94));
    world.start(first);
    assert!(world.run_until_true(secs(5), |w| established(w, first)));
    world.start(second);
    world.run_for(secs(2));
    let delay = world.agents[first]
        .events
        .iter()
        .rev()
        .find_map(|(_, e)| match e {
            AgentEvent::BackoffScheduled { delay, .. } => Some(*delay),
            _ => None,
        })
        .expect("the superseded agent backs off");
    assert!(secs(150) <= delay && delay <= secs(300), "{delay:?}");
    // Over an hour, the two take turns at most once every 150 s: no flapping.
    world.run_for(secs(3600));
    let supersessions = world.agents[first]
        .events
        .iter()
        .chain(world.agents[second].events.iter())
        .filter(|(_, e)| {
            matches!(
                e,
                AgentEvent::Disconnected {
                    reason: Disconnect::Closed(Some(nap_core::transport::CloseCode::Superseded)),
                    ..
                }
            )
        })
        .count();
    assert!(
        supersessions <= 3600 / 150 + 1,
        "{supersessions} supersessions in an hour"
    );
    assert_eq!(world.central.hub.live_count(), 1);
}

#[test]
fn a_revoked_node_is_closed_with_4003_and_never_returns() {
    let mut world = connected(95);
    world.revoke(NODE);
    world.run_for(secs(3600));
    assert_eq!(
        world.agents[0].engine.state(),
        nap_core::agent::ConnectionState::Revoked {}
    );
    assert!(
        world.agents[0]
            .events
            .iter()
            .any(|(_, e)| matches!(e, AgentEvent::Revoked))
    );
    assert_eq!(
        world.agents[0].engine.epoch().0,
        1,
        "it never dialled again"
    );
    assert_eq!(world.central.hub.status(NODE), Some(NodeStatus::Offline));
    assert_eq!(world.agents[0].engine.poll_timeout(), None, "nothing armed");
}

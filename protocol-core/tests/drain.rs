//! Drain: before a graceful shutdown central tells every node when to come
//! back, spread so the fleet does not return at once; agents obey exactly.

mod common;

use common::*;
use nap_core::NodeId;
use nap_core::agent::{AgentEvent, Disconnect};
use nap_core::testing::World;

#[test]
fn drained_agents_come_back_after_their_spread_delay() {
    let mut world = World::new(121);
    let n = 50;
    for k in 0..n {
        let node = NodeId::from_u128(0x100 + k);
        let i = world.add_agent(node, config(121 + u64::try_from(k).unwrap_or(0)));
        world.start(i);
    }
    assert!(world.run_until_true(secs(30), |w| (0..w.agents.len()).all(|i| established(w, i))));
    world.drain();
    world.run_for(secs(1));
    let mut delays = Vec::new();
    for agent in &world.agents {
        let drained = agent.events.iter().any(|(_, e)| {
            matches!(
                e,
                AgentEvent::Disconnected {
                    reason: Disconnect::Drained,
                    ..
                }
            )
        });
        assert!(drained);
        let delay = agent
            .events
            .iter()
            .rev()
            .find_map(|(_, e)| match e {
                AgentEvent::BackoffScheduled { delay, .. } => Some(*delay),
                _ => None,
            })
            .expect("a scheduled return");
        delays.push(delay);
    }
    delays.sort();
    assert!(delays[0] >= secs(5), "the minimum drain delay");
    assert!(delays[delays.len() - 1] <= secs(5).max(secs(1) * 50 / 200 + secs(5)));
    assert!(
        delays.windows(2).any(|w| w[0] != w[1]),
        "spread, not one instant"
    );
    // Everyone returns.
    assert!(world.run_until_true(secs(60), |w| (0..w.agents.len()).all(|i| established(w, i))));
    assert_eq!(world.central.hub.live_count(), n as usize);
}

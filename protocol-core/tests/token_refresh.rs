//! Tokens: refreshed on the live connection before they expire; a session
//! whose token expires unrefreshed, or whose refresh is rejected, is closed
//! with 4001, and the agent reconnects with a fresh token.

mod common;

use common::*;
use nap_core::agent::{AgentEvent, Disconnect};
use nap_core::wire::AgentMessage;

fn refreshes(world: &nap_core::testing::World) -> usize {
    world.agents[0]
        .sent
        .iter()
        .filter(|m| matches!(m, AgentMessage::TokenRefresh(_)))
        .count()
}

fn closes_with(world: &nap_core::testing::World, code: u16) -> usize {
    world.agents[0]
        .events
        .iter()
        .filter(|(_, e)| {
            matches!(e, AgentEvent::Disconnected { reason: Disconnect::Closed(Some(c)), .. } if c.as_u16() == code)
        })
        .count()
}

#[test]
fn the_token_is_refreshed_between_75_and_85_percent_of_its_lifetime() {
    let mut world = connected(31);
    world.run_for(secs(2699));
    assert_eq!(refreshes(&world), 0, "not before 75 %");
    world.run_for(secs(3061 - 2699));
    assert_eq!(refreshes(&world), 1, "by 85 %");
    // The session outlives the first token.
    world.run_for(secs(3600));
    assert!(established(&world, 0));
    assert_eq!(closes_with(&world, 4001), 0);
    assert_eq!(world.agents[0].engine.epoch().0, 1, "never reconnected");
}

#[test]
fn an_unrefreshed_token_closes_the_session_with_4001() {
    let mut world = connected(32);
    world.agents[0].mints_tokens = false;
    world.run_for(secs(3600 + 5));
    assert_eq!(closes_with(&world, 4001), 1);
    assert!(!established(&world, 0));
    // Once tokens can be minted again, the agent comes back on its own.
    world.agents[0].mints_tokens = true;
    assert!(world.run_until_true(secs(900), |w| established(w, 0)));
}

#[test]
fn a_rejected_refresh_closes_with_4001_and_the_agent_reconnects() {
    let mut world = connected(33);
    world.agents[0].signs_validly = false;
    world.run_for(secs(3100));
    assert_eq!(refreshes(&world), 1);
    assert_eq!(closes_with(&world, 4001), 1);
    world.agents[0].signs_validly = true;
    assert!(world.run_until_true(secs(600), |w| established(w, 0)));
    assert!(world.agents[0].engine.epoch().0 >= 2);
}

#[test]
fn a_refresh_with_another_node_s_token_closes_with_4001() {
    let mut world = connected(34);
    let other = nap_core::NodeId::from_u128(0x99);
    world
        .registry
        .insert(other, nap_core::central::NodeLookup::Active);
    let iat = world.wall().unix_seconds();
    let jti = nap_core::TokenId::from_u128(0x777);
    let token = nap_core::testing::tokens::mint(other, jti, iat, iat + 600, true);
    let frame = format!(r#"{{"type":"token_refresh","token":"{token}"}}"#);
    world.frame_to_central(0, &frame);
    world.run_for(secs(1));
    assert_eq!(closes_with(&world, 4001), 1);
}

//! The same seed and inputs give a byte-identical trace of every output.

mod common;

use common::*;
use nap_core::NodeId;
use nap_core::testing::{NetFaults, World};

fn run(seed: u64) -> Vec<String> {
    let mut world = World::new(seed);
    world.tracing = true;
    world.net.faults = NetFaults {
        loss_permille: 20,
        duplicate_permille: 20,
        reorder_permille: 20,
    };
    for k in 0..5 {
        let i = world.add_agent(
            NodeId::from_u128(0x200 + k),
            config(seed + u64::try_from(k).unwrap_or(0)),
        );
        world.start(i);
    }
    world.run_for(secs(300));
    world.submit(
        NodeId::from_u128(0x200),
        execute(request(1), "uptime", &[], None),
        secs(30),
    );
    world.cut_transports();
    world.run_for(secs(600));
    world.restart_central();
    world.run_for(secs(900));
    world.trace.clone()
}

#[test]
fn the_same_seed_replays_the_same_trace() {
    let a = run(131);
    let b = run(131);
    assert!(a.len() > 1000, "{} lines", a.len());
    assert_eq!(a, b);
}

#[test]
fn another_seed_gives_another_trace() {
    assert_ne!(run(131), run(132));
}

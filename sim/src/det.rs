//! `nap-sim det`: the real engines (agents, central sessions and hub) wired
//! through the in-memory network of `nap_core::testing`, with faults (frame
//! loss, duplication, reordering, partitions, transport cuts, central
//! crashes), checking the protocol's invariants as simulated time passes.
//! No sockets, no clocks: a run is a function of its seed.

use std::time::{Duration, Instant};

use nap_core::agent::AgentConfig;
use nap_core::rng::Prng;
use nap_core::testing::{Ingest, NetFaults, World};
use nap_core::wire::{CentralMessage, Execute};
use nap_core::{NodeId, RequestId};

/// What to simulate.
#[derive(Debug, Clone, Copy)]
pub struct DetConfig {
    pub nodes: u32,
    pub hours: u32,
    pub seed: u64,
}

/// What a run saw.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DetReport {
    pub nodes: u32,
    pub simulated_hours: u32,
    pub seed: u64,
    pub wall_ms: u128,
    pub samples_taken: u64,
    pub telemetry_stored: u64,
    pub commands_submitted: u64,
    pub commands_answered: u64,
    pub partitions: u32,
    /// Partitions of an hour up to a day (the fleet buffers, then replays).
    pub long_partitions: u32,
    pub transport_cuts: u32,
    pub central_crashes: u32,
    /// Agents crashed and restarted from their persisted state.
    pub agent_crashes: u32,
    /// Minutes in which central's database took nothing, or acked slowly.
    pub store_outage_minutes: u32,
    pub slow_store_minutes: u32,
}

/// A broken invariant, with how to replay it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub at_minute: u64,
    pub what: String,
    pub replay: String,
}

/// Runs the simulation.
pub fn run(config: DetConfig) -> Result<DetReport, Violation> {
    let started = Instant::now();
    let replay = format!(
        "nap-sim det --nodes {} --hours {} --seed {}",
        config.nodes, config.hours, config.seed
    );
    let mut world = World::new(config.seed);
    world.recording = false;
    world.persisting = false;
    world.net.faults = NetFaults {
        loss_permille: 1,
        duplicate_permille: 1,
        reorder_permille: 1,
    };
    let agent_config = |k: u32| {
        let mut agent = AgentConfig::new(
            NodeId::from_u128(u128::from(k) + 1),
            config.seed ^ u64::from(k),
        );
        agent.policy = crate::virtual_node::virtual_policy();
        agent
    };
    for k in 0..config.nodes {
        let i = world.add_agent(NodeId::from_u128(u128::from(k) + 1), agent_config(k));
        world.start(i);
    }
    let mut chaos = Prng::new(config.seed ^ 0xC4A0_5EED);
    let mut report = DetReport {
        nodes: config.nodes,
        simulated_hours: config.hours,
        seed: config.seed,
        wall_ms: 0,
        samples_taken: 0,
        telemetry_stored: 0,
        commands_submitted: 0,
        commands_answered: 0,
        partitions: 0,
        long_partitions: 0,
        transport_cuts: 0,
        central_crashes: 0,
        agent_crashes: 0,
        store_outage_minutes: 0,
        slow_store_minutes: 0,
    };
    let minutes = u64::from(config.hours) * 60;
    let mut partition_until = None;
    // A run of three hours or more has one long outage for certain (more
    // may come at random): the whole fleet buffers, then replays at once.
    let long_outage = (minutes >= 180).then(|| {
        let start = chaos.between(30, minutes / 2);
        let longest = (24 * 60).min(minutes - start - 60);
        (start, start + chaos.between(60, longest))
    });
    let mut store_until: Option<u64> = None;
    let mut next_request = 1u128;
    for minute in 0..minutes {
        // Faults, drawn from the seed: a partition every few hours, transport
        // cuts, the odd central crash. Never in the last half hour: the run
        // ends quiet, so that "everything arrives" can be checked.
        let quiet = minute + 30 >= minutes;
        if partition_until == Some(minute) {
            world.set_partitioned(false);
            partition_until = None;
        }
        if let Some((start, end)) = long_outage
            && start == minute
        {
            world.set_partitioned(true);
            partition_until = Some(end.max(partition_until.unwrap_or(0)));
            report.long_partitions += 1;
        }
        if store_until == Some(minute) {
            world.ingest = Ingest::default();
            store_until = None;
        }
        if store_until.is_some() {
            if world.ingest.queue == Some(0) {
                report.store_outage_minutes += 1;
            } else {
                report.slow_store_minutes += 1;
            }
        }
        if !quiet && partition_until.is_none() {
            match chaos.between(0, 999) {
                0..=4 => {
                    world.set_partitioned(true);
                    partition_until = Some(minute + chaos.between(1, 5));
                    report.partitions += 1;
                }
                5..=9 => {
                    world.cut_transports();
                    report.transport_cuts += 1;
                }
                10 => {
                    world.restart_central();
                    report.central_crashes += 1;
                }
                // A long outage: an afternoon to a day of buffered samples,
                // replayed by the whole fleet at once when it ends.
                11 => {
                    let last = minutes.saturating_sub(30);
                    let until = (minute + chaos.between(60, 24 * 60)).min(last);
                    if until > minute {
                        world.set_partitioned(true);
                        partition_until = Some(until);
                        report.long_partitions += 1;
                    }
                }
                _ => {}
            }
        }
        // An agent crashes (somewhere within this minute) and restarts from
        // what it persisted: every change the engine asks to persist is on
        // disk by then, so its state at the crash is what a restart reads.
        let mut crash = None;
        if !quiet && config.nodes > 0 && chaos.between(0, 99) < 3 {
            let k = u32::try_from(chaos.between(0, u64::from(config.nodes) - 1)).unwrap_or(0);
            crash = Some((k, Duration::from_millis(chaos.between(1, 59_999))));
        }
        if !quiet && store_until.is_none() {
            match chaos.between(0, 999) {
                // The database takes nothing for a few minutes: ingest
                // refuses, nothing is acked, agents wait it out.
                0..=2 => {
                    world.ingest = Ingest {
                        delay: Duration::ZERO,
                        queue: Some(0),
                    };
                    store_until = Some(minute + chaos.between(1, 10));
                }
                // The database is slow: acks take seconds and its queue is bounded.
                3..=6 => {
                    world.ingest = Ingest {
                        delay: Duration::from_secs(chaos.between(1, 10)),
                        queue: Some(20 * config.nodes as usize),
                    };
                    store_until = Some(minute + chaos.between(5, 30));
                }
                _ => {}
            }
        }
        if !quiet && config.nodes > 0 {
            let node = NodeId::from_u128(u128::from(chaos.between(1, u64::from(config.nodes))));
            let id = RequestId::from_u128(next_request);
            next_request += 1;
            let message = CentralMessage::Execute(Execute {
                request_id: Some(id),
                command: "uptime".into(),
                args: vec![],
                timeout: None,
                hold_until: None,
                requested_by: None,
                rollout_approval: None,
                requires_approval: false,
                approver: None,
            });
            world.submit(node, message, Duration::from_secs(30));
            report.commands_submitted += 1;
        }
        let mut left = Duration::from_secs(60);
        if let Some((k, at)) = crash {
            world.run_for(at);
            left -= at;
            let i = k as usize;
            world.agents[i].saved = Some(world.agents[i].engine.snapshot());
            world.restart_agent(i, agent_config(k));
            report.agent_crashes += 1;
        }
        world.run_for(left);
        check(&world, config.nodes).map_err(|what| Violation {
            at_minute: minute,
            what,
            replay: replay.clone(),
        })?;
    }
    // The network recovers: no partition, no frame faults. After 15 minutes
    // (and a second for the last sample's round trip) everything must have
    // arrived.
    world.set_partitioned(false);
    world.net.faults = NetFaults::default();
    world.ingest = Ingest::default();
    world.run_for(Duration::from_secs(15 * 60 + 1));
    check_end(&world).map_err(|what| Violation {
        at_minute: minutes + 15,
        what,
        replay: replay.clone(),
    })?;
    report.samples_taken = world.agents.iter().map(|a| a.samples_taken).sum();
    report.telemetry_stored = u64::try_from(world.store.telemetry.len()).unwrap_or(u64::MAX);
    report.commands_answered = u64::try_from(world.store.results.len()).unwrap_or(u64::MAX);
    report.wall_ms = started.elapsed().as_millis();
    Ok(report)
}

/// The invariants that hold at every moment.
fn check(world: &World, nodes: u32) -> Result<(), String> {
    if let Some(v) = world.violations.first() {
        return Err(v.clone());
    }
    if world.central.hub.live_count() > nodes as usize {
        return Err(format!(
            "{} live sessions for {nodes} nodes",
            world.central.hub.live_count()
        ));
    }
    if world.max_outputs_per_call > 10_000 {
        return Err(format!(
            "{} outputs from one engine call",
            world.max_outputs_per_call
        ));
    }
    for agent in &world.agents {
        let e = &agent.engine;
        if e.buffered_telemetry() > 1440 || e.outbox_len() > 1000 || e.pending_alerts() > 100 {
            return Err(format!(
                "agent {} holds more than its bounds",
                agent.node_id
            ));
        }
        if let Some((timer, at)) = e.timers().find(|(_, at)| *at < world.now) {
            return Err(format!(
                "agent {} has {timer:?} armed in the past ({at})",
                agent.node_id
            ));
        }
    }
    Ok(())
}

/// The invariants checked once the network has been quiet for a while.
fn check_end(world: &World) -> Result<(), String> {
    for agent in &world.agents {
        if let Some((id, runs)) = agent.runs.iter().find(|(_, n)| **n > 1) {
            return Err(format!("{id} ran {runs} times on {}", agent.node_id));
        }
        if !matches!(
            agent.engine.state(),
            nap_core::agent::ConnectionState::Established {}
        ) {
            return Err(format!(
                "agent {} is not connected after 15 quiet minutes",
                agent.node_id
            ));
        }
        let stored = world.store.telemetry.count(agent.node_id) as u64;
        // A sample taken in the last second may still be on its way (an
        // agent restarted mid-minute samples at any phase): everything
        // older must be stored.
        let recent = world.wall().add_millis(-1000);
        let on_the_way = agent
            .engine
            .snapshot()
            .telemetry
            .iter()
            .filter(|t| t.timestamp > recent)
            .count() as u64;
        let taken = agent.samples_taken;
        if stored + on_the_way != taken {
            return Err(format!(
                "agent {}: {taken} samples taken, {stored} stored, {} buffered unacked ({} in flight), {} dropped, epoch {}, snapshot {:?}",
                agent.node_id,
                agent.engine.buffered_telemetry(),
                agent.engine.telemetry_in_flight(),
                agent.engine.dropped_telemetry(),
                agent.engine.epoch().0,
                agent
                    .engine
                    .snapshot()
                    .telemetry
                    .iter()
                    .map(|t| t.timestamp)
                    .collect::<Vec<_>>(),
            ));
        }
    }
    for (id, states) in &world.store.command_states {
        match states.iter().filter(|s| s.is_terminal()).count() {
            1 => {}
            0 => return Err(format!("{id} never reached a terminal state: {states:?}")),
            _ => {
                return Err(format!(
                    "{id} reached more than one terminal state: {states:?}"
                ));
            }
        }
    }
    Ok(())
}

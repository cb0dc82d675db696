//! Alert rules: a sustained threshold fires once at 5 min and not before,
//! resolves once; an instant threshold fires at once; hysteresis prevents
//! flapping; alerts raised offline are sent after the reconnect.

mod common;

use common::*;
use nap_core::alerts::{AlertEngine, AlertRule};
use nap_core::testing::{World, sample};
use nap_core::wire::{Alert, AlertState, Severity};
use nap_core::{Timestamp, WallTime};

fn alerts(world: &World, rule: &str) -> Vec<Alert> {
    world
        .store
        .records
        .iter()
        .filter_map(|(_, m)| match m {
            nap_core::wire::AgentMessage::Alert(a) if a.rule.as_deref() == Some(rule) => {
                Some(a.clone())
            }
            _ => None,
        })
        .collect()
}

#[test]
fn sustained_cpu_fires_at_five_minutes_and_not_before() {
    let mut world = connected(111);
    world.run_for(secs(30));
    world.agents[0].cpu = 95.0;
    // Samples every 60 s: the condition is first seen at the next sample.
    world.run_for(secs(30 + 4 * 60 + 1));
    assert!(alerts(&world, "cpu_high").is_empty(), "not before 5 min");
    world.run_for(secs(60));
    let fired = alerts(&world, "cpu_high");
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].severity, Severity::Critical);
    assert_eq!(fired[0].state, AlertState::Firing);
    assert_eq!(fired[0].data.cpu, Some(95.0));
    assert_eq!(fired[0].data.duration, Some(300));
    // Still high: no repeat.
    world.run_for(secs(30 * 60));
    assert_eq!(alerts(&world, "cpu_high").len(), 1);
    // Down, but within the hysteresis band: still firing.
    world.agents[0].cpu = 87.0;
    world.run_for(secs(5 * 60));
    assert_eq!(alerts(&world, "cpu_high").len(), 1);
    // Clearly down: resolves once.
    world.agents[0].cpu = 20.0;
    world.run_for(secs(10 * 60));
    let all = alerts(&world, "cpu_high");
    assert_eq!(all.len(), 2);
    assert_eq!(all[1].state, AlertState::Resolved);
}

#[test]
fn a_dip_restarts_the_sustain_window() {
    let rules = AlertRule::defaults();
    let mut engine = AlertEngine::new(rules);
    let wall = WallTime::UNIX_EPOCH;
    let mut fired = 0;
    for minute in 0..20u64 {
        // High for four minutes, one low sample, and again: never five in a row.
        let cpu = if minute % 5 == 4 { 50.0 } else { 95.0 };
        fired += engine
            .observe(Timestamp::from_secs(minute * 60), wall, &sample(cpu, 10.0))
            .len();
    }
    assert_eq!(fired, 0);
}

#[test]
fn disk_over_80_percent_warns_at_once() {
    let mut world = connected(112);
    world.agents[0].disk = 85.0;
    world.run_for(secs(61));
    let fired = alerts(&world, "disk_low");
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].severity, Severity::Warning);
    assert_eq!(fired[0].data.disk, Some(85.0));
    assert_eq!(fired[0].data.mount.as_deref(), Some("/"));
    assert_eq!(fired[0].data.available.as_deref(), Some("15GB"));
}

#[test]
fn alerts_raised_offline_arrive_after_the_reconnect() {
    let mut world = connected(113);
    world.set_partitioned(true);
    world.agents[0].disk = 90.0;
    world.run_for(secs(120));
    assert!(alerts(&world, "disk_low").is_empty());
    assert_eq!(world.agents[0].engine.pending_alerts(), 1);
    world.set_partitioned(false);
    assert!(world.run_until_true(secs(600), |w| established(w, 0)));
    world.run_for(secs(1));
    assert_eq!(alerts(&world, "disk_low").len(), 1);
    assert_eq!(world.agents[0].engine.pending_alerts(), 0);
}

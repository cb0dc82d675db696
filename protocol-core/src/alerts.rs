//! Alert rules evaluated on telemetry samples: instant and sustained
//! thresholds with hysteresis. A rule fires once when its condition holds
//! (for its whole sustain window) and resolves once when its value falls to
//! the threshold minus the hysteresis.

use std::time::Duration;

use crate::Timestamp;
use crate::WallTime;
use crate::wire::{Alert, AlertData, AlertState, ApplicationStatus, Severity, TelemetryData};

/// What a rule measures, as a number that trips when above the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Total CPU use, percent.
    Cpu,
    /// Memory in use, percent of total.
    Memory,
    /// The fullest filesystem, percent used.
    Disk,
    /// 1 while the application is down, else 0.
    ApplicationDown,
}

/// One rule.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRule {
    /// Stable name, sent as `alert.rule`.
    pub name: String,
    pub metric: Metric,
    /// Trips when the value is above this.
    pub threshold: f64,
    /// How long the value must stay above before the rule fires (zero: at once).
    pub sustain: Duration,
    /// The value must fall to `threshold - hysteresis` to resolve.
    pub hysteresis: f64,
    pub severity: Severity,
    pub message: String,
}

impl AlertRule {
    /// The defaults of the seed: CPU > 90 % for 5 min is critical, disk > 80 %
    /// is a warning, and the application being down is critical.
    pub fn defaults() -> Vec<Self> {
        vec![
            Self {
                name: "cpu_high".into(),
                metric: Metric::Cpu,
                threshold: 90.0,
                sustain: Duration::from_secs(300),
                hysteresis: 5.0,
                severity: Severity::Critical,
                message: "High CPU usage".into(),
            },
            Self {
                name: "disk_low".into(),
                metric: Metric::Disk,
                threshold: 80.0,
                sustain: Duration::ZERO,
                hysteresis: 2.0,
                severity: Severity::Warning,
                message: "Low disk space".into(),
            },
            Self {
                name: "application_down".into(),
                metric: Metric::ApplicationDown,
                threshold: 0.5,
                sustain: Duration::ZERO,
                hysteresis: 0.0,
                severity: Severity::Critical,
                message: "Application down".into(),
            },
        ]
    }
}

/// Where a rule stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleState {
    Clear,
    /// Above the threshold since then, not yet for the sustain window.
    Pending {
        since: Timestamp,
    },
    /// Fired at that time; waits to resolve.
    Firing {
        since: Timestamp,
    },
}

/// The rules and their states.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertEngine {
    rules: Vec<(AlertRule, RuleState)>,
}

/// A measured value with what an alert reports about it.
struct Reading {
    value: f64,
    data: AlertData,
}

impl AlertEngine {
    /// An engine with these rules, all clear.
    pub fn new(rules: Vec<AlertRule>) -> Self {
        Self {
            rules: rules.into_iter().map(|r| (r, RuleState::Clear)).collect(),
        }
    }

    /// Each rule's state, in rule order.
    pub fn states(&self) -> impl Iterator<Item = (&str, RuleState)> {
        self.rules.iter().map(|(r, s)| (r.name.as_str(), *s))
    }

    /// Feeds one sample taken at `now` (`wall` on the wall clock); returns the
    /// alerts that fire or resolve because of it.
    pub fn observe(
        &mut self,
        now: Timestamp,
        wall: WallTime,
        sample: &TelemetryData,
    ) -> Vec<Alert> {
        let mut out = Vec::new();
        for (rule, state) in &mut self.rules {
            let Some(reading) = read(rule.metric, sample) else {
                continue;
            };
            let above = reading.value > rule.threshold;
            let cleared = reading.value <= rule.threshold - rule.hysteresis;
            let next = match *state {
                RuleState::Clear if above => RuleState::Pending { since: now },
                RuleState::Pending { .. } if !above => RuleState::Clear,
                RuleState::Firing { .. } if cleared => {
                    out.push(alert(rule, &reading, AlertState::Resolved, wall, None));
                    RuleState::Clear
                }
                other => other,
            };
            *state = match next {
                RuleState::Pending { since } if now.saturating_since(since) >= rule.sustain => {
                    let held = now.saturating_since(since);
                    out.push(alert(rule, &reading, AlertState::Firing, wall, Some(held)));
                    RuleState::Firing { since: now }
                }
                other => other,
            };
        }
        out
    }
}

fn alert(
    rule: &AlertRule,
    reading: &Reading,
    state: AlertState,
    wall: WallTime,
    held: Option<Duration>,
) -> Alert {
    let mut data = reading.data.clone();
    data.threshold = Some(rule.threshold);
    if !rule.sustain.is_zero() {
        data.duration = held.map(|d| d.as_secs());
    }
    Alert {
        severity: rule.severity,
        message: match state {
            AlertState::Firing => rule.message.clone(),
            AlertState::Resolved => format!("{} (resolved)", rule.message),
        },
        data,
        rule: Some(rule.name.clone()),
        state,
        timestamp: Some(wall),
        // The engine names it when it queues it for sending.
        alert_id: None,
    }
}

fn percent(used: u64, total: u64) -> Option<f64> {
    // Precision loss is irrelevant at percent resolution.
    #[allow(clippy::cast_precision_loss)]
    (total > 0).then(|| used as f64 * 100.0 / total as f64)
}

fn read(metric: Metric, sample: &TelemetryData) -> Option<Reading> {
    let system = &sample.system;
    match metric {
        Metric::Cpu => Some(Reading {
            value: system.cpu.usage,
            data: AlertData {
                cpu: Some(round1(system.cpu.usage)),
                ..AlertData::default()
            },
        }),
        Metric::Memory => percent(system.memory.used, system.memory.total).map(|p| Reading {
            value: p,
            data: AlertData {
                memory: Some(round1(p)),
                ..AlertData::default()
            },
        }),
        Metric::Disk => system
            .disks
            .iter()
            .filter_map(|d| percent(d.used, d.total).map(|p| (p, d)))
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(p, d)| Reading {
                value: p,
                data: AlertData {
                    disk: Some(round1(p)),
                    mount: Some(d.mount.clone()),
                    available: Some(human_bytes(d.total.saturating_sub(d.used))),
                    ..AlertData::default()
                },
            }),
        Metric::ApplicationDown => Some(Reading {
            value: if sample.application.status == ApplicationStatus::Down {
                1.0
            } else {
                0.0
            },
            data: AlertData::default(),
        }),
    }
}

fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

/// `3GB`, `512MB`: the seed's style for `available`.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1024 && unit < UNITS.len() - 1 {
        value /= 1024;
        unit += 1;
    }
    format!("{value}{}", UNITS[unit])
}

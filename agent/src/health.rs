//! The health checks (agent, containers, disk, memory, database), each `ok`,
//! `warning`, `critical` or `unknown`, with what it saw.

use std::time::Duration;

use nap_core::wire::{
    CheckDetail, CheckStatus, ContainerState, HealthChecks, HealthDetails, TelemetryData,
};

use crate::config::HealthConfig;

fn detail(message: String, value: Option<f64>, threshold: Option<f64>) -> Option<CheckDetail> {
    Some(CheckDetail {
        message,
        value,
        threshold,
    })
}

fn grade(value: f64, warning: f64, critical: f64) -> (CheckStatus, f64) {
    let status = if value >= critical {
        CheckStatus::Critical
    } else if value >= warning {
        CheckStatus::Warning
    } else {
        CheckStatus::Ok
    };
    let threshold = if status == CheckStatus::Critical {
        critical
    } else {
        warning
    };
    (status, threshold)
}

fn percent(used: u64, total: u64) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    if total == 0 {
        0.0
    } else {
        (used as f64 * 1000.0 / total as f64).round() / 10.0
    }
}

/// Runs every check against a fresh sample.
pub async fn check(config: &HealthConfig, sample: &TelemetryData) -> (HealthChecks, HealthDetails) {
    let mut details = HealthDetails::default();
    let system = &sample.system;

    let fullest = system
        .disks
        .iter()
        .map(|d| (percent(d.used, d.total), d.mount.clone()))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let disk = match fullest {
        Some((pct, mount)) => {
            let (status, threshold) = grade(pct, config.disk_warning, config.disk_critical);
            details.disk = detail(
                format!("{mount} is {pct}% full"),
                Some(pct),
                Some(threshold),
            );
            status
        }
        None => CheckStatus::Unknown,
    };

    let mem = percent(system.memory.used, system.memory.total);
    let (memory, threshold) = grade(mem, config.memory_warning, config.memory_critical);
    details.memory = detail(format!("memory {mem}% used"), Some(mem), Some(threshold));

    let containers = if config.containers.is_empty() {
        CheckStatus::Ok
    } else if let Some(reason) = &sample.containers_unavailable {
        details.containers = detail(
            format!("cannot ask the container engine: {reason}"),
            None,
            None,
        );
        CheckStatus::Unknown
    } else {
        let missing: Vec<&str> = config
            .containers
            .iter()
            .filter(|want| {
                !sample
                    .containers
                    .iter()
                    .any(|c| &c.name == *want && c.state == ContainerState::Running)
            })
            .map(String::as_str)
            .collect();
        if missing.is_empty() {
            details.containers = detail(
                format!("{} expected containers running", config.containers.len()),
                None,
                None,
            );
            CheckStatus::Ok
        } else {
            details.containers = detail(format!("not running: {}", missing.join(", ")), None, None);
            CheckStatus::Critical
        }
    };

    let database = match &config.database {
        None => CheckStatus::Unknown,
        Some(target) => {
            match crate::probe::database(target, Duration::from_millis(config.database_timeout_ms))
                .await
            {
                Ok(rtt) => {
                    #[allow(clippy::cast_precision_loss)]
                    let ms = rtt.as_micros() as f64 / 1000.0;
                    details.database = detail(
                        format!("answered in {ms:.1} ms"),
                        Some((ms * 10.0).round() / 10.0),
                        None,
                    );
                    CheckStatus::Ok
                }
                Err(why) => {
                    details.database = detail(why, None, None);
                    CheckStatus::Critical
                }
            }
        }
    };

    let checks = HealthChecks {
        agent: CheckStatus::Ok,
        containers,
        disk,
        memory,
        database,
    };
    (checks, details)
}

//! Samples the host (sysinfo), its containers (Docker or Podman through
//! bollard, API version negotiated) and the application (a health URL or a
//! Prometheus endpoint). Numbers are rounded to keep the message small.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::{ListContainersOptionsBuilder, StatsOptionsBuilder};
use futures_util::StreamExt as _;
use nap_core::wire::{
    ApplicationMetrics, ApplicationStatus, ContainerHealth, ContainerMetrics, ContainerState,
    CpuMetrics, DiskMetrics, MemoryMetrics, NetworkMetrics, SystemMetrics, TelemetryData,
};
use sysinfo::{Disks, Networks, ProcessesToUpdate, System};

use crate::config::{ApplicationConfig, ContainerConfig};
use crate::probe;

fn round1(v: f64) -> f64 {
    if v.is_finite() {
        (v * 10.0).round() / 10.0
    } else {
        0.0
    }
}

/// The samplers' state between samples (CPU and network need a previous reading).
#[derive(Debug)]
pub struct Sampler {
    system: System,
    disks: Disks,
    networks: Networks,
    last_network: Option<Instant>,
    docker: Option<Docker>,
    docker_error: Option<String>,
    containers: ContainerConfig,
    application: ApplicationConfig,
}

impl Sampler {
    pub fn new(
        containers: ContainerConfig,
        application: ApplicationConfig,
    ) -> anyhow::Result<Self> {
        let mut system = System::new().map_err(|e| anyhow::anyhow!("reading the system: {e}"))?;
        system.refresh_cpu_usage();
        Ok(Self {
            system,
            disks: Disks::new_with_refreshed_list()
                .map_err(|e| anyhow::anyhow!("reading the disks: {e}"))?,
            networks: Networks::new_with_refreshed_list()
                .map_err(|e| anyhow::anyhow!("reading the network: {e}"))?,
            last_network: Some(Instant::now()),
            docker: None,
            docker_error: None,
            containers,
            application,
        })
    }

    /// One sample.
    pub async fn sample(&mut self) -> TelemetryData {
        let system = self.system_metrics();
        let (containers, containers_unavailable) = match self.containers().await {
            Ok(list) => (list, None),
            Err(reason) => (Vec::new(), Some(reason)),
        };
        TelemetryData {
            system,
            containers,
            application: probe::application(&self.application).await,
            containers_unavailable,
        }
    }

    fn system_metrics(&mut self) -> SystemMetrics {
        let s = &mut self.system;
        s.refresh_cpu_usage();
        s.refresh_memory();
        s.refresh_processes(ProcessesToUpdate::All, true);
        self.disks.refresh(true);
        self.networks.refresh(true);
        let elapsed = self
            .last_network
            .map_or(1.0, |t| t.elapsed().as_secs_f64().max(0.001));
        self.last_network = Some(Instant::now());
        let (rx, tx) = self
            .networks
            .iter()
            .filter(|(name, _)| name.to_str() != Some("lo"))
            .fold((0u64, 0u64), |(rx, tx), (_, d)| {
                (rx + d.received(), tx + d.transmitted())
            });
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        let rate = |bytes: u64| (bytes as f64 / elapsed) as u64;
        let load = System::load_average().unwrap_or(sysinfo::LoadAvg {
            one: 0.0,
            five: 0.0,
            fifteen: 0.0,
        });
        // One entry per filesystem (a device mounted in several places, or
        // container overlays on the root filesystem, count once), under its
        // shortest mount point.
        let mut by_fs: BTreeMap<(String, u64, u64), DiskMetrics> = BTreeMap::new();
        for d in self.disks.iter().filter(|d| d.total_space() > 0) {
            let used = d.total_space().saturating_sub(d.available_space());
            let mount = d.mount_point().display().to_string();
            let key = (
                d.name().to_string_lossy().into_owned(),
                d.total_space(),
                used,
            );
            let key = if d.file_system() == "overlay" {
                (String::new(), key.1, key.2)
            } else {
                key
            };
            let shorter = by_fs.get(&key).is_none_or(|m| mount.len() < m.mount.len());
            if shorter {
                by_fs.insert(
                    key,
                    DiskMetrics {
                        mount,
                        total: d.total_space(),
                        used,
                    },
                );
            }
        }
        let mut seen_size = std::collections::BTreeSet::new();
        let disks: Vec<DiskMetrics> = {
            let mut all: Vec<DiskMetrics> = by_fs.into_values().collect();
            all.sort_by(|a, b| {
                a.mount
                    .len()
                    .cmp(&b.mount.len())
                    .then(a.mount.cmp(&b.mount))
            });
            all.into_iter()
                .filter(|d| seen_size.insert((d.total, d.used)))
                .collect()
        };
        SystemMetrics {
            cpu: CpuMetrics {
                usage: round1(f64::from(s.global_cpu_usage())),
                per_core: s
                    .cpus()
                    .iter()
                    .map(|c| round1(f64::from(c.usage())))
                    .collect(),
            },
            load: [round1(load.one), round1(load.five), round1(load.fifteen)],
            memory: MemoryMetrics {
                total: s.total_memory(),
                used: s.used_memory(),
            },
            swap: MemoryMetrics {
                total: s.total_swap(),
                used: s.used_swap(),
            },
            disks,
            network: NetworkMetrics {
                rx_bytes_per_sec: rate(rx),
                tx_bytes_per_sec: rate(tx),
            },
            uptime: System::uptime().unwrap_or(0),
            processes: u32::try_from(s.processes().len()).unwrap_or(u32::MAX),
        }
    }

    async fn docker(&mut self) -> Result<Docker, String> {
        if let Some(d) = &self.docker {
            return Ok(d.clone());
        }
        let socket = self
            .containers
            .socket
            .clone()
            .or_else(|| std::env::var("DOCKER_HOST").ok())
            .unwrap_or_else(|| "unix:///var/run/docker.sock".into());
        let docker = Docker::connect_with_unix(&socket, 5, bollard::API_DEFAULT_VERSION)
            .map_err(|e| format!("no container engine at {socket}: {e}"))?;
        let docker = tokio::time::timeout(Duration::from_secs(5), docker.negotiate_version())
            .await
            .map_err(|_| format!("container engine at {socket} did not answer"))?
            .map_err(|e| format!("container engine at {socket}: {e}"))?;
        self.docker = Some(docker.clone());
        Ok(docker)
    }

    /// The containers, or why they are unknown.
    pub async fn containers(&mut self) -> Result<Vec<ContainerMetrics>, String> {
        let docker = match self.docker().await {
            Ok(d) => d,
            Err(reason) => {
                if self.docker_error.as_ref() != Some(&reason) {
                    tracing::info!(%reason, "containers are reported unavailable");
                    self.docker_error = Some(reason.clone());
                }
                return Err(reason);
            }
        };
        let list = docker
            .list_containers(Some(
                ListContainersOptionsBuilder::default().all(true).build(),
            ))
            .await
            .map_err(|e| {
                self.docker = None; // reconnect next time
                format!("listing containers: {e}")
            })?;
        let mut out = Vec::with_capacity(list.len());
        for c in list {
            let id = c.id.unwrap_or_default();
            let name = c
                .names
                .and_then(|n| n.into_iter().next())
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_owned();
            let status = c.status.unwrap_or_default().to_lowercase();
            let state = match c.state.map(|s| s.to_string()).as_deref() {
                Some("created") => ContainerState::Created,
                Some("running") => ContainerState::Running,
                Some("paused") => ContainerState::Paused,
                Some("restarting") => ContainerState::Restarting,
                Some("removing") => ContainerState::Removing,
                Some("exited") => ContainerState::Exited,
                Some("dead") => ContainerState::Dead,
                _ => ContainerState::Unknown,
            };
            let health = if status.contains("(healthy)") {
                Some(ContainerHealth::Healthy)
            } else if status.contains("(unhealthy)") {
                Some(ContainerHealth::Unhealthy)
            } else if status.contains("health: starting") {
                Some(ContainerHealth::Starting)
            } else {
                None
            };
            let (cpu, memory) = if state == ContainerState::Running {
                stats(&docker, &id).await
            } else {
                (0.0, 0)
            };
            let restarts = docker
                .inspect_container(&id, None)
                .await
                .ok()
                .and_then(|i| i.restart_count)
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0);
            out.push(ContainerMetrics {
                id: id.chars().take(12).collect(),
                name,
                image: c.image.unwrap_or_default(),
                state,
                health,
                cpu,
                memory,
                restarts,
            });
        }
        Ok(out)
    }
}

/// CPU percent (of one core) and memory bytes from one stats reading.
async fn stats(docker: &Docker, id: &str) -> (f64, u64) {
    let options = StatsOptionsBuilder::default()
        .stream(false)
        .one_shot(false)
        .build();
    let Some(Ok(s)) = docker.stats(id, Some(options)).next().await else {
        return (0.0, 0);
    };
    let memory = s.memory_stats.and_then(|m| m.usage).unwrap_or(0);
    let cpu = s
        .cpu_stats
        .zip(s.precpu_stats)
        .map_or(0.0, |(now, before)| {
            let total = |c: &bollard::models::ContainerCpuStats| {
                c.cpu_usage
                    .as_ref()
                    .and_then(|u| u.total_usage)
                    .unwrap_or(0)
            };
            let system = |c: &bollard::models::ContainerCpuStats| c.system_cpu_usage.unwrap_or(0);
            let cpu_delta = total(&now).saturating_sub(total(&before));
            let system_delta = system(&now).saturating_sub(system(&before));
            let cpus = f64::from(now.online_cpus.unwrap_or(1).max(1));
            #[allow(clippy::cast_precision_loss)]
            if system_delta == 0 {
                0.0
            } else {
                cpu_delta as f64 / system_delta as f64 * cpus * 100.0
            }
        });
    (round1(cpu), memory)
}

/// Metrics named in `wanted`, read from Prometheus text.
pub fn parse_prometheus(text: &str, wanted: &[String]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(name), Some(value)) = (parts.next(), parts.next()) else {
            continue;
        };
        let base = name.split('{').next().unwrap_or(name);
        if wanted.iter().any(|w| w == base)
            && !out.contains_key(base)
            && let Ok(v) = value.parse::<f64>()
            && v.is_finite()
        {
            out.insert(base.to_owned(), v);
        }
    }
    out
}

/// For `ApplicationMetrics` when nothing is configured.
pub fn unknown_application() -> ApplicationMetrics {
    ApplicationMetrics {
        status: ApplicationStatus::Unknown,
        latency_ms: None,
        metrics: BTreeMap::new(),
    }
}

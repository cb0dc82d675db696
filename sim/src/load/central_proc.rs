//! Central in its own processes, so that its memory and CPU are measured
//! apart from the simulator's, and so that a restart is a real crash. More
//! than one process share the ports (SO_REUSEPORT) and a Redis (DESIGN.md §5).

use std::io::Write as _;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use nap_central::ServeConfig;
use tokio::io::AsyncBufReadExt as _;
use tokio::process::{Child, Command};

use super::proto::process_usage;

/// The child side: serves `config` until killed or told to stop on stdin.
pub async fn serve(config_json: &str) -> anyhow::Result<()> {
    let config: ServeConfig = serde_json::from_str(config_json).context("central config")?;
    let running = nap_central::runtime::start(config).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "ready {} {}",
            running.agent_addr.port(),
            running.api_addr.port()
        )?;
        out.flush()?;
    }
    // Stdin closes when the coordinator goes: drain and stop.
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(_)) = lines.next_line().await {}
    running.shutdown().await;
    Ok(())
}

/// The coordinator's handle on a central process.
#[derive(Debug)]
pub struct CentralProcess {
    child: Child,
    pub pid: u32,
    pub agent_port: u16,
    pub api_port: u16,
}

impl CentralProcess {
    /// Starts `nap-sim central` with `config` and waits until it listens.
    pub async fn spawn(config: &ServeConfig) -> anyhow::Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("central")
            .arg(serde_json::to_string(config)?)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting central")?;
        let pid = child.id().context("central's pid")?;
        let stdout = child.stdout.take().context("central's stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .context("central did not start within 60 s")??
            .context("central exited before listening")?;
        let ports: Vec<u16> = ready
            .strip_prefix("ready ")
            .context("central's first line")?
            .split(' ')
            .filter_map(|p| p.parse().ok())
            .collect();
        let [agent_port, api_port] = ports[..] else {
            bail!("central said {ready:?}");
        };
        Ok(Self {
            child,
            pid,
            agent_port,
            api_port,
        })
    }

    /// CPU milliseconds and resident KiB now.
    pub fn usage(&self) -> (u64, u64) {
        process_usage(self.pid).unwrap_or_default()
    }

    /// Kills the process at once (a crash: no drain, connections reset).
    pub async fn crash(mut self) -> anyhow::Result<()> {
        self.child.start_kill()?;
        self.child.wait().await?;
        Ok(())
    }

    /// Asks it to drain and stop, and waits.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        drop(self.child.stdin.take());
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .is_err()
        {
            self.child.start_kill()?;
            self.child.wait().await?;
        }
        Ok(())
    }
}

/// The central processes of a run, all on the same two ports.
#[derive(Debug)]
pub struct CentralSet {
    processes: Vec<CentralProcess>,
    /// The configuration every process (re)starts with, ports fixed.
    serve: ServeConfig,
    count: usize,
    pub agent_port: u16,
    pub api_port: u16,
}

impl CentralSet {
    /// Starts `count` processes: the first picks the ports, the rest join them.
    pub async fn start(mut serve: ServeConfig, count: usize) -> anyhow::Result<Self> {
        let first = CentralProcess::spawn(&serve).await?;
        let (agent_port, api_port) = (first.agent_port, first.api_port);
        serve.listen.set_port(agent_port);
        serve.api_listen.set_port(api_port);
        let mut processes = vec![first];
        for _ in 1..count.max(1) {
            processes.push(CentralProcess::spawn(&serve).await?);
        }
        Ok(Self {
            count: processes.len(),
            processes,
            serve,
            agent_port,
            api_port,
        })
    }

    /// How many processes.
    pub fn count(&self) -> usize {
        self.count
    }

    /// CPU milliseconds and resident KiB, summed over the processes.
    pub fn usage(&self) -> (u64, u64) {
        self.processes
            .iter()
            .map(CentralProcess::usage)
            .fold((0, 0), |(c, r), (pc, pr)| (c + pc, r + pr))
    }

    /// Kills every process at once and starts them again.
    pub async fn crash_all(&mut self) -> anyhow::Result<()> {
        self.kill_all().await?;
        self.start_all().await
    }

    /// Kills every process at once (central is down until [`Self::start_all`]).
    pub async fn kill_all(&mut self) -> anyhow::Result<()> {
        for p in std::mem::take(&mut self.processes) {
            p.crash().await?;
        }
        Ok(())
    }

    /// Starts the processes that are not running.
    pub async fn start_all(&mut self) -> anyhow::Result<()> {
        while self.processes.len() < self.count {
            self.processes
                .push(CentralProcess::spawn(&self.serve).await?);
        }
        Ok(())
    }

    /// Kills process `i` (modulo the count) and starts it again: its nodes
    /// move to the others, or back to it.
    pub async fn crash_one(&mut self, i: usize) -> anyhow::Result<()> {
        let i = i % self.processes.len();
        let p = self.processes.swap_remove(i);
        p.crash().await?;
        self.processes
            .push(CentralProcess::spawn(&self.serve).await?);
        Ok(())
    }

    /// Drains and stops every process.
    pub async fn stop(self) -> anyhow::Result<()> {
        for p in self.processes {
            p.stop().await?;
        }
        Ok(())
    }
}

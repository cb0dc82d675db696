//! The report's PNG charts, drawn with plotters: connected nodes over time,
//! the handshake rate, and the distribution of ping round trips.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::Context as _;
use plotters::prelude::*;

use super::report::LoadReport;

const SIZE: (u32, u32) = (960, 540);

/// Labels need a font; the system's DejaVu Sans is registered once.
fn font_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        let candidates = [
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/TTF/DejaVuSans.ttf",
        ];
        candidates.iter().any(|path| {
            std::fs::read(path).ok().is_some_and(|bytes| {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
            })
        })
    })
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing: {e}")
}

/// Writes `PREFIX-connected.png`, `PREFIX-handshakes.png` and `PREFIX-rtt.png` into `dir`.
pub fn write(report: &LoadReport, dir: &Path, prefix: &str) -> anyhow::Result<Vec<PathBuf>> {
    anyhow::ensure!(
        font_ready(),
        "no DejaVu Sans font (apt-get install fonts-dejavu-core): charts skipped"
    );
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let title = format!(
        "{} nodes, {} on {}",
        report.nodes, report.scenario, report.database
    );
    let series = &report.series;
    let t_max = series.last().map_or(1.0, |p| p.t_s).max(1.0);
    let mut written = Vec::new();

    let path = dir.join(format!("{prefix}-connected.png"));
    {
        let root = BitMapBackend::new(&path, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("Connected nodes — {title}"), ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..t_max, 0usize..(report.nodes + report.nodes / 10 + 1))
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc("nodes")
            .draw()
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new(
                series.iter().map(|p| (p.t_s, p.connected)),
                BLUE.stroke_width(2),
            ))
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    written.push(path);

    let path = dir.join(format!("{prefix}-handshakes.png"));
    {
        let rates: Vec<(f64, f64)> = series
            .windows(2)
            .map(|w| {
                let dt = (w[1].t_s - w[0].t_s).max(1e-3);
                (
                    w[1].t_s,
                    (w[1].dials.saturating_sub(w[0].dials)) as f64 / dt,
                )
            })
            .collect();
        let top = rates
            .iter()
            .map(|(_, r)| *r)
            .chain(series.iter().map(|p| p.handshaking as f64))
            .fold(1.0, f64::max);
        let root = BitMapBackend::new(&path, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("Handshakes — {title}"), ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..t_max, 0.0..top * 1.1)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc("per second / in flight")
            .draw()
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new(rates, RED.stroke_width(2)))
            .map_err(err)?
            .label("handshakes started per second")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        chart
            .draw_series(LineSeries::new(
                series.iter().map(|p| (p.t_s, p.handshaking as f64)),
                BLUE.stroke_width(2),
            ))
            .map_err(err)?
            .label("handshakes in flight")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    written.push(path);

    let path = dir.join(format!("{prefix}-rtt.png"));
    {
        let h = &report.rtt_histogram;
        let width = h.len().max(2) as u32;
        let top = h.iter().copied().max().unwrap_or(1).max(1);
        let root = BitMapBackend::new(&path, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!(
                    "Ping round trips (p50 {} ms, p99 {} ms) — {title}",
                    report.rtt_ms.p50, report.rtt_ms.p99
                ),
                ("sans-serif", 22),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d((0u32..width).into_segmented(), 0u64..top + top / 10 + 1)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("milliseconds")
            .y_desc("pings")
            .draw()
            .map_err(err)?;
        chart
            .draw_series(
                Histogram::vertical(&chart)
                    .style(GREEN.filled())
                    .data(h.iter().enumerate().map(|(ms, n)| (ms as u32, *n))),
            )
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    written.push(path);
    Ok(written)
}

//! SVG line charts of `--scale` and `--soak` (plotters, SVG only: the text
//! is laid out by the browser that shows it, no font file is read).

use std::path::Path;

use anyhow::anyhow;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

/// One line of a panel: its name in the legend and its (x, y) points.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// One chart, stacked under the others in the same file.
pub struct Panel {
    pub title: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

/// Writes `panels`, one above the other, sharing `x_label`; the x axis is
/// logarithmic when `log_x` (row counts from ten thousand to ten million).
pub fn write_svg(path: &Path, x_label: &str, log_x: bool, panels: &[Panel]) -> anyhow::Result<()> {
    let height = 320 * panels.len().max(1) as u32;
    let root = SVGBackend::new(path, (900, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let areas = root.split_evenly((panels.len().max(1), 1));
    for (panel, area) in panels.iter().zip(areas) {
        let points = || panel.series.iter().flat_map(|s| s.points.iter().copied());
        let (x_min, x_max) = bounds(points().map(|p| p.0));
        let (_, y_max) = bounds(points().map(|p| p.1));
        let y_range = 0.0..(y_max * 1.15).max(1e-9);
        if log_x {
            draw(&area, panel, x_label, (x_min..x_max).log_scale(), y_range)?;
        } else {
            draw(&area, panel, x_label, x_min..x_max, y_range)?;
        }
    }
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

fn draw<X>(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    panel: &Panel,
    x_label: &str,
    x_range: X,
    y_range: std::ops::Range<f64>,
) -> anyhow::Result<()>
where
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x_range, y_range)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(&panel.y_label)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (i, series) in panel.series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(series.points.iter().copied(), color))
            .map_err(|e| anyhow!("{e}"))?
            .label(&series.name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color));
        chart
            .draw_series(
                series
                    .points
                    .iter()
                    .map(|&p| Circle::new(p, 3, color.filled())),
            )
            .map_err(|e| anyhow!("{e}"))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// The smallest and largest of `values`, never an empty range.
fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return (1.0, 10.0);
    }
    if lo == hi {
        return (lo * 0.9, hi * 1.1 + 1.0);
    }
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_is_written_as_svg_with_its_labels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chart.svg");
        let panel = Panel {
            title: "drain".into(),
            y_label: "deletions/s".into(),
            series: vec![Series {
                name: "Postgres".into(),
                points: vec![(1e4, 20_000.0), (1e7, 18_000.0)],
            }],
        };
        write_svg(&path, "due rows", true, &[panel]).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
        for text in ["drain", "deletions/s", "Postgres", "due rows"] {
            assert!(svg.contains(text), "{text} missing");
        }
    }
}

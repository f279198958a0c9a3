//! The PNG of a `train-probes` report: validation score per layer, one line per class, plus the
//! multiclass probe's test accuracy (black).

use std::path::Path;

use plotters::prelude::*;
use serde_json::Value;

pub fn plot(path: &Path, report: &Value) -> anyhow::Result<()> {
    let empty = Vec::new();
    let layers = report["layers"].as_array().unwrap_or(&empty);
    let blocks: Vec<f64> = layers
        .iter()
        .map(|l| l["block"].as_f64().unwrap_or(0.0))
        .collect();
    let n_classes = report["classes"].as_array().map_or(0, Vec::len);
    let class_series: Vec<(String, Vec<(f64, f64)>)> = (0..n_classes)
        .map(|c| {
            let name = report["classes"][c].as_str().unwrap_or("?").to_owned();
            let pts = layers
                .iter()
                .zip(&blocks)
                .filter_map(|(l, &b)| l["binary"][c]["val_score"].as_f64().map(|s| (b, s)))
                .collect();
            (name, pts)
        })
        .collect();
    let multi: Vec<(f64, f64)> = layers
        .iter()
        .zip(&blocks)
        .filter_map(|(l, &b)| l["multiclass"]["test"]["accuracy"].as_f64().map(|s| (b, s)))
        .collect();
    let all: Vec<f64> = class_series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.1))
        .chain(multi.iter().map(|q| q.1))
        .filter(|v| v.is_finite())
        .collect();
    let (mut lo, mut hi) = all
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    if hi - lo < 1e-6 {
        (lo, hi) = (lo - 0.5, hi + 0.5);
    }
    let x_max = blocks.iter().cloned().fold(0.0, f64::max);
    let root = BitMapBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!(
        "{} ({}): {} per layer",
        report["concept"].as_str().unwrap_or(""),
        report["source"].as_str().unwrap_or(""),
        report["metric"].as_str().unwrap_or("")
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(
            -0.5..x_max + 0.5,
            lo - 0.02 * (hi - lo)..hi + 0.02 * (hi - lo),
        )?;
    chart
        .configure_mesh()
        .x_desc("decoder block")
        .y_desc("score")
        .draw()?;
    for (i, (name, pts)) in class_series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
    }
    if !multi.is_empty() {
        chart
            .draw_series(LineSeries::new(
                multi.iter().copied(),
                BLACK.stroke_width(3),
            ))?
            .label("multiclass test acc")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK.stroke_width(3)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()?;
    Ok(())
}

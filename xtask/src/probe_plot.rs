//! The PNG of a `train-probes` report: validation score per decoder block, one line per class,
//! the multiclass probe's test accuracy (black), and the chance levels they are read against.

use std::path::Path;

use directions::ConceptKind;
use plotters::prelude::*;

use crate::training::TrainReport;

const FONT: &str = "DejaVu Sans";

/// A line of (decoder block, value) points.
type Series = Vec<(SegmentValue<i32>, f64)>;

pub fn plot(path: &Path, report: &TrainReport) -> anyhow::Result<()> {
    let blocks: Vec<i32> = report.layers.iter().map(|l| l.block as i32).collect();
    let n_blocks = blocks.iter().copied().max().map_or(1, |b| b + 1);
    let at = |b: i32| SegmentValue::CenterOf(b);
    let class_series: Vec<(String, Series)> = report
        .classes
        .iter()
        .enumerate()
        .map(|(c, name)| {
            let pts = report
                .layers
                .iter()
                .filter_map(|l| {
                    l.binary
                        .get(c)
                        .map(|r| (at(l.block as i32), r.fit.val_score))
                })
                .collect();
            (name.clone(), pts)
        })
        .collect();
    let multi: Series = report
        .layers
        .iter()
        .filter_map(|l| {
            let fit = l.multiclass.as_ref()?.fitted()?;
            Some((at(l.block as i32), fit.test.accuracy?))
        })
        .collect();
    // Chance: balanced accuracy of a one-vs-rest probe is 0.5; multiclass accuracy is 1/C.
    let chance: Vec<(String, f64, RGBColor)> = match report.kind {
        ConceptKind::Binary => {
            let mut lines = vec![("chance, one-vs-rest".to_owned(), 0.5, RGBColor(90, 90, 90))];
            if !multi.is_empty() {
                let c = report.classes.len().max(1) as f64;
                lines.push((
                    format!("chance, multiclass (1/{})", report.classes.len()),
                    1.0 / c,
                    RGBColor(170, 170, 170),
                ));
            }
            lines
        }
        ConceptKind::Regression => Vec::new(),
    };
    let values: Vec<f64> = class_series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.1))
        .chain(multi.iter().map(|q| q.1))
        .chain(chance.iter().map(|c| c.1))
        .filter(|v| v.is_finite())
        .collect();
    let (mut lo, mut hi) = values
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
    let pad = 0.05 * (hi - lo);
    let root = BitMapBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!(
        "{} ({}): {} per decoder block",
        report.concept, report.source, report.metric
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 24))
        .margin(14)
        .x_label_area_size(45)
        .y_label_area_size(65)
        // plotters' integer ranges include their end: 0..n−1 is n segments, one per block.
        .build_cartesian_2d((0..n_blocks - 1).into_segmented(), lo - pad..hi + pad)?;
    chart
        .configure_mesh()
        .x_labels(n_blocks as usize)
        .x_desc("decoder block")
        .y_desc(report.metric.as_str())
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 17))
        .draw()?;
    for (name, level, color) in &chance {
        let color = *color;
        chart
            .draw_series(DashedLineSeries::new(
                [
                    (SegmentValue::Exact(0), *level),
                    (SegmentValue::Last, *level),
                ],
                8,
                5,
                color.stroke_width(2),
            ))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
    }
    for (i, (name, pts)) in class_series.iter().enumerate() {
        let color = Palette99::pick(i + 1).to_rgba();
        chart
            .draw_series(LineSeries::new(pts.iter().cloned(), color.stroke_width(2)))?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart.draw_series(
            pts.iter()
                .map(|p| Circle::new(p.clone(), 3, color.filled())),
        )?;
    }
    if !multi.is_empty() {
        chart
            .draw_series(LineSeries::new(
                multi.iter().cloned(),
                BLACK.stroke_width(3),
            ))?
            .label("multiclass test accuracy")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK.stroke_width(3)));
        chart.draw_series(
            multi
                .iter()
                .map(|p| Cross::new(p.clone(), 6, BLACK.stroke_width(2))),
        )?;
    }
    chart
        .configure_series_labels()
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::training::{
        ClassReport, FitReport, LayerReport, MetricsReport, MulticlassFit, TrainReport,
    };

    fn fit(score: f64) -> FitReport {
        FitReport {
            val_score: score,
            test: MetricsReport {
                auc: Some(score),
                balanced_accuracy: Some(score),
                accuracy: Some(score),
                mse: None,
                r2: None,
            },
            reg: 1e-3,
            bandwidth: 10.0,
            exponent: 1.0,
            center_grads: false,
            best_iter: 1,
            split: [10, 5, 5],
        }
    }

    /// One block or many, the plot renders; `MUSICRFM_KEEP_PLOT=1` keeps the PNGs to look at.
    #[test]
    fn plots_one_or_many_blocks() {
        for blocks in [1usize, 5] {
            let report = TrainReport {
                concept: "chords".into(),
                features: "f".into(),
                source: "musicgen".into(),
                model: "m".into(),
                protocol: Default::default(),
                clips: 20,
                classes: vec!["major".into(), "minor".into(), "aug".into()],
                kind: ConceptKind::Binary,
                metric: "balanced_accuracy".into(),
                search: 1,
                iters: 1,
                seed: 0,
                probe: None,
                seconds: 0.0,
                layers: (0..blocks)
                    .map(|b| LayerReport {
                        block: b,
                        binary: (0..3)
                            .map(|c| ClassReport {
                                class: format!("{c}"),
                                fit: fit(0.5 + 0.1 * (b + c) as f64 / 2.0),
                            })
                            .collect(),
                        multiclass: Some(MulticlassFit::Fitted(fit(0.4 + 0.1 * b as f64))),
                    })
                    .collect(),
            };
            let path = std::env::temp_dir().join(format!("probe-plot-{blocks}.png"));
            plot(&path, &report).unwrap();
            let png = std::fs::read(&path).unwrap();
            assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
            if std::env::var_os("MUSICRFM_KEEP_PLOT").is_none() {
                std::fs::remove_file(&path).unwrap();
            }
        }
    }
}

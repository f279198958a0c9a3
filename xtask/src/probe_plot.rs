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
            let mut lines = vec![("chance, one-vs-rest".to_owned(), 0.5, RGBColor(200, 0, 0))];
            if !multi.is_empty() {
                let c = report.classes.len().max(1) as f64;
                lines.push((
                    format!("chance, multiclass (1/{})", report.classes.len()),
                    1.0 / c,
                    RGBColor(120, 120, 120),
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
        .build_cartesian_2d((0..n_blocks).into_segmented(), lo - pad..hi + pad)?;
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
        let color = Palette99::pick(i).to_rgba();
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

//! What `eval-steering` writes: the typed `results.json`, the printed table and the plot.

use std::path::{Path, PathBuf};

use engine::features::FeatureProtocol;
use plotters::coord::Shift;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use super::{ClassifierKind, DistanceFeatures, EvalKind, LayerProtocol};

const FONT: &str = "DejaVu Sans";

/// `results.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalResults {
    pub model: String,
    pub directions: PathBuf,
    pub probe: PathBuf,
    pub kind: EvalKind,
    pub classifier: ClassifierKind,
    /// The probe's block with `--classifier block`.
    pub block: Option<usize>,
    /// The blocks the classifier reads.
    pub classifier_blocks: Vec<usize>,
    pub layer_protocol: LayerProtocol,
    /// The blocks the directions file may steer (after the layer protocol).
    pub steered_blocks: Vec<usize>,
    pub protocol: FeatureProtocol,
    pub distance_features: DistanceFeatures,
    /// The block of `distance_features = model`.
    pub distance_block: Option<usize>,
    pub concept: String,
    pub classes: Vec<String>,
    /// 1/K for a multiclass probe.
    pub chance: Option<f64>,
    /// Regression: the mean predicted value of the unsteered clips.
    pub unsteered_mean: Option<f64>,
    pub clips_per_class: usize,
    pub seconds: f64,
    pub prompts: Vec<String>,
    pub layers: String,
    pub gate: f32,
    pub guidance: f32,
    pub seed: u64,
    pub rows: Vec<EvalRow>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalRow {
    pub eta: f32,
    /// Multiclass: the share of steered clips classified as their target class.
    pub accuracy: Option<f64>,
    pub per_class: Vec<ClassAccuracy>,
    /// Regression: the mean predicted value (BPM for tempo) of the steered clips.
    pub mean_prediction: Option<f64>,
    /// Regression: `mean_prediction` minus the unsteered clips' mean.
    pub bpm_shift: Option<f64>,
    /// Share of codes that differ from the unsteered clip of the same seed and prompt.
    pub codes_changed: f64,
    /// Fréchet distance between the steered and unsteered clips' embeddings.
    pub frechet_distance: f64,
    /// Unbiased MMD² (RBF, median heuristic) between them; none with fewer than 2 clips.
    pub mmd: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClassAccuracy {
    pub class: String,
    pub accuracy: f64,
}

/// What the classifier and the distances read, in words.
pub(super) fn describe(results: &EvalResults) -> (String, String) {
    let classifier = match (results.classifier, results.block) {
        (ClassifierKind::Block, Some(b)) => format!("block {b} probe"),
        _ => format!("mean of {} block probes", results.classifier_blocks.len()),
    };
    let distance = match (results.distance_features, results.distance_block) {
        (DistanceFeatures::Model, Some(b)) => format!("block {b} features"),
        (DistanceFeatures::Chroma, _) => "chroma".to_owned(),
        _ => "log-mel".to_owned(),
    };
    (classifier, distance)
}

pub(super) fn print_table(results: &EvalResults) {
    let (classifier, distance) = describe(results);
    let first = match results.kind {
        EvalKind::Multiclass => "accuracy",
        EvalKind::Regression => "BPM shift",
    };
    let context = match (results.chance, results.unsteered_mean) {
        (Some(c), _) => format!("chance {c:.3}"),
        (_, Some(m)) => format!("unsteered mean {m:.2}"),
        _ => String::new(),
    };
    println!(
        "{}: {context}, {} clips per class, {classifier}, FD/MMD² on {distance} against the \
         unsteered clips, layer protocol {:?}",
        results.concept, results.clips_per_class, results.layer_protocol
    );
    println!(
        "{:>8} {:>10} {:>14} {:>12} {:>12}",
        "η", first, "codes changed", "FD", "MMD²"
    );
    for row in &results.rows {
        let value = row.accuracy.or(row.bpm_shift).unwrap_or(f64::NAN);
        let value = match results.kind {
            EvalKind::Multiclass => format!("{value:.3}"),
            EvalKind::Regression => format!("{value:+.2}"),
        };
        println!(
            "{:>8.3} {value:>10} {:>14.3} {:>12.4} {:>12.4}",
            row.eta,
            row.codes_changed,
            row.frechet_distance,
            row.mmd.unwrap_or(f64::NAN)
        );
    }
}

/// A padded range around `values` (a unit one around a single value).
fn range(values: impl Iterator<Item = f64>, floor_zero: bool) -> (f64, f64) {
    let (mut lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if floor_zero {
        lo = lo.min(0.0);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-9 {
        return (lo - 0.5, hi + 0.5);
    }
    let pad = 0.08 * (hi - lo);
    (
        if floor_zero && lo >= 0.0 {
            lo
        } else {
            lo - pad
        },
        hi + pad,
    )
}

/// A line of points against η, as one panel draws it.
struct Series {
    label: &'static str,
    colour: RGBColor,
    points: Vec<(f64, f64)>,
}

/// One panel: `series` against η, with an optional horizontal reference line.
fn panel(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    title: &str,
    y_desc: &str,
    series: &[Series],
    y: (f64, f64),
    line: Option<(&str, f64)>,
) -> anyhow::Result<()> {
    let x = range(
        series.iter().flat_map(|s| s.points.iter().map(|p| p.0)),
        false,
    );
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 20))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(x.0..x.1, y.0..y.1)?;
    chart
        .configure_mesh()
        .x_desc("strength η")
        .y_desc(y_desc)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .draw()?;
    for Series {
        label,
        colour,
        points,
    } in series
    {
        let colour = *colour;
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))?
            .label(*label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, colour.filled())))?;
    }
    if let Some((label, value)) = line {
        chart
            .draw_series(LineSeries::new(
                vec![(x.0, value), (x.1, value)],
                RED.stroke_width(1),
            ))?
            .label(label)
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

pub(super) fn plot(path: &Path, results: &EvalResults) -> anyhow::Result<()> {
    let mut rows: Vec<&EvalRow> = results.rows.iter().collect();
    rows.sort_by(|a, b| a.eta.total_cmp(&b.eta));
    let points = |f: &dyn Fn(&EvalRow) -> Option<f64>| -> Vec<(f64, f64)> {
        rows.iter()
            .filter_map(|r| {
                f(r).filter(|v| v.is_finite())
                    .map(|v| (f64::from(r.eta), v))
            })
            .collect()
    };
    let root = BitMapBackend::new(path, (1500, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let (classifier, distance) = describe(results);
    let root = root.titled(
        &format!(
            "{}: steering against strength ({} clips per class, {classifier})",
            results.concept, results.clips_per_class
        ),
        (FONT, 22),
    )?;
    let panels = root.split_evenly((1, 3));
    match results.kind {
        EvalKind::Multiclass => panel(
            &panels[0],
            "probe accuracy",
            "accuracy",
            &[Series {
                label: "steered",
                colour: BLUE,
                points: points(&|r| r.accuracy),
            }],
            (0.0, 1.0),
            results.chance.map(|c| ("chance", c)),
        )?,
        EvalKind::Regression => {
            let shift = points(&|r| r.bpm_shift);
            let y = range(shift.iter().map(|p| p.1).chain([0.0]), false);
            panel(
                &panels[0],
                "predicted tempo shift",
                "BPM shift vs unsteered",
                &[Series {
                    label: "steered",
                    colour: BLUE,
                    points: shift,
                }],
                y,
                Some(("unsteered", 0.0)),
            )?
        }
    }
    let fd = points(&|r| Some(r.frechet_distance));
    let y = range(fd.iter().map(|p| p.1), true);
    panel(
        &panels[1],
        &format!("Fréchet distance ({distance})"),
        "FD to unsteered",
        &[Series {
            label: "FD",
            colour: RGBColor(0, 120, 60),
            points: fd,
        }],
        y,
        None,
    )?;
    let mmd = points(&|r| r.mmd);
    let y = range(mmd.iter().map(|p| p.1), true);
    panel(
        &panels[2],
        &format!("MMD² ({distance})"),
        "MMD² to unsteered",
        &[Series {
            label: "MMD²",
            colour: RGBColor(150, 60, 0),
            points: mmd,
        }],
        y,
        None,
    )?;
    root.present()?;
    Ok(())
}

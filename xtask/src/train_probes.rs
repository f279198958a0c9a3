//! `cargo xtask train-probes`: the command-line face of [`crate::training`]. Writes the
//! directions file (`--out`), the best layer's multiclass (or regression) probe beside it
//! (`<stem>.probe.safetensors`), the report (`<stem>.report.json`), a plot (`<stem>.png`), and
//! prints a summary table.

use std::path::PathBuf;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::feature_store::Features;
use crate::probe_plot;
use crate::training::{MulticlassFit, TrainOptions, TrainReport, train_directions};

/// Train RFM concept probes per layer and write a directions file v1.
#[derive(Debug, Args)]
pub struct TrainProbesArgs {
    /// Features directory written by `cargo xtask extract`.
    #[arg(long)]
    pub features: PathBuf,
    /// The concept; must match the features' dataset.
    #[arg(long)]
    pub concept: String,
    /// Output directions file (`.safetensors`); the probe, report and plot go beside it.
    #[arg(long)]
    pub out: PathBuf,
    /// Hyper-parameter samples per probe (the paper: 100).
    #[arg(long, default_value_t = 100)]
    pub search: usize,
    /// RFM iterations per fit (the paper: 15).
    #[arg(long, default_value_t = 15)]
    pub iters: usize,
    /// Seed of the hyper-parameter draws (splits use MusicRFM's seed 42).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Only these 0-based blocks, comma separated (default: every extracted layer).
    #[arg(long, value_delimiter = ',')]
    pub layers: Option<Vec<usize>>,
    /// Skip the multiclass probes.
    #[arg(long)]
    pub no_multiclass: bool,
    /// Also write every block's multiclass (or regression) probe as
    /// `<stem>.probe.b<block>.safetensors`, for `eval-steering --classifier layers` (off by
    /// default: each holds its training points and a d×d matrix, ~70 MB a block at d = 2048).
    #[arg(long)]
    pub layer_probes: bool,
}

use engine::features::beside;

pub fn run(args: &TrainProbesArgs) -> anyhow::Result<()> {
    if args.out.extension().and_then(|e| e.to_str()) != Some("safetensors") {
        anyhow::bail!("--out {} must end in .safetensors", args.out.display());
    }
    let feats = Features::read(&args.features)?;
    let options = TrainOptions {
        search: args.search,
        iters: args.iters,
        seed: args.seed,
        layers: args.layers.clone(),
        multiclass: !args.no_multiclass,
        layer_probes: args.layer_probes,
    };
    let rows = args.layers.as_ref().map_or(feats.layer_ids.len(), Vec::len);
    let classes = feats.info["classes"].as_array().map_or(1, Vec::len);
    let bar = ProgressBar::new((rows * (classes + 1)) as u64);
    bar.set_style(
        ProgressStyle::with_template("probes [{bar:40}] {pos}/{len} {msg}, {elapsed} (eta {eta})")
            .expect("static template")
            .progress_chars("=> "),
    );
    let mut trained = train_directions(&feats, &args.features, &args.concept, &options, |m| {
        bar.inc(1);
        bar.set_message(m.to_owned());
    })?;
    bar.finish_and_clear();

    let probe_path = beside(&args.out, ".probe.safetensors");
    let report_path = beside(&args.out, ".report.json");
    let plot_path = beside(&args.out, ".png");
    if let Some(probe) = &mut trained.report.probe {
        probe.file = probe_path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
    }
    let report = &trained.report;
    crate::write_file(&args.out, &trained.directions.to_bytes(&args.out)?)?;
    match &trained.probe {
        Some(probe) => crate::write_file(&probe_path, &probe.to_bytes()?)?,
        None => eprintln!(
            "no multiclass probe could be fitted; {} not written",
            probe_path.display()
        ),
    }
    for (block, probe) in &trained.layer_probes {
        let path = crate::training::layer_probe_path(&probe_path, *block)?;
        crate::write_file(&path, &probe.to_bytes()?)?;
    }
    crate::write_file(
        &report_path,
        serde_json::to_string_pretty(report)?.as_bytes(),
    )?;
    crate::write_file_with(&plot_path, |tmp| probe_plot::plot(tmp, report))?;
    print_summary(report);
    eprintln!(
        "wrote {}, {}, {}, {} in {:.1} s",
        args.out.display(),
        probe_path.display(),
        report_path.display(),
        plot_path.display(),
        report.seconds
    );
    Ok(())
}

fn print_summary(report: &TrainReport) {
    let mut header = format!("{:>6}", "block");
    for c in &report.classes {
        header.push_str(&format!(" {c:>8}"));
    }
    header.push_str(&format!(" {:>10} {:>10}", "multi-auc", "multi-acc"));
    println!(
        "{} ({}; val score per class, multiclass test)",
        report.concept, report.metric
    );
    println!("{header}");
    for l in &report.layers {
        let mut line = format!("{:>6}", l.block);
        for c in &l.binary {
            line.push_str(&format!(" {:>8.3}", c.fit.val_score));
        }
        let test = l
            .multiclass
            .as_ref()
            .and_then(MulticlassFit::fitted)
            .map(|f| f.test);
        line.push_str(&format!(
            " {:>10.3} {:>10.3}",
            test.and_then(|t| t.auc).unwrap_or(f64::NAN),
            test.and_then(|t| t.accuracy).unwrap_or(f64::NAN)
        ));
        println!("{line}");
    }
}

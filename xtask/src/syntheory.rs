//! `cargo xtask syntheory`: makes a SynTheory concept (docs/algorithms.md §7) as 44.1 kHz, 4 s
//! mono WAV clips rendered from MIDI built in code with rustysynth and a General MIDI soundfont,
//! plus `dataset.json` (concept, classes, counts) and `manifest.jsonl` (every clip's attributes).
//!
//! Deterministic (a fresh synthesizer per clip, seeded crops) and resumable (a clip whose WAV is
//! already there with the right format and length is not rendered again).
//!
//! The MIDI of every clip is the reference's (brown-palm/syntheory, pinned clip by clip in
//! `syntheory_music/reference_tests.rs`) and is rendered as its `midi2audio` does. What differs,
//! and why:
//! - Clips are mono (the mean of the synthesizer's left and right), not stereo: the probes and
//!   MusicGen take mono.
//! - Click clips stay 32-bit float; the reference's ffmpeg `trim` / `random_trim` re-encode them
//!   as 16-bit PCM (ffmpeg's WAV default). The crop start is drawn from `--seed` in whole samples;
//!   the reference draws it unseeded.
//! - Clip order: the class varies fastest (and tempos run in a strided BPM order, notes from the
//!   middle octave outward) so that a `--limit` prefix is balanced; the set of clips is the same.
//! - Manifest attribute names are ours (`midi_note`, `play_style` "up"/"down"/"unison", Roman
//!   numeral progression names, with the reference's label in `chord_progression`).
//! - Messages go to the synthesizer directly rather than through a MIDI file; both ways they take
//!   effect at the first 64-sample block start at or after their time, so the audio is the same.
//!   Meta messages (track name, time signature) make no sound and are not modelled.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use rustysynth::{SoundFont, Synthesizer, SynthesizerSettings};
use serde_json::{Value, json};

use crate::syntheory_music::{self as music, CLIP_SAMPLES, ClipSpec, Concept, SAMPLE_RATE};

pub const DEFAULT_SOUNDFONT: &str = "/usr/share/sounds/sf2/TimGM6mb.sf2";
pub const DATASET_FORMAT: &str = "musicrfm.syntheory.v1";

/// Render a SynTheory concept to 44.1 kHz 4 s WAV clips with a manifest.
#[derive(Debug, Args)]
pub struct SyntheoryArgs {
    /// The concept to render.
    #[arg(long, value_enum)]
    pub concept: Concept,
    /// Output directory (created; existing valid clips are kept).
    #[arg(long)]
    pub out: PathBuf,
    /// Use N of the 92 instruments, spread evenly over the list (tonal concepts).
    #[arg(long)]
    pub instruments: Option<usize>,
    /// Keep only the first N clips (the class varies fastest, so a prefix is balanced).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Seed of the crop windows (tempos, time signatures).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// General MIDI soundfont (.sf2).
    #[arg(long, default_value = DEFAULT_SOUNDFONT)]
    pub soundfont: PathBuf,
}

/// One manifest row: the clip's file, class and every attribute.
pub fn manifest_row(concept: Concept, index: usize, spec: &ClipSpec) -> Value {
    let mut row = spec.attributes.clone();
    row.insert("id".into(), json!(format!("{}-{index:05}", concept.name())));
    row.insert("index".into(), json!(index));
    row.insert("file".into(), json!(clip_path(concept, index)));
    row.insert("concept".into(), json!(concept));
    row.insert("label".into(), json!(spec.label));
    row.insert("class_index".into(), json!(spec.class_index));
    if let Some(v) = spec.value {
        row.insert("value".into(), json!(v));
    }
    row.insert("sample_rate".into(), json!(SAMPLE_RATE));
    row.insert("samples".into(), json!(CLIP_SAMPLES));
    Value::Object(row)
}

fn clip_path(concept: Concept, index: usize) -> String {
    format!("clips/{}-{index:05}.wav", concept.name())
}

pub fn generate(args: &SyntheoryArgs) -> anyhow::Result<()> {
    if args.instruments == Some(0) {
        bail!("--instruments must be at least 1");
    }
    if args.limit == Some(0) {
        bail!("--limit must be at least 1");
    }
    let programs = music::pick_instruments(args.instruments);
    let mut specs = args.concept.clips(&programs, args.seed);
    if let Some(n) = args.limit {
        specs.truncate(n);
    }
    let bytes = std::fs::read(&args.soundfont)
        .with_context(|| format!("reading --soundfont {}", args.soundfont.display()))?;
    let font = Arc::new(
        SoundFont::new(&mut bytes.as_slice())
            .map_err(|e| anyhow::anyhow!("--soundfont {}: {e:?}", args.soundfont.display()))?,
    );
    std::fs::create_dir_all(args.out.join("clips"))
        .with_context(|| format!("creating --out {}", args.out.display()))?;

    let bar = ProgressBar::new(specs.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} clips, {elapsed} (eta {eta})")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_message(args.concept.name());
    let kept = std::sync::atomic::AtomicUsize::new(0);
    specs
        .par_iter()
        .enumerate()
        .try_for_each(|(i, spec)| -> anyhow::Result<()> {
            let path = args.out.join(clip_path(args.concept, i));
            if is_valid_clip(&path) {
                kept.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            } else {
                let audio = render(&font, spec)
                    .with_context(|| format!("rendering clip {i} ({})", path.display()))?;
                engine::audio::write_wav(&path, &audio, SAMPLE_RATE)?;
            }
            bar.inc(1);
            Ok(())
        })?;
    bar.finish();

    let classes = args.concept.classes();
    let mut counts = vec![0usize; classes.len()];
    for s in &specs {
        counts[s.class_index] += 1;
    }
    let regression = args.concept.is_regression();
    let info = json!({
        "format": DATASET_FORMAT,
        "concept": args.concept,
        "kind": if regression { "regression" } else { "multiclass" },
        "label_key": args.concept.label_key(),
        "classes": classes,
        "class_counts": counts,
        "clips": specs.len(),
        "sample_rate": SAMPLE_RATE,
        "clip_samples": CLIP_SAMPLES,
        "instruments": programs,
        "seed": args.seed,
        "soundfont": args.soundfont.file_name().map(|n| n.to_string_lossy().into_owned()),
    });
    let manifest: String = specs
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{}\n", manifest_row(args.concept, i, s)))
        .collect();
    crate::write_file(&args.out.join("manifest.jsonl"), manifest.as_bytes())?;
    crate::write_file(
        &args.out.join("dataset.json"),
        serde_json::to_string_pretty(&info)?.as_bytes(),
    )?;
    eprintln!(
        "{}: {} clips ({} already there) in {}",
        args.concept.name(),
        specs.len(),
        kept.into_inner(),
        args.out.display()
    );
    Ok(())
}

fn is_valid_clip(path: &Path) -> bool {
    engine::audio::is_float_wav(path, SAMPLE_RATE, CLIP_SAMPLES)
}

/// Renders `spec` as the reference's `midi2audio` does (a fresh synthesizer, default settings:
/// reverb and chorus on) and returns the mono mix (mean of left and right) of its 4 s window.
///
/// Messages are applied at the first sample at or after their time; the synthesizer renders in
/// 64-sample blocks, so each takes effect at the first block start at or after its time, which
/// is where rustysynth's `MidiFileSequencer` (the reference's renderer) applies it. Rendering stops at the window's end: the synthesis is causal, so the audio up to there
/// is the same as the full render's, and the reference's `trim` only cuts the tail.
pub fn render(font: &Arc<SoundFont>, spec: &ClipSpec) -> anyhow::Result<Vec<f32>> {
    let rate = f64::from(SAMPLE_RATE);
    let settings = SynthesizerSettings::new(SAMPLE_RATE as i32);
    let mut synth = Synthesizer::new(font, &settings).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let start = (spec.crop_start * rate).round() as usize;
    let total = start + CLIP_SAMPLES;
    let mut left = vec![0f32; total];
    let mut right = vec![0f32; total];
    let mut pos = 0;
    for m in music::midi_messages(spec) {
        // The first sample at or after the message's time (less float noise).
        let at = ((spec.seconds(m.tick) * rate - 1e-6).ceil().max(0.0) as usize).min(total);
        if at > pos {
            synth.render(&mut left[pos..at], &mut right[pos..at]);
            pos = at;
        }
        if at == total {
            break;
        }
        synth.process_midi_message(
            i32::from(m.status & 0x0F),
            i32::from(m.status & 0xF0),
            i32::from(m.data1),
            i32::from(m.data2),
        );
    }
    if pos < total {
        synth.render(&mut left[pos..total], &mut right[pos..total]);
    }
    Ok(left[start..]
        .iter()
        .zip(&right[start..])
        .map(|(l, r)| 0.5 * (l + r))
        .collect())
}

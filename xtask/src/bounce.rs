//! `cargo xtask bounce`: bounce the built `musicrfm.clap` headless, as a DAW's offline export
//! does: load it in a CLAP host (offline render mode), set its state (model, prompt, slots) and
//! parameters, automate parameters sample-accurately from CSV lanes, process in fixed or random
//! block sizes, remove the reported latency (WAV sample 0 = the timeline origin) and write a
//! 32-bit float WAV (channel 0; the plugin's channels are identical).

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use clap::Args;

use crate::clap_host::{self, HostEvent, Instance, Playback, TimedEvent};

/// Bounce the built plugin offline to a WAV.
#[derive(Debug, Args)]
pub struct BounceArgs {
    /// The plugin (default: `$MUSICRFM_CLAP`, else target/bundled/musicrfm.clap).
    #[arg(long)]
    pub plugin: Option<PathBuf>,
    /// Model directory or Hugging Face repo id (the plugin's persisted `model`).
    #[arg(long)]
    pub model: String,
    /// Text prompt ("" for unconditional).
    #[arg(long, default_value = "")]
    pub prompt: String,
    /// Slot directions: <K>=<FILE>:<CLASS> (K = 1..8). Repeatable.
    #[arg(long = "slot", value_name = "K=FILE:CLASS")]
    pub slots: Vec<String>,
    /// A slot in MIDI notes mode: <K>=<NOTES_FILE> (a 12-class notes directions file; `--midi`
    /// notes of pitch class p steer class p with velocity × the slot's strength).
    #[arg(long = "midi-slot", value_name = "K=FILE")]
    pub midi_slots: Vec<String>,
    /// A parameter's plain value: <PARAM_ID>=<VALUE> (`slot1-strength=1.5`, `slot1-shape=rise`).
    #[arg(
        long = "set",
        value_name = "PARAM_ID=VALUE",
        allow_hyphen_values = true
    )]
    pub sets: Vec<String>,
    /// An automation lane: <PARAM_ID>=<FILE.csv> with `seconds,value` points, linear between.
    #[arg(long = "automation", value_name = "PARAM_ID=FILE.csv")]
    pub automation: Vec<String>,
    /// A standard MIDI file whose notes play into the plugin (for a slot in MIDI notes mode).
    #[arg(long)]
    pub midi: Option<PathBuf>,
    /// Length in seconds, from the timeline origin.
    #[arg(long)]
    pub seconds: f64,
    #[arg(long, default_value_t = 48_000)]
    pub sample_rate: u32,
    /// Host block size: a number, or `random` (1..=1024, drawn from --seed).
    #[arg(long, default_value = "512")]
    pub block: String,
    /// The plugin's `seed` parameter, and the seed of `--block random`.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output WAV (32-bit float, mono, at --sample-rate).
    #[arg(long)]
    pub out: PathBuf,
}

/// Samples between automation events on a sloped segment (events land on exact samples).
const AUTOMATION_GRID: u64 = 16;

pub fn default_plugin() -> PathBuf {
    if let Some(path) = std::env::var_os("MUSICRFM_CLAP") {
        return PathBuf::from(path);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    target.join("bundled").join("musicrfm.clap")
}

/// The `.so` inside a bundle (a plain file is used as is).
pub fn library(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join("Contents")
            .join("x86_64-linux")
            .join("musicrfm.so")
    } else {
        path.to_owned()
    }
}

/// A bounce: channel 0 from the timeline origin on, the reported latency removed.
pub struct Bounced {
    pub samples: Vec<f32>,
    pub latency: u32,
    /// The plugin's engine report at the end (decoder steps, steps replayed from the cache,
    /// underruns: the hidden `engine` parameter's text).
    pub engine: String,
}

pub fn run(args: &BounceArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let bounced = bounce(args, &[])?;
    engine::audio::write_wav(&args.out, &bounced.samples, args.sample_rate)
        .with_context(|| format!("writing --out {}", args.out.display()))?;
    eprintln!(
        "bounced {:.2} s at {} Hz (latency {} samples) in {:.1} s → {}",
        args.seconds,
        args.sample_rate,
        bounced.latency,
        started.elapsed().as_secs_f64(),
        args.out.display()
    );
    eprintln!("engine: {}", bounced.engine);
    Ok(())
}

/// Load the plugin, give it `args`' state and parameters, and bounce it offline with the
/// automation lanes of `args` and `events` (absolute samples from the origin: MIDI notes,
/// more parameter changes).
pub fn bounce(args: &BounceArgs, events: &[TimedEvent]) -> anyhow::Result<Bounced> {
    if !(args.seconds > 0.0 && args.seconds.is_finite()) {
        bail!("--seconds {}: a positive length is expected", args.seconds);
    }
    if args.sample_rate == 0 {
        bail!("--sample-rate 0: a positive rate is expected");
    }
    let plugin = args.plugin.clone().unwrap_or_else(default_plugin);
    let (entry, id) = clap_host::load_entry(&library(&plugin))?;
    let mut instance = clap_host::instantiate(&entry, &id)?;
    configure(&mut instance, args)?;
    clap_host::set_offline(&mut instance)?;
    let rate = f64::from(args.sample_rate);
    let mut timed = automation(&mut instance, args)?;
    if let Some(path) = &args.midi {
        timed.extend(
            crate::midi_file::read(path)?
                .into_iter()
                .map(|note| TimedEvent {
                    sample: (note.seconds * rate).round() as u64,
                    event: match note.velocity {
                        Some(velocity) => HostEvent::NoteOn {
                            key: note.key,
                            velocity,
                        },
                        None => HostEvent::NoteOff { key: note.key },
                    },
                }),
        );
    }
    timed.extend_from_slice(events);
    timed.sort_by_key(|e| e.sample);

    // The latency is known after activation; bounce generously, then cut.
    let wanted = (args.seconds * rate).round() as usize;
    let blocks = blocks(&args.block, args.seed, wanted + (rate as usize) * 2)?;
    let played = Playback {
        sample_rate: rate,
        blocks: &blocks,
        events: &timed,
        transport: None,
        offline_after_activation: false,
        ..Default::default()
    }
    .run(&mut instance)?;
    let latency = played.latency as usize;
    let samples = played.channels[0]
        .get(latency..latency + wanted)
        .ok_or_else(|| anyhow!("latency {latency} samples exceeds the 2 s margin"))?
        .to_vec();
    let engine = clap_host::param_text(&mut instance, "engine")?;
    Ok(Bounced {
        samples,
        latency: played.latency,
        engine,
    })
}

/// Set the plugin's persisted state (model, prompt, slots) and parameters (`--seed`, `--set`)
/// from `args`, through a state load as a DAW restoring a project does.
pub fn configure(instance: &mut Instance, args: &BounceArgs) -> anyhow::Result<()> {
    let mut state = clap_host::state_json(&clap_host::save_state(instance)?)?;
    clap_host::set_field(&mut state, "model", &serde_json::json!(args.model));
    clap_host::set_field(&mut state, "prompt", &serde_json::json!(args.prompt));
    let mut slots = vec![serde_json::json!({"file": "", "class": ""}); 8];
    for spec in &args.slots {
        let (k, rest) = spec
            .split_once('=')
            .ok_or_else(|| anyhow!("--slot {spec}: expected K=FILE:CLASS"))?;
        let k = slot_number(k).ok_or_else(|| anyhow!("--slot {spec}: K is 1..8"))?;
        let (file, class) = rest
            .rsplit_once(':')
            .ok_or_else(|| anyhow!("--slot {spec}: expected K=FILE:CLASS"))?;
        slots[k - 1] = serde_json::json!({"file": file, "class": class});
    }
    for spec in &args.midi_slots {
        let (k, file) = spec
            .split_once('=')
            .ok_or_else(|| anyhow!("--midi-slot {spec}: expected K=FILE"))?;
        let k = slot_number(k).ok_or_else(|| anyhow!("--midi-slot {spec}: K is 1..8"))?;
        slots[k - 1] = serde_json::json!({"file": file, "class": "", "midi": true});
    }
    clap_host::set_field(&mut state, "slots", &serde_json::Value::Array(slots));
    clap_host::set_param(&mut state, "seed", &args.seed.to_string())?;
    for set in &args.sets {
        let (param, value) = set
            .split_once('=')
            .ok_or_else(|| anyhow!("--set {set}: expected PARAM_ID=VALUE"))?;
        clap_host::set_param(&mut state, param, value).with_context(|| format!("--set {set}"))?;
    }
    clap_host::load_state(instance, &clap_host::state_bytes(&state))
}

/// A slot number 1..=8.
fn slot_number(text: &str) -> Option<usize> {
    text.parse().ok().filter(|k| (1..=8).contains(k))
}

/// The parameter events of the `--automation` lanes.
fn automation(instance: &mut Instance, args: &BounceArgs) -> anyhow::Result<Vec<TimedEvent>> {
    let rate = f64::from(args.sample_rate);
    let mut timed = Vec::new();
    for lane in &args.automation {
        let (param, file) = lane
            .split_once('=')
            .ok_or_else(|| anyhow!("--automation {lane}: expected PARAM_ID=FILE.csv"))?;
        let points = read_points(Path::new(file))?;
        for (sample, plain) in lane_events(&points, rate, args.seconds) {
            let value = clap_host::clap_value(instance, param, plain)
                .with_context(|| format!("--automation {lane}"))?;
            timed.push(TimedEvent {
                sample,
                event: HostEvent::Param {
                    param: clap_host::clap_param_id(param),
                    value,
                },
            });
        }
    }
    Ok(timed)
}

/// Block sizes covering at least `total` samples.
fn blocks(spec: &str, seed: u64, total: usize) -> anyhow::Result<Vec<usize>> {
    let mut sizes = Vec::new();
    let mut covered = 0;
    if spec == "random" {
        // splitmix64: reproducible without a dependency.
        let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
        while covered < total {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            let n = 1 + (z % 1024) as usize;
            sizes.push(n);
            covered += n;
        }
    } else {
        let n: usize = spec
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| anyhow!("--block {spec}: a positive size or `random`"))?;
        sizes.resize(total.div_ceil(n), n);
    }
    Ok(sizes)
}

/// `seconds,value` points, sorted by time.
fn read_points(path: &Path) -> anyhow::Result<Vec<(f64, f64)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut points = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parsed = line.split_once(',').and_then(|(t, v)| {
            let (t, v) = (t.trim().parse::<f64>().ok()?, v.trim().parse::<f64>().ok()?);
            (t.is_finite() && v.is_finite() && t >= 0.0).then_some((t, v))
        });
        match parsed {
            Some(point) => points.push(point),
            None if i == 0 => {} // a header line
            None => bail!("{}:{}: expected `seconds,value`", path.display(), i + 1),
        }
    }
    if points.is_empty() {
        bail!("{}: no points", path.display());
    }
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(points)
}

/// Events (absolute sample, plain value) of a linear lane: one at 0, at every point, and on a
/// grid along sloped segments.
fn lane_events(points: &[(f64, f64)], rate: f64, seconds: f64) -> Vec<(u64, f64)> {
    let value_at = |t: f64| -> f64 {
        let i = points.partition_point(|p| p.0 <= t);
        match (i.checked_sub(1).map(|j| points[j]), points.get(i)) {
            (None, Some(&(_, v))) | (Some((_, v)), None) => v,
            (Some((t0, v0)), Some(&(t1, v1))) => v0 + (v1 - v0) * (t - t0) / (t1 - t0),
            (None, None) => 0.0,
        }
    };
    let end = ((seconds + 2.0) * rate).ceil() as u64;
    let mut samples: Vec<u64> = (0..end).step_by(AUTOMATION_GRID as usize).collect();
    samples.extend(
        points
            .iter()
            .map(|p| (p.0 * rate).round() as u64)
            .filter(|&s| s < end),
    );
    samples.sort_unstable();
    samples.dedup();
    let mut events = Vec::new();
    let mut last = None;
    for sample in samples {
        let value = value_at(sample as f64 / rate);
        if last != Some(value) {
            events.push((sample, value));
            last = Some(value);
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lane_has_an_event_at_every_point_and_interpolates_between() {
        // A step from 0 to 1 between samples 1000 and 1001 (off the grid), at 1 kHz.
        let points = [(0.0, 0.0), (1.0, 0.0), (1.001, 1.0)];
        let events = lane_events(&points, 1000.0, 1.5);
        assert_eq!(events[0], (0, 0.0));
        assert_eq!(events[1], (1001, 1.0), "{events:?}");
        assert_eq!(
            events.len(),
            2,
            "constant segments send nothing: {events:?}"
        );
        let ramp = lane_events(&[(0.0, 0.0), (0.0625, 1.0)], 1024.0, 0.1);
        assert_eq!(
            ramp,
            [(0, 0.0), (16, 0.25), (32, 0.5), (48, 0.75), (64, 1.0)],
            "a slope on the {AUTOMATION_GRID}-sample grid"
        );
    }

    #[test]
    fn random_blocks_repeat_for_a_seed_and_cover_the_length() {
        let a = blocks("random", 3, 10_000).unwrap();
        assert_eq!(a, blocks("random", 3, 10_000).unwrap());
        assert_ne!(a, blocks("random", 4, 10_000).unwrap());
        assert!(a.iter().sum::<usize>() >= 10_000);
        assert!(a.iter().all(|&n| (1..=1024).contains(&n)));
        assert_eq!(blocks("512", 0, 1000).unwrap(), [512, 512]);
        assert!(blocks("0", 0, 10).is_err());
    }
}
